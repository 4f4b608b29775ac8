//! Operators: the steps of a route. Each step kind is one unit in
//! `src/operator/<kind>.rs` that owns all of it: its TOML table
//! (`Raw<Kind>`), its checked configuration and `check` (structural
//! validation, phase one), its `plan` (types, columns it adds, tables it
//! declares, phase two, through a [`Planner`]), its `apply` on a request's
//! row, and its line in `coreline check` ([`Step::describe`]).
//!
//! An operator is built once per shard from the plan and run synchronously,
//! in order, on every request's row. It is a plain function of the row and
//! its own scratch state; it never awaits, locks or allocates once warm. It
//! either lets the row go on ([`Flow::Continue`]), answers the request itself
//! ([`Flow::Reply`]), as a filter does, or, for a keyed step whose key
//! another shard owns, asks for a forward ([`Flow::Forward`]). `select` has
//! no runtime part: it only narrows the columns that later steps and the
//! reply may name, which the plan resolves at compile time.
//!
//! # Adding a step kind
//!
//! Write `src/operator/<kind>.rs` with `Raw<Kind>` (serde),
//! `<Kind>Config::check(raw, &mut StepChecker)`, `<Kind>::plan(&config, &mut
//! Planner)` and `impl Step for <Kind>`, then add one line to the registry
//! below. The [`Operator`] enum, the [`StepConfig`] enum, the dispatch of a
//! `[[route.step]]` by its key and the list of known kinds in errors all come
//! from that line. Dispatch is a `match` on the enum: static, no trait
//! objects on the request path.

mod keyed;

pub use aggregate::{Aggregate, AggregateConfig, AggregateOutput};
pub use changed::{Changed, ChangedConfig};
pub use filter::{Filter, FilterConfig};
pub use keyed::{Inputs, KeyedUpdate, read_state, run_on_owner};
pub use read::{KeyQuery, Read};
pub use score::{ModelSource, ModelSwap, Score, ScoreConfig, version_column};
pub use select::{Select, SelectConfig};
pub use with_column::{WithColumn, WithColumnConfig};

use std::cell::Cell;

use serde::de::MapAccess;
use toml::Spanned as TomlSpanned;

use crate::config::{ConfigError, Span, StepChecker};
use crate::forward::{KeyedOp, KeyedReply};
use crate::plan::Planner;
use crate::reply::write_error_json;
use crate::row::{Columns, Row};
use crate::state::{ShardState, TableSpec};

/// What keyed steps need from their shard.
pub struct Ctx<'a> {
    /// This shard's state.
    pub state: &'a mut ShardState,
    /// This shard's index.
    pub shard: usize,
    /// Number of shards (for the owner hash).
    pub shards: usize,
    /// This instance's place in its fleet, if it is one of several.
    pub fleet: Option<&'a crate::fleet::Place>,
    /// Request time, read from the clock on first use only: routes without
    /// keyed steps never pay for it.
    now_ms: Cell<Option<i64>>,
}

