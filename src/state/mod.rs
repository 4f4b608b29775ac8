//! Keyed operator state: per-key tables, owner-shard routing, and the delta
//! logs that let a shard capture its state at a barrier in O(1).
//!
//! # What lives here
//!
//! - [`owner_shard`] / [`key_hash`]: the stable key hash (see [`key`] docs;
//!   it is a compatibility contract).
//! - [`AggregateTable`] (one per `aggregate` step per shard) and
//!   [`ChangedTable`] (one per `changed` step per shard), built from
//!   [`TableSpec`]s and held together in a [`ShardState`], indexed by the
//!   state id the plan assigns in configuration order.
//! - [`Capture`]: one shard's changes during one epoch, handed to the
//!   checkpoint writer.
//!
//! Keys are `utf8`, `int64` or `bool` values; null and float keys are
//! rejected ([`KeyError`]). Keys are never removed.
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

mod agg;
mod changed;
pub mod key;
mod log;
mod slots;

pub use agg::{AggFn, AggOutput, AggValues, AggregateTable, parse_agg};
pub use changed::ChangedTable;
pub use key::{KeyError, key_hash, owner_shard};
pub use log::Capture;

pub(crate) use agg::AggLog;
pub(crate) use agg::{Acc, Op};
pub(crate) use changed::ChangedLog;
pub(crate) use key::{Key, key_type_name};
pub(crate) use log::TableLog;

use crate::row::{ColumnType, Val};

/// What one keyed step's state is: its name and kind.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    /// The step name; names table files and metrics. Unique per service.
    pub name: String,
    /// The kind of table and its parameters.
    pub kind: TableKind,
}

/// The kinds of keyed state.
#[derive(Debug, Clone, PartialEq)]
pub enum TableKind {
    /// An `aggregate` step: the ordered outputs.
    Aggregate(Vec<AggOutput>),
    /// A `changed` step: the type of the watched value expression.
    Changed {
        /// The value expression's type.
        value_type: ColumnType,
    },
}

impl TableSpec {
    /// An `aggregate` table.
    pub fn aggregate(name: impl Into<String>, outputs: Vec<AggOutput>) -> TableSpec {
        TableSpec {
            name: name.into(),
            kind: TableKind::Aggregate(outputs),
        }
    }

    /// A `changed` table.
    pub fn changed(name: impl Into<String>, value_type: ColumnType) -> TableSpec {
        TableSpec {
            name: name.into(),
            kind: TableKind::Changed { value_type },
        }
    }

    /// `"aggregate"` or `"changed"`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            TableKind::Aggregate(_) => "aggregate",
            TableKind::Changed { .. } => "changed",
        }
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
        if let TableKind::Aggregate(outputs) = &spec.kind {
            if outputs.is_empty() {
                return Err(StateError::Outputs {
                    table: spec.name.clone(),
                    message: "no outputs; declare at least one, e.g. `n = \"count()\"`".into(),
                });
            }
            for (j, o) in outputs.iter().enumerate() {
                if outputs[..j].iter().any(|p| p.name == o.name) {
                    return Err(StateError::Outputs {
                        table: spec.name.clone(),
                        message: format!("two outputs are named `{}`", o.name),
                    });
                }
            }
        }
    }
    Ok(())
}

/// One keyed step's state on one shard.
#[derive(Debug)]
pub enum Table {
    /// An `aggregate` step's table.
    Aggregate(AggregateTable),
    /// A `changed` step's table.
    Changed(ChangedTable),
}

impl Table {
    /// The step name.
    pub fn name(&self) -> &str {
        match self {
            Table::Aggregate(t) => t.name(),
            Table::Changed(t) => t.name(),
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        match self {
            Table::Aggregate(t) => t.len(),
            Table::Changed(t) => t.len(),
        }
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
        match self {
            Table::Aggregate(t) => t.update(key, now_ms(), input).map(Outputs::Values),
            Table::Changed(t) => t
                .update(key, input(0))
                .map(|changed| Outputs::One(Val::Bool(changed))),
        }
    }

    /// The key's state as values, without changing anything (what a `read`
    /// route answers): an aggregate's outputs, or a `changed` table's last
    /// value. `false` when the key has no state.
    pub fn get(&self, key: Val<'_>, mut value: impl FnMut(Val<'_>)) -> bool {
        match self {
            Table::Aggregate(t) => t.get(key).map(|v| v.iter().for_each(&mut value)),
            Table::Changed(t) => t.get(key).map(value),
        }
        .is_some()
    }
}

/// A keyed step's outputs for one key after an update.
#[derive(Debug, Clone, Copy)]
pub enum Outputs<'a> {
    /// An aggregate's output values.
    Values(AggValues<'a>),
    /// A single value (a `changed` step's bool).
    One(Val<'static>),
}

impl Outputs<'_> {
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
    pub fn get(&self, i: usize) -> Val<'static> {
        match self {
            Outputs::Values(v) => v.get(i),
            Outputs::One(v) => *v,
        }
    }
}

