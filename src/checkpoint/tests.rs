//! End-to-end checkpoint tests over real files: capture, write, commit,
//! recover, corruption fallback, retention, failures, resharding.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use crossbeam_channel::RecvTimeoutError;

use super::manifest::{epoch_dir, list_epochs, read_manifest};
use super::*;
use crate::row::{ColumnType, Val};
use crate::state::{AggOutput, ShardState, TableSpec, owner_shard};

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "coreline-ckpt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn specs() -> Vec<TableSpec> {
    let ty = |c: &str| match c {
        "amount" => Some(ColumnType::Int64),
        "price" => Some(ColumnType::Float64),
        _ => None,
    };
    vec![
        TableSpec::aggregate(
            "per_user",
            vec![
                AggOutput::parse("n", "count()", ty).unwrap(),
                AggOutput::parse("total", "sum(amount)", ty).unwrap(),
                AggOutput::parse("mean", "avg(amount)", ty).unwrap(),
                AggOutput::parse("low", "min(price)", ty).unwrap(),
                AggOutput::parse("smooth", "ewma(price, 0.25)", ty).unwrap(),
                AggOutput::parse("last_price", "last(price)", ty).unwrap(),
                AggOutput::parse("since", "first_seen()", ty).unwrap(),
            ],
        ),
        TableSpec::changed("mode", ColumnType::Utf8),
        TableSpec::changed("level", ColumnType::Int64),
    ]
}

/// Applies one request: key `k` with an amount and a price (either may be
/// null), to the shard that owns the key.
fn update(
    states: &mut [ShardState],
    k: Val<'_>,
    amount: Option<i64>,
    price: Option<f64>,
    mode: &str,
) {
    let owner = owner_shard(k, states.len());
    let st = &mut states[owner];
    let a = amount.map_or(Val::Null, Val::Int);
    let p = price.map_or(Val::Null, Val::Float);
    st.aggregate_mut(0)
        .unwrap()
        .update(k, 1_700_000_000_000, |i| if i <= 2 { a } else { p })
        .unwrap();
    st.changed_mut(1)
        .unwrap()
        .update(k, Val::Str(mode))
        .unwrap();
    if let Some(a) = amount {
        st.changed_mut(2)
            .unwrap()
            .update(k, Val::Int(a % 3))
            .unwrap();
    }
}

fn key(i: u64) -> String {
    format!("user-{i}")
}

/// Deterministic pseudo-random updates over `keys` keys.
fn workload(states: &mut [ShardState], seed: u64, n: usize, keys: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = key(x % keys);
        let amount = (!x.is_multiple_of(5)).then_some((x % 1000) as i64 - 300);
        let price = (!x.is_multiple_of(7)).then_some((x % 997) as f64 / 8.0);
        let mode = ["heat", "cool", "off"][(x % 3) as usize];
        if x.is_multiple_of(11) {
            // Some int keys and bool keys too.
            update(states, Val::Int((x % 50) as i64 - 25), amount, price, mode);
        } else if x.is_multiple_of(101) {
            update(states, Val::Bool(x.is_multiple_of(2)), amount, price, mode);
        } else {
            update(states, Val::Str(&k), amount, price, mode);
        }
    }
}

/// Every (table, key) → its values, over all shards, independent of which
/// shard holds a key. Through the kind-independent seam (`Table::for_each`),
/// so a new table kind needs nothing here.
fn dump(states: &[ShardState]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for st in states {
        for t in st.tables() {
            t.for_each(|k, values| {
                let prev = out.insert(
                    format!("{}/{k:?}", t.name()),
                    format!("{:?}", values.collect::<Vec<_>>()),
                );
                assert!(prev.is_none(), "key {k:?} on two shards");
            });
        }
    }
    out
}

fn check_owners(states: &[ShardState]) {
    for (i, st) in states.iter().enumerate() {
        for t in st.tables() {
            t.for_each(|k, _| assert_eq!(owner_shard(k, states.len()), i));
        }
    }
}

fn config(dir: &Path) -> CheckpointConfig {
    CheckpointConfig {
        // Only forced checkpoints in tests: no timing dependence.
        interval: Duration::from_secs(3600),
        ..CheckpointConfig::new(dir)
    }
}

struct Harness {
    handle: CoordinatorHandle,
    endpoints: Vec<ShardCheckpoint>,
    states: Vec<ShardState>,
}

impl Harness {
    fn start(cfg: CheckpointConfig, shards: usize) -> Harness {
        let rec = recover(&cfg.dir, shards, &specs()).unwrap();
        let (handle, endpoints) = Coordinator::start(cfg, &specs(), shards, rec.epoch).unwrap();
        Harness {
            handle,
            endpoints,
            states: rec.shards,
        }
    }

