//! Delta logs: what changed in a table since the last barrier, and the
//! [`Capture`] that carries one shard's logs to the checkpoint writer.
//!
//! A log holds, per table, the keys created this epoch (in slot order) and
//! one record per key changed this epoch with the key's *current* state
//! (overwritten in place on later updates). Swapping a table's log for an
//! empty recycled one is the whole shard-side capture; all buffers keep
//! their capacity when cleared, and clearing is O(1) because every element
//! type is `Copy`.

use super::agg::Acc;
use super::key::Key;
use crate::row::Val;

/// One key created in this epoch, as stored in a log's key arena.
#[derive(Debug, Clone, Copy)]
enum KeyRec {
    Str { start: usize, len: usize },
    Int(i64),
    Bool(bool),
}

/// Keys created during one epoch, in slot order, copied into one arena.
#[derive(Debug, Default)]
pub(crate) struct NewKeys {
    recs: Vec<KeyRec>,
    text: String,
}

impl NewKeys {
    pub(crate) fn push(&mut self, key: Val<'_>) {
        let rec = match key {
            Val::Str(s) => {
                let start = self.text.len();
                self.text.push_str(s);
                KeyRec::Str {
                    start,
                    len: s.len(),
                }
            }
            Val::Int(i) => KeyRec::Int(i),
            Val::Bool(b) => KeyRec::Bool(b),
            // Tables reject these before logging.
            Val::Null | Val::Float(_) | Val::Array(_) => return,
        };
        self.recs.push(rec);
    }

    pub(crate) fn len(&self) -> usize {
        self.recs.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Key> + '_ {
        self.recs.iter().map(|r| match *r {
            KeyRec::Str { start, len } => Key::Str(self.text[start..start + len].into()),
            KeyRec::Int(i) => Key::Int(i),
            KeyRec::Bool(b) => Key::Bool(b),
        })
    }

    fn clear(&mut self) {
        self.recs.clear();
        self.text.clear();
    }

    fn shrink(&mut self) {
        shrink(&mut self.recs);
        if self.text.capacity() > 4 * self.text.len().max(SHRINK_FLOOR) {
            self.text.shrink_to(2 * self.text.len().max(SHRINK_FLOOR));
        }
    }
}

/// Buffers below this many elements are never shrunk.
const SHRINK_FLOOR: usize = 1024;

/// Gives memory back after an unusually large epoch (for example the one
/// carrying a restored state): capacity above 4x the last use is cut to 2x.
fn shrink<T>(v: &mut Vec<T>) {
    if v.capacity() > 4 * v.len().max(SHRINK_FLOOR) {
        v.shrink_to(2 * v.len().max(SHRINK_FLOOR));
    }
}

/// The delta log of an [`AggregateTable`](super::AggregateTable).
#[derive(Debug, Default)]
pub(crate) struct AggLog {
    /// Number of slots the table had when this log became active; the keys
    /// in `new_keys` are slots `slot_base..`.
    pub(crate) slot_base: usize,
    pub(crate) new_keys: NewKeys,
    /// One entry per changed slot, in order of first change.
    pub(crate) slots: Vec<u32>,
    /// `width` accumulators per entry of `slots`.
    pub(crate) accs: Vec<Acc>,
}

impl AggLog {
    pub(crate) fn clear(&mut self) {
        self.new_keys.clear();
        self.slots.clear();
        self.accs.clear();
    }

    fn shrink(&mut self) {
        self.new_keys.shrink();
        shrink(&mut self.slots);
        shrink(&mut self.accs);
    }
}

/// A value as stored in a changed-table log: scalar bits inline, text in the
/// log's byte arena at `start` with `cap` bytes reserved so a later, not
/// longer value for the same key overwrites in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogVal {
    pub(crate) kind: u8,
    pub(crate) bits: u64,
    pub(crate) start: usize,
    pub(crate) len: u32,
    pub(crate) cap: u32,
}

pub(crate) const V_NULL: u8 = 0;
pub(crate) const V_BOOL: u8 = 1;
pub(crate) const V_INT: u8 = 2;
pub(crate) const V_FLOAT: u8 = 3;
pub(crate) const V_STR: u8 = 4;

/// The delta log of a [`ChangedTable`](super::ChangedTable).
#[derive(Debug, Default)]
pub(crate) struct ChangedLog {
    pub(crate) slot_base: usize,
    pub(crate) new_keys: NewKeys,
    pub(crate) slots: Vec<u32>,
    pub(crate) vals: Vec<LogVal>,
    pub(crate) text: Vec<u8>,
}

