//! Recovery: the newest committed state that verifies, loaded and
//! re-hashed to the current shard count.
//!
//! Each shard file of an epoch holds the keys its writer shard owned, and
//! each key has one owner, so among epochs written with the same shard
//! count the file of writer shard `i` can come from a different epoch than
//! the file of shard `j`: every key is still restored exactly once, from a
//! cut of its own updates. Recovery uses that to lose as little as possible:
//! for every writer shard it takes the newest epoch whose chain *for that
//! shard* (its file in the epoch and in every epoch the delta builds on)
//! verifies. Only if some shard has no such chain does it fall back to
//! epochs written with another shard count, and only if nothing verifies
//! while committed epochs exist does it refuse to start (see
//! [`CheckpointError::Damaged`]): starting empty must be asked for with
//! `--discard-state`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::CheckpointError;
use super::file::{Layout, TableMap, load_file};
use super::manifest::{
    Manifest, ManifestError, epoch_dir, list_epochs, read_manifest, read_verified, set_aside,
    write_latest,
};
use crate::state::{ShardState, TableSpec, validate_tables};

/// The state a process starts from.
#[derive(Debug)]
pub struct Recovered {
    /// The newest epoch restored from (0: nothing was restored, state is
    /// empty). When a damaged file made a shard fall back, other shards may
    /// come from older epochs: see `skipped`.
    pub epoch: u64,
    /// One state per shard, keys already on their owner shard. Their delta
    /// logs hold every restored key, so the first checkpoint of the new run
    /// (always a full snapshot) writes them all.
    pub shards: Vec<ShardState>,
    /// Keys restored, over all tables and shards.
    pub keys: usize,
    /// Newer epochs (or single shard files of them) that were not used,
    /// with the reason (also logged).
    pub skipped: Vec<(u64, String)>,
    /// Damaged epoch directories renamed to `epoch-N.damaged`.
    pub set_aside: Vec<u64>,
}

/// What to do when committed epochs exist but none verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDamage {
    /// Refuse to start ([`CheckpointError::Damaged`]).
    Refuse,
    /// Start with empty state on purpose (`--discard-state`): every existing
    /// epoch is ignored and damaged ones are renamed aside.
    Discard,
}

fn fresh(shards: usize, tables: &[TableSpec]) -> Result<Vec<ShardState>, CheckpointError> {
    (0..shards)
        .map(|_| ShardState::new(tables).map_err(CheckpointError::from))
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Loads the newest usable checkpoint under `dir` for `shards` shards and
/// the configured `tables`; see [`recover_with`] (this refuses on damage).
pub fn recover(
    dir: &Path,
    shards: usize,
    tables: &[TableSpec],
) -> Result<Recovered, CheckpointError> {
    recover_with(dir, shards, tables, OnDamage::Refuse)
}

/// Loads the newest usable checkpoint under `dir` for `shards` shards and
/// the configured `tables`.
///
/// A file is usable when its epoch's manifest parses and is consistent and
/// the file has the recorded size and CRC-32; an epoch directory without a
/// manifest never committed and is ignored. For every writer shard the
/// newest epoch whose chain for that shard is usable is loaded (see the
/// module docs); skipped files are logged with `warn!`. Committed epochs
/// that are damaged and not used by any shard are renamed aside to
/// `epoch-N.damaged`. With no committed epoch at all (an absent or empty
/// `dir`, or only unfinished writes) the state is empty and `epoch` is 0.
/// With committed epochs but no usable chain, `on_damage` decides.
///
/// Keys are re-hashed with [`owner_shard`](crate::state::owner_shard), so the
/// shard count may differ from the one that wrote the files. Tables (and
/// aggregate outputs) the configuration no longer declares are ignored with
/// a warning; outputs it newly declares start empty. A table whose kind, or
/// an output whose function or value type, differs from the checkpoint is an
/// error naming it: the configuration and the checkpoint disagree.
pub fn recover_with(
    dir: &Path,
    shards: usize,
    tables: &[TableSpec],
    on_damage: OnDamage,
) -> Result<Recovered, CheckpointError> {
    let mut scan = scan_checked(dir, shards, tables)?;
    let empty = |skipped, set_aside| -> Result<Recovered, CheckpointError> {
        Ok(Recovered {
            epoch: 0,
            shards: fresh(shards, tables)?,
            keys: 0,
            skipped,
            set_aside,
        })
    };
    if scan.manifests.is_empty() && scan.damaged.is_empty() {
        return empty(Vec::new(), Vec::new());
    }
    if on_damage == OnDamage::Discard {
        // Verify what is there so that damaged epochs are known and set aside.
        let epochs: Vec<u64> = scan.manifests.keys().copied().collect();
        for e in epochs {
            let n = scan.manifests[&e].shards;
            for i in 0..n {
                let _ = scan.file_ok(e, i);
            }
        }
        let aside = scan.set_aside_unused(&HashSet::new());
        tracing::warn!(dir = %dir.display(), "--discard-state: starting with empty state; existing epochs are ignored");
        return empty(Vec::new(), aside);
    }
    restore_from(scan, dir, shards, tables, true)
}

/// What [`recover_with`] and [`read_state`] both start with: a shard count
/// of at least one and well-formed tables, then the scan of `dir`.
fn scan_checked<'d>(
    dir: &'d Path,
    shards: usize,
    tables: &[TableSpec],
) -> Result<Scan<'d>, CheckpointError> {
    if shards == 0 {
        return Err(CheckpointError::Config(
            "shard count must be at least 1".into(),
        ));
    }
    validate_tables(tables)?;
    Layout::new(tables).map_err(CheckpointError::Config)?;
    Scan::new(dir)
}

