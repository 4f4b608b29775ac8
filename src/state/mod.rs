//! Keyed operator state: per-key tables, owner-shard routing, and the delta
//! logs that let a shard capture its state at a barrier in O(1).
//!
//! # What lives here
//!
//! - [`owner_shard`] / [`key_hash`]: the stable key hash (see [`key`] docs;
//!   it is a compatibility contract).
//! - [`AggregateTable`] (one per `aggregate` step per shard),
//!   [`ChangedTable`] (one per `changed` step per shard) and
//!   [`DeclaredTable`] (one per `[[table]]` per shard), built from
//!   [`TableSpec`]s and held together in a [`ShardState`], indexed by the
//!   state id the plan assigns (declared tables first, then keyed steps in
//!   configuration order).
//! - [`Capture`]: one shard's changes during one epoch, handed to the
//!   checkpoint writer.
//!
//! Keys are `utf8`, `int64` or `bool` values; null and float keys are
//! rejected ([`KeyError`]). Keys are never removed from the slot index (a
//! declared table's deleted row keeps its slot, marked absent).
//!
//! # The checkpoint seam
//!
//! Neither this file nor the checkpoint code matches on table kinds. A kind
//! is one file in `state/` and one line in the registry below (the
//! `table_kinds!` macro of `kind.rs`, which generates [`TableKind`],
//! [`Table`] and their dispatch). Its spec implements `KindSpec`: building
//! its table, validation, its state columns ([`TableSpec::state_columns`],
//! the Arrow columns of its per-key state), its read values, its
//! compatibility with a checkpoint ([`TableSpec::reconcile`]) and its
//! manifest record ([`TableDesc`]). Its table implements `KeyedTable` (the
//! record of a changed key in the one generic `DeltaLog`, restore from
//! those columns, read values) and, for a keyed step, `StepTable` (the
//! per-request update). A keyed step kind is that file, its step file in
//! `operator/` and one registry line in each.
//!
//! # Capturing state without stalling (the design)
//!
//! The shard never copies or walks its state at a barrier. Instead every
//! table keeps a *delta log* next to its data:
//!
//! - When a key changes, the table writes the key's new state into the log:
//!   appended the first time the key changes in this epoch, overwritten in
//!   place after that (each slot remembers its log position in `marks`, and
//!   the position is trusted only if the log entry there names the same slot,
//!   so stale marks from earlier epochs need no clearing). New keys are also
//!   copied into the log's key arena, in slot order.
//! - At a barrier, [`ShardState::capture`] swaps each table's log with an
//!   empty spare (O(number of tables), no allocation with a recycled spare)
//!   and the filled logs go to the writer as one [`Capture`]. The pause is a
//!   handful of pointer swaps, independent of the number of keys
//!   (`benches/checkpoint_pause.rs`).
//! - The checkpoint writer keeps a *mirror* of every shard's tables, indexed
//!   by the same slot numbers. It applies each capture in order (new keys
//!   push slots, records overwrite slot state), then writes either the
//!   capture's records (a delta file) or the whole mirror (a full snapshot,
//!   every `full_every` epochs and after any failure). Recovery = newest full
//!   base + the deltas after it, each row an upsert of a key's full state.
//! - The writer clears the capture and sends it back to the shard, which
//!   takes it as the spare at the next barrier: in steady state two sets of
//!   log buffers circulate and nothing is allocated on the shard.
//!
//! ## Invariants
//!
//! - Slots are dense, assigned in insertion order, never reused: slot `s` of
//!   a table names the same key on the shard and in the writer's mirror.
//! - A log holds at most one record per slot, with that slot's state as of
//!   the last update before the barrier; `slot_base` is the table's slot
//!   count when the log became active, and the log's new keys are slots
//!   `slot_base..` in order.
//! - The writer must apply every capture of a shard, in order, exactly once
//!   (it does, even when writing the file fails).
//!
//! ## Memory under a flood of updates
//!
//! Because a key changed many times in one epoch keeps a single record, a
//! log never holds more records than there are keys, however many updates
//! arrive: at most one copy of the state on the shard side (a hot key set
//! costs far less). The coordinator has at most one epoch in flight, so at
//! most one filled log per shard is on its way to the writer; if the disk
//! is slower than the interval, epochs get longer, not more numerous. Worst
//! case memory is therefore the state, one log (≤ state), the in-flight
//! capture (≤ state) and the writer's mirror (= state). Per update the cost
//! is one extra copy of the key's accumulators (16 bytes per output).
//!
//! Growing a table (hash index rehash, vector doubling) is O(keys) once per
//! doubling on insert, independent of checkpoints; [`AggregateTable::reserve`]
//! moves it to start-up when the key count is known.