impl ChangedLog {
    pub(crate) fn clear(&mut self) {
        self.new_keys.clear();
        self.slots.clear();
        self.vals.clear();
        self.text.clear();
    }

    fn shrink(&mut self) {
        self.new_keys.shrink();
        shrink(&mut self.slots);
        shrink(&mut self.vals);
        shrink(&mut self.text);
    }

    /// Writes `value` as the record at `pos`, or appends a record when `pos`
    /// is `None`. Returns the record's position.
    pub(crate) fn put(&mut self, pos: Option<usize>, value: Val<'_>) -> usize {
        let (kind, bits, text): (u8, u64, &[u8]) = match value {
            Val::Null => (V_NULL, 0, &[]),
            Val::Bool(b) => (V_BOOL, u64::from(b), &[]),
            Val::Int(i) => (V_INT, i as u64, &[]),
            Val::Float(f) => (V_FLOAT, f.to_bits(), &[]),
            Val::Str(s) => (V_STR, 0, s.as_bytes()),
            // Keyed state never stores arrays (the plan refuses them).
            Val::Array(_) => (V_NULL, 0, &[]),
        };
        let (mut start, mut cap) = match pos {
            Some(p) => (self.vals[p].start, self.vals[p].cap as usize),
            None => (0, 0),
        };
        if text.len() > cap {
            // Reserve a power of two so a key whose text keeps growing
            // appends O(log len) times per epoch, not once per update.
            cap = text.len().next_power_of_two().min(u32::MAX as usize);
            start = self.text.len();
            self.text.resize(start + cap, 0);
        }
        self.text[start..start + text.len()].copy_from_slice(text);
        let rec = LogVal {
            kind,
            bits,
            start,
            len: text.len() as u32,
            cap: cap as u32,
        };
        match pos {
            Some(p) => {
                self.vals[p] = rec;
                p
            }
            None => {
                self.vals.push(rec);
                self.vals.len() - 1
            }
        }
    }

    /// The value of record `i`; an error only if the arena was corrupted.
    pub(crate) fn val(&self, i: usize) -> Result<Val<'_>, std::str::Utf8Error> {
        let r = self.vals[i];
        Ok(match r.kind {
            V_BOOL => Val::Bool(r.bits != 0),
            V_INT => Val::Int(r.bits as i64),
            V_FLOAT => Val::Float(f64::from_bits(r.bits)),
            V_STR => Val::Str(std::str::from_utf8(
                &self.text[r.start..r.start + r.len as usize],
            )?),
            _ => Val::Null,
        })
    }
}

/// One table's delta log inside a [`Capture`].
#[derive(Debug)]
pub(crate) enum TableLog {
    Aggregate(AggLog),
    Changed(ChangedLog),
}

impl TableLog {
    fn records(&self) -> usize {
        match self {
            TableLog::Aggregate(l) => l.slots.len(),
            TableLog::Changed(l) => l.slots.len(),
        }
    }
}

/// What one shard changed during one epoch: every table's delta log, taken
/// at a barrier. Created by [`ShardState::capture`](super::ShardState::capture),
/// consumed by the checkpoint writer, and recycled back to the shard so that
/// steady-state captures allocate nothing.
#[derive(Debug)]
pub struct Capture {
    pub(crate) shard: usize,
    pub(crate) epoch: u64,
    pub(crate) logs: Vec<TableLog>,
}

impl Capture {
    /// The shard that took this capture.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// The epoch whose barrier this capture answers.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of changed keys recorded, over all tables.
    pub fn changed_keys(&self) -> usize {
        self.logs.iter().map(TableLog::records).sum()
    }

    /// Number of keys created this epoch, over all tables.
    pub fn new_keys(&self) -> usize {
        self.logs
            .iter()
            .map(|l| match l {
                TableLog::Aggregate(l) => l.new_keys.len(),
                TableLog::Changed(l) => l.new_keys.len(),
            })
            .sum()
    }

    /// Empties every log, keeping its buffers (and shrinking any buffer far
    /// larger than what this capture used), so the capture can be handed back
    /// to its shard as the next spare.
    pub fn recycle(&mut self) {
        for log in &mut self.logs {
            match log {
                TableLog::Aggregate(l) => {
                    l.shrink();
                    l.clear();
                }
                TableLog::Changed(l) => {
                    l.shrink();
                    l.clear();
                }
            }
        }
    }
}