    /// Forces a checkpoint, polling the shards like a runtime would, and
    /// runs `between` right after every shard took its barrier.
    fn checkpoint_with(
        &mut self,
        mut between: impl FnMut(&mut [ShardState]),
    ) -> Result<u64, CommitError> {
        let rx = self.handle.request_checkpoint();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut taken = vec![false; self.states.len()];
        let mut ran = false;
        loop {
            for (i, (ep, st)) in self
                .endpoints
                .iter()
                .zip(self.states.iter_mut())
                .enumerate()
            {
                if ep.poll(st).is_some() {
                    taken[i] = true;
                }
            }
            if !ran && taken.iter().all(|t| *t) {
                between(&mut self.states);
                ran = true;
            }
            match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(r) => return r,
                Err(RecvTimeoutError::Timeout) => {
                    assert!(Instant::now() < deadline, "checkpoint hung")
                }
                Err(RecvTimeoutError::Disconnected) => panic!("coordinator gone"),
            }
        }
    }

    fn checkpoint(&mut self) -> Result<u64, CommitError> {
        self.checkpoint_with(|_| {})
    }

    fn stop(mut self) -> u64 {
        let handle = self.handle.clone();
        let stopper = std::thread::spawn(move || handle.stop());
        let mut stopped = vec![false; self.states.len()];
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stopped.iter().all(|s| *s) {
            for (i, (ep, st)) in self
                .endpoints
                .iter()
                .zip(self.states.iter_mut())
                .enumerate()
            {
                if let Some(b) = ep.poll(st) {
                    stopped[i] = b.then_stop;
                }
            }
            assert!(Instant::now() < deadline, "stop hung");
            std::thread::sleep(Duration::from_millis(1));
        }
        stopper.join().unwrap().unwrap()
    }
}

fn recovered(dir: &Path, shards: usize) -> Recovered {
    let r = recover(dir, shards, &specs()).unwrap();
    check_owners(&r.shards);
    r
}

#[test]
fn round_trip_equals_state_at_barrier() {
    let tmp = TempDir::new("roundtrip");
    let mut h = Harness::start(config(&tmp.0), 2);
    workload(&mut h.states, 1, 5_000, 700);
    let mut at_barrier = BTreeMap::new();
    let epoch = h
        .checkpoint_with(|states| {
            at_barrier = dump(states);
            // Updates after the barrier must not be in this epoch.
            workload(states, 2, 2_000, 900);
        })
        .unwrap();
    assert_eq!(epoch, 1);
    assert_ne!(dump(&h.states), at_barrier);
    let r = recovered(&tmp.0, 2);
    assert_eq!(r.epoch, 1);
    assert_eq!(dump(&r.shards), at_barrier);
    assert_eq!(r.keys, at_barrier.len());
    let stats = h.handle.stats();
    assert_eq!(stats.last_committed_epoch, 1);
    assert_eq!(stats.committed, 1);
    assert_eq!(stats.last_kind, Some(SnapshotKind::Full));
    assert!(stats.last_bytes > 0);
    assert_eq!(stats.last_rows as usize, at_barrier.len());

    // The next epoch is a delta holding the post-barrier updates.
    let now = dump(&h.states);
    assert_eq!(h.checkpoint().unwrap(), 2);
    let m = read_manifest(&tmp.0, 2).unwrap();
    assert_eq!((m.kind, m.base), (SnapshotKind::Delta, Some(1)));
    assert_eq!(dump(&recovered(&tmp.0, 2).shards), now);
    // Nothing changed since epoch 2: the final checkpoint commits nothing
    // new and answers with epoch 2, which holds everything.
    let handle = h.handle.clone();
    assert_eq!(h.stop(), 2);
    assert!(!epoch_dir(&tmp.0, 3).exists());
    assert_eq!(handle.stats().unchanged, 1);
}

#[test]
fn delta_chains_and_full_every() {
    let tmp = TempDir::new("chain");
    let cfg = CheckpointConfig {
        full_every: 3,
        retain: 100,
        ..config(&tmp.0)
    };
    let mut h = Harness::start(cfg, 3);
    let mut expected = Vec::new();
    for round in 0..7u64 {
        workload(&mut h.states, 10 + round, 800, 400 + 100 * round);
        let e = h.checkpoint().unwrap();
        expected.push((e, dump(&h.states)));
    }
    let kinds: Vec<_> = expected
        .iter()
        .map(|(e, _)| {
            let m = read_manifest(&tmp.0, *e).unwrap();
            (m.kind, m.base)
        })
        .collect();
    use SnapshotKind::{Delta, Full};
    assert_eq!(
        kinds,
        vec![
            (Full, None),
            (Delta, Some(1)),
            (Delta, Some(2)),
            (Full, None),
            (Delta, Some(4)),
            (Delta, Some(5)),
            (Full, None)
        ]
    );
    // Delta files are smaller than the full snapshot they follow.
    let size = |e: u64| -> u64 {
        read_manifest(&tmp.0, e)
            .unwrap()
            .files
            .iter()
            .map(|f| f.rows)
            .sum()
    };
    assert!(size(5) < size(4), "delta {} vs full {}", size(5), size(4));
    // Recover each prefix of the chain by hiding the newer epochs.
    for (e, want) in expected.iter().rev() {
        let r = recovered(&tmp.0, 3);
        assert_eq!(r.epoch, *e);
        assert_eq!(&dump(&r.shards), want, "epoch {e}");
        fs::remove_file(epoch_dir(&tmp.0, *e).join("MANIFEST")).unwrap();
    }
    h.stop();
}

