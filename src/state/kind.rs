//! The seam a keyed table kind implements, and the registry macro that
//! turns one line per kind into the [`TableKind`](super::TableKind) and
//! [`Table`](super::Table) enums and their dispatch.
//!
//! A kind lives in `src/state/<kind>.rs`: its spec type implements
//! [`KindSpec`] (what the plan declares: building the table, validation,
//! state columns, read values, compatibility with a checkpoint, its manifest
//! record), its table implements [`KeyedTable`] (the checkpoint seam) and,
//! for a keyed step's table, [`StepTable`] (the per-request update). The
//! registry line in `state/mod.rs` does the rest; nothing else in `state/`
//! or `checkpoint/` names a kind.
//!
//! Dispatch is a `match` over the generated enums: static, no trait objects
//! on the request path ([`Table::update`](super::Table::update) inlines the
//! kind's [`StepTable::update_step`]).

use super::{KeyedTable, Outputs, StateColumn, StateError, TableDesc, UpdateError};
use crate::row::{ColumnType, Val};

/// What a kind of keyed table declares, implemented by its spec type (the
/// payload of its [`TableKind`](super::TableKind) variant).
pub(crate) trait KindSpec: Sized {
    /// The table one shard holds for a spec of this kind.
    type Table: KeyedTable;

    /// An empty table named `name`; `logging`: record a delta log for
    /// checkpoints.
    fn build(&self, name: String, logging: bool) -> Self::Table;

    /// Checks the spec of table `table` (run once, at start-up).
    fn validate(&self, _table: &str) -> Result<(), StateError> {
        Ok(())
    }

    /// The columns of the per-key state in checkpoint files, in the order
    /// the delta-log records hold them; each named `<table>.<...>`.
    fn state_columns(&self, table: &str) -> Vec<StateColumn>;

    /// What a read of one key answers, in order: name, type, and whether
    /// the value is unix milliseconds (a time).
    fn read_values(&self) -> Vec<(String, ColumnType, bool)>;

    /// Whether state written for `written` (same name, same kind) restores
    /// into `self`; warnings for parts that are new or dropped.
    fn reconcile(
        &self,
        table: &str,
        written: &Self,
        warnings: &mut Vec<String>,
    ) -> Result<(), String>;

    /// True when every shard holds every key (checkpoints write it once).
    fn replicated(&self) -> bool {
        false
    }

    /// Fills the kind's fields of its manifest record (`desc` arrives with
    /// its name and kind set, every other field empty).
    fn describe(&self, desc: &mut TableDesc);

    /// The spec a manifest record of this kind describes, or why it is
    /// unreadable.
    fn from_desc(desc: &TableDesc) -> Result<Self, String>;
}

/// The per-request side of a keyed step's table.
pub(crate) trait StepTable: KeyedTable {
    /// The per-key update: `input(i)` is the step's `i`-th input, `now_ms`
    /// the request time (read only if the kind needs it). Returns the
    /// step's outputs for the key.
    fn update_step<'v>(
        &mut self,
        key: Val<'_>,
        now_ms: impl FnOnce() -> i64,
        input: impl Fn(usize) -> Val<'v>,
    ) -> Result<Outputs<'_>, UpdateError>;
}

/// A keyed step's table found in a [`Table`](super::Table) (implemented by
/// the registry for every step kind's table).
pub(crate) trait StepOf {
    /// The table if `t` is of this kind.
    fn of(t: &super::Table) -> Option<&Self>;

    /// Mutable [`StepOf::of`].
    fn of_mut(t: &mut super::Table) -> Option<&mut Self>;
}

