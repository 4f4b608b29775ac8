//! Per-key aggregates: the function specs, their accumulators and the
//! [`AggregateTable`] one `aggregate` step owns on one shard.
//!
//! Every output keeps one 16-byte [`Acc`] per key, whatever its function, so
//! a key's accumulators are one contiguous run of `width` `Acc`s in a flat
//! vector and the delta log copies them with one `memcpy`.
//!
//! | function      | `Acc.n`                        | `Acc.v`                        | output            |
//! |---------------|--------------------------------|--------------------------------|-------------------|
//! | `count()`     | number of updates              | unused                         | int64             |
//! | `sum(x)`      | 1 once a non-null value was seen | sum (i64 or f64 bits)        | type of `x`, null before the first value |
//! | `min`/`max`/`last(x)` | 1 once a value was seen | value (i64 or f64 bits)        | type of `x`, null before the first value |
//! | `avg(x)`      | number of non-null values      | f64 sum                        | float64, null before the first value |
//! | `ewma(x, a)`  | 1 once a value was seen        | f64 average: first value, then `a·x + (1-a)·prev` | float64 |
//! | `first_seen()`| 1                              | unix ms of the key's first update | int64          |
//!
//! Nulls in inputs are skipped, as SQL aggregates do; `count()` counts
//! updates (requests), not values. Integer sums saturate at the `i64` bounds
//! instead of wrapping.

use hashbrown::HashTable;

use super::key::{Key, KeyError, spread, table_hash};
use super::log::DeltaLog;
use super::slots::{Entry, find_slot, insert_key};
use super::kind::{KindSpec, StepTable};
use super::{
    KeyedTable, OutputDesc, Outputs, ShardState, StateColumn, StateError, TableDesc, TableKind,
    TableSpec, UpdateError,
};
use crate::row::{ColumnType, Val};

mod spec;
pub use spec::{AggFn, AggOutput, AggregateSpec, parse_agg};

/// One output's accumulator for one key; see the module table for what `n`
/// and `v` hold per function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Acc {
    pub(crate) n: i64,
    pub(crate) v: u64,
}

impl Acc {
    #[inline]
    fn f(self) -> f64 {
        f64::from_bits(self.v)
    }
    #[inline]
    fn i(self) -> i64 {
        self.v as i64
    }
}

/// The resolved operation of one output: function plus input type, decided
/// once when the table is built so the hot path matches on one small enum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Count,
    SumI,
    SumF,
    MinI,
    MinF,
    MaxI,
    MaxF,
    Avg,
    Ewma(f64),
    LastI,
    LastF,
    FirstSeen,
}

impl Op {
    pub(crate) fn of(out: &AggOutput) -> Op {
        let int = out.input_type == Some(ColumnType::Int64);
        match out.func {
            AggFn::Count => Op::Count,
            AggFn::FirstSeen => Op::FirstSeen,
            AggFn::Avg => Op::Avg,
            AggFn::Ewma(a) => Op::Ewma(a),
            AggFn::Sum if int => Op::SumI,
            AggFn::Sum => Op::SumF,
            AggFn::Min if int => Op::MinI,
            AggFn::Min => Op::MinF,
            AggFn::Max if int => Op::MaxI,
            AggFn::Max => Op::MaxF,
            AggFn::Last if int => Op::LastI,
            AggFn::Last => Op::LastF,
        }
    }

    #[inline]
    fn int_input(self) -> bool {
        matches!(self, Op::SumI | Op::MinI | Op::MaxI | Op::LastI)
    }

