//! The checkpoint directory: epoch directories, the `MANIFEST` that commits
//! an epoch, and retention.
//!
//! ```text
//! dir/
//!   epoch-12/            a full snapshot
//!     shard-0.arrow
//!     shard-1.arrow
//!     MANIFEST           JSON; written last (temp, fsync, rename, fsync dirs)
//!   epoch-13/            a delta on top of epoch 12
//!     ...
//! ```
//!
//! An epoch is committed if and only if its `MANIFEST` exists; a directory
//! without one is a write that never finished and is ignored (and deleted by
//! retention once older than the newest committed epoch).
//!
//! `dir/LATEST` names the newest committed epoch's directory (`epoch-14`
//! and a newline); it is replaced atomically after each commit, so a reader
//! never sees a partial name. A committed epoch found damaged (a manifest or
//! file that does not verify) is renamed aside to `epoch-N.damaged`, never
//! deleted, so an operator can inspect it.
//!
//! Files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600, only
//! inside epoch directories this process created itself (mode 0700): a
//! symlink or a directory planted in the checkpoint directory makes the
//! epoch fail instead of redirecting the write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CheckpointError;
pub use crate::state::{ColumnDesc, OutputDesc, TableDesc};

/// The manifest format version written by this build.
pub const MANIFEST_FORMAT: u32 = 1;

/// The name of the file that commits an epoch.
pub const MANIFEST_NAME: &str = "MANIFEST";

/// The name of the file naming the newest committed epoch.
pub const LATEST_NAME: &str = "LATEST";

/// Creates a new file for writing: it must not exist yet (`O_EXCL`), a
/// symlink in its place is refused (`O_NOFOLLOW`), and it is readable by the
/// owner only (0600).
pub(crate) fn create_new_file(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Creates the checkpoint directory (and missing parents) with mode 0700.
/// An existing directory is left as it is.
pub(crate) fn create_root(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates `dir/epoch-<epoch>` (mode 0700). It must not exist: a directory
/// or symlink already there was not made by this process for this epoch,
/// and writing into it could write anywhere.
pub(crate) fn create_epoch_dir(dir: &Path, epoch: u64) -> io::Result<PathBuf> {
    let edir = epoch_dir(dir, epoch);
    fs::DirBuilder::new().mode(0o700).create(&edir).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(
                e.kind(),
                format!(
                    "{} already exists and was not created by this process for epoch {epoch}; refusing to write into it",
                    edir.display()
                ),
            )
        } else {
            e
        }
    })?;
    Ok(edir)
}

/// Replaces `dir/LATEST` with `epoch-<epoch>` atomically (temp file, fsync,
/// rename, fsync of `dir`).
pub(crate) fn write_latest(dir: &Path, epoch: u64) -> Result<(), CheckpointError> {
    let tmp = dir.join("LATEST.tmp");
    // A stale temp file from a crash; unlink does not follow symlinks.
    let _ = fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut f = create_new_file(&tmp)?;
        writeln!(f, "epoch-{epoch}")?;
        f.sync_all()
    };
    write().map_err(|e| CheckpointError::io("write", &tmp, e))?;
    let path = dir.join(LATEST_NAME);
    fs::rename(&tmp, &path).map_err(|e| CheckpointError::io("rename into place", &path, e))?;
    sync_dir(dir)
}

/// Renames a damaged `dir/epoch-<epoch>` to `epoch-<epoch>.damaged` (with a
/// numeric suffix if that exists already). Returns the new path.
pub(crate) fn set_aside(dir: &Path, epoch: u64) -> io::Result<PathBuf> {
    let from = epoch_dir(dir, epoch);
    let mut to = dir.join(format!("epoch-{epoch}.damaged"));
    let mut n = 1;
    while fs::symlink_metadata(&to).is_ok() {
        n += 1;
        to = dir.join(format!("epoch-{epoch}.damaged.{n}"));
    }
    fs::rename(&from, &to)?;
    Ok(to)
}