impl<'a> Ctx<'a> {
    /// A context for shard `shard` of `shards`.
    pub fn new(state: &'a mut ShardState, shard: usize, shards: usize) -> Ctx<'a> {
        Ctx {
            state,
            shard,
            shards,
            fleet: None,
            now_ms: Cell::new(None),
        }
    }

    /// The same context for an instance of a fleet.
    pub fn with_fleet(mut self, fleet: Option<&'a crate::fleet::Place>) -> Ctx<'a> {
        self.fleet = fleet;
        self
    }

    /// The shard of this instance that owns `key`; or, when another
    /// instance of the fleet owns it, the 421 naming that owner, written
    /// into `body` (field `key_name`).
    #[inline]
    pub fn owner(
        &self,
        key: crate::row::Val<'_>,
        key_name: &str,
        body: &mut Vec<u8>,
    ) -> Result<usize, u16> {
        match self.fleet {
            None => Ok(crate::state::owner_shard(key, self.shards)),
            Some(place) => {
                let (instance, shard) = place.owner(key);
                if instance == place.index {
                    Ok(shard)
                } else {
                    Err(place.misdirected(body, key_name, instance, shard))
                }
            }
        }
    }

    /// The request's time, unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        clock(&self.now_ms)
    }

    /// The state, and the request's clock beside it (for an update that
    /// reads the time only if its table needs it).
    pub(crate) fn state_and_clock(&mut self) -> (&mut ShardState, impl FnOnce() -> i64 + '_) {
        let now = &self.now_ms;
        (&mut *self.state, move || clock(now))
    }
}

fn clock(cache: &Cell<Option<i64>>) -> i64 {
    if let Some(ms) = cache.get() {
        return ms;
    }
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    cache.set(Some(ms));
    ms
}

/// What a route does after an operator ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next step.
    Continue,
    /// Stop and answer with this status; the body is the JSON error the
    /// operator wrote into the route's error buffer.
    Reply(u16),
    /// The step's key belongs to this shard index: forward the step there.
    Forward(usize),
}

/// The run-time side of a step kind. Implemented by every operator and
/// dispatched statically through [`Operator`].
pub trait Step {
    /// Runs the step on `row`. A step that answers the request writes its
    /// JSON error body into `body`; a keyed step whose key another shard
    /// owns returns [`Flow::Forward`].
    fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, body: &mut Vec<u8>) -> Flow;

    /// The step's line in `coreline check`, after `step i: `. `columns` are
    /// the route's columns, `tables` the plan's keyed tables.
    fn describe(&self, columns: &Columns, tables: &[TableSpec]) -> String;

    /// Whether the step does anything per request (`select` only narrows
    /// columns at plan time and is left out of a shard's route).
    fn runs(&self) -> bool {
        true
    }

    /// After `apply` asked for a forward: what the owner shard must run.
    fn forward_op(&self, _row: &Row, _now_ms: i64) -> Option<KeyedOp> {
        None
    }

    /// Writes the owner's reply into the row (keyed steps only).
    fn accept(&self, _row: &mut Row, _reply: KeyedReply, body: &mut Vec<u8>) -> Flow {
        body.clear();
        write_error_json(body, "resumed at a step that is not keyed", None);
        Flow::Reply(500)
    }
}