/// The registry: one line per kind, `"name" => Variant(module::{Spec,
/// Table})`. `steps` are keyed steps' tables (updated per request through
/// [`Table`](super::Table)); `declared` is the `[[table]]` kind, written by
/// `upsert`/`delete` and read by `lookup`. The line declares the module and
/// re-exports its spec and table.
macro_rules! table_kinds {
    (
        steps { $($key:literal => $V:ident($m:ident::{$Spec:ident, $Table:ident}),)* }
        declared { $dkey:literal => $DV:ident($dm:ident::{$DSpec:ident, $DTable:ident}), }
    ) => {
        $(mod $m; pub use $m::{$Spec, $Table};)*
        mod $dm;
        pub use $dm::{$DSpec, $DTable};

        /// The kinds of keyed state, one variant per registry line.
        #[derive(Debug, Clone, PartialEq)]
        pub enum TableKind {
            $(
                #[doc = concat!("A `", $key, "` step's table.")]
                $V($Spec),
            )*
            #[doc = concat!("A declared `[[", $dkey, "]]`.")]
            $DV($DSpec),
        }

        /// One keyed step's state on one shard.
        #[derive(Debug)]
        pub enum Table {
            $(
                #[doc = concat!("A `", $key, "` step's table.")]
                $V($Table),
            )*
        }

        $(
            // With a single step kind, `_` is unreachable.
            #[allow(unreachable_patterns)]
            impl kind::StepOf for $Table {
                #[inline]
                fn of(t: &Table) -> Option<&$Table> {
                    match t {
                        Table::$V(t) => Some(t),
                        _ => None,
                    }
                }
                #[inline]
                fn of_mut(t: &mut Table) -> Option<&mut $Table> {
                    match t {
                        Table::$V(t) => Some(t),
                        _ => None,
                    }
                }
            }
        )*

        impl TableKind {
            /// The kind's name in manifests and messages.
            pub fn name(&self) -> &'static str {
                match self {
                    $(TableKind::$V(_) => $key,)*
                    TableKind::$DV(_) => $dkey,
                }
            }

            fn validate(&self, table: &str) -> Result<(), StateError> {
                match self {
                    $(TableKind::$V(s) => s.validate(table),)*
                    TableKind::$DV(s) => s.validate(table),
                }
            }

            fn state_columns(&self, table: &str) -> Vec<StateColumn> {
                match self {
                    $(TableKind::$V(s) => s.state_columns(table),)*
                    TableKind::$DV(s) => s.state_columns(table),
                }
            }

            fn read_values(&self) -> Vec<(String, ColumnType, bool)> {
                match self {
                    $(TableKind::$V(s) => s.read_values(),)*
                    TableKind::$DV(s) => s.read_values(),
                }
            }

            fn replicated(&self) -> bool {
                match self {
                    $(TableKind::$V(s) => s.replicated(),)*
                    TableKind::$DV(s) => s.replicated(),
                }
            }

            /// `None` when `written` is of another kind.
            fn reconcile(
                &self,
                table: &str,
                written: &TableKind,
                warnings: &mut Vec<String>,
            ) -> Option<Result<(), String>> {
                match (written, self) {
                    $((TableKind::$V(w), TableKind::$V(c)) => Some(c.reconcile(table, w, warnings)),)*
                    (TableKind::$DV(w), TableKind::$DV(c)) => Some(c.reconcile(table, w, warnings)),
                    _ => None,
                }
            }

            pub(crate) fn describe(&self, desc: &mut TableDesc) {
                match self {
                    $(TableKind::$V(s) => s.describe(desc),)*
                    TableKind::$DV(s) => s.describe(desc),
                }
            }

            /// `None` for a kind no registry line names.
            pub(crate) fn from_desc(desc: &TableDesc) -> Option<Result<TableKind, String>> {
                Some(match desc.kind.as_str() {
                    $($key => $Spec::from_desc(desc).map(TableKind::$V),)*
                    $dkey => $DSpec::from_desc(desc).map(TableKind::$DV),
                    _ => return None,
                })
            }
        }

        impl ShardState {
            fn place(&mut self, spec: &TableSpec, logging: bool) -> Place {
                let name = spec.name.clone();
                match &spec.kind {
                    $(TableKind::$V(s) => {
                        self.tables.push(Table::$V(s.build(name, logging)));
                        Place::Step(self.tables.len() - 1)
                    })*
                    TableKind::$DV(s) => {
                        self.declared.push(s.build(name, logging));
                        Place::Declared(self.declared.len() - 1)
                    }
                }
            }
        }

        impl Table {
            /// The kind's per-key update (see [`Table::update`]).
            #[inline]
            fn update_step<'v>(
                &mut self,
                key: Val<'_>,
                now_ms: impl FnOnce() -> i64,
                input: impl Fn(usize) -> Val<'v>,
            ) -> Result<Outputs<'_>, UpdateError> {
                match self {
                    $(Table::$V(t) => t.update_step(key, now_ms, input),)*
                }
            }

            /// The table through the checkpoint seam.
            fn keyed(&self) -> &dyn KeyedTable {
                match self {
                    $(Table::$V(t) => t,)*
                }
            }

            fn keyed_mut(&mut self) -> &mut dyn KeyedTable {
                match self {
                    $(Table::$V(t) => t,)*
                }
            }
        }
    };
}

pub(crate) use table_kinds;