/// Reads the state as of committed epoch `epoch` (or the newest) the way
/// [`recover`] does — the same scan, per-shard chain choice and checks —
/// but without changing the directory: damaged epochs are skipped, not
/// renamed aside, and `LATEST` is left alone. With `epoch`, newer epochs
/// are ignored and the result is an error unless `epoch` itself is
/// restored. For `coreline state`.
pub fn read_state(
    dir: &Path,
    shards: usize,
    tables: &[TableSpec],
    epoch: Option<u64>,
) -> Result<Recovered, CheckpointError> {
    let mut scan = scan_checked(dir, shards, tables)?;
    if let Some(n) = epoch {
        if !scan.manifests.contains_key(&n) {
            let committed: Vec<String> = scan.manifests.keys().map(u64::to_string).collect();
            return Err(CheckpointError::Config(format!(
                "epoch {n} is not a committed epoch with a valid manifest in {}; committed epochs: {}",
                dir.display(),
                if committed.is_empty() {
                    "none".to_owned()
                } else {
                    committed.join(", ")
                }
            )));
        }
        scan.manifests.retain(|&e, _| e <= n);
        scan.damaged.retain(|&e, _| e <= n);
    }
    if scan.manifests.is_empty() && scan.damaged.is_empty() {
        return Ok(Recovered {
            epoch: 0,
            shards: fresh(shards, tables)?,
            keys: 0,
            skipped: Vec::new(),
            set_aside: Vec::new(),
        });
    }
    let recovered = restore_from(scan, dir, shards, tables, false)?;
    if let Some(n) = epoch
        && recovered.epoch != n
    {
        return Err(CheckpointError::Config(format!(
            "epoch {n} does not verify (the newest usable state is epoch {})",
            recovered.epoch
        )));
    }
    Ok(recovered)
}

