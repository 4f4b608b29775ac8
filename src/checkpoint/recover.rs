//! Recovery: the newest committed epoch that is complete and intact, loaded
//! and re-hashed to the current shard count.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::CheckpointError;
use super::file::{Layout, Source, TableMap, load_file};
use super::manifest::{Manifest, ManifestError, epoch_dir, list_epochs, read_manifest};
use crate::state::{ShardState, TableKind, TableSpec, validate_tables};

/// The state a process starts from.
#[derive(Debug)]
pub struct Recovered {
    /// The epoch restored (0: nothing valid was found, state is empty).
    pub epoch: u64,
    /// One state per shard, keys already on their owner shard. Their delta
    /// logs hold every restored key, so the first checkpoint of the new run
    /// (always a full snapshot) writes them all.
    pub shards: Vec<ShardState>,
    /// Keys restored, over all tables and shards.
    pub keys: usize,
    /// Newer epochs that were skipped, with the reason (also logged).
    pub skipped: Vec<(u64, String)>,
}

enum Attempt {
    /// This epoch cannot be used; try the previous one.
    Skip(String),
    /// The configuration cannot use this checkpoint at all.
    Fatal(CheckpointError),
}

fn fresh(shards: usize, tables: &[TableSpec]) -> Result<Vec<ShardState>, CheckpointError> {
    (0..shards)
        .map(|_| ShardState::new(tables).map_err(CheckpointError::from))
        .collect()
}

/// Loads the newest usable checkpoint under `dir` for `shards` shards and
/// the configured `tables`.
///
/// An epoch is usable when its manifest parses and is consistent, and every
/// file of it and of the epochs it builds on (its full base and the deltas
/// between) is present with the recorded size and CRC-32. An unusable epoch
/// is skipped with a `warn!` and the previous one is tried; with none, the
/// state is empty and `epoch` is 0 (an absent or empty `dir` is normal).
///
/// Keys are re-hashed with [`owner_shard`](crate::state::owner_shard), so the
/// shard count may differ from the one that wrote the files. Tables (and
/// aggregate outputs) the configuration no longer declares are ignored with
/// a warning; outputs it newly declares start empty. A table whose kind, or
/// an output whose function or value type, differs from the checkpoint is an
/// error naming it: the configuration and the checkpoint disagree.
pub fn recover(
    dir: &Path,
    shards: usize,
    tables: &[TableSpec],
) -> Result<Recovered, CheckpointError> {
    if shards == 0 {
        return Err(CheckpointError::Config(
            "shard count must be at least 1".into(),
        ));
    }
    validate_tables(tables)?;
    Layout::new(tables).map_err(CheckpointError::Config)?;
    let mut skipped = Vec::new();
    let mut warned = HashSet::new();
    for &epoch in list_epochs(dir)?.iter().rev() {
        match try_epoch(dir, epoch, shards, tables, &mut warned) {
            Ok(states) => {
                let keys = states.iter().map(ShardState::keys).sum();
                tracing::info!(epoch, keys, shards, "restored keyed state from checkpoint");
                return Ok(Recovered {
                    epoch,
                    shards: states,
                    keys,
                    skipped,
                });
            }
            Err(Attempt::Skip(reason)) => {
                tracing::warn!(epoch, reason = %reason, "checkpoint epoch skipped; trying the previous one");
                skipped.push((epoch, reason));
            }
            Err(Attempt::Fatal(e)) => return Err(e),
        }
    }
    Ok(Recovered {
        epoch: 0,
        shards: fresh(shards, tables)?,
        keys: 0,
        skipped,
    })
}

/// Loads exactly committed epoch `epoch` under `dir` (its whole chain, with
/// the same checks as [`recover`]); an unusable epoch is an error naming
/// why, not a fall-back to an older one. For `coreline state --epoch N`.
pub fn recover_epoch(
    dir: &Path,
    epoch: u64,
    shards: usize,
    tables: &[TableSpec],
) -> Result<Recovered, CheckpointError> {
    if shards == 0 {
        return Err(CheckpointError::Config(
            "shard count must be at least 1".into(),
        ));
    }
    validate_tables(tables)?;
    Layout::new(tables).map_err(CheckpointError::Config)?;
    match try_epoch(dir, epoch, shards, tables, &mut HashSet::new()) {
        Ok(states) => Ok(Recovered {
            epoch,
            keys: states.iter().map(ShardState::keys).sum(),
            shards: states,
            skipped: Vec::new(),
        }),
        Err(Attempt::Skip(reason)) => Err(CheckpointError::Config(format!(
            "epoch {epoch} cannot be read: {reason}"
        ))),
        Err(Attempt::Fatal(e)) => Err(e),
    }
}

fn manifest_of(dir: &Path, epoch: u64) -> Result<Manifest, Attempt> {
    read_manifest(dir, epoch).map_err(|e| match e {
        ManifestError::Missing => {
            Attempt::Skip(format!("epoch {epoch} was never committed (no MANIFEST)"))
        }
        ManifestError::Invalid(reason) => Attempt::Skip(reason),
    })
}

