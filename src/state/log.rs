//! Delta logs at a barrier: the one [`DeltaLog`] every table kind records
//! into, and the [`Capture`] that carries one shard's logs (one per table)
//! to the checkpoint writer.
//!
//! A log holds, per table, the keys created this epoch (in slot order) and
//! one record per key changed this epoch with the key's *current* state
//! (overwritten in place on later updates). A record is the key's state
//! columns ([`StateColumn`](super::StateColumn)s, as the checkpoint file
//! stores them), `width` values per record: scalars inline, text in the
//! log's byte arena. Swapping a table's log for an empty recycled one is the
//! whole shard-side capture; all buffers keep their capacity when cleared,
//! and clearing is O(1) because every element type is `Copy`. The keys an
//! epoch created are kept in one arena ([`NewKeys`]); a slot's dirty mark
//! ([`mark`]) keeps one record per changed key. The table side (index,
//! keys, marks, this log) is [`Slots`](super::slots::Slots).

use super::key::Key;
use crate::row::Val;

/// A value as stored in a log record: scalar bits inline, text in the log's
/// byte arena at `start` with `cap` bytes reserved so a later, not longer
/// value for the same cell overwrites in place.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    kind: u8,
    bits: u64,
    start: usize,
    len: u32,
    cap: u32,
}

const V_NULL: u8 = 0;
const V_BOOL: u8 = 1;
const V_INT: u8 = 2;
const V_FLOAT: u8 = 3;
const V_STR: u8 = 4;

/// One table's changes during one epoch.
#[derive(Debug, Default)]
pub(crate) struct DeltaLog {
    /// Number of slots the table had when this log became active; the keys
    /// in `new_keys` are slots `slot_base..`.
    pub(crate) slot_base: usize,
    pub(crate) new_keys: NewKeys,
    /// One entry per changed slot, in order of first change.
    pub(crate) slots: Vec<u32>,
    /// Values per record (the table's state columns).
    width: usize,
    /// `width` cells per entry of `slots`.
    cells: Vec<Cell>,
    text: Vec<u8>,
}

impl DeltaLog {
    /// An empty log of records of `width` values.
    pub(crate) fn new(width: usize) -> DeltaLog {
        DeltaLog {
            width,
            ..DeltaLog::default()
        }
    }

    /// Values per record.
    pub(crate) fn width(&self) -> usize {
        self.width
    }

    pub(crate) fn clear(&mut self) {
        self.new_keys.clear();
        self.slots.clear();
        self.cells.clear();
        self.text.clear();
    }

    pub(crate) fn shrink(&mut self) {
        self.new_keys.shrink();
        shrink(&mut self.slots);
        shrink(&mut self.cells);
        shrink(&mut self.text);
    }

