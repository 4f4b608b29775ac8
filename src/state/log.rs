//! Delta logs at a barrier: the [`Capture`] that carries one shard's logs
//! (one per table, in the table's kind) to the checkpoint writer.
//!
//! A log holds, per table, the keys created this epoch (in slot order) and
//! one record per key changed this epoch with the key's *current* state
//! (overwritten in place on later updates). Swapping a table's log for an
//! empty recycled one is the whole shard-side capture; all buffers keep
//! their capacity when cleared, and clearing is O(1) because every element
//! type is `Copy`. The logs themselves live with their table kinds; the
//! shared parts (new keys, dirty marks) in `slots.rs`.

use super::agg::AggLog;
use super::changed::ChangedLog;

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
