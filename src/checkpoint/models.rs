//! Models as control data in the checkpoint: the model files swapped in
//! with `PUT /models`, kept beside the epochs, and the [`ModelLedger`] of
//! which step serves which.
//!
//! ```text
//! dir/
//!   models/
//!     3f2a…9c.onnx       a swapped-in model, named by its version (content hash)
//!   epoch-14/MANIFEST    "models": { "iris": "3f2a…9c.onnx" }
//! ```
//!
//! A model file is written (temp, fsync, rename, fsync of `models/`) before
//! it is installed on any shard, so every manifest that names it names a
//! durable file. Each committed manifest records the ledger as it was when
//! the epoch was committed; a restart serves, for each step it names, the
//! model of the newest committed epoch, and the configuration's model for
//! the others. An epoch in which no state changed is still committed when
//! the ledger changed since the last commit, so a swap is durable within
//! one checkpoint interval. Model files are small and few; they are not
//! deleted by retention.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::manifest::{self, ManifestError};

/// The directory under the checkpoint directory that holds model files.
pub const MODELS_DIR: &str = "models";

/// Which model file (`<version>.<ext>` in [`MODELS_DIR`]) each swapped
/// step serves, shared by the admin endpoint (which records a swap once
/// every shard installed it) and the checkpoint coordinator (which writes
/// it into each manifest). Never touched by a shard.
#[derive(Clone, Default)]
pub struct ModelLedger(Arc<Mutex<Ledger>>);

#[derive(Default)]
struct Ledger {
    models: BTreeMap<String, String>,
    /// Bumped on every change: the coordinator commits an epoch when it
    /// differs from the one it last committed.
    generation: u64,
}

impl std::fmt::Debug for ModelLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ModelLedger")
            .field(&self.snapshot().0)
            .finish()
    }
}

impl PartialEq for ModelLedger {
    fn eq(&self, other: &ModelLedger) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl ModelLedger {
    /// A ledger holding `models` (restored from a checkpoint).
    pub fn new(models: BTreeMap<String, String>) -> ModelLedger {
        ModelLedger(Arc::new(Mutex::new(Ledger {
            models,
            generation: 0,
        })))
    }

    /// Records that `step` now serves `file` (a name in [`MODELS_DIR`]).
    pub fn record(&self, step: &str, file: &str) {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        l.models.insert(step.to_string(), file.to_string());
        l.generation += 1;
    }

    /// The current map and its generation.
    pub fn snapshot(&self) -> (BTreeMap<String, String>, u64) {
        let l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (l.models.clone(), l.generation)
    }
}

/// `dir/models/<file>`.
pub fn model_path(dir: &Path, file: &str) -> PathBuf {
    dir.join(MODELS_DIR).join(file)
}

/// Writes `bytes` as `dir/models/<version>.<ext>` durably and returns the
/// file name. A file already there with the same size is the same content
/// (its name is its hash) and is kept.
pub fn store(dir: &Path, version: &str, ext: &str, bytes: &[u8]) -> io::Result<String> {
    let mdir = dir.join(MODELS_DIR);
    manifest::create_root(&mdir)?;
    let name = format!("{version}.{ext}");
    let path = mdir.join(&name);
    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64) {
        return Ok(name);
    }
    let tmp = mdir.join(format!("{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = manifest::create_new_file(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    fs::File::open(&mdir)?.sync_all()?;
    Ok(name)
}

/// The models the manifest of committed epoch `epoch` records (empty for
/// epoch 0, nothing restored).
pub fn committed(dir: &Path, epoch: u64) -> Result<BTreeMap<String, String>, String> {
    if epoch == 0 {
        return Ok(BTreeMap::new());
    }
    match manifest::read_manifest(dir, epoch) {
        Ok(m) => Ok(m.models),
        Err(ManifestError::Missing) => Err(format!("epoch {epoch} has no manifest")),
        Err(ManifestError::Invalid(why)) => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_content_addressed_and_idempotent() {
        let dir = std::env::temp_dir().join(format!("coreline-models-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = store(&dir, "abc", "json", b"{}").expect("stored");
        let b = store(&dir, "abc", "json", b"{}").expect("stored again");
        assert_eq!(a, "abc.json");
        assert_eq!(a, b);
        assert_eq!(fs::read(model_path(&dir, &a)).expect("read"), b"{}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn ledger_counts_changes() {
        let l = ModelLedger::default();
        assert_eq!(l.snapshot().1, 0);
        l.record("iris", "abc.onnx");
        let (m, g) = l.snapshot();
        assert_eq!(g, 1);
        assert_eq!(m["iris"], "abc.onnx");
    }
}
