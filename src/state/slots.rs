//! What every keyed table shares: keys numbered by slot, the hash index
//! over them, the dirty marks that keep one delta-log record per changed key,
//! and the arena of the keys an epoch created. A table kind (`agg.rs`,
//! `changed.rs`) adds only its per-key state, its log records and its
//! per-key update.
//!
//! Slots are dense, assigned in insertion order, never reused: slot `s` names
//! the same key on the shard and in the checkpoint writer's mirror.

use hashbrown::HashTable;

use super::UpdateError;
use super::key::{Key, spread};
use crate::row::Val;

/// Hash table entry: the key's slot and its stored 32-bit hash, so probing
/// and growing never touch the key itself (8 bytes per key).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) slot: u32,
    pub(crate) hash: u32,
}

/// Finds `key` (with table hash `hash`) in `index`, comparing against `keys`.
#[inline]
pub(crate) fn find_slot(
    index: &HashTable<Entry>,
    keys: &[Key],
    key: Val<'_>,
    hash: u32,
) -> Option<usize> {
    index
        .find(spread(hash), |e| {
            e.hash == hash && keys[e.slot as usize].eq_val(key)
        })
        .map(|e| e.slot as usize)
}

/// Adds `key` (not present, with table hash `hash`) as the next slot:
/// index entry, owned key, a clear dirty mark, and, when the table logs, the
/// key in the epoch's new keys. Returns the slot.
pub(crate) fn insert_key(
    index: &mut HashTable<Entry>,
    keys: &mut Vec<Key>,
    marks: &mut Vec<u32>,
    new_keys: Option<&mut NewKeys>,
    key: Val<'_>,
    hash: u32,
) -> Result<usize, UpdateError> {
    let slot = keys.len();
    if slot >= u32::MAX as usize {
        return Err(UpdateError::Full);
    }
    let owned = Key::from_val(key)?;
    index.insert_unique(
        spread(hash),
        Entry {
            slot: slot as u32,
            hash,
        },
        |e| spread(e.hash),
    );
    keys.push(owned);
    marks.push(u32::MAX);
    if let Some(new_keys) = new_keys {
        new_keys.push(key);
    }
    Ok(slot)
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
            Val::Null | Val::Float(_) => return,
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