#[test]
fn reshard_one_to_two_and_two_to_one() {
    let tmp = TempDir::new("reshard");
    let mut h = Harness::start(config(&tmp.0), 1);
    workload(&mut h.states, 3, 3_000, 500);
    let one = dump(&h.states);
    h.checkpoint().unwrap();
    h.stop();

    let mut h2 = Harness::start(config(&tmp.0), 2);
    check_owners(&h2.states);
    assert_eq!(dump(&h2.states), one);
    assert!(h2.states.iter().all(|s| s.keys() > 0));
    workload(&mut h2.states, 4, 3_000, 800);
    let two = dump(&h2.states);
    // First epoch of a new run is a full snapshot numbered after the old ones.
    let e = h2.checkpoint().unwrap();
    // (The final checkpoint of the first run changed nothing: no epoch 2.)
    assert_eq!(e, 2);
    assert_eq!(read_manifest(&tmp.0, e).unwrap().kind, SnapshotKind::Full);
    workload(&mut h2.states, 5, 500, 800);
    let two_b = dump(&h2.states);
    h2.checkpoint().unwrap();
    h2.stop();
    assert_ne!(two, two_b);

    let r = recovered(&tmp.0, 1);
    assert_eq!(dump(&r.shards), two_b);
    let r = recovered(&tmp.0, 5);
    assert_eq!(dump(&r.shards), two_b);
}

type Dump = BTreeMap<String, String>;

/// Three committed epochs (two forced, then the final one of a clean stop);
/// returns each epoch with the state it holds, whole and per shard.
fn three_epochs(dir: &Path, full_every: u32) -> Vec<(u64, Dump, Vec<Dump>)> {
    let cfg = CheckpointConfig {
        full_every,
        retain: 10,
        ..config(dir)
    };
    let mut h = Harness::start(cfg, 2);
    let mut out = Vec::new();
    for round in 0..2 {
        workload(&mut h.states, 20 + round, 1_500, 600);
        let e = h.checkpoint().unwrap();
        out.push((e, dump(&h.states), per_shard(&h.states)));
    }
    workload(&mut h.states, 22, 1_500, 600);
    let (last, parts) = (dump(&h.states), per_shard(&h.states));
    out.push((h.stop(), last, parts));
    out
}

fn per_shard(states: &[ShardState]) -> Vec<Dump> {
    (0..states.len()).map(|i| dump(&states[i..i + 1])).collect()
}

/// The state of shard `from_old` taken from `old`, the others from `new`.
fn mix(new: &[Dump], old: &[Dump], from_old: usize) -> Dump {
    let mut out = Dump::new();
    for (i, part) in new.iter().enumerate() {
        out.extend(if i == from_old { &old[i] } else { part }.clone());
    }
    out
}

#[test]
fn corrupt_newest_epoch_falls_back() {
    type Damage = fn(&Path);
    // (what, damage, the shard file it damages if only one)
    let damages: [(&str, Damage, Option<usize>); 5] = [
        (
            "flip a byte",
            |e| {
                let p = e.join("shard-1.arrow");
                let mut b = fs::read(&p).unwrap();
                let mid = b.len() / 2;
                b[mid] ^= 0x40;
                fs::write(&p, b).unwrap();
            },
            Some(1),
        ),
        (
            "truncate",
            |e| {
                let p = e.join("shard-0.arrow");
                let b = fs::read(&p).unwrap();
                fs::write(&p, &b[..b.len() - 9]).unwrap();
            },
            Some(0),
        ),
        (
            "delete a file",
            |e| fs::remove_file(e.join("shard-0.arrow")).unwrap(),
            Some(0),
        ),
        (
            "half-written manifest",
            |e| {
                let p = e.join("MANIFEST");
                let b = fs::read(&p).unwrap();
                fs::write(&p, &b[..b.len() / 2]).unwrap();
            },
            None,
        ),
        (
            "manifest never renamed",
            |e| {
                fs::rename(e.join("MANIFEST"), e.join("MANIFEST.tmp")).unwrap();
            },
            None,
        ),
    ];
    for (what, damage, file) in damages {
        let tmp = TempDir::new("corrupt");
        let epochs = three_epochs(&tmp.0, 1);
        let newest = epoch_dir(&tmp.0, epochs[2].0);
        damage(&newest);
        let r = recovered(&tmp.0, 2);
        match file {
            // One damaged shard file: that shard falls back to epoch 2, the
            // other keeps epoch 3; the epoch stays in place (it is in use).
            Some(i) => {
                assert_eq!(r.epoch, epochs[2].0, "{what}");
                assert_eq!(
                    dump(&r.shards),
                    mix(&epochs[2].2, &epochs[1].2, i),
                    "{what}"
                );
                assert!(newest.exists(), "{what}");
            }
            None => {
                assert_eq!(r.epoch, epochs[1].0, "{what}");
                assert_eq!(dump(&r.shards), epochs[1].1, "{what}");
            }
        }
        // A damaged manifest is set aside; a never-committed epoch is not damage.
        let aside = what == "half-written manifest";
        assert_eq!(r.set_aside.len(), usize::from(aside), "{what}");
        assert_eq!(!newest.exists(), aside, "{what}");
        assert_eq!(
            tmp.0
                .join(format!("epoch-{}.damaged", epochs[2].0))
                .is_dir(),
            aside,
            "{what}"
        );
    }
}

