//! The epoch coordinator: the clock that sends barriers, the commit of each
//! epoch's manifest, retention, stats, forced and final checkpoints.
//!
//! Threads: [`Coordinator::start`] spawns `coreline-checkpoint` (this loop)
//! and `coreline-ckpt-writer` (the [`writer`](super::writer)). Shards talk to
//! them only through their [`ShardCheckpoint`]: a `try_recv` for a barrier
//! and a non-blocking send of the capture (unbounded channel; the number of
//! captures in flight is bounded by the coordinator, which keeps at most one
//! epoch in flight). Serving never waits on the writer or the disk.
//!
//! Epoch life: plan (full or delta) sent to the writer → `Barrier` to every
//! shard → each shard captures and sends → writer writes and fsyncs
//! `shard-<i>.arrow` → when all shards' files are written, the manifest is
//! committed, `LATEST` replaced, retention runs, one `info!` line is logged.
//! A delta epoch in which no shard changed anything is not committed: its
//! directory (unsynced, empty files) is removed, the waiters get the last
//! committed epoch (which holds everything), and the line is `debug!`. A failed file, a
//! failed commit or a shard that does not answer within `epoch_timeout`
//! fails the epoch: it is not committed, the error is logged and counted,
//! and the next epoch is a full snapshot, so a delta never builds on an
//! epoch that did not commit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, bounded, never, select, unbounded};

use super::file::Layout;
use super::manifest::{
    self, FileEntry, MANIFEST_FORMAT, Manifest, SnapshotKind, TableDesc, Verdict,
};
use super::writer::{EpochPlan, FileDone, Writer, WriterMsg};
use super::{Barrier, CheckpointError, CommitError};
use crate::state::{Capture, ShardState, TableSpec, validate_tables};

/// `[checkpoint]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointConfig {
    /// The checkpoint directory (created if absent).
    pub dir: PathBuf,
    /// Epoch length: a barrier is sent this long after the previous epoch
    /// started (or as soon as it finishes, if it took longer). Default 1 s.
    pub interval: Duration,
    /// Committed epochs to keep (plus whatever they build on). Default 3.
    pub retain: usize,
    /// One full snapshot every this many epochs, deltas in between.
    /// Default 10; 1 writes only full snapshots.
    pub full_every: u32,
    /// An epoch whose shards have not all answered after this long fails
    /// (a stuck or dead shard). Default 30 s.
    pub epoch_timeout: Duration,
    /// The models swapped in, written into each manifest. Default: empty.
    pub models: super::models::ModelLedger,
    /// Shard `i`'s wake-up line, woken after its barrier is sent (a shard
    /// looks for barriers when woken). Default: empty, for callers that
    /// poll [`ShardCheckpoint::try_barrier`] themselves.
    pub wakes: Vec<crate::sys::Wake>,
}

impl CheckpointConfig {
    /// The defaults, checkpointing into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> CheckpointConfig {
        CheckpointConfig {
            dir: dir.into(),
            interval: Duration::from_secs(1),
            retain: 3,
            full_every: 10,
            epoch_timeout: Duration::from_secs(30),
            models: super::models::ModelLedger::default(),
            wakes: Vec::new(),
        }
    }

    fn check(&self) -> Result<(), CheckpointError> {
        let bad = |m: &str| Err(CheckpointError::Config(m.to_string()));
        if self.interval.is_zero() {
            return bad("checkpoint interval must be greater than zero");
        }
        if self.retain == 0 {
            return bad("checkpoint retain must be at least 1");
        }
        if self.full_every == 0 {
            return bad("checkpoint full_every must be at least 1");
        }
        if self.epoch_timeout.is_zero() {
            return bad("checkpoint epoch_timeout must be greater than zero");
        }
        Ok(())
    }
}