/// The registry: one line per step kind (`key => Variant(module::{Operator,
/// Config, Raw})`), plus the operators no `[[route.step]]` names.
macro_rules! step_kinds {
    (
        steps { $($key:literal => $Variant:ident($m:ident::{$Op:ident, $Config:ident, $Raw:ident}),)* }
        internal { $($IVariant:ident($im:ident::$IOp:ident),)* }
    ) => {
        $(mod $m;)*
        $(mod $im;)*

        /// The keys a `[[route.step]]` may have, one per step kind.
        pub const STEP_KINDS: &[&str] = &[$($key),*];

        /// One checked `[[route.step]]`: its kind's configuration.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum StepConfig {
            $(
                #[doc = concat!("`", $key, " = { ... }`")]
                $Variant($m::$Config),
            )*
        }

        impl StepConfig {
            /// The step's key in the file (`with_column`, `filter`, ...).
            pub fn kind(&self) -> &'static str {
                match self {
                    $(StepConfig::$Variant(_) => $key,)*
                }
            }

            /// Compiles the step against the columns visible at its place.
            pub fn plan(&self, planner: &mut Planner<'_>) -> Result<Operator, ConfigError> {
                planner.at_step(self.kind());
                match self {
                    $(StepConfig::$Variant(c) => Ok(Operator::$Variant($m::$Op::plan(c, planner)?)),)*
                }
            }
        }

        /// A step's table as deserialized, before its checks.
        pub(crate) enum RawStepKind {
            $($Variant($m::$Raw),)*
        }

        impl RawStepKind {
            /// Deserializes the value of the step key `kind` (one of
            /// [`STEP_KINDS`]) into that kind's table, with its span.
            pub(crate) fn next_value<'de, A: MapAccess<'de>>(
                kind: &str,
                map: &mut A,
            ) -> Result<(Span, RawStepKind), A::Error> {
                match kind {
                    $($key => {
                        let raw = map.next_value::<TomlSpanned<$m::$Raw>>()?;
                        Ok((raw.span(), RawStepKind::$Variant(raw.into_inner())))
                    })*
                    other => unreachable!("{other} is not in STEP_KINDS"),
                }
            }

            /// The kind's structural checks.
            pub(crate) fn check(self, checker: &mut StepChecker<'_>) -> Result<StepConfig, ConfigError> {
                match self {
                    $(RawStepKind::$Variant(raw) => Ok(StepConfig::$Variant($m::$Config::check(raw, checker)?)),)*
                }
            }
        }

        /// One compiled step of a route.
        #[derive(Debug, Clone)]
        pub enum Operator {
            $(
                #[doc = concat!("`", $key, "`")]
                $Variant($m::$Op),
            )*
            $(
                #[doc = concat!("`", stringify!($IVariant), "` (not a step kind of the file)")]
                $IVariant($im::$IOp),
            )*
        }

        impl Operator {
            /// The step's kind: its key in the file (`with_column`, ...), or
            /// the internal operator's name in lower case (`read`).
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Operator::$Variant(_) => $key,)*
                    $(Operator::$IVariant(_) => internal_kind(stringify!($IVariant)),)*
                }
            }
        }

        impl Step for Operator {
            #[inline]
            fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, body: &mut Vec<u8>) -> Flow {
                match self {
                    $(Operator::$Variant(op) => op.apply(row, ctx, body),)*
                    $(Operator::$IVariant(op) => op.apply(row, ctx, body),)*
                }
            }

            fn describe(&self, columns: &Columns, tables: &[TableSpec]) -> String {
                match self {
                    $(Operator::$Variant(op) => op.describe(columns, tables),)*
                    $(Operator::$IVariant(op) => op.describe(columns, tables),)*
                }
            }

            fn runs(&self) -> bool {
                match self {
                    $(Operator::$Variant(op) => op.runs(),)*
                    $(Operator::$IVariant(op) => op.runs(),)*
                }
            }

            fn forward_op(&self, row: &Row, now_ms: i64) -> Option<KeyedOp> {
                match self {
                    $(Operator::$Variant(op) => op.forward_op(row, now_ms),)*
                    $(Operator::$IVariant(op) => op.forward_op(row, now_ms),)*
                }
            }

            fn accept(&self, row: &mut Row, reply: KeyedReply, body: &mut Vec<u8>) -> Flow {
                match self {
                    $(Operator::$Variant(op) => op.accept(row, reply, body),)*
                    $(Operator::$IVariant(op) => op.accept(row, reply, body),)*
                }
            }
        }
    };
}

/// `Read` → `read`: internal operators are named in lower case, like the
/// step kinds of the file.
const fn internal_kind(name: &'static str) -> &'static str {
    match name.as_bytes() {
        b"Read" => "read",
        _ => "internal",
    }
}

step_kinds! {
    steps {
        "with_column" => WithColumn(with_column::{WithColumn, WithColumnConfig, RawWithColumn}),
        "filter" => Filter(filter::{Filter, FilterConfig, RawFilter}),
        "select" => Select(select::{Select, SelectConfig, RawSelect}),
        "aggregate" => Aggregate(aggregate::{Aggregate, AggregateConfig, RawAggregate}),
        "changed" => Changed(changed::{Changed, ChangedConfig, RawChanged}),
        "score" => Score(score::{Score, ScoreConfig, RawScore}),
        "upsert" => Upsert(upsert::{Upsert, UpsertConfig, RawUpsert}),
        "delete" => Delete(delete::{Delete, DeleteConfig, RawDelete}),
        "lookup" => Lookup(lookup::{Lookup, LookupConfig, RawLookup}),
    }
    internal {
        Read(read::Read),
    }
}