#[test]
fn corrupt_delta_base_falls_back_past_the_chain() {
    let tmp = TempDir::new("corrupt-base");
    // full_every 10: epochs 1 (full), 2 and 3 (deltas).
    let epochs = three_epochs(&tmp.0, 10);
    let m3 = read_manifest(&tmp.0, epochs[2].0).unwrap();
    assert_eq!(m3.base, Some(epochs[1].0));
    // Damage epoch 2: epoch 3 depends on it, so both are unusable.
    let p = epoch_dir(&tmp.0, epochs[1].0).join("shard-0.arrow");
    let mut b = fs::read(&p).unwrap();
    let last = b.len() - 20;
    b[last] ^= 1;
    fs::write(&p, b).unwrap();
    // Shard 0's chain breaks at epoch 2: it comes from epoch 1; shard 1's
    // files all verify: it comes from epoch 3.
    let r = recovered(&tmp.0, 2);
    assert_eq!(r.epoch, epochs[2].0);
    assert_eq!(dump(&r.shards), mix(&epochs[2].2, &epochs[0].2, 0));
    assert!(!r.skipped.is_empty());
    assert!(r.set_aside.is_empty(), "epoch 2 is in use by shard 1");
}

#[test]
fn no_verifying_chain_refuses_then_discard_starts_empty() {
    let tmp = TempDir::new("refuse");
    // full_every 10: epoch 1 is the only full snapshot.
    let epochs = three_epochs(&tmp.0, 10);
    let p = epoch_dir(&tmp.0, epochs[0].0).join("shard-1.arrow");
    let mut b = fs::read(&p).unwrap();
    b[100] ^= 0x01;
    fs::write(&p, b).unwrap();
    let e = recover(&tmp.0, 2, &specs()).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, CheckpointError::Damaged { .. }), "{text}");
    assert!(text.contains("epoch-1/shard-1.arrow"), "{text}");
    assert!(text.contains("--discard-state"), "{text}");
    // Refusing changes nothing on disk.
    assert_eq!(list_epochs(&tmp.0).unwrap(), vec![1, 2, 3]);
    let r = recover_with(&tmp.0, 2, &specs(), OnDamage::Discard).unwrap();
    assert_eq!((r.epoch, r.keys), (0, 0));
    assert_eq!(r.set_aside, vec![1]);
    assert!(tmp.0.join("epoch-1.damaged/shard-1.arrow").is_file());
}

#[test]
fn nothing_valid_means_empty_state() {
    let tmp = TempDir::new("empty");
    let r = recover(&tmp.0, 2, &specs()).unwrap();
    assert_eq!((r.epoch, r.keys, r.shards.len()), (0, 0, 2));
    fs::create_dir_all(epoch_dir(&tmp.0, 4)).unwrap();
    fs::write(epoch_dir(&tmp.0, 4).join("MANIFEST"), b"{not json").unwrap();
    fs::write(tmp.0.join("epoch-9"), b"a file, not a directory").unwrap();
    // A committed epoch that does not verify: refuse, do not start empty.
    let e = recover(&tmp.0, 2, &specs()).unwrap_err();
    assert!(e.to_string().contains("epoch-4/MANIFEST"), "{e}");
    let r = recover_with(&tmp.0, 2, &specs(), OnDamage::Discard).unwrap();
    assert_eq!((r.epoch, r.keys), (0, 0));
    assert_eq!(r.set_aside, vec![4]);
    // Only never-committed leftovers: empty, no refusal.
    fs::create_dir_all(epoch_dir(&tmp.0, 5)).unwrap();
    let r = recover(&tmp.0, 2, &specs()).unwrap();
    assert_eq!((r.epoch, r.keys), (0, 0));
}

