//! The background writer: applies every shard capture to its mirror of that
//! shard's state and writes the epoch's shard file (a delta from the
//! capture, or a full snapshot from the mirror), then recycles the capture.
//!
//! Invariant: every capture of a shard is applied to the mirror, in order,
//! exactly once — also when the plan for its epoch is gone or writing the
//! file fails — because slot numbers in later captures refer to keys created
//! by earlier ones. A capture that does not line up with the mirror (a bug)
//! poisons that shard's mirror: every later file of the shard fails with the
//! reason, visibly, instead of writing wrong state.

use std::collections::VecDeque;
use std::path::PathBuf;

use crossbeam_channel::{Receiver, Sender};

use super::file::{Layout, ShardFileWriter};
use super::manifest::{FileEntry, SnapshotKind, create_epoch_dir, epoch_dir, shard_file_name};
use crate::row::Slot;
use crate::state::{Capture, Key, TableSpec};

/// What the coordinator decided for an epoch, sent before its barriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochPlan {
    pub(crate) epoch: u64,
    pub(crate) kind: SnapshotKind,
    pub(crate) base: Option<u64>,
}

/// Messages to the writer thread, on one channel so that a plan sent before
/// the barriers is always seen before the captures answering them.
#[derive(Debug)]
pub(crate) enum WriterMsg {
    Plan(EpochPlan),
    Capture(Capture),
    Shutdown,
}

/// One shard file written (or not) for an epoch.
#[derive(Debug)]
pub(crate) struct FileDone {
    pub(crate) epoch: u64,
    pub(crate) shard: usize,
    pub(crate) result: Result<FileEntry, String>,
    /// The capture held a change (a new key or a changed slot).
    pub(crate) changed: bool,
    /// The file was fsynced. An unchanged delta is not: if nothing changed
    /// anywhere the epoch is dropped unread, otherwise the coordinator
    /// fsyncs it before committing.
    pub(crate) synced: bool,
}

/// The writer's copy of one table of one shard, indexed by slot: each key
/// and its state columns' values (`width` per key).
#[derive(Debug)]
struct MirrorTable {
    width: usize,
    keys: Vec<Key>,
    vals: Vec<Slot>,
}

/// The writer's copy of one shard's state.
#[derive(Debug)]
pub(crate) struct Mirror {
    tables: Vec<MirrorTable>,
}

impl Mirror {
    pub(crate) fn new(specs: &[TableSpec]) -> Mirror {
        Mirror {
            tables: specs
                .iter()
                .map(|s| MirrorTable {
                    width: s.state_columns().len(),
                    keys: Vec::new(),
                    vals: Vec::new(),
                })
                .collect(),
        }
    }

    /// Applies one capture: new keys first (they are the next slots), then
    /// each changed slot's state.
    pub(crate) fn apply(&mut self, cap: &Capture) -> Result<(), String> {
        if cap.logs.len() != self.tables.len() {
            return Err(format!(
                "capture has {} tables, the mirror {}",
                cap.logs.len(),
                self.tables.len()
            ));
        }
        for (t, (table, log)) in self.tables.iter_mut().zip(&cap.logs).enumerate() {
            let MirrorTable { width, keys, vals } = table;
            let w = *width;
            if log.slots.is_empty() && log.new_keys.len() == 0 {
                continue;
            }
            if log.width() != w {
                return Err(format!(
                    "table #{t}: capture records {} columns, the mirror {w}",
                    log.width()
                ));
            }
            if log.slot_base != keys.len() {
                return Err(format!(
                    "table #{t}: capture starts at slot {} but the mirror has {} keys",
                    log.slot_base,
                    keys.len()
                ));
            }
            for key in log.new_keys.iter() {
                keys.push(key);
                vals.extend(std::iter::repeat_with(Slot::default).take(w));
            }
            for (i, &slot) in log.slots.iter().enumerate() {
                let s = slot as usize;
                if s >= keys.len() {
                    return Err(format!("table #{t}: capture names unknown slot {s}"));
                }
                for c in 0..w {
                    let v = log
                        .val(i, c)
                        .map_err(|e| format!("table #{t}: corrupt text in capture: {e}"))?;
                    vals[s * w + c].set(v);
                }
            }
        }
        Ok(())
    }

