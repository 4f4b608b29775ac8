//! Epoch checkpoints: barriers, the background writer, shard files,
//! manifests, retention and recovery.
//!
//! # Protocol
//!
//! 1. The [`Coordinator`] thread starts epoch `N` every `interval`: it tells
//!    the writer whether `N` is a full snapshot or a delta on the last
//!    committed epoch, then sends [`Barrier`] `{ epoch: N }` to every shard.
//! 2. A shard sees the barrier between two requests
//!    ([`ShardCheckpoint::poll`]), swaps out its delta logs in O(tables)
//!    (see [`crate::state`] for why that is a consistent cut and costs no
//!    copy) and sends the [`Capture`](crate::state::Capture) to the writer.
//! 3. The writer applies the capture to its mirror of the shard and writes
//!    `dir/epoch-N/shard-<i>.arrow` (Arrow IPC file format; see [`file`](mod@file)
//!    for the columns), fsyncs it and reports size, row count and CRC-32.
//! 4. With every shard's file written, the coordinator writes
//!    `dir/epoch-N/MANIFEST` (JSON, see [`Manifest`]): temp file, fsync,
//!    rename, fsync of the epoch directory and of `dir`. Only then is `N`
//!    committed. Retention keeps the newest `retain` committed epochs and
//!    the epochs their deltas build on, and deletes the rest.
//!
//! # Guarantees and invariants
//!
//! - A committed epoch holds, per shard, exactly the updates that shard
//!   applied before it took the barrier. (Each key is owned by one shard, so
//!   per-shard cuts compose without cross-shard coordination.)
//! - Delta epochs name their base; a delta is only planned on top of the
//!   epoch committed just before it, and any failure makes the next epoch a
//!   full snapshot, so every committed epoch's chain is complete.
//! - At most one epoch is in flight. Shards never block on the coordinator,
//!   the writer or the disk; a failing disk only fails epochs (counted in
//!   [`CheckpointStats`], logged), and the next epoch retries.
//! - [`recover`] loads the newest committed epoch whose whole chain is
//!   present and passes its checksums, skipping torn or corrupt ones.

pub mod file;
pub mod manifest;

mod coordinator;
mod recover;
mod writer;

#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

pub use coordinator::{
    CheckpointConfig, CheckpointStats, Coordinator, CoordinatorHandle, ShardCheckpoint,
};
pub use manifest::{FileEntry, Manifest, SnapshotKind, TableDesc};
pub use recover::{Recovered, recover, recover_epoch};

use crate::state::StateError;

/// A checkpoint barrier: "capture your state as of now for `epoch`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// The epoch being checkpointed.
    pub epoch: u64,
    /// True for the final checkpoint of a clean stop: after capturing, the
    /// shard stops.
    pub then_stop: bool,
}

/// A checkpoint setup or recovery error.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A filesystem operation failed.
    #[error("cannot {op} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The keyed state declaration is invalid.
    #[error(transparent)]
    State(#[from] StateError),
    /// A checkpoint setting is invalid.
    #[error("invalid checkpoint setting: {0}")]
    Config(String),
    /// The checkpoint holds a table the configuration declares differently.
    #[error(
        "the checkpoint's table `{table}` does not match the configuration: {message}; change the step back, rename it, or move the checkpoint directory away"
    )]
    Mismatch {
        /// The table (step) name.
        table: String,
        /// What differs.
        message: String,
    },
}

impl CheckpointError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> CheckpointError {
        CheckpointError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why a requested checkpoint did not commit. `Clone`: one failure may
/// answer several waiters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The epoch was not committed.
    #[error("checkpoint epoch {epoch} was not committed: {message}")]
    Failed {
        /// The epoch that failed.
        epoch: u64,
        /// Why.
        message: String,
    },
    /// The coordinator has stopped.
    #[error("checkpointing has stopped")]
    Stopped,
}