#[test]
fn retention_keeps_newest_and_their_bases() {
    let tmp = TempDir::new("retain");
    let cfg = CheckpointConfig {
        full_every: 3,
        retain: 2,
        ..config(&tmp.0)
    };
    let mut h = Harness::start(cfg, 2);
    // A leftover of a crashed write, older than what will be committed.
    fs::create_dir_all(epoch_dir(&tmp.0, 0)).unwrap();
    fs::write(epoch_dir(&tmp.0, 0).join("shard-0.arrow"), b"junk").unwrap();
    let mut seen = Vec::new();
    for round in 0..5 {
        workload(&mut h.states, 30 + round, 300, 200);
        seen.push(h.checkpoint().unwrap());
    }
    // 1 full, 2 delta(1), 3 delta(2), 4 full, 5 delta(4): keep 5, 4 (5's
    // base), and the older complete chain 3, 2, 1.
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    assert_eq!(list_epochs(&tmp.0).unwrap(), vec![1, 2, 3, 4, 5]);
    workload(&mut h.states, 40, 300, 200);
    h.checkpoint().unwrap(); // 6 delta(5): keep 6, 5, 4 and still 3, 2, 1.
    assert_eq!(list_epochs(&tmp.0).unwrap(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(h.handle.stats().verified_epoch, 6);
    workload(&mut h.states, 41, 300, 200);
    let want = dump(&h.states);
    h.stop(); // 7 full: keep 7, and 6's chain 6, 5, 4 as the older one.
    assert_eq!(list_epochs(&tmp.0).unwrap(), vec![4, 5, 6, 7]);
    assert_eq!(dump(&recovered(&tmp.0, 2).shards), want);
    let latest = fs::read_to_string(tmp.0.join("LATEST")).unwrap();
    assert_eq!(latest, "epoch-7\n");
}

#[test]
fn retention_never_deletes_the_newest_verified_chain() {
    let tmp = TempDir::new("retain-damaged");
    let cfg = CheckpointConfig {
        full_every: 3,
        retain: 1,
        ..config(&tmp.0)
    };
    let mut h = Harness::start(cfg.clone(), 2);
    workload(&mut h.states, 50, 300, 200);
    assert_eq!(h.checkpoint().unwrap(), 1); // full
    workload(&mut h.states, 51, 300, 200);
    assert_eq!(h.checkpoint().unwrap(), 2); // delta(1)
    let want = dump(&h.states);
    h.stop();
    // Bit rot in epoch 2 while the service is down.
    let p = epoch_dir(&tmp.0, 2).join("shard-0.arrow");
    let mut b = fs::read(&p).unwrap();
    b[60] ^= 0x10;
    fs::write(&p, b).unwrap();
    let r = recover(&tmp.0, 2, &specs()).unwrap();
    // Shard 0 comes from epoch 1, shard 1 from epoch 2.
    assert_eq!(r.epoch, 2);
    assert!(!r.skipped.is_empty(), "{:?}", r.skipped);
    assert!(dump(&r.shards) != want);
    let mut h = Harness::start(cfg, 2);
    for round in 0..4 {
        workload(&mut h.states, 52 + round, 300, 200);
        // 3 full (first of a run), 4 delta(3), 5 delta(4), 6 full
        h.checkpoint().unwrap();
        if round == 2 {
            // 5's chain (5, 4, 3) is the newest verified one; 2's chain is
            // damaged, so the older complete chain kept is 1.
            assert_eq!(list_epochs(&tmp.0).unwrap(), vec![1, 3, 4, 5]);
        }
    }
    let left = list_epochs(&tmp.0).unwrap();
    // 6 (full) is the newest verified chain; 5's chain (5, 4, 3) the older
    // one; 2 (damaged) was set aside, not deleted, and 1 deleted.
    assert_eq!(left, vec![3, 4, 5, 6], "{left:?}");
    assert!(
        tmp.0.join("epoch-2.damaged").is_dir(),
        "damaged epochs are set aside"
    );
    assert_eq!(h.handle.stats().set_aside, 1);
    assert_eq!(h.handle.stats().verified_epoch, 6);
    let want = dump(&h.states);
    h.stop();
    assert_eq!(dump(&recovered(&tmp.0, 2).shards), want);
}

#[test]
fn files_are_private_and_never_written_through_symlinks() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("modes");
    let elsewhere = TempDir::new("modes-elsewhere");
    fs::create_dir_all(&elsewhere.0).unwrap();
    let mut h = Harness::start(config(&tmp.0), 1);
    workload(&mut h.states, 60, 100, 50);
    assert_eq!(h.checkpoint().unwrap(), 1);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&epoch_dir(&tmp.0, 1)), 0o700);
    assert_eq!(mode(&epoch_dir(&tmp.0, 1).join("shard-0.arrow")), 0o600);
    assert_eq!(mode(&epoch_dir(&tmp.0, 1).join("MANIFEST")), 0o600);
    assert_eq!(mode(&tmp.0.join("LATEST")), 0o600);
    // A symlink planted where the next epoch's directory will go.
    std::os::unix::fs::symlink(&elsewhere.0, epoch_dir(&tmp.0, 2)).unwrap();
    workload(&mut h.states, 61, 100, 50);
    let e = h.checkpoint().unwrap_err();
    assert!(e.to_string().contains("not created by this process"), "{e}");
    assert_eq!(
        fs::read_dir(&elsewhere.0).unwrap().count(),
        0,
        "wrote through the symlink"
    );
    let stats = h.handle.stats();
    assert!(stats.last_error.is_some());
    // The next epoch commits and clears the error.
    fs::remove_file(epoch_dir(&tmp.0, 2)).unwrap();
    assert_eq!(h.checkpoint().unwrap(), 3);
    let stats = h.handle.stats();
    assert_eq!(stats.last_error, None);
    assert!(stats.last_error_unix_ms > 0 && stats.last_commit_unix_ms >= stats.last_error_unix_ms);
    h.stop();
}