    /// Checks an input before anything is changed, so a bad request leaves
    /// the key untouched.
    #[inline]
    fn check(self, input: Val<'_>) -> Result<(), &'static str> {
        match (self, input) {
            (Op::Count | Op::FirstSeen, _) | (_, Val::Null | Val::Int(_)) => Ok(()),
            (op, Val::Float(_)) if !op.int_input() => Ok(()),
            (_, Val::Float(_)) => Err("float64"),
            (_, Val::Bool(_)) => Err("bool"),
            (_, Val::Str(_)) => Err("utf8"),
            (_, Val::Array(a)) => Err(a.ty().name()),
        }
    }

    /// The accumulator of a key seen for the first time.
    #[inline]
    pub(crate) fn init(self, now_ms: i64) -> Acc {
        match self {
            Op::FirstSeen => Acc {
                n: 1,
                v: now_ms as u64,
            },
            _ => Acc::default(),
        }
    }

    /// Folds one (checked) input into the accumulator.
    #[inline]
    fn fold(self, acc: &mut Acc, input: Val<'_>) {
        if let Op::Count = self {
            acc.n = acc.n.saturating_add(1);
            return;
        }
        let (int, float) = match input {
            Val::Int(i) => (i, i as f64),
            Val::Float(f) => (0, f),
            _ => return,
        };
        let first = acc.n == 0;
        match self {
            Op::Count | Op::FirstSeen => return,
            Op::SumI => {
                acc.v = if first {
                    int
                } else {
                    acc.i().saturating_add(int)
                } as u64
            }
            Op::SumF => acc.v = (if first { float } else { acc.f() + float }).to_bits(),
            Op::MinI => acc.v = if first { int } else { acc.i().min(int) } as u64,
            Op::MinF => acc.v = (if first { float } else { acc.f().min(float) }).to_bits(),
            Op::MaxI => acc.v = if first { int } else { acc.i().max(int) } as u64,
            Op::MaxF => acc.v = (if first { float } else { acc.f().max(float) }).to_bits(),
            Op::LastI => acc.v = int as u64,
            Op::LastF => acc.v = float.to_bits(),
            Op::Ewma(a) => {
                acc.v = (if first {
                    float
                } else {
                    a * float + (1.0 - a) * acc.f()
                })
                .to_bits()
            }
            Op::Avg => {
                acc.v = (if first { float } else { acc.f() + float }).to_bits();
                acc.n += 1;
                return;
            }
        }
        acc.n = 1;
    }

    /// The output value of an accumulator.
    #[inline]
    pub(crate) fn output(self, acc: Acc) -> Val<'static> {
        match self {
            Op::Count => Val::Int(acc.n),
            Op::FirstSeen => Val::Int(acc.i()),
            _ if acc.n == 0 => Val::Null,
            Op::Avg => Val::Float(acc.f() / acc.n as f64),
            Op::SumI | Op::MinI | Op::MaxI | Op::LastI => Val::Int(acc.i()),
            Op::SumF | Op::MinF | Op::MaxF | Op::LastF | Op::Ewma(_) => Val::Float(acc.f()),
        }
    }

    /// Rebuilds an accumulator from what a checkpoint file stores: the
    /// output value, plus the running sum and count for `avg`.
    pub(crate) fn restore(self, value: Val<'_>, avg_sum: f64, avg_n: i64) -> Acc {
        match (self, value) {
            (Op::Avg, _) => Acc {
                n: avg_n,
                v: avg_sum.to_bits(),
            },
            (Op::Count, Val::Int(n)) => Acc { n, v: 0 },
            (Op::FirstSeen, Val::Int(ms)) => Acc { n: 1, v: ms as u64 },
            (_, Val::Int(i)) if self.int_input() => Acc { n: 1, v: i as u64 },
            (_, Val::Float(f)) if !self.int_input() => Acc {
                n: 1,
                v: f.to_bits(),
            },
            _ => Acc::default(),
        }
    }

    /// Number of state columns of this output in checkpoint files: `avg`
    /// keeps its running sum and count before its value.
    pub(crate) fn state_width(self) -> usize {
        if let Op::Avg = self { 3 } else { 1 }
    }

    /// The state columns' values of an accumulator (see
    /// [`AggOutput::state_columns`]): `[sum, n, value]` for `avg`, `[value]`
    /// for the others.
    #[inline]
    pub(crate) fn state_values(self, acc: Acc) -> [Option<Val<'static>>; 3] {
        match self {
            Op::Avg => [
                Some(Val::Float(acc.f())),
                Some(Val::Int(acc.n)),
                Some(self.output(acc)),
            ],
            _ => [Some(self.output(acc)), None, None],
        }
    }

    /// The accumulator from its state columns (`None`: the column is not in
    /// the file, the output is new and starts as a new key's would).
    pub(crate) fn acc_from_state(self, cols: &[Option<Val<'_>>], now_ms: i64) -> Acc {
        let value = cols.last().copied().flatten();
        match (value, self) {
            (None, _) => self.init(now_ms),
            (Some(v), Op::Avg) => {
                let sum = match cols.first().copied().flatten() {
                    Some(Val::Float(f)) => f,
                    _ => 0.0,
                };
                let n = match cols.get(1).copied().flatten() {
                    Some(Val::Int(n)) => n,
                    _ => 0,
                };
                self.restore(v, sum, n)
            }
            (Some(v), _) => self.restore(v, 0.0, 0),
        }
    }
}

/// One key's output values, borrowed from its table. Values are numbers or
/// null, so they are `Val<'static>` and can be stored anywhere.
#[derive(Debug, Clone, Copy)]
pub struct AggValues<'a> {
    ops: &'a [Op],
    accs: &'a [Acc],
}