mod desc;
pub mod key;
mod kind;
mod log;
mod slots;

// The registry: one line per table kind (see `kind.rs`).
kind::table_kinds! {
    steps {
        "aggregate" => Aggregate(agg::{AggregateSpec, AggregateTable}),
        "changed" => Changed(changed::{ChangedSpec, ChangedTable}),
    }
    declared {
        "table" => Declared(declared::{DeclaredSpec, DeclaredTable}),
    }
}

pub use agg::{AggFn, AggOutput, AggValues, parse_agg};
pub use declared::Scope;
pub use desc::{ColumnDesc, OutputDesc, TableDesc};
pub use key::{KeyError, key_hash, owner_shard};
pub use log::Capture;

pub(crate) use key::{Key, key_type_name};
pub(crate) use log::DeltaLog;

use kind::{KindSpec, StepOf, StepTable};

use crate::row::{ColumnType, Val};

/// One column of a table's per-key state as checkpoint files store it
/// (`<table>.<...>`): what a kind's delta-log records hold, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct StateColumn {
    /// The column's name in files, prefixed by the table's name.
    pub name: String,
    /// Its value type.
    pub ty: ColumnType,
    /// An int64 of unix milliseconds, stored as an Arrow timestamp.
    pub time: bool,
}

impl StateColumn {
    pub(crate) fn new(name: String, ty: ColumnType) -> StateColumn {
        StateColumn {
            name,
            ty,
            time: false,
        }
    }
}

/// The checkpoint seam: what the checkpoint code needs of every keyed table
/// on a shard, whatever its kind. A kind's per-key state is its
/// [`TableSpec::state_columns`]; its delta log records those columns
/// ([`DeltaLog`]), and `restore` takes them back. The checkpoint writer and
/// recovery see tables only through this trait (recovery and capture are
/// not on the request path, so `dyn` costs nothing there).
pub(crate) trait KeyedTable {
    /// The table's (step's) name.
    fn name(&self) -> &str;
    /// Number of keys with state.
    fn len(&self) -> usize;
    /// Swaps the active delta log with `spare` (cleared first); O(1).
    fn swap_log(&mut self, spare: &mut DeltaLog);
    /// Sets `key`'s state from its state columns (`None`: the column is not
    /// in the file), logged like an update.
    fn restore(
        &mut self,
        key: Val<'_>,
        cols: &[Option<Val<'_>>],
        now_ms: i64,
    ) -> Result<(), UpdateError>;
    /// The key's values as a read route answers them; `false` when the key
    /// has no state.
    fn get_values(&self, key: Val<'_>, value: &mut dyn FnMut(Val<'_>)) -> bool;
    /// Every key and its read values.
    fn for_each(&self, f: &mut dyn FnMut(Val<'_>, &mut dyn Iterator<Item = Val<'_>>));
}

/// What one keyed step's state is: its name and kind.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    /// The step name; names table files and metrics. Unique per service.
    pub name: String,
    /// The kind of table and its parameters.
    pub kind: TableKind,
}

impl TableSpec {
    /// The kind's name: `"aggregate"`, `"changed"` or `"table"`.
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// True for a replicated declared table: every shard holds every key,
    /// and checkpoints write it once (in shard 0's file).
    pub fn replicated(&self) -> bool {
        self.kind.replicated()
    }