#[test]
fn unwritable_directory_fails_then_recovers_complete() {
    let tmp = TempDir::new("unwritable");
    let mut h = Harness::start(config(&tmp.0), 2);
    workload(&mut h.states, 50, 1_000, 300);
    assert_eq!(h.checkpoint().unwrap(), 1);
    workload(&mut h.states, 51, 1_000, 600);
    // Make epoch 2's directory impossible to create (works as root too).
    fs::write(epoch_dir(&tmp.0, 2), b"in the way").unwrap();
    let err = h.checkpoint().unwrap_err();
    assert!(matches!(err, CommitError::Failed { epoch: 2, .. }), "{err}");
    let stats = h.handle.stats();
    assert_eq!(
        (stats.failures, stats.committed, stats.last_committed_epoch),
        (1, 1, 1)
    );
    assert!(
        stats.last_error.as_deref().unwrap().contains("epoch 2"),
        "{stats:?}"
    );
    assert_eq!(stats.in_flight, None);
    // Serving went on; the epoch-2 changes must not be lost by the next delta.
    workload(&mut h.states, 52, 200, 600);
    fs::remove_file(epoch_dir(&tmp.0, 2)).unwrap();
    let e = h.checkpoint().unwrap();
    assert_eq!(e, 3);
    assert_eq!(read_manifest(&tmp.0, 3).unwrap().kind, SnapshotKind::Full);
    let want = dump(&h.states);
    assert_eq!(dump(&recovered(&tmp.0, 2).shards), want);
    // And deltas resume after the full snapshot.
    workload(&mut h.states, 53, 200, 600);
    assert_eq!(h.checkpoint().unwrap(), 4);
    assert_eq!(read_manifest(&tmp.0, 4).unwrap().base, Some(3));
    assert_eq!(dump(&recovered(&tmp.0, 2).shards), dump(&h.states));
    h.stop();
}

#[test]
fn stalled_shard_times_out_then_catches_up() {
    let tmp = TempDir::new("stall");
    // Long enough that epoch 2, with both shards polling, completes within it
    // even on a machine loaded by parallel builds (200 ms did not, once).
    let cfg = CheckpointConfig {
        epoch_timeout: Duration::from_secs(2),
        ..config(&tmp.0)
    };
    let mut h = Harness::start(cfg, 2);
    workload(&mut h.states, 60, 500, 100);
    // Only shard 0 polls: epoch 1 times out.
    let rx = h.handle.request_checkpoint();
    let result = loop {
        h.endpoints[0].poll(&mut h.states[0]);
        if let Ok(r) = rx.recv_timeout(Duration::from_millis(5)) {
            break r;
        }
    };
    let err = result.unwrap_err();
    assert!(
        err.to_string().contains("shard(s) 1 did not answer"),
        "{err}"
    );
    // Shard 1 takes the old barrier late, then the next one: all captures
    // reach the writer in order and epoch 2 (full) is complete.
    workload(&mut h.states, 61, 500, 100);
    // Epoch 2 is the one expected; on a machine so loaded that a shard
    // thread of this test misses even the 2 s barrier, a later epoch
    // completes instead (the catch-up is what is tested, not the timing).
    let mut epoch = h.checkpoint();
    for _ in 0..5 {
        match &epoch {
            Err(e) if e.to_string().contains("did not answer") => epoch = h.checkpoint(),
            _ => break,
        }
    }
    let epoch = epoch.unwrap();
    assert!(epoch >= 2, "{epoch}");
    assert_eq!(dump(&recovered(&tmp.0, 2).shards), dump(&h.states));
    h.stop();
}

#[test]
fn stop_takes_a_final_checkpoint() {
    let tmp = TempDir::new("stop");
    let mut h = Harness::start(config(&tmp.0), 2);
    workload(&mut h.states, 70, 1_000, 300);
    let want = dump(&h.states);
    let handle = h.handle.clone();
    assert_eq!(h.stop(), 1);
    assert_eq!(handle.checkpoint_now(), Err(CommitError::Stopped));
    assert_eq!(handle.stop(), Err(CommitError::Stopped));
    let r = recovered(&tmp.0, 2);
    assert_eq!((r.epoch, dump(&r.shards)), (1, want));
}

#[test]
fn shard_file_is_plain_arrow_ipc() {
    let tmp = TempDir::new("ipc");
    let mut h = Harness::start(config(&tmp.0), 1);
    for i in 0..3 {
        update(
            &mut h.states,
            Val::Str("alice"),
            Some(10 * (i + 1)),
            Some(2.0),
            "heat",
        );
    }
    update(&mut h.states, Val::Int(42), None, None, "off");
    h.checkpoint().unwrap();
    let m = read_manifest(&tmp.0, 1).unwrap();
    let bytes = fs::read(epoch_dir(&tmp.0, 1).join("shard-0.arrow")).unwrap();
    assert_eq!(crc32fast::hash(&bytes), m.files[0].crc32);
    assert_eq!(bytes.len() as u64, m.files[0].bytes);
    let reader = FileReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let schema = reader.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        vec![
            "table",
            "key",
            "key_type",
            "per_user.n",
            "per_user.total",
            "per_user.mean.sum",
            "per_user.mean.n",
            "per_user.mean",
            "per_user.low",
            "per_user.smooth",
            "per_user.last_price",
            "per_user.since",
            "mode.value",
            "level.value"
        ]
    );
    assert_eq!(schema.metadata()["coreline.kind"], "full");
    assert_eq!(schema.metadata()["coreline.epoch"], "1");
    assert!(schema.metadata()["coreline.tables"].contains("ewma(price, 0.25)"));
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2 + 2 + 1); // per_user: 2 keys, mode: 2, level: 1
    let first = &batches[0];
    let col = |name: &str| first.column(schema.index_of(name).unwrap()).clone();
    assert_eq!(col("key").as_string::<i32>().value(0), "alice");
    assert_eq!(col("key").as_string::<i32>().value(1), "42");
    assert_eq!(col("key_type").as_string::<i32>().value(1), "int64");
    assert_eq!(col("per_user.n").as_primitive::<Int64Type>().value(0), 3);
    assert_eq!(
        col("per_user.total").as_primitive::<Int64Type>().value(0),
        60
    );
    assert!(col("per_user.total").is_null(1));
    assert!(col("mode.value").is_null(0));
    // `first_seen()` is an Arrow timestamp (ms, UTC) holding unix ms.
    assert_eq!(
        schema
            .field_with_name("per_user.since")
            .unwrap()
            .data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    assert_eq!(
        col("per_user.since")
            .as_primitive::<TimestampMillisecondType>()
            .value(0),
        1_700_000_000_000
    );
    h.stop();
}