fn try_epoch(
    dir: &Path,
    epoch: u64,
    shards: usize,
    tables: &[TableSpec],
    warned: &mut HashSet<String>,
) -> Result<Vec<ShardState>, Attempt> {
    let mut chain = vec![manifest_of(dir, epoch)?];
    while let Some(base) = chain.last().and_then(|m| m.base) {
        let m = manifest_of(dir, base).map_err(|a| match a {
            Attempt::Skip(r) => Attempt::Skip(format!("its base epoch {base} is unusable: {r}")),
            fatal => fatal,
        })?;
        chain.push(m);
    }
    chain.reverse();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut states = fresh(shards, tables).map_err(Attempt::Fatal)?;
    for m in &chain {
        let written: Vec<TableSpec> = m
            .tables
            .iter()
            .map(|d| d.to_spec())
            .collect::<Result<_, _>>()
            .map_err(|e| Attempt::Skip(format!("epoch {}: {e}", m.epoch)))?;
        let layout =
            Layout::new(&written).map_err(|e| Attempt::Skip(format!("epoch {}: {e}", m.epoch)))?;
        let (map, warnings) = table_map(&written, tables).map_err(Attempt::Fatal)?;
        for w in warnings {
            if warned.insert(w.clone()) {
                tracing::warn!("{w}");
            }
        }
        let edir = epoch_dir(dir, m.epoch);
        for f in &m.files {
            let path = edir.join(&f.path);
            let bytes = fs::read(&path)
                .map_err(|e| Attempt::Skip(format!("cannot read {}: {e}", path.display())))?;
            if bytes.len() as u64 != f.bytes {
                return Err(Attempt::Skip(format!(
                    "{} is {} bytes, the manifest says {}",
                    path.display(),
                    bytes.len(),
                    f.bytes
                )));
            }
            let crc = crc32fast::hash(&bytes);
            if crc != f.crc32 {
                return Err(Attempt::Skip(format!(
                    "{} has CRC-32 {crc:#010x}, the manifest says {:#010x}",
                    path.display(),
                    f.crc32
                )));
            }
            load_file(bytes, &layout, &map, &mut states, now_ms)
                .map_err(|e| Attempt::Skip(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(states)
}

/// Maps the tables a checkpoint was written with onto the configured ones.
fn table_map(
    written: &[TableSpec],
    current: &[TableSpec],
) -> Result<(Vec<TableMap>, Vec<String>), CheckpointError> {
    let mut warnings = Vec::new();
    let mut map = Vec::with_capacity(written.len());
    for w in written {
        let Some((id, c)) = current.iter().enumerate().find(|(_, c)| c.name == w.name) else {
            warnings.push(format!(
                "checkpoint table `{}` is not declared by the configuration any more; its state is ignored",
                w.name
            ));
            map.push(TableMap::Dropped);
            continue;
        };
        let mismatch = |message: String| CheckpointError::Mismatch {
            table: w.name.clone(),
            message,
        };
        match (&w.kind, &c.kind) {
            (TableKind::Aggregate(wouts), TableKind::Aggregate(couts)) => {
                let mut sources = Vec::with_capacity(couts.len());
                for co in couts {
                    match wouts.iter().position(|wo| wo.name == co.name) {
                        Some(k) => {
                            let wo = &wouts[k];
                            if wo.func.name() != co.func.name()
                                || wo.output_type() != co.output_type()
                            {
                                return Err(mismatch(format!(
                                    "output `{}` is `{}` ({}) in the checkpoint but `{}` ({}) in the configuration",
                                    co.name,
                                    wo.spec(),
                                    wo.output_type(),
                                    co.spec(),
                                    co.output_type()
                                )));
                            }
                            sources.push(Source::Output(k));
                        }
                        None => {
                            warnings.push(format!(
                                "aggregate `{}` output `{}` is new; it starts empty for restored keys",
                                w.name, co.name
                            ));
                            sources.push(Source::Missing);
                        }
                    }
                }
                for wo in wouts {
                    if !couts.iter().any(|co| co.name == wo.name) {
                        warnings.push(format!(
                            "aggregate `{}` output `{}` is not declared any more; its state is ignored",
                            w.name, wo.name
                        ));
                    }
                }
                map.push(TableMap::Aggregate(id, sources));
            }
            (TableKind::Changed { value_type: wt }, TableKind::Changed { value_type: ct }) => {
                if wt != ct {
                    return Err(mismatch(format!(
                        "the watched value is {wt} in the checkpoint but {ct} in the configuration"
                    )));
                }
                map.push(TableMap::Changed(id));
            }
            _ => {
                return Err(mismatch(format!(
                    "it is a `{}` step in the checkpoint but a `{}` step in the configuration",
                    w.kind_name(),
                    c.kind_name()
                )));
            }
        }
    }
    Ok((map, warnings))
}