/// All keyed state of one shard: one [`Table`] per keyed step, indexed by
/// the step's state id (its position in the `TableSpec` list).
#[derive(Debug)]
pub struct ShardState {
    tables: Vec<Table>,
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
        let tables = specs
            .iter()
            .map(|s| match &s.kind {
                TableKind::Aggregate(outputs) => Table::Aggregate(AggregateTable::new(
                    s.name.clone(),
                    outputs.clone(),
                    logging,
                )),
                TableKind::Changed { value_type } => {
                    Table::Changed(ChangedTable::new(s.name.clone(), *value_type, logging))
                }
            })
            .collect();
        Ok(ShardState { tables })
    }

    /// The tables, by state id.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The table with state id `id`.
    #[inline]
    pub fn table_mut(&mut self, id: usize) -> Option<&mut Table> {
        self.tables.get_mut(id)
    }

    /// The table with state id `id`.
    #[inline]
    pub fn table(&self, id: usize) -> Option<&Table> {
        self.tables.get(id)
    }

    /// Total keys over all tables.
    pub fn keys(&self) -> usize {
        self.tables.iter().map(Table::len).sum()
    }

    /// The aggregate table with state id `id`; `None` if out of range or of
    /// another kind.
    #[inline]
    pub fn aggregate(&self, id: usize) -> Option<&AggregateTable> {
        match self.tables.get(id) {
            Some(Table::Aggregate(t)) => Some(t),
            _ => None,
        }
    }

    /// Mutable [`ShardState::aggregate`].
    #[inline]
    pub fn aggregate_mut(&mut self, id: usize) -> Option<&mut AggregateTable> {
        match self.tables.get_mut(id) {
            Some(Table::Aggregate(t)) => Some(t),
            _ => None,
        }
    }

    /// The changed table with state id `id`; `None` if out of range or of
    /// another kind.
    #[inline]
    pub fn changed(&self, id: usize) -> Option<&ChangedTable> {
        match self.tables.get(id) {
            Some(Table::Changed(t)) => Some(t),
            _ => None,
        }
    }

    /// Mutable [`ShardState::changed`].
    #[inline]
    pub fn changed_mut(&mut self, id: usize) -> Option<&mut ChangedTable> {
        match self.tables.get_mut(id) {
            Some(Table::Changed(t)) => Some(t),
            _ => None,
        }
    }

    /// Takes this shard's changes since the previous capture, as of now, for
    /// epoch `epoch`: swaps every table's delta log with the (cleared) logs of
    /// `spare`. O(number of tables); allocates only when `spare` is `None` or
    /// was not made by this state (then a fresh, empty one is built).
    pub fn capture(&mut self, shard: usize, epoch: u64, spare: Option<Capture>) -> Capture {
        let mut cap = match spare {
            Some(c) if self.fits(&c) => c,
            _ => self.empty_capture(),
        };
        for (table, log) in self.tables.iter_mut().zip(cap.logs.iter_mut()) {
            match (table, log) {
                (Table::Aggregate(t), TableLog::Aggregate(l)) => t.swap_log(l),
                (Table::Changed(t), TableLog::Changed(l)) => t.swap_log(l),
                // `fits` checked that the kinds line up.
                _ => {}
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
            logs: self
                .tables
                .iter()
                .map(|t| match t {
                    Table::Aggregate(_) => TableLog::Aggregate(AggLog::default()),
                    Table::Changed(_) => TableLog::Changed(ChangedLog::default()),
                })
                .collect(),
        }
    }

    fn fits(&self, cap: &Capture) -> bool {
        cap.logs.len() == self.tables.len()
            && self.tables.iter().zip(&cap.logs).all(|(t, l)| {
                matches!(
                    (t, l),
                    (Table::Aggregate(_), TableLog::Aggregate(_))
                        | (Table::Changed(_), TableLog::Changed(_))
                )
            })
    }

    pub(crate) fn restore_aggregate(
        &mut self,
        id: usize,
        key: Val<'_>,
        accs: &[Acc],
    ) -> Result<(), UpdateError> {
        match self.tables.get_mut(id) {
            Some(Table::Aggregate(t)) => t.restore(key, accs),
            _ => Ok(()),
        }
    }

    pub(crate) fn restore_changed(
        &mut self,
        id: usize,
        key: Val<'_>,
        value: Val<'_>,
    ) -> Result<(), UpdateError> {
        match self.tables.get_mut(id) {
            Some(Table::Changed(t)) => t.restore(key, value),
            _ => Ok(()),
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
        match &cap.logs[0] {
            TableLog::Aggregate(l) => {
                assert_eq!(l.slot_base, 0);
                assert_eq!(l.slots, vec![0, 1]);
                // a: count 2, sum 4 (one record, latest state)
                assert_eq!(l.accs[0], Acc { n: 2, v: 0 });
                assert_eq!(l.accs[1], Acc { n: 1, v: 4 });
            }
            TableLog::Changed(_) => panic!("wrong kind"),
        }

        // After the barrier: a new epoch's log, old capture untouched.
        st.aggregate_mut(0)
            .unwrap()
            .update(Val::Str("b"), 1, |_| Val::Int(10))
            .unwrap();
        let mut cap2 = st.capture(3, 8, Some(cap));
        assert_eq!(cap2.changed_keys(), 1);
        assert_eq!(cap2.new_keys(), 0);
        match &cap2.logs[0] {
            TableLog::Aggregate(l) => {
                assert_eq!(l.slot_base, 2);
                assert_eq!(l.slots, vec![1]);
                assert_eq!(l.accs[1], Acc { n: 1, v: 12 });
            }
            TableLog::Changed(_) => panic!("wrong kind"),
        }
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