/// Rewrites every shard file of `epoch` the way builds before timestamps
/// wrote them (`first_seen()` as a plain int64 of milliseconds), and its
/// manifest to match.
fn rewrite_times_as_int64(dir: &Path, epoch: u64) {
    let mut m = read_manifest(dir, epoch).unwrap();
    for f in &mut m.files {
        let path = epoch_dir(dir, epoch).join(&f.path);
        let reader =
            FileReader::try_new(std::io::Cursor::new(fs::read(&path).unwrap()), None).unwrap();
        let schema = reader.schema();
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|fl| match fl.data_type() {
                DataType::Timestamp(..) => fl.as_ref().clone().with_data_type(DataType::Int64),
                _ => fl.as_ref().clone(),
            })
            .collect();
        let old = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let mut converted = 0;
        let mut out = Vec::new();
        let mut w = FileWriter::try_new(&mut out, &old).unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let mut cols: Vec<ArrayRef> = Vec::new();
            for c in batch.columns() {
                cols.push(match c.data_type() {
                    DataType::Timestamp(..) => {
                        converted += 1;
                        let ms = c.as_primitive::<TimestampMillisecondType>();
                        Arc::new(Int64Array::from_iter(ms.iter()))
                    }
                    _ => c.clone(),
                });
            }
            w.write(&RecordBatch::try_new(old.clone(), cols).unwrap())
                .unwrap();
        }
        w.finish().unwrap();
        drop(w);
        assert!(converted > 0, "{} has no timestamp column", path.display());
        fs::remove_file(&path).unwrap();
        fs::write(&path, &out).unwrap();
        f.bytes = out.len() as u64;
        f.crc32 = crc32fast::hash(&out);
    }
    super::manifest::commit(dir, &m).unwrap();
}

/// Checkpoints written before `first_seen()` became a timestamp (int64
/// milliseconds) still restore, alone or under a delta written as
/// timestamps.
#[test]
fn files_with_first_seen_as_int64_still_restore() {
    let tmp = TempDir::new("int64-times");
    let mut h = Harness::start(config(&tmp.0), 2);
    workload(&mut h.states, 31, 3_000, 400);
    assert_eq!(h.checkpoint().unwrap(), 1);
    let at_1 = dump(&h.states);
    workload(&mut h.states, 32, 500, 800);
    assert_eq!(h.checkpoint().unwrap(), 2);
    let at_2 = dump(&h.states);
    h.stop();
    let last = recovered(&tmp.0, 2).epoch;
    // Epoch 1 (the full snapshot) in the old format, epoch 2 a delta in
    // the new one: the chain restores.
    rewrite_times_as_int64(&tmp.0, 1);
    let r = recovered(&tmp.0, 2);
    assert_eq!((r.epoch, dump(&r.shards)), (last, at_2.clone()));
    // Every file in the old format.
    for e in 2..=last {
        rewrite_times_as_int64(&tmp.0, e);
    }
    let r = recovered(&tmp.0, 2);
    assert_eq!((r.epoch, dump(&r.shards)), (last, at_2));
    // And the old-format full snapshot alone, read as `coreline state` does.
    let r = read_state(&tmp.0, 2, &specs(), Some(1)).unwrap();
    assert_eq!((r.epoch, dump(&r.shards)), (1, at_1));
}