/// Loads the newest usable chain per shard from `scan`; `mutate` renames
/// unused damaged epochs aside and rewrites `LATEST` (a restart), or leaves
/// the directory untouched (an export).
fn restore_from(
    mut scan: Scan<'_>,
    dir: &Path,
    shards: usize,
    tables: &[TableSpec],
    mutate: bool,
) -> Result<Recovered, CheckpointError> {
    let mut warned = HashSet::new();
    // Shard counts to try, by their newest committed epoch, newest first.
    let mut groups: Vec<(u64, usize)> = Vec::new();
    for (&e, m) in scan.manifests.iter().rev() {
        if !groups.iter().any(|&(_, n)| n == m.shards) {
            groups.push((e, m.shards));
        }
    }
    for &(_, writers) in &groups {
        let Some(choice) = scan.choose(writers) else {
            continue;
        };
        let mut states = fresh(shards, tables)?;
        let now = now_ms();
        let mut used = HashSet::new();
        for (i, chain) in choice.iter().enumerate() {
            for &e in chain.iter().rev() {
                used.insert(e);
                let m = &scan.manifests[&e];
                let written: Vec<TableSpec> = m
                    .tables
                    .iter()
                    .map(|d| d.to_spec())
                    .collect::<Result<_, _>>()
                    .map_err(|e| CheckpointError::Config(format!("epoch {}: {e}", m.epoch)))?;
                let layout = Layout::new(&written)
                    .map_err(|e| CheckpointError::Config(format!("epoch {}: {e}", m.epoch)))?;
                let (map, warnings) = table_map(&written, &layout, tables)?;
                for w in warnings {
                    if warned.insert(w.clone()) {
                        tracing::warn!("{w}");
                    }
                }
                let edir = epoch_dir(dir, e);
                let bytes = read_verified(&edir, &m.files[i]).map_err(|reason| {
                    CheckpointError::Damaged {
                        dir: dir.to_path_buf(),
                        problems: vec![reason],
                    }
                })?;
                // The bytes passed their CRC: a file that then does not load
                // is not damage but a format this build cannot read.
                load_file(bytes, &layout, &map, &mut states, now).map_err(|reason| {
                    CheckpointError::Unreadable {
                        file: edir.join(&m.files[i].path),
                        reason,
                    }
                })?;
            }
        }
        let newest = choice.iter().map(|c| c[0]).max().unwrap_or(0);
        let mut skipped = Vec::new();
        for (&e, reason) in &scan.damaged {
            if e > choice.iter().map(|c| c[0]).min().unwrap_or(0) {
                skipped.push((e, reason.clone()));
            }
        }
        for (i, chain) in choice.iter().enumerate() {
            if chain[0] < newest {
                skipped.push((
                    newest,
                    format!(
                        "shard file {i} restored from epoch {} instead: newer ones do not verify",
                        chain[0]
                    ),
                ));
            }
        }
        for (e, why) in &skipped {
            tracing::warn!(epoch = e, reason = %why, "checkpoint skipped");
        }
        let aside = if mutate {
            scan.set_aside_unused(&used)
        } else {
            Vec::new()
        };
        if !aside.is_empty()
            && let Err(e) = write_latest(dir, newest)
        {
            tracing::warn!(error = %e, "cannot rewrite LATEST after setting damaged epochs aside");
        }
        let keys = states.iter().map(ShardState::keys).sum();
        tracing::info!(
            epoch = newest,
            keys,
            shards,
            "restored keyed state from checkpoint"
        );
        return Ok(Recovered {
            epoch: newest,
            shards: states,
            keys,
            skipped,
            set_aside: aside,
        });
    }
    let mut problems: Vec<String> = scan.damaged.values().cloned().collect();
    problems.extend(scan.unusable.iter().cloned());
    problems.sort();
    problems.dedup();
    Err(CheckpointError::Damaged {
        dir: dir.to_path_buf(),
        problems,
    })
}

/// What recovery knows about the checkpoint directory.
struct Scan<'d> {
    dir: &'d Path,
    /// Committed epochs whose manifest verifies.
    manifests: BTreeMap<u64, Manifest>,
    /// Committed epochs with damage of their own: the first reason.
    damaged: BTreeMap<u64, String>,
    /// Why chains could not be used (a missing base, say), for the error.
    unusable: Vec<String>,
    /// Per (epoch, file index): whether the file verifies.
    files: HashMap<(u64, usize), bool>,
}