impl<'a> AggValues<'a> {
    /// Number of outputs.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True for a table without outputs (never built).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The value of output `i` (in the step's declared order).
    #[inline]
    pub fn get(&self, i: usize) -> Val<'static> {
        self.ops[i].output(self.accs[i])
    }

    /// All output values in declared order.
    pub fn iter(&self) -> impl Iterator<Item = Val<'static>> + 'a {
        let (ops, accs) = (self.ops, self.accs);
        ops.iter().zip(accs).map(|(op, acc)| op.output(*acc))
    }
}

/// Per-key aggregate state of one `aggregate` step on one shard.
///
/// Keys live in slots numbered in insertion order; slots are never removed,
/// so a slot number names the same key for the table's whole life (the
/// checkpoint writer's mirror relies on that). Updating an existing key does
/// not allocate; a new key allocates its owned copy (and amortized growth).
#[derive(Debug)]
pub struct AggregateTable {
    name: String,
    outputs: Vec<AggOutput>,
    ops: Box<[Op]>,
    index: HashTable<Entry>,
    keys: Vec<Key>,
    accs: Vec<Acc>,
    /// Per slot: where the key's record sits in the current delta log (valid
    /// only if `log.slots[mark] == slot`, which makes a stale mark harmless).
    marks: Vec<u32>,
    log: DeltaLog,
    logging: bool,
}

impl AggregateTable {
    pub(crate) fn new(name: String, outputs: Vec<AggOutput>, logging: bool) -> AggregateTable {
        let ops: Box<[Op]> = outputs.iter().map(Op::of).collect();
        let width = ops.iter().map(|op| op.state_width()).sum();
        AggregateTable {
            name,
            outputs,
            ops,
            index: HashTable::new(),
            keys: Vec::new(),
            accs: Vec::new(),
            marks: Vec::new(),
            log: DeltaLog::new(width),
            logging,
        }
    }

    /// The step name this table belongs to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The outputs, in declared order.
    pub fn outputs(&self) -> &[AggOutput] {
        &self.outputs
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key was ever updated.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Reserves room for `additional` more keys, so that growing the index
    /// (an O(keys) rehash) happens now rather than under a request.
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional, |e| spread(e.hash));
        self.keys.reserve(additional);
        self.accs.reserve(additional * self.ops.len());
        self.marks.reserve(additional);
    }

    #[cfg(test)]
    pub(crate) fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Folds one request into `key`'s accumulators and returns the updated
    /// output values.
    ///
    /// `input(i)` is the value of output `i`'s input column (called for every
    /// output, in order; the value is ignored for `count()` and
    /// `first_seen()`). An `int64` input is accepted where `float64` is
    /// expected; any other type mismatch is an error and leaves the key
    /// unchanged. `now_ms` (unix ms) is recorded by `first_seen()` when the
    /// key is new.
    #[inline]
    pub fn update<'v>(
        &mut self,
        key: Val<'_>,
        now_ms: i64,
        input: impl Fn(usize) -> Val<'v>,
    ) -> Result<AggValues<'_>, UpdateError> {
        Key::check(key)?;
        for (i, op) in self.ops.iter().enumerate() {
            op.check(input(i)).map_err(|got| UpdateError::Input {
                output: i,
                expected: self.outputs[i].input_type.unwrap_or(ColumnType::Float64),
                got,
            })?;
        }
        let hash = table_hash(key);
        let slot = match find_slot(&self.index, &self.keys, key, hash) {
            Some(slot) => slot,
            None => self.insert(key, hash, now_ms)?,
        };
        let w = self.ops.len();
        let accs = &mut self.accs[slot * w..slot * w + w];
        for (i, (op, acc)) in self.ops.iter().zip(accs.iter_mut()).enumerate() {
            op.fold(acc, input(i));
        }
        self.log_slot(slot);
        Ok(AggValues {
            ops: &self.ops,
            accs: &self.accs[slot * w..slot * w + w],
        })
    }

    /// The key's current output values, without changing anything (the read
    /// route). `None` for an unknown (or null/float) key.
    pub fn get(&self, key: Val<'_>) -> Option<AggValues<'_>> {
        Key::check(key).ok()?;
        let slot = find_slot(&self.index, &self.keys, key, table_hash(key))?;
        let w = self.ops.len();
        Some(AggValues {
            ops: &self.ops,
            accs: &self.accs[slot * w..slot * w + w],
        })
    }

    /// Every key with its values, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (Val<'_>, AggValues<'_>)> {
        let w = self.ops.len();
        self.keys.iter().enumerate().map(move |(slot, k)| {
            (
                k.as_val(),
                AggValues {
                    ops: &self.ops,
                    accs: &self.accs[slot * w..slot * w + w],
                },
            )
        })
    }

    fn insert(&mut self, key: Val<'_>, hash: u32, now_ms: i64) -> Result<usize, UpdateError> {
        let new_keys = self.logging.then_some(&mut self.log.new_keys);
        let slot = insert_key(
            &mut self.index,
            &mut self.keys,
            &mut self.marks,
            new_keys,
            key,
            hash,
        )?;
        self.accs.extend(self.ops.iter().map(|op| op.init(now_ms)));
        Ok(slot)
    }

    /// Records the slot's state columns in the delta log: appended the
    /// first time the slot changes in this epoch, overwritten in place after
    /// that, so the log holds at most one record per key.
    #[inline]
    fn log_slot(&mut self, slot: usize) {
        if !self.logging {
            return;
        }
        let w = self.ops.len();
        let accs = &self.accs[slot * w..slot * w + w];
        let values = self
            .ops
            .iter()
            .zip(accs)
            .flat_map(|(op, acc)| op.state_values(*acc).into_iter().flatten());
        self.log.record(&mut self.marks, slot, values);
    }

    /// Sets `key`'s accumulators to `accs` (recovery), inserting the key if
    /// needed; logged like an update so the next capture carries it.
    pub(crate) fn restore(&mut self, key: Val<'_>, accs: &[Acc]) -> Result<(), UpdateError> {
        Key::check(key)?;
        let hash = table_hash(key);
        let slot = match find_slot(&self.index, &self.keys, key, hash) {
            Some(slot) => slot,
            None => self.insert(key, hash, 0)?,
        };
        let w = self.ops.len();
        self.accs[slot * w..slot * w + w].copy_from_slice(accs);
        self.log_slot(slot);
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn accs_of(&self, key: Val<'_>) -> Option<&[Acc]> {
        let slot = find_slot(&self.index, &self.keys, key, table_hash(key))?;
        let w = self.ops.len();
        Some(&self.accs[slot * w..slot * w + w])
    }
}