#[test]
fn config_changes_are_checked_on_recovery() {
    let tmp = TempDir::new("config");
    let mut h = Harness::start(config(&tmp.0), 1);
    workload(&mut h.states, 80, 500, 50);
    h.checkpoint().unwrap();
    h.stop();

    // A table turned into another kind: an error naming it.
    let mut s = specs();
    s[1] = TableSpec::aggregate(
        "mode",
        vec![AggOutput::parse("n", "count()", |_| None).unwrap()],
    );
    let e = recover(&tmp.0, 1, &s).unwrap_err();
    assert!(e.to_string().contains("table `mode`"), "{e}");
    // An output whose function changed: an error naming table and output.
    let mut s = specs();
    if let crate::state::TableKind::Aggregate(outs) = &mut s[0].kind {
        outs[1] = AggOutput::parse("total", "max(amount)", |_| Some(ColumnType::Int64)).unwrap();
    }
    let e = recover(&tmp.0, 1, &s).unwrap_err();
    assert!(e.to_string().contains("output `total`"), "{e}");
    // A dropped table and a new output: ignored / empty, the rest restored.
    let mut s = specs();
    s.remove(2);
    if let crate::state::TableKind::Aggregate(outs) = &mut s[0].kind {
        outs.push(AggOutput::parse("top", "max(amount)", |_| Some(ColumnType::Int64)).unwrap());
    }
    let r = recover(&tmp.0, 1, &s).unwrap();
    assert_eq!(r.epoch, 1); // 1 forced; the stop changed nothing
    let t = r.shards[0].aggregate(0).unwrap();
    assert!(!t.is_empty());
    assert!(t.iter().all(|(_, v)| v.get(7) == Val::Null));
    assert!(!r.shards[0].changed(1).unwrap().is_empty());
}

#[test]
fn invalid_settings_are_rejected() {
    let tmp = TempDir::new("settings");
    let bad = |f: fn(&mut CheckpointConfig)| {
        let mut c = config(&tmp.0);
        f(&mut c);
        Coordinator::start(c, &specs(), 1, 0)
            .unwrap_err()
            .to_string()
    };
    assert!(bad(|c| c.retain = 0).contains("retain"));
    assert!(bad(|c| c.full_every = 0).contains("full_every"));
    assert!(bad(|c| c.interval = Duration::ZERO).contains("interval"));
    let clash = vec![
        TableSpec::aggregate(
            "a.b",
            vec![AggOutput::parse("c", "count()", |_| None).unwrap()],
        ),
        TableSpec::aggregate(
            "a",
            vec![AggOutput::parse("b.c", "count()", |_| None).unwrap()],
        ),
    ];
    let e = Coordinator::start(config(&tmp.0), &clash, 1, 0).unwrap_err();
    assert!(e.to_string().contains("clashes"), "{e}");
}

#[test]
fn a_manifest_byte_flip_that_still_parses_is_caught() {
    let tmp = TempDir::new("manifest-sum");
    let mut h = Harness::start(config(&tmp.0), 1);
    workload(&mut h.states, 70, 200, 50);
    assert_eq!(h.checkpoint().unwrap(), 1);
    h.stop();
    let path = epoch_dir(&tmp.0, 1).join("MANIFEST");
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"checksum\": \"crc32:"), "{text}");
    // Change one digit of the recorded CRC of the shard file: still JSON.
    let at = text.find("\"crc32\": ").unwrap() + "\"crc32\": ".len();
    let mut bytes = text.into_bytes();
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    fs::write(&path, &bytes).unwrap();
    match read_manifest(&tmp.0, 1) {
        Err(super::manifest::ManifestError::Invalid(why)) => {
            assert!(why.contains("fails its checksum"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_flipped_checksum_field_name_is_caught() {
    let tmp = TempDir::new("manifest-key");
    let mut h = Harness::start(config(&tmp.0), 1);
    workload(&mut h.states, 71, 200, 50);
    assert_eq!(h.checkpoint().unwrap(), 1);
    h.stop();
    let path = epoch_dir(&tmp.0, 1).join("MANIFEST");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("\"checksum\"", "\"checksuo\"")).unwrap();
    assert!(matches!(
        read_manifest(&tmp.0, 1),
        Err(super::manifest::ManifestError::Invalid(_))
    ));
}

/// A footer that declares a record batch past the end of the file is
/// refused before arrow-ipc allocates the declared body (the `checkpoint`
/// fuzz target's 140 kB input made it allocate 8 GiB).
#[test]
fn a_footer_block_past_the_end_is_refused_before_reading() {
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from(vec![1i64, 2, 3])) as ArrayRef],
    )
    .unwrap();
    let mut bytes = Vec::new();
    {
        let mut w = FileWriter::try_new(&mut bytes, &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    assert_eq!(super::file::check_blocks(&bytes), Ok(()));
    assert!(super::file::check_blocks(&bytes[..8]).is_err());

    // Find the block's body length in the footer and make it 8 GiB.
    let len = bytes.len();
    let footer_len =
        arrow_ipc::reader::read_footer_length(bytes[len - 10..].try_into().unwrap()).unwrap();
    let start = len - 10 - footer_len;
    let body = arrow_ipc::root_as_footer(&bytes[start..len - 10])
        .unwrap()
        .recordBatches()
        .unwrap()
        .get(0)
        .bodyLength();
    let at = (start..len - 10 - 8)
        .find(|&i| bytes[i..i + 8] == body.to_le_bytes())
        .expect("the body length is in the footer");
    bytes[at..at + 8].copy_from_slice(&(8i64 << 30).to_le_bytes());
    let err = super::file::check_blocks(&bytes).unwrap_err();
    assert!(err.contains("does not lie inside the file"), "{err}");
}