/// Reads one file of an epoch and checks it against its manifest entry:
/// present, of the recorded size, with the recorded CRC-32. The error names
/// the file and what is wrong.
pub(crate) fn read_verified(edir: &Path, f: &FileEntry) -> Result<Vec<u8>, String> {
    let path = edir.join(&f.path);
    let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 != f.bytes {
        return Err(format!(
            "{} is {} bytes, the manifest says {}",
            path.display(),
            bytes.len(),
            f.bytes
        ));
    }
    let crc = crc32fast::hash(&bytes);
    if crc != f.crc32 {
        return Err(format!(
            "{} has CRC-32 {crc:#010x}, the manifest says {:#010x}",
            path.display(),
            f.crc32
        ));
    }
    Ok(bytes)
}

/// Whether a file holds every key or only the keys changed since its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Every key of the shard.
    Full,
    /// Only the keys changed since the base epoch, each with its full state.
    Delta,
}

impl SnapshotKind {
    /// `"full"` or `"delta"`.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotKind::Full => "full",
            SnapshotKind::Delta => "delta",
        }
    }
}

/// One shard file of an epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The shard that wrote it.
    pub shard: usize,
    /// File name inside the epoch directory (`shard-<i>.arrow`).
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE, as `crc32fast` and zlib compute it) of the whole file.
    pub crc32: u32,
    /// Number of rows (one per key and table).
    pub rows: u64,
    /// Full snapshot or delta.
    pub kind: SnapshotKind,
    /// For a delta: the epoch it applies on top of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
}

/// The commit record of one epoch.
///
/// Unknown fields are refused: a flipped byte in the name of the optional
/// `checksum` field must not turn a sealed manifest into an unsealed one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`] of the writer.
    pub format: u32,
    /// The epoch number (equals the directory's).
    pub epoch: u64,
    /// Full snapshot or delta (all files of an epoch share it).
    pub kind: SnapshotKind,
    /// For a delta: the committed epoch it builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
    /// Number of shards (and files) that wrote the epoch.
    pub shards: usize,
    /// Unix milliseconds when the epoch was committed.
    pub created_unix_ms: u64,
    /// The keyed state tables the files hold.
    pub tables: Vec<TableDesc>,
    /// One entry per shard, in shard order.
    pub files: Vec<FileEntry>,
    /// Models swapped in with `PUT /models`: step name → file in
    /// `models/` (see [`super::models`]). Absent when none was swapped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, String>,
    /// `crc32:<hex>` of the manifest as written without this field, so that
    /// a flipped byte that still parses (a digit of a CRC, an epoch number)
    /// is caught. Absent in manifests of older builds, which are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

impl Manifest {
    /// The bytes a manifest is written as (pretty JSON and a newline).
    fn to_bytes(&self) -> Vec<u8> {
        let mut body = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        body.push(b'\n');
        body
    }

    /// The checksum of this manifest's content (without its checksum).
    fn content_checksum(&self) -> String {
        let bare = Manifest {
            checksum: None,
            ..self.clone()
        };
        format!("crc32:{:08x}", crc32fast::hash(&bare.to_bytes()))
    }

    /// Internal consistency: epoch matches the directory, one file per shard
    /// in order, kinds and bases agree.
    pub(crate) fn check(&self, dir_epoch: u64) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!(
                "manifest format {} is not supported (expected {MANIFEST_FORMAT})",
                self.format
            ));
        }
        if self.epoch != dir_epoch {
            return Err(format!(
                "manifest says epoch {} but lives in epoch-{dir_epoch}",
                self.epoch
            ));
        }
        if self.files.len() != self.shards || self.shards == 0 {
            return Err(format!(
                "manifest lists {} files for {} shards",
                self.files.len(),
                self.shards
            ));
        }
        match (self.kind, self.base) {
            (SnapshotKind::Full, None) => {}
            (SnapshotKind::Delta, Some(b)) if b < self.epoch => {}
            (k, b) => {
                return Err(format!(
                    "manifest kind {} with base {b:?} is inconsistent",
                    k.name()
                ));
            }
        }
        for (i, f) in self.files.iter().enumerate() {
            if f.shard != i
                || f.path != shard_file_name(i)
                || f.kind != self.kind
                || f.base != self.base
            {
                return Err(format!(
                    "manifest file entry #{i} ({}) is inconsistent",
                    f.path
                ));
            }
        }
        Ok(())
    }
}