impl<'d> Scan<'d> {
    fn new(dir: &'d Path) -> Result<Scan<'d>, CheckpointError> {
        let mut scan = Scan {
            dir,
            manifests: BTreeMap::new(),
            damaged: BTreeMap::new(),
            unusable: Vec::new(),
            files: HashMap::new(),
        };
        for e in list_epochs(dir)? {
            match read_manifest(dir, e) {
                Ok(m) => {
                    scan.manifests.insert(e, m);
                }
                // Never committed: a write a crash interrupted.
                Err(ManifestError::Missing) => {}
                Err(ManifestError::Invalid(reason)) => {
                    scan.damaged.insert(e, reason);
                }
            }
        }
        Ok(scan)
    }

    /// Whether file `i` of committed epoch `e` verifies (read once).
    fn file_ok(&mut self, e: u64, i: usize) -> bool {
        if let Some(&ok) = self.files.get(&(e, i)) {
            return ok;
        }
        let m = &self.manifests[&e];
        let ok = match read_verified(&epoch_dir(self.dir, e), &m.files[i]) {
            Ok(_) => true,
            Err(reason) => {
                self.damaged.entry(e).or_insert(reason);
                false
            }
        };
        self.files.insert((e, i), ok);
        ok
    }

    /// For each of `writers` writer shards, the newest chain (epochs, newest
    /// first) among epochs written by `writers` shards whose file for that
    /// shard verifies all along; `None` unless every shard has one.
    fn choose(&mut self, writers: usize) -> Option<Vec<Vec<u64>>> {
        let candidates: Vec<u64> = self
            .manifests
            .iter()
            .rev()
            .filter(|(_, m)| m.shards == writers)
            .map(|(&e, _)| e)
            .collect();
        let mut choice = Vec::with_capacity(writers);
        'shard: for i in 0..writers {
            'epoch: for &e in &candidates {
                let mut chain = vec![e];
                let mut cur = self.manifests[&e].base;
                while let Some(b) = cur {
                    match self.manifests.get(&b) {
                        Some(m) if m.shards == writers => {
                            chain.push(b);
                            cur = m.base;
                        }
                        _ => {
                            self.unusable.push(format!(
                                "epoch {e} builds on epoch {b}, which is missing or unusable"
                            ));
                            continue 'epoch;
                        }
                    }
                }
                for &link in &chain {
                    if !self.file_ok(link, i) {
                        continue 'epoch;
                    }
                }
                choice.push(chain);
                continue 'shard;
            }
            return None;
        }
        Some(choice)
    }

    /// Renames aside every damaged epoch no shard was restored from.
    fn set_aside_unused(&self, used: &HashSet<u64>) -> Vec<u64> {
        let mut aside = Vec::new();
        for (&e, reason) in &self.damaged {
            if used.contains(&e) {
                continue;
            }
            match set_aside(self.dir, e) {
                Ok(to) => {
                    tracing::warn!(epoch = e, to = %to.display(), reason = %reason, "damaged checkpoint epoch renamed aside");
                    aside.push(e);
                }
                Err(err) => {
                    tracing::warn!(epoch = e, error = %err, "could not rename a damaged checkpoint epoch aside");
                }
            }
        }
        aside
    }
}

/// Maps the tables a checkpoint was written with (laid out as `layout`)
/// onto the configured ones; each kind decides what restores into it
/// ([`TableSpec::reconcile`]).
fn table_map(
    written: &[TableSpec],
    layout: &Layout,
    current: &[TableSpec],
) -> Result<(Vec<TableMap>, Vec<String>), CheckpointError> {
    let mut warnings = Vec::new();
    let mut map = Vec::with_capacity(written.len());
    for (wi, w) in written.iter().enumerate() {
        let Some((id, c)) = current.iter().enumerate().find(|(_, c)| c.name == w.name) else {
            warnings.push(format!(
                "checkpoint table `{}` is not declared by the configuration any more; its state is ignored",
                w.name
            ));
            map.push(TableMap::Dropped);
            continue;
        };
        c.reconcile(w, &mut warnings)
            .map_err(|message| CheckpointError::Mismatch {
                table: w.name.clone(),
                message,
            })?;
        map.push(TableMap::Mapped {
            id,
            cols: layout.sources(wi, c),
            replicated: c.replicated(),
        });
    }
    Ok((map, warnings))
}
