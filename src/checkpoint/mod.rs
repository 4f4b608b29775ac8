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
//!    committed, and `dir/LATEST` is replaced to name it. Retention keeps
//!    the newest `retain` committed epochs, the epochs their deltas build
//!    on, the newest verified chain and one older one, and deletes the rest
//!    (damaged epochs are renamed aside instead).
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
//! - [`recover`] loads, per writer shard, the newest committed epoch whose
//!   chain is present and passes its checksums, skipping torn or corrupt
//!   files; damaged epochs are renamed `epoch-N.damaged`; with committed
//!   epochs but nothing that verifies it refuses to start rather than start
//!   empty ([`OnDamage`]).
//! - Retention never deletes the newest chain that verifies, and keeps one
//!   older complete chain besides.
//! - An epoch in which no shard changed anything is not committed (no
//!   manifest, its directory removed); `LATEST` keeps naming the last
//!   committed one.

pub mod file;
pub mod manifest;
pub mod models;

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
pub use recover::{OnDamage, Recovered, read_state, recover, recover_with};

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
    /// Committed epochs exist but no chain of them verifies: starting empty
    /// would silently lose state, so start-up refuses.
    #[error(
        "no checkpoint in `{}` can be restored, and starting empty would lose the state it holds:\n{}\nrestore or move these files, or run `coreline run --discard-state` to start empty on purpose (damaged epochs are then renamed epoch-N.damaged)",
        dir.display(),
        problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    )]
    Damaged {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What is wrong, one line per file or epoch, naming it.
        problems: Vec<String>,
    },
    /// A file passed its checksum but this build cannot read it.
    #[error(
        "`{}` passed its checksum but cannot be read by this build: {reason}; move the checkpoint directory away or run `coreline run --discard-state`",
        file.display()
    )]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
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