    /// The columns of the table's per-key state in checkpoint files, in the
    /// order its delta-log records hold them.
    pub fn state_columns(&self) -> Vec<StateColumn> {
        self.kind.state_columns(&self.name)
    }

    /// What a read of one key answers, in order: name, type, and whether the
    /// value is unix milliseconds (a time).
    pub fn read_values(&self) -> Vec<(String, ColumnType, bool)> {
        self.kind.read_values()
    }

    /// Whether state written for `written` (same name) restores into this
    /// table; warnings for parts that are new or dropped. The error says
    /// how the checkpoint and the configuration disagree.
    pub fn reconcile(&self, written: &TableSpec, warnings: &mut Vec<String>) -> Result<(), String> {
        self.kind
            .reconcile(&self.name, &written.kind, warnings)
            .unwrap_or_else(|| {
                Err(format!(
                    "it is a `{}` step in the checkpoint but a `{}` step in the configuration",
                    written.kind_name(),
                    self.kind_name()
                ))
            })
    }
}

/// A table declaration that cannot be built. Raised once, at start-up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    /// An aggregate output's spec is invalid.
    #[error("aggregate output `{output}`: {message}")]
    Output {
        /// The output name.
        output: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A table has an empty name.
    #[error("keyed state table #{index} has an empty name; every keyed step needs a name")]
    EmptyName {
        /// Position in the table list.
        index: usize,
    },
    /// Two tables share a name.
    #[error("two keyed steps are named `{name}`; keyed step names must be unique")]
    DuplicateTable {
        /// The repeated name.
        name: String,
    },
    /// An aggregate table has no outputs, or two outputs share a name.
    #[error("aggregate `{table}`: {message}")]
    Outputs {
        /// The table name.
        table: String,
        /// What is wrong.
        message: String,
    },
}

/// Why one update was refused. Small and `Copy`: built on the request path.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum UpdateError {
    /// The key is null or a float.
    #[error(transparent)]
    Key(KeyError),
    /// An input value has the wrong type (output index for aggregates, 0 for
    /// the value of a `changed` step).
    #[error("input of output #{output} is {got}, expected {expected}")]
    Input {
        /// The output index in declared order.
        output: usize,
        /// The declared input type.
        expected: ColumnType,
        /// The type received.
        got: &'static str,
    },
    /// The table holds 2^32 - 1 keys on this shard.
    #[error("the table holds the maximum of 4294967295 keys on this shard")]
    Full,
}

/// Checks a table list: non-empty unique names, aggregate outputs non-empty
/// with unique names.
pub fn validate_tables(specs: &[TableSpec]) -> Result<(), StateError> {
    for (i, spec) in specs.iter().enumerate() {
        if spec.name.is_empty() {
            return Err(StateError::EmptyName { index: i });
        }
        if specs[..i].iter().any(|s| s.name == spec.name) {
            return Err(StateError::DuplicateTable {
                name: spec.name.clone(),
            });
        }
        spec.kind.validate(&spec.name)?;
    }
    Ok(())
}

impl Table {
    /// The step name.
    pub fn name(&self) -> &str {
        self.keyed().name()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keyed().len()
    }

    /// True when the table has no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The per-key update of the table's kind: `input(i)` is the step's
    /// `i`-th input (an aggregate's output inputs; a `changed` step's value),
    /// `now_ms` the request time (read only if the kind needs it). Returns
    /// the step's outputs for the key.
    #[inline]
    pub fn update<'v>(
        &mut self,
        key: Val<'_>,
        now_ms: impl FnOnce() -> i64,
        input: impl Fn(usize) -> Val<'v>,
    ) -> Result<Outputs<'_>, UpdateError> {
        self.update_step(key, now_ms, input)
    }

    /// The key's state as values, without changing anything (what a `read`
    /// route answers): an aggregate's outputs, or a `changed` table's last
    /// value. `false` when the key has no state.
    pub fn get(&self, key: Val<'_>, mut value: impl FnMut(Val<'_>)) -> bool {
        self.keyed().get_values(key, &mut value)
    }

    /// Calls `f` with every key and its read values, whatever the kind.
    pub fn for_each(&self, mut f: impl FnMut(Val<'_>, &mut dyn Iterator<Item = Val<'_>>)) {
        self.keyed().for_each(&mut f);
    }
}

