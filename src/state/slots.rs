//! What every keyed table shares, [`Slots`]: its name, keys numbered by
//! slot, the hash index over them, the dirty marks that keep one delta-log
//! record per changed key, and the delta log. A table kind (`agg.rs`,
//! `changed.rs`, `declared.rs`) embeds one and adds only its per-key state,
//! its log records and its per-key update.
//!
//! Slots are dense, assigned in insertion order, never reused: slot `s` names
//! the same key on the shard and in the checkpoint writer's mirror.

use hashbrown::HashTable;

use super::UpdateError;
use super::key::{Key, spread};
use super::log::DeltaLog;
use crate::row::Val;

/// Hash table entry: the key's slot and its stored 32-bit hash, so probing
/// and growing never touch the key itself (8 bytes per key).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) slot: u32,
    pub(crate) hash: u32,
}

/// The part of a keyed table that every kind shares: its name, the keys
/// numbered by slot and the hash index over them, the dirty marks, and the
/// delta log of the current epoch. A kind embeds one and implements
/// [`KeyedTable::slots`](super::KeyedTable::slots); it adds only its per-slot
/// state, its log records and its per-key update.
#[derive(Debug)]
pub(crate) struct Slots {
    name: String,
    pub(crate) index: HashTable<Entry>,
    pub(crate) keys: Vec<Key>,
    /// Per slot: where the key's record sits in the current delta log (valid
    /// only if `log.slots[mark] == slot`, which makes a stale mark harmless).
    pub(crate) marks: Vec<u32>,
    pub(crate) log: DeltaLog,
    logging: bool,
}

impl Slots {
    /// No keys yet; log records of `width` values; `logging`: keep a delta
    /// log for checkpoints.
    pub(crate) fn new(name: String, width: usize, logging: bool) -> Slots {
        Slots {
            name,
            index: HashTable::new(),
            keys: Vec::new(),
            marks: Vec::new(),
            log: DeltaLog::new(width),
            logging,
        }
    }

    /// The table's (step's) name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Number of slots (keys ever inserted).
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether changes are recorded in the delta log.
    #[inline]
    pub(crate) fn logging(&self) -> bool {
        self.logging
    }

    /// Reserves room for `additional` more keys, so that growing the index
    /// (an O(keys) rehash) happens now rather than under a request.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional, |e| spread(e.hash));
        self.keys.reserve(additional);
        self.marks.reserve(additional);
    }

    /// The slot of `key` (with table hash `hash`).
    #[inline]
    pub(crate) fn find(&self, key: Val<'_>, hash: u32) -> Option<usize> {
        self.index
            .find(spread(hash), |e| {
                e.hash == hash && self.keys[e.slot as usize].eq_val(key)
            })
            .map(|e| e.slot as usize)
    }

    /// Adds `key` (not present, with table hash `hash`) as the next slot:
    /// index entry, owned key, a clear dirty mark, and, when the table logs,
    /// the key in the epoch's new keys. Returns the slot; the kind then
    /// pushes the slot's state.
    pub(crate) fn insert(&mut self, key: Val<'_>, hash: u32) -> Result<usize, UpdateError> {
        let slot = self.keys.len();
        if slot >= u32::MAX as usize {
            return Err(UpdateError::Full);
        }
        let owned = Key::from_val(key)?;
        self.index.insert_unique(
            spread(hash),
            Entry {
                slot: slot as u32,
                hash,
            },
            |e| spread(e.hash),
        );
        self.keys.push(owned);
        self.marks.push(u32::MAX);
        if self.logging {
            self.log.new_keys.push(key);
        }
        Ok(slot)
    }

    /// Records `slot`'s state columns, `values`, in the delta log (see
    /// [`DeltaLog::record`]). Callers skip computing `values` when not
    /// [`logging`](Slots::logging).
    #[inline]
    pub(crate) fn record<'v>(&mut self, slot: usize, values: impl Iterator<Item = Val<'v>>) {
        self.log.record(&mut self.marks, slot, values);
    }

    /// Swaps the active delta log with `spare` (cleared first); O(1).
    pub(crate) fn swap_log(&mut self, spare: &mut DeltaLog) {
        let slots = self.keys.len();
        self.log.swap(spare, slots);
    }
}