/// What the admin endpoint shows about checkpoints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointStats {
    /// The epoch state was restored from at start (0: none).
    pub restored_epoch: u64,
    /// The newest epoch committed by this process (0: none yet).
    pub last_committed_epoch: u64,
    /// Whether that epoch was a full snapshot or a delta.
    pub last_kind: Option<SnapshotKind>,
    /// Unix ms when it committed (the last success).
    pub last_commit_unix_ms: u64,
    /// From sending its barriers to its manifest being durable.
    pub last_duration: Duration,
    /// Bytes of its shard files.
    pub last_bytes: u64,
    /// Rows (keys × tables) in its shard files.
    pub last_rows: u64,
    /// Epochs committed by this process.
    pub committed: u64,
    /// Epochs that failed (not committed).
    pub failures: u64,
    /// The most recent failure's message; cleared once a later epoch
    /// commits.
    pub last_error: Option<String>,
    /// Unix ms of that failure (kept after the message is cleared).
    pub last_error_unix_ms: u64,
    /// Epochs not committed because nothing changed since the last one.
    pub unchanged: u64,
    /// The newest epoch whose whole chain was read back and verified by
    /// retention (0: none yet).
    pub verified_epoch: u64,
    /// Damaged epoch directories renamed aside (at start and by retention).
    pub set_aside: u64,
    /// The epoch being checkpointed now, if any.
    pub in_flight: Option<u64>,
}

enum Command {
    Checkpoint(Sender<Result<u64, CommitError>>),
    Stop(Sender<Result<u64, CommitError>>),
}

/// A cloneable handle on the coordinator, for the runtime and the admin
/// endpoint. All methods are safe to call from any thread.
#[derive(Clone)]
pub struct CoordinatorHandle {
    commands: Sender<Command>,
    stats: Arc<Mutex<CheckpointStats>>,
}

impl std::fmt::Debug for CoordinatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorHandle").finish_non_exhaustive()
    }
}

impl CoordinatorHandle {
    /// A snapshot of the checkpoint stats.
    pub fn stats(&self) -> CheckpointStats {
        match self.stats.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Asks for a checkpoint now without waiting: the receiver yields the
    /// committed epoch (or the failure) once an epoch started after this call
    /// has finished. For callers that must not block (poll with `try_recv`).
    pub fn request_checkpoint(&self) -> Receiver<Result<u64, CommitError>> {
        let (tx, rx) = bounded(1);
        if self.commands.send(Command::Checkpoint(tx.clone())).is_err() {
            let _ = tx.send(Err(CommitError::Stopped));
        }
        rx
    }

    /// Forces a checkpoint and blocks until it commits: every update applied
    /// before this call is in the returned epoch. (`POST /checkpoint`.)
    pub fn checkpoint_now(&self) -> Result<u64, CommitError> {
        self.request_checkpoint()
            .recv()
            .unwrap_or(Err(CommitError::Stopped))
    }

    /// Takes the final checkpoint (barriers with `then_stop`), waits for it to
    /// commit, then stops the coordinator and writer threads. Call after the
    /// shards have drained; they must keep polling until they see the
    /// `then_stop` barrier. Later calls return [`CommitError::Stopped`].
    pub fn stop(&self) -> Result<u64, CommitError> {
        let (tx, rx) = bounded(1);
        if self.commands.send(Command::Stop(tx)).is_err() {
            return Err(CommitError::Stopped);
        }
        rx.recv().unwrap_or(Err(CommitError::Stopped))
    }
}

/// One shard's end of the checkpoint protocol. `Send`; move it into the
/// shard's thread. Nothing here blocks.
#[derive(Debug)]
pub struct ShardCheckpoint {
    shard: usize,
    barriers: Receiver<Barrier>,
    writer: Sender<WriterMsg>,
    spares: Receiver<Capture>,
}

impl ShardCheckpoint {
    /// The shard index this endpoint belongs to.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// A pending barrier, if the coordinator sent one (one `try_recv`).
    #[inline]
    pub fn try_barrier(&self) -> Option<Barrier> {
        self.barriers.try_recv().ok()
    }

    /// Captures `state` for `barrier` (O(tables), no allocation in steady
    /// state) and hands the capture to the writer without waiting.
    pub fn submit(&self, state: &mut ShardState, barrier: Barrier) {
        let spare = self.spares.try_recv().ok();
        let cap = state.capture(self.shard, barrier.epoch, spare);
        // The writer gone means checkpointing stopped; serving goes on.
        let _ = self.writer.send(WriterMsg::Capture(cap));
    }