    /// Records `slot`'s state, `values` (exactly `width` of them): appended
    /// the first time the slot changes in this epoch, overwritten in place
    /// after that (`marks` is the table's per-slot dirty marks).
    #[inline]
    pub(crate) fn record<'v>(
        &mut self,
        marks: &mut [u32],
        slot: usize,
        values: impl Iterator<Item = Val<'v>>,
    ) {
        let w = self.width;
        let pos = match mark(marks, &mut self.slots, slot) {
            Some(pos) => pos,
            None => {
                self.cells.resize(self.cells.len() + w, Cell::default());
                self.slots.len() - 1
            }
        };
        for (i, v) in values.take(w).enumerate() {
            self.put(pos * w + i, v);
        }
    }

    #[inline]
    fn put(&mut self, at: usize, value: Val<'_>) {
        let (kind, bits, text): (u8, u64, &[u8]) = match value {
            Val::Null => (V_NULL, 0, &[]),
            Val::Bool(b) => (V_BOOL, u64::from(b), &[]),
            Val::Int(i) => (V_INT, i as u64, &[]),
            Val::Float(f) => (V_FLOAT, f.to_bits(), &[]),
            Val::Str(s) => (V_STR, 0, s.as_bytes()),
            // Keyed state never stores arrays (the plan refuses them).
            Val::Array(_) => (V_NULL, 0, &[]),
        };
        let old = self.cells[at];
        let (mut start, mut cap) = (old.start, old.cap as usize);
        if text.len() > cap {
            // Reserve a power of two so a key whose text keeps growing
            // appends O(log len) times per epoch, not once per update.
            cap = text.len().next_power_of_two().min(u32::MAX as usize);
            start = self.text.len();
            self.text.resize(start + cap, 0);
        }
        self.text[start..start + text.len()].copy_from_slice(text);
        self.cells[at] = Cell {
            kind,
            bits,
            start,
            len: text.len() as u32,
            cap: cap as u32,
        };
    }

    /// Value `col` of record `i`; an error only if the arena was corrupted.
    pub(crate) fn val(&self, i: usize, col: usize) -> Result<Val<'_>, std::str::Utf8Error> {
        let r = self.cells[i * self.width + col];
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

    /// Capacity of the record buffers (tests check that warm updates do not
    /// grow them).
    #[cfg(test)]
    pub(crate) fn cells_capacity(&self) -> usize {
        self.cells.capacity() + self.text.capacity()
    }

    /// Makes `spare` (cleared, same width) the active log of a table with
    /// `slots` keys, and leaves the filled one in `spare`; O(1).
    pub(crate) fn swap(&mut self, spare: &mut DeltaLog, slots: usize) {
        spare.clear();
        spare.width = self.width;
        spare.slot_base = slots;
        std::mem::swap(self, spare);
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
    pub(crate) logs: Vec<DeltaLog>,
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
        self.logs.iter().map(|l| l.slots.len()).sum()
    }

    /// Number of keys created this epoch, over all tables.
    pub fn new_keys(&self) -> usize {
        self.logs.iter().map(|l| l.new_keys.len()).sum()
    }

    /// Empties every log, keeping its buffers (and shrinking any buffer far
    /// larger than what this capture used), so the capture can be handed back
    /// to its shard as the next spare.
    pub fn recycle(&mut self) {
        for log in &mut self.logs {
            log.shrink();
            log.clear();
        }
    }
}

/// The dirty mark of `slot`: where its record sits in the current delta log
/// (`Some(position)`: overwrite it), or `None` after appending the slot to
/// `log_slots` (append its record). A mark is trusted only if the log entry
/// at its position names the same slot, so stale marks from earlier epochs
/// need no clearing.
#[inline]
pub(crate) fn mark(marks: &mut [u32], log_slots: &mut Vec<u32>, slot: usize) -> Option<usize> {
    let pos = marks[slot] as usize;
    if log_slots.get(pos) == Some(&(slot as u32)) {
        Some(pos)
    } else {
        marks[slot] = log_slots.len() as u32;
        log_slots.push(slot as u32);
        None
    }
}

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

    pub(crate) fn clear(&mut self) {
        self.recs.clear();
        self.text.clear();
    }

    pub(crate) fn shrink(&mut self) {
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
pub(crate) fn shrink<T>(v: &mut Vec<T>) {
    if v.capacity() > 4 * v.len().max(SHRINK_FLOOR) {
        v.shrink_to(2 * v.len().max(SHRINK_FLOOR));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_per_slot_with_latest_text() {
        let mut log = DeltaLog::new(2);
        let mut marks = vec![u32::MAX; 3];
        log.record(&mut marks, 0, [Val::Str("a"), Val::Int(1)].into_iter());
        log.record(&mut marks, 2, [Val::Null, Val::Float(2.5)].into_iter());
        log.record(
            &mut marks,
            0,
            [Val::Str("a much longer value"), Val::Int(2)].into_iter(),
        );
        log.record(
            &mut marks,
            0,
            [Val::Str("short"), Val::Bool(true)].into_iter(),
        );
        assert_eq!(log.slots, vec![0, 2]);
        assert_eq!(log.val(0, 0).unwrap(), Val::Str("short"));
        assert_eq!(log.val(0, 1).unwrap(), Val::Bool(true));
        assert_eq!(log.val(1, 0).unwrap(), Val::Null);
        assert_eq!(log.val(1, 1).unwrap(), Val::Float(2.5));
        let mut spare = DeltaLog::default();
        log.swap(&mut spare, 3);
        assert_eq!(log.slot_base, 3);
        assert_eq!(log.width(), 2);
        // After the swap the key is logged afresh, not overwritten in the old log.
        log.record(&mut marks, 0, [Val::Str("x"), Val::Int(3)].into_iter());
        assert_eq!(log.slots, vec![0]);
        assert_eq!(spare.val(0, 0).unwrap(), Val::Str("short"));
    }
}