/// `dir/epoch-<epoch>`.
pub fn epoch_dir(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!("epoch-{epoch}"))
}

/// `shard-<shard>.arrow`.
pub fn shard_file_name(shard: usize) -> String {
    format!("shard-{shard}.arrow")
}

fn parse_epoch_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("epoch-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The epoch numbers with a directory in `dir`, ascending. An absent `dir`
/// has none.
pub(crate) fn list_epochs(dir: &Path) -> Result<Vec<u64>, CheckpointError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CheckpointError::io("list checkpoint directory", dir, e)),
    };
    let mut epochs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CheckpointError::io("list checkpoint directory", dir, e))?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_epoch_dir)
            && entry.file_type().is_ok_and(|t| t.is_dir())
        {
            epochs.push(n);
        }
    }
    epochs.sort_unstable();
    Ok(epochs)
}

/// The highest epoch number any entry of `dir` carries, including
/// directories renamed aside (`epoch-N.damaged`), so that a new run never
/// reuses a number. 0 for none.
pub(crate) fn highest_epoch_number(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let digits = name.to_str()?.strip_prefix("epoch-")?;
            let end = digits
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(digits.len());
            digits[..end].parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Why an epoch's manifest could not be used.
#[derive(Debug)]
pub(crate) enum ManifestError {
    /// No `MANIFEST`: the epoch was never committed.
    Missing,
    /// Present but unreadable, unparsable or inconsistent.
    Invalid(String),
}

/// Reads and checks `dir/epoch-<epoch>/MANIFEST`.
pub(crate) fn read_manifest(dir: &Path, epoch: u64) -> Result<Manifest, ManifestError> {
    let path = epoch_dir(dir, epoch).join(MANIFEST_NAME);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ManifestError::Missing),
        Err(e) => {
            return Err(ManifestError::Invalid(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let m: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| ManifestError::Invalid(format!("{} does not parse: {e}", path.display())))?;
    if let Some(sum) = &m.checksum {
        let want = m.content_checksum();
        if *sum != want {
            return Err(ManifestError::Invalid(format!(
                "{} fails its checksum (records {sum}, content is {want})",
                path.display()
            )));
        }
    }
    m.check(epoch).map_err(ManifestError::Invalid)?;
    Ok(m)
}

/// fsyncs a directory, making the entries created in it durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), CheckpointError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| CheckpointError::io("fsync directory", path, e))
}

/// Commits an epoch whose files are written and fsynced: fsyncs the epoch
/// directory, writes `MANIFEST.tmp`, fsyncs it, renames it to `MANIFEST`,
/// then fsyncs the epoch directory and `dir` so the commit survives a crash.
pub(crate) fn commit(dir: &Path, manifest: &Manifest) -> Result<(), CheckpointError> {
    let edir = epoch_dir(dir, manifest.epoch);
    sync_dir(&edir)?;
    let tmp = edir.join("MANIFEST.tmp");
    let sealed = Manifest {
        checksum: Some(manifest.content_checksum()),
        ..manifest.clone()
    };
    let body = sealed.to_bytes();
    let write = || -> io::Result<()> {
        let mut f = create_new_file(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()
    };
    write().map_err(|e| CheckpointError::io("write manifest", &tmp, e))?;
    let path = edir.join(MANIFEST_NAME);
    fs::rename(&tmp, &path)
        .map_err(|e| CheckpointError::io("rename manifest into place", &path, e))?;
    sync_dir(&edir)?;
    sync_dir(dir)
}

/// What retention learnt about one committed epoch's own files (cached by
/// the coordinator: a committed epoch never changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every file is present with its recorded size and CRC-32.
    Verified,
    /// The manifest or a file does not verify; why.
    Damaged(String),
}

/// What one retention pass did.
#[derive(Debug, Default)]
pub(crate) struct Retained {
    /// Epoch directories deleted.
    pub(crate) deleted: Vec<u64>,
    /// Damaged epoch directories renamed aside, with the reason.
    pub(crate) set_aside: Vec<(u64, String)>,
    /// The newest epoch whose whole chain verified.
    pub(crate) verified: Option<u64>,
}

/// Applies retention to `dir`:
///
/// - keeps the newest `retain` committed epochs and every epoch their
///   deltas build on;
/// - keeps the newest chain that verifies (every file of the epoch and of
///   the epochs it builds on has its recorded size and CRC-32), and one
///   older complete, verified chain: the newest one that ends before the
///   full snapshot the newest verified chain starts from;
/// - of the other epoch directories older than the newest committed epoch,
///   renames the damaged ones aside (`epoch-N.damaged`) and deletes the
///   rest (including directories of epochs that never committed). Newer
///   directories (a write in progress) are left alone.
///
/// `verdicts` caches each epoch's verification, so each file is read back
/// once. Failures to delete or rename are logged and skipped.
pub(crate) fn apply_retention(
    dir: &Path,
    retain: usize,
    verdicts: &mut HashMap<u64, Verdict>,
) -> Retained {
    let mut out = Retained::default();
    let epochs = match list_epochs(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint retention could not list the directory");
            return out;
        }
    };
    verdicts.retain(|e, _| epochs.binary_search(e).is_ok());
    let mut committed: BTreeMap<u64, Manifest> = BTreeMap::new();
    for &e in &epochs {
        match read_manifest(dir, e) {
            Ok(m) => {
                committed.insert(e, m);
            }
            Err(ManifestError::Missing) => {}
            Err(ManifestError::Invalid(reason)) => {
                verdicts.insert(e, Verdict::Damaged(reason));
            }
        }
    }
    let Some(&newest) = committed.keys().next_back() else {
        return out;
    };
    // The epochs of `e`'s chain, newest first; `None` if a link is missing.
    let chain = |e: u64| -> Option<Vec<u64>> {
        let mut links = vec![e];
        let mut cur = committed.get(&e)?.base;
        while let Some(b) = cur {
            links.push(b);
            cur = committed.get(&b)?.base;
        }
        Some(links)
    };
    let mut verify = |e: u64| -> bool {
        let v = verdicts.entry(e).or_insert_with(|| {
            let m = &committed[&e];
            let edir = epoch_dir(dir, e);
            match m
                .files
                .iter()
                .try_for_each(|f| read_verified(&edir, f).map(drop))
            {
                Ok(()) => Verdict::Verified,
                Err(reason) => Verdict::Damaged(reason),
            }
        });
        *v == Verdict::Verified
    };
    let mut keep = BTreeSet::new();
    for &e in committed.keys().rev().take(retain.max(1)) {
        let mut cur = Some(e);
        while let Some(c) = cur {
            if !keep.insert(c) {
                break;
            }
            cur = committed.get(&c).and_then(|m| m.base);
        }
    }
    let mut verified_root = None;
    for &e in committed.keys().rev() {
        if verified_root.is_some_and(|root| e >= root) {
            continue;
        }
        let Some(links) = chain(e) else { continue };
        if links.iter().all(|&l| verify(l)) {
            keep.extend(links.iter().copied());
            match verified_root {
                None => {
                    out.verified = Some(e);
                    verified_root = links.last().copied();
                }
                Some(_) => break,
            }
        }
    }
    for &e in &epochs {
        if e >= newest || keep.contains(&e) {
            continue;
        }
        if let Some(Verdict::Damaged(reason)) = verdicts.get(&e) {
            match set_aside(dir, e) {
                Ok(to) => {
                    tracing::warn!(epoch = e, to = %to.display(), reason = %reason, "damaged checkpoint epoch renamed aside");
                    out.set_aside.push((e, reason.clone()));
                }
                Err(err) => {
                    tracing::warn!(epoch = e, error = %err, "could not rename a damaged checkpoint epoch aside");
                }
            }
            continue;
        }
        let path = epoch_dir(dir, e);
        match fs::remove_dir_all(&path) {
            Ok(()) => out.deleted.push(e),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "could not delete an old checkpoint epoch");
            }
        }
    }
    out
}