impl KeyedTable for AggregateTable {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn swap_log(&mut self, spare: &mut DeltaLog) {
        let slots = self.keys.len();
        self.log.swap(spare, slots);
    }

    fn restore(
        &mut self,
        key: Val<'_>,
        cols: &[Option<Val<'_>>],
        now_ms: i64,
    ) -> Result<(), UpdateError> {
        let mut accs = Vec::with_capacity(self.ops.len());
        let mut at = 0;
        for op in self.ops.iter() {
            let w = op.state_width();
            accs.push(op.acc_from_state(&cols[at..at + w], now_ms));
            at += w;
        }
        AggregateTable::restore(self, key, &accs)
    }

    fn get_values(&self, key: Val<'_>, value: &mut dyn FnMut(Val<'_>)) -> bool {
        self.get(key).map(|v| v.iter().for_each(value)).is_some()
    }

    fn for_each(&self, f: &mut dyn FnMut(Val<'_>, &mut dyn Iterator<Item = Val<'_>>)) {
        for (k, v) in self.iter() {
            f(k, &mut v.iter());
        }
    }
}

impl StepTable for AggregateTable {
    #[inline]
    fn update_step<'v>(
        &mut self,
        key: Val<'_>,
        now_ms: impl FnOnce() -> i64,
        input: impl Fn(usize) -> Val<'v>,
    ) -> Result<Outputs<'_>, UpdateError> {
        self.update(key, now_ms(), input).map(Outputs::Values)
    }
}

impl ShardState {
    /// The aggregate table with state id `id`; `None` if out of range or of
    /// another kind.
    #[inline]
    pub fn aggregate(&self, id: usize) -> Option<&AggregateTable> {
        self.step_table(id)
    }

    /// Mutable [`ShardState::aggregate`].
    #[inline]
    pub fn aggregate_mut(&mut self, id: usize) -> Option<&mut AggregateTable> {
        self.step_table_mut(id)
    }
}

impl From<KeyError> for UpdateError {
    fn from(e: KeyError) -> UpdateError {
        UpdateError::Key(e)
    }
}

#[cfg(test)]
mod tests;