/// A keyed step's outputs for one key after an update.
#[derive(Debug, Clone, Copy)]
pub enum Outputs<'a> {
    /// An aggregate's output values.
    Values(AggValues<'a>),
    /// A single value (a `changed` step's bool).
    One(Val<'a>),
}

impl<'a> Outputs<'a> {
    /// Number of outputs.
    pub fn len(&self) -> usize {
        match self {
            Outputs::Values(v) => v.len(),
            Outputs::One(_) => 1,
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Output `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Val<'a> {
        match self {
            Outputs::Values(v) => v.get(i),
            Outputs::One(v) => *v,
        }
    }
}

/// Where a state id's table lives in a [`ShardState`].
#[derive(Debug, Clone, Copy)]
enum Place {
    /// `tables[i]`: a keyed step's table.
    Step(usize),
    /// `declared[i]`: a declared `[[table]]`.
    Declared(usize),
}

/// All keyed state of one shard: one table per [`TableSpec`], indexed by
/// its state id (its position in the spec list). Keyed steps' tables are
/// [`Table`]s ([`ShardState::tables`]); declared `[[table]]`s are
/// [`DeclaredTable`]s ([`ShardState::declared`]).
#[derive(Debug)]
pub struct ShardState {
    tables: Vec<Table>,
    declared: Vec<DeclaredTable>,
    places: Vec<Place>,
    /// Per state id: a replicated table (logged by shard 0 only).
    replicated: Vec<bool>,
}

impl ShardState {
    /// Empty tables for `specs`, recording changes for checkpoints.
    pub fn new(specs: &[TableSpec]) -> Result<ShardState, StateError> {
        ShardState::build(specs, true)
    }

    /// Empty tables for `specs` that record no delta log: for services
    /// without a `[checkpoint]` section (capturing such a state yields empty
    /// captures).
    pub fn without_checkpoints(specs: &[TableSpec]) -> Result<ShardState, StateError> {
        ShardState::build(specs, false)
    }

    fn build(specs: &[TableSpec], logging: bool) -> Result<ShardState, StateError> {
        validate_tables(specs)?;
        let mut st = ShardState {
            tables: Vec::new(),
            declared: Vec::new(),
            places: Vec::with_capacity(specs.len()),
            replicated: specs.iter().map(TableSpec::replicated).collect(),
        };
        for s in specs {
            let place = st.place(s, logging);
            st.places.push(place);
        }
        Ok(st)
    }

    /// The keyed steps' tables, in state-id order (declared tables are in
    /// [`ShardState::declared`]).
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The declared `[[table]]`s, in state-id order.
    pub fn declared(&self) -> &[DeclaredTable] {
        &self.declared
    }

    /// The keyed step's table with state id `id`.
    #[inline]
    pub fn table_mut(&mut self, id: usize) -> Option<&mut Table> {
        match self.places.get(id) {
            Some(Place::Step(i)) => self.tables.get_mut(*i),
            _ => None,
        }
    }

    /// The keyed step's table with state id `id`.
    #[inline]
    pub fn table(&self, id: usize) -> Option<&Table> {
        match self.places.get(id) {
            Some(Place::Step(i)) => self.tables.get(*i),
            _ => None,
        }
    }

    /// True when `op` writes a replicated table (the sequencer's work).
    pub fn replicated_write(&self, op: &crate::forward::KeyedOp) -> bool {
        use crate::forward::KeyedOp;
        match op {
            KeyedOp::Upsert { table, .. } | KeyedOp::Delete { table, .. } => {
                self.replicated.get(*table).copied().unwrap_or(false)
            }
            _ => false,
        }
    }

    /// The declared table with state id `id`.
    #[inline]
    pub fn declared_table(&self, id: usize) -> Option<&DeclaredTable> {
        match self.places.get(id) {
            Some(Place::Declared(i)) => self.declared.get(*i),
            _ => None,
        }
    }

    /// Mutable [`ShardState::declared_table`].
    #[inline]
    pub fn declared_table_mut(&mut self, id: usize) -> Option<&mut DeclaredTable> {
        match self.places.get(id) {
            Some(Place::Declared(i)) => self.declared.get_mut(*i),
            _ => None,
        }
    }

    /// Total keys over all tables.
    pub fn keys(&self) -> usize {
        self.tables.iter().map(Table::len).sum::<usize>()
            + self.declared.iter().map(DeclaredTable::len).sum::<usize>()
    }

    /// The keyed step's table with state id `id` if it is a `T` (the
    /// typed access of tests and benches: [`ShardState::aggregate`], ...).
    #[inline]
    pub(crate) fn step_table<T: StepOf>(&self, id: usize) -> Option<&T> {
        self.table(id).and_then(T::of)
    }

    /// Mutable [`ShardState::step_table`].
    #[inline]
    pub(crate) fn step_table_mut<T: StepOf>(&mut self, id: usize) -> Option<&mut T> {
        self.table_mut(id).and_then(T::of_mut)
    }

    /// Table `id` through the checkpoint seam.
    fn keyed(&self, id: usize) -> Option<&dyn KeyedTable> {
        Some(match *self.places.get(id)? {
            Place::Step(i) => self.tables[i].keyed(),
            Place::Declared(i) => &self.declared[i],
        })
    }

    fn keyed_mut(&mut self, id: usize) -> Option<&mut dyn KeyedTable> {
        Some(match *self.places.get(id)? {
            Place::Step(i) => self.tables[i].keyed_mut(),
            Place::Declared(i) => &mut self.declared[i],
        })
    }

    /// The key's values as a read answers them (an aggregate's outputs, a
    /// `changed` table's last value, a declared table's columns); `false`
    /// when the key has no state.
    pub fn get(&self, id: usize, key: Val<'_>, mut value: impl FnMut(Val<'_>)) -> bool {
        self.keyed(id)
            .is_some_and(|t| t.get_values(key, &mut value))
    }

    /// Calls `f` with every key of table `id` and its read values.
    pub fn for_each(
        &self,
        id: usize,
        mut f: impl FnMut(Val<'_>, &mut dyn Iterator<Item = Val<'_>>),
    ) {
        if let Some(t) = self.keyed(id) {
            t.for_each(&mut f);
        }
    }

    /// Takes this shard's changes since the previous capture, as of now, for
    /// epoch `epoch`: swaps every table's delta log with the (cleared) logs of
    /// `spare`. O(number of tables); allocates only when `spare` is `None` or
    /// was not made by this state (then a fresh, empty one is built).
    ///
    /// A replicated table is written once per epoch, from shard 0: on other
    /// shards its log is emptied (every shard holds the same rows).
    pub fn capture(&mut self, shard: usize, epoch: u64, spare: Option<Capture>) -> Capture {
        let mut cap = match spare {
            Some(c) if c.logs.len() == self.places.len() => c,
            _ => self.empty_capture(),
        };
        for (id, log) in cap.logs.iter_mut().enumerate() {
            if let Some(t) = self.keyed_mut(id) {
                t.swap_log(log);
            }
            if shard != 0 && self.replicated[id] {
                log.clear();
            }
        }
        cap.shard = shard;
        cap.epoch = epoch;
        cap
    }

    /// An empty capture shaped for this state (a spare for [`capture`](Self::capture)).
    pub fn empty_capture(&self) -> Capture {
        Capture {
            shard: 0,
            epoch: 0,
            logs: (0..self.places.len())
                .map(|_| DeltaLog::default())
                .collect(),
        }
    }

    /// Sets `key`'s state in table `id` from its state columns (recovery).
    pub(crate) fn restore(
        &mut self,
        id: usize,
        key: Val<'_>,
        cols: &[Option<Val<'_>>],
        now_ms: i64,
    ) -> Result<(), UpdateError> {
        match self.keyed_mut(id) {
            Some(t) => t.restore(key, cols, now_ms),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<TableSpec> {
        vec![
            TableSpec::aggregate(
                "clicks",
                vec![
                    AggOutput::parse("n", "count()", |_| None).unwrap(),
                    AggOutput::parse("total", "sum(amount)", |_| Some(ColumnType::Int64)).unwrap(),
                ],
            ),
            TableSpec::changed("mode", ColumnType::Utf8),
        ]
    }

    #[test]
    fn validation_names_the_problem() {
        let mut s = specs();
        s[1].name = "clicks".into();
        assert_eq!(
            ShardState::new(&s).unwrap_err(),
            StateError::DuplicateTable {
                name: "clicks".into()
            }
        );
        let s = vec![TableSpec::aggregate("a", vec![])];
        assert!(
            ShardState::new(&s)
                .unwrap_err()
                .to_string()
                .contains("no outputs")
        );
        let o = AggOutput::parse("n", "count()", |_| None).unwrap();
        let s = vec![TableSpec::aggregate("a", vec![o.clone(), o])];
        assert!(
            ShardState::new(&s)
                .unwrap_err()
                .to_string()
                .contains("two outputs")
        );
    }

    #[test]
    fn capture_takes_exactly_the_changes_before_the_barrier() {
        let mut st = ShardState::new(&specs()).unwrap();
        let agg = st.aggregate_mut(0).unwrap();
        agg.update(Val::Str("a"), 1, |_| Val::Int(1)).unwrap();
        agg.update(Val::Str("b"), 1, |_| Val::Int(2)).unwrap();
        agg.update(Val::Str("a"), 1, |_| Val::Int(3)).unwrap();
        st.changed_mut(1)
            .unwrap()
            .update(Val::Int(9), Val::Str("on"))
            .unwrap();
        assert!(st.changed_mut(0).is_none());
        assert!(st.aggregate(1).is_none());

        let cap = st.capture(3, 7, None);
        assert_eq!((cap.shard(), cap.epoch()), (3, 7));
        assert_eq!(cap.changed_keys(), 3);
        assert_eq!(cap.new_keys(), 3);
        let l = &cap.logs[0];
        assert_eq!(l.slot_base, 0);
        assert_eq!(l.slots, vec![0, 1]);
        // a: count 2, sum 4 (one record, latest state)
        assert_eq!(l.val(0, 0).unwrap(), Val::Int(2));
        assert_eq!(l.val(0, 1).unwrap(), Val::Int(4));

        // After the barrier: a new epoch's log, old capture untouched.
        st.aggregate_mut(0)
            .unwrap()
            .update(Val::Str("b"), 1, |_| Val::Int(10))
            .unwrap();
        let mut cap2 = st.capture(3, 8, Some(cap));
        assert_eq!(cap2.changed_keys(), 1);
        assert_eq!(cap2.new_keys(), 0);
        let l = &cap2.logs[0];
        assert_eq!(l.slot_base, 2);
        assert_eq!(l.slots, vec![1]);
        assert_eq!(l.val(0, 1).unwrap(), Val::Int(12));
        cap2.recycle();
        assert_eq!(cap2.changed_keys(), 0);
    }

    #[test]
    fn unlogged_state_captures_nothing() {
        let mut st = ShardState::without_checkpoints(&specs()).unwrap();
        st.aggregate_mut(0)
            .unwrap()
            .update(Val::Str("a"), 1, |_| Val::Int(1))
            .unwrap();
        assert_eq!(st.keys(), 1);
        assert_eq!(st.capture(0, 1, None).changed_keys(), 0);
    }

    #[test]
    fn foreign_spare_is_replaced() {
        let mut st = ShardState::new(&specs()).unwrap();
        let other = ShardState::new(&specs()[1..]).unwrap().empty_capture();
        let cap = st.capture(0, 1, Some(other));
        assert_eq!(cap.logs.len(), 2);
    }
}