    /// Call between two requests (and from an idle timer, at least every few
    /// milliseconds): if a barrier is pending, captures `state` for it and
    /// returns it. When the returned barrier has `then_stop`, this was the
    /// final checkpoint and the shard should stop.
    #[inline]
    pub fn poll(&self, state: &mut ShardState) -> Option<Barrier> {
        let barrier = self.try_barrier()?;
        self.submit(state, barrier);
        Some(barrier)
    }
}

/// Starts checkpointing; see [`Coordinator::start`].
#[derive(Debug)]
pub struct Coordinator;

struct InFlight {
    plan: EpochPlan,
    then_stop: bool,
    started: Instant,
    files: Vec<Option<FileEntry>>,
    errors: Vec<String>,
    remaining: usize,
    waiters: Vec<Sender<Result<u64, CommitError>>>,
    /// Some shard's capture held a change.
    changed: bool,
    /// Shards whose file is not fsynced yet.
    unsynced: Vec<usize>,
}

struct Loop {
    config: CheckpointConfig,
    descs: Vec<TableDesc>,
    shards: usize,
    barriers: Vec<Sender<Barrier>>,
    writer: Sender<WriterMsg>,
    writer_thread: Option<thread::JoinHandle<()>>,
    done: Receiver<FileDone>,
    stats: Arc<Mutex<CheckpointStats>>,
    next_epoch: u64,
    last_committed: Option<u64>,
    deltas_since_full: u32,
    force_full: bool,
    in_flight: Option<InFlight>,
    waiting: Vec<Sender<Result<u64, CommitError>>>,
    stopping: Option<Vec<Sender<Result<u64, CommitError>>>>,
    verdicts: HashMap<u64, Verdict>,
    /// Generation of the model ledger the last committed manifest recorded.
    models_committed: u64,
    /// Generation of the ledger the manifest being committed records.
    models_in_flight: u64,
}

impl Coordinator {
    /// Starts the coordinator and writer threads for `shards` shards holding
    /// `tables`, and returns the handle plus one [`ShardCheckpoint`] per
    /// shard (index `i` for shard `i`).
    ///
    /// `restored_epoch` is [`Recovered::epoch`](super::Recovered::epoch);
    /// new epochs are numbered after it and after any epoch directory (also one renamed aside) already
    /// present, so a new run never writes into an old epoch's directory. The
    /// first epoch of a run is a full snapshot: pass the recovered shard
    /// states to the shards unchanged (their logs hold every restored key).
    ///
    /// Errors only for invalid settings or tables; an unwritable directory is
    /// not an error here (epochs fail and are counted until it is writable).
    pub fn start(
        config: CheckpointConfig,
        tables: &[TableSpec],
        shards: usize,
        restored_epoch: u64,
    ) -> Result<(CoordinatorHandle, Vec<ShardCheckpoint>), CheckpointError> {
        config.check()?;
        if shards == 0 {
            return Err(CheckpointError::Config(
                "shard count must be at least 1".into(),
            ));
        }
        validate_tables(tables)?;
        let layout = Layout::new(tables).map_err(CheckpointError::Config)?;
        if let Err(e) = manifest::create_root(&config.dir) {
            tracing::warn!(dir = %config.dir.display(), error = %e,
                "cannot create the checkpoint directory; epochs will fail until it is writable");
        }
        let newest_dir = manifest::highest_epoch_number(&config.dir);
        let next_epoch = restored_epoch.max(newest_dir) + 1;

        let template = ShardState::new(tables)?;
        let (writer_tx, writer_rx) = unbounded();
        let (done_tx, done_rx) = unbounded();
        let mut barrier_txs = Vec::with_capacity(shards);
        let mut spare_txs = Vec::with_capacity(shards);
        let mut endpoints = Vec::with_capacity(shards);
        for shard in 0..shards {
            let (btx, brx) = unbounded();
            let (stx, srx) = bounded(2);
            let _ = stx.try_send(template.empty_capture());
            barrier_txs.push(btx);
            spare_txs.push(stx);
            endpoints.push(ShardCheckpoint {
                shard,
                barriers: brx,
                writer: writer_tx.clone(),
                spares: srx,
            });
        }
        let writer = Writer::new(config.dir.clone(), layout, spare_txs, done_tx);
        let writer_thread = thread::Builder::new()
            .name("coreline-ckpt-writer".into())
            .spawn(move || {
                // Serialising and writing snapshots must never take a core
                // away from a shard: run only when the core is otherwise idle.
                crate::sys::run_when_idle();
                writer.run(writer_rx)
            })
            .map_err(|e| CheckpointError::io("spawn checkpoint writer thread", &config.dir, e))?;

        let stats = Arc::new(Mutex::new(CheckpointStats {
            restored_epoch,
            ..CheckpointStats::default()
        }));
        let (cmd_tx, cmd_rx) = unbounded();
        let dir = config.dir.clone();
        let lp = Loop {
            config,
            descs: tables.iter().map(TableDesc::of).collect(),
            shards,
            barriers: barrier_txs,
            writer: writer_tx,
            writer_thread: Some(writer_thread),
            done: done_rx,
            stats: stats.clone(),
            next_epoch,
            last_committed: None,
            deltas_since_full: 0,
            force_full: true,
            in_flight: None,
            waiting: Vec::new(),
            stopping: None,
            verdicts: HashMap::new(),
            models_committed: 0,
            models_in_flight: 0,
        };
        thread::Builder::new()
            .name("coreline-checkpoint".into())
            .spawn(move || lp.run(cmd_rx))
            .map_err(|e| CheckpointError::io("spawn checkpoint coordinator thread", &dir, e))?;
        Ok((
            CoordinatorHandle {
                commands: cmd_tx,
                stats,
            },
            endpoints,
        ))
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Loop {
    fn update_stats(&self, f: impl FnOnce(&mut CheckpointStats)) {
        match self.stats.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn run(mut self, commands: Receiver<Command>) {
        let mut commands = commands;
        let mut handles_gone = false;
        let mut next_tick = Instant::now() + self.config.interval;
        loop {
            if self.in_flight.is_none() {
                if let Some(stoppers) = self.stopping.take() {
                    let mut waiters = stoppers;
                    waiters.append(&mut self.waiting);
                    if self.start_epoch(true, waiters) {
                        break;
                    }
                } else if handles_gone {
                    break;
                } else if !self.waiting.is_empty() || Instant::now() >= next_tick {
                    let waiters = std::mem::take(&mut self.waiting);
                    self.start_epoch(false, waiters);
                    next_tick = Instant::now() + self.config.interval;
                }
            }
            let deadline = match &self.in_flight {
                Some(f) => f.started + self.config.epoch_timeout,
                None => next_tick,
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            select! {
                recv(commands) -> cmd => match cmd {
                    Ok(Command::Checkpoint(reply)) => self.waiting.push(reply),
                    Ok(Command::Stop(reply)) => self.stopping.get_or_insert_with(Vec::new).push(reply),
                    Err(_) => {
                        handles_gone = true;
                        commands = never();
                    }
                },
                recv(self.done) -> done => {
                    if let Ok(done) = done
                        && self.on_done(done)
                    {
                        break;
                    }
                }
                default(wait) => {
                    if self.in_flight.as_ref().is_some_and(|f| f.started.elapsed() >= self.config.epoch_timeout)
                        && self.on_timeout()
                    {
                        break;
                    }
                }
            }
        }
        let _ = self.writer.send(WriterMsg::Shutdown);
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
        // Anyone still waiting learns that checkpointing is over.
        for w in self.waiting.drain(..) {
            let _ = w.send(Err(CommitError::Stopped));
        }
        for w in self.stopping.take().into_iter().flatten() {
            let _ = w.send(Err(CommitError::Stopped));
        }
    }

    /// Sends the plan and the barriers; true when the loop should exit (a
    /// final epoch that finished at once because no shard could take it).
    fn start_epoch(
        &mut self,
        then_stop: bool,
        waiters: Vec<Sender<Result<u64, CommitError>>>,
    ) -> bool {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let full = self.force_full
            || self.last_committed.is_none()
            || self.deltas_since_full + 1 >= self.config.full_every;
        let plan = EpochPlan {
            epoch,
            kind: if full {
                SnapshotKind::Full
            } else {
                SnapshotKind::Delta
            },
            base: if full { None } else { self.last_committed },
        };
        let mut flight = InFlight {
            plan,
            then_stop,
            started: Instant::now(),
            files: vec![None; self.shards],
            errors: Vec::new(),
            remaining: self.shards,
            waiters,
            changed: false,
            unsynced: Vec::new(),
        };
        if self.writer.send(WriterMsg::Plan(plan)).is_err() {
            flight
                .errors
                .push("the checkpoint writer thread has stopped".into());
        }
        for (shard, tx) in self.barriers.iter().enumerate() {
            if tx.send(Barrier { epoch, then_stop }).is_err() {
                flight.errors.push(format!(
                    "shard {shard} has stopped and cannot take barrier {epoch}"
                ));
                flight.remaining -= 1;
            } else if let Some(wake) = self.config.wakes.get(shard) {
                wake.wake();
            }
        }
        self.update_stats(|s| s.in_flight = Some(epoch));
        self.in_flight = Some(flight);
        if self.in_flight.as_ref().is_some_and(|f| f.remaining == 0) {
            return self.finish();
        }
        false
    }

    /// Returns true when the loop should exit (the final epoch finished).
    fn on_done(&mut self, done: FileDone) -> bool {
        let Some(flight) = self.in_flight.as_mut() else {
            return false;
        };
        if done.epoch != flight.plan.epoch
            || done.shard >= self.shards
            || flight.files[done.shard].is_some()
        {
            // A late answer to an epoch that already timed out.
            tracing::debug!(
                epoch = done.epoch,
                shard = done.shard,
                "late checkpoint file ignored"
            );
            return false;
        }
        flight.changed |= done.changed;
        if !done.synced {
            flight.unsynced.push(done.shard);
        }
        match done.result {
            Ok(entry) => flight.files[done.shard] = Some(entry),
            Err(e) => flight.errors.push(format!("shard {}: {e}", done.shard)),
        }
        flight.remaining -= 1;
        if flight.remaining == 0 {
            return self.finish();
        }
        false
    }

    fn on_timeout(&mut self) -> bool {
        if let Some(flight) = self.in_flight.as_mut() {
            let missing: Vec<String> = (0..self.shards)
                .filter(|&i| flight.files[i].is_none())
                .map(|i| i.to_string())
                .collect();
            flight.errors.push(format!(
                "shard(s) {} did not answer barrier {} within {:?}",
                missing.join(", "),
                flight.plan.epoch,
                self.config.epoch_timeout
            ));
            flight.remaining = 0;
        }
        self.finish()
    }

    /// Commits or fails the in-flight epoch; true if it was the final one.
    fn finish(&mut self) -> bool {
        let Some(flight) = self.in_flight.take() else {
            return false;
        };
        let epoch = flight.plan.epoch;
        if flight.errors.is_empty()
            && !flight.changed
            && self.config.models.snapshot().1 == self.models_committed
            && flight.plan.kind == SnapshotKind::Delta
            && let Some(last) = self.last_committed
        {
            return self.drop_unchanged(flight, last);
        }
        let result = if flight.errors.is_empty() {
            self.commit(&flight)
        } else {
            Err(flight.errors.join("; "))
        };
        match &result {
            Ok((bytes, rows)) => {
                let duration = flight.started.elapsed();
                let kind = flight.plan.kind;
                tracing::info!(
                    epoch,
                    kind = kind.name(),
                    base = flight.plan.base,
                    duration_ms = duration.as_secs_f64() * 1e3,
                    bytes,
                    rows,
                    "checkpoint committed"
                );
                self.last_committed = Some(epoch);
                self.force_full = false;
                self.models_committed = self.models_in_flight;
                self.deltas_since_full = match kind {
                    SnapshotKind::Full => 0,
                    SnapshotKind::Delta => self.deltas_since_full + 1,
                };
                let retained = manifest::apply_retention(
                    &self.config.dir,
                    self.config.retain,
                    &mut self.verdicts,
                );
                if !retained.deleted.is_empty() {
                    tracing::debug!(deleted = ?retained.deleted, "old checkpoint epochs deleted");
                }
                let (bytes, rows) = (*bytes, *rows);
                self.update_stats(|s| {
                    s.last_error = None;
                    s.set_aside += retained.set_aside.len() as u64;
                    if let Some(v) = retained.verified {
                        s.verified_epoch = v;
                    }
                    s.last_committed_epoch = epoch;
                    s.last_kind = Some(kind);
                    s.last_commit_unix_ms = unix_ms();
                    s.last_duration = duration;
                    s.last_bytes = bytes;
                    s.last_rows = rows;
                    s.committed += 1;
                    s.in_flight = None;
                });
            }
            Err(message) => {
                tracing::warn!(epoch, error = %message, "checkpoint epoch failed; not committed, the next epoch is a full snapshot");
                self.force_full = true;
                let message = message.clone();
                self.update_stats(|s| {
                    s.failures += 1;
                    s.last_error = Some(format!("epoch {epoch}: {message}"));
                    s.last_error_unix_ms = unix_ms();
                    s.in_flight = None;
                });
            }
        }
        let reply = result
            .map(|_| epoch)
            .map_err(|message| CommitError::Failed { epoch, message });
        for w in flight.waiters {
            let _ = w.send(reply.clone());
        }
        flight.then_stop
    }

    /// A delta epoch in which nothing changed: not committed. Its files are
    /// empty and unsynced; removing the directory costs no disk write.
    fn drop_unchanged(&mut self, flight: InFlight, last: u64) -> bool {
        let epoch = flight.plan.epoch;
        let edir = manifest::epoch_dir(&self.config.dir, epoch);
        if let Err(e) = std::fs::remove_dir_all(&edir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %edir.display(), error = %e, "cannot remove an unchanged epoch's directory");
        }
        tracing::debug!(
            epoch,
            last_committed = last,
            "checkpoint skipped: nothing changed"
        );
        self.update_stats(|s| {
            s.unchanged += 1;
            s.in_flight = None;
        });
        for w in flight.waiters {
            let _ = w.send(Ok(last));
        }
        flight.then_stop
    }

    fn commit(&mut self, flight: &InFlight) -> Result<(u64, u64), String> {
        let edir = manifest::epoch_dir(&self.config.dir, flight.plan.epoch);
        for &shard in &flight.unsynced {
            let path = edir.join(manifest::shard_file_name(shard));
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("fsync {}: {e}", path.display()))?;
        }
        let files: Vec<FileEntry> = flight.files.iter().flatten().cloned().collect();
        if files.len() != self.shards {
            return Err(format!(
                "{} of {} shard files written",
                files.len(),
                self.shards
            ));
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            epoch: flight.plan.epoch,
            kind: flight.plan.kind,
            base: flight.plan.base,
            shards: self.shards,
            created_unix_ms: unix_ms(),
            tables: self.descs.clone(),
            files,
            models: {
                let (models, generation) = self.config.models.snapshot();
                self.models_in_flight = generation;
                models
            },
            checksum: None,
        };
        manifest::commit(&self.config.dir, &manifest).map_err(|e| e.to_string())?;
        // The epoch is committed; a failure to name it in LATEST is logged,
        // not a failed epoch (recovery does not read LATEST).
        if let Err(e) = manifest::write_latest(&self.config.dir, flight.plan.epoch) {
            tracing::warn!(error = %e, "cannot update LATEST");
        }
        let bytes = manifest.files.iter().map(|f| f.bytes).sum();
        let rows = manifest.files.iter().map(|f| f.rows).sum();
        Ok((bytes, rows))
    }
}