    /// Writes the rows of `kind`: every key (full) or the keys `cap` changed
    /// (delta), with their state from the mirror (equal to the capture's,
    /// since `cap` was applied last).
    pub(crate) fn write(
        &self,
        out: &mut ShardFileWriter<'_>,
        kind: SnapshotKind,
        cap: &Capture,
    ) -> Result<(), String> {
        for (t, (table, log)) in self.tables.iter().zip(&cap.logs).enumerate() {
            let MirrorTable { width, keys, vals } = table;
            let w = *width;
            let row = |s: usize| (keys[s].as_val(), &vals[s * w..s * w + w]);
            match kind {
                SnapshotKind::Full => out.rows(t, (0..keys.len()).map(row))?,
                SnapshotKind::Delta => out.rows(t, log.slots.iter().map(|&s| row(s as usize)))?,
            }
        }
        Ok(())
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) dir: PathBuf,
    pub(crate) layout: Layout,
    pub(crate) mirrors: Vec<Mirror>,
    pub(crate) poisoned: Vec<Option<String>>,
    pub(crate) plans: VecDeque<EpochPlan>,
    pub(crate) spares: Vec<Sender<Capture>>,
    pub(crate) done: Sender<FileDone>,
    /// The newest epoch directory this writer created: files are only
    /// written into directories it made itself.
    pub(crate) made_dir: Option<u64>,
}

/// Plans kept for epochs whose captures are still expected.
const MAX_PLANS: usize = 64;

impl Writer {
    pub(crate) fn new(
        dir: PathBuf,
        layout: Layout,
        spares: Vec<Sender<Capture>>,
        done: Sender<FileDone>,
    ) -> Writer {
        let shards = spares.len();
        Writer {
            mirrors: (0..shards).map(|_| Mirror::new(layout.tables())).collect(),
            poisoned: vec![None; shards],
            plans: VecDeque::new(),
            dir,
            layout,
            spares,
            done,
            made_dir: None,
        }
    }

    /// Runs until `Shutdown` or until every sender is gone.
    pub(crate) fn run(mut self, inbox: Receiver<WriterMsg>) {
        while let Ok(msg) = inbox.recv() {
            match msg {
                WriterMsg::Plan(plan) => {
                    if self.plans.len() == MAX_PLANS {
                        self.plans.pop_front();
                    }
                    self.plans.push_back(plan);
                }
                WriterMsg::Capture(cap) => self.capture(cap),
                WriterMsg::Shutdown => break,
            }
        }
    }

    fn capture(&mut self, mut cap: Capture) {
        let (epoch, shard) = (cap.epoch, cap.shard);
        let changed = cap.changed_keys() > 0 || cap.new_keys() > 0;
        let result = self.handle(&cap, changed);
        let synced = result.as_ref().is_ok_and(|(_, synced)| *synced);
        let result = result.map(|(entry, _)| entry);
        if let Err(e) = &result {
            tracing::warn!(epoch, shard, error = %e, "checkpoint shard file not written");
        }
        cap.recycle();
        if let Some(tx) = self.spares.get(shard) {
            // A full spare queue just drops this one; the shard allocates anew.
            let _ = tx.try_send(cap);
        }
        let _ = self.done.send(FileDone {
            epoch,
            shard,
            result,
            changed,
            synced,
        });
    }

    /// Writes the shard file for `cap`; returns its entry and whether it was
    /// fsynced.
    fn handle(&mut self, cap: &Capture, changed: bool) -> Result<(FileEntry, bool), String> {
        let shard = cap.shard;
        let Some(mirror) = self.mirrors.get_mut(shard) else {
            return Err(format!("capture from unknown shard {shard}"));
        };
        if let Some(reason) = &self.poisoned[shard] {
            return Err(format!("shard {shard} mirror is unusable: {reason}"));
        }
        if let Err(e) = mirror.apply(cap) {
            let reason = format!("capture for epoch {} did not line up: {e}", cap.epoch);
            self.poisoned[shard] = Some(reason.clone());
            return Err(reason);
        }
        let plan = self
            .plans
            .iter()
            .find(|p| p.epoch == cap.epoch)
            .copied()
            .unwrap_or(EpochPlan {
                epoch: cap.epoch,
                kind: SnapshotKind::Full,
                base: None,
            });
        let edir = if self.made_dir == Some(plan.epoch) {
            epoch_dir(&self.dir, plan.epoch)
        } else {
            let edir = create_epoch_dir(&self.dir, plan.epoch).map_err(|e| {
                format!("create {}: {e}", epoch_dir(&self.dir, plan.epoch).display())
            })?;
            self.made_dir = Some(plan.epoch);
            edir
        };
        let name = shard_file_name(shard);
        let path = edir.join(&name);
        let schema = self.layout.schema(plan.epoch, shard, plan.kind, plan.base);
        let mut out = ShardFileWriter::create(&path, &self.layout, schema)?;
        self.mirrors[shard]
            .write(&mut out, plan.kind, cap)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        let sync = changed || plan.kind == SnapshotKind::Full;
        let written = out
            .finish(sync)
            .map_err(|e| format!("finish {}: {e}", path.display()))?;
        let entry = FileEntry {
            shard,
            path: name,
            bytes: written.bytes,
            crc32: written.crc32,
            rows: written.rows,
            kind: plan.kind,
            base: plan.base,
        };
        Ok((entry, sync))
    }
}
