//! The shard-side checkpoint pause and the per-update cost of keyed state.
//!
//! `cargo bench --bench checkpoint_pause`
//!
//! - `capture_pause/<keys>`: what a shard does at a barrier, exactly as
//!   `ShardCheckpoint::submit` does it: take a recycled spare from a channel,
//!   swap every table's delta log (`ShardState::capture`), send the capture
//!   to the writer. Between two timed captures, 16 random keys are updated
//!   and a stand-in writer recycles the capture (both untimed).
//! - `realistic epochs`: printed, not criterion: 200 epochs of 10 000 random
//!   updates each (a shard at 10k req/s with a 1 s interval), pause median /
//!   p99 / max, and heap allocations counted during the updates and pauses.
//! - `update/<keys>`: one `aggregate` update of an existing key (4 outputs),
//!   with the delta log on (checkpointed) and off; `changed/<keys>`: one
//!   `changed` update.

use std::hint::black_box;
use std::time::{Duration, Instant};

use coreline::row::{ColumnType, Val};
use coreline::state::{AggOutput, Capture, ShardState, TableSpec};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

#[path = "../tests/common/counting.rs"]
mod counting;

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
const UPDATES_PER_EPOCH: usize = 10_000;
const NOW_MS: i64 = 1_700_000_000_000;

fn specs() -> Vec<TableSpec> {
    let ty = |_: &str| Some(ColumnType::Int64);
    vec![
        TableSpec::aggregate(
            "per_user",
            vec![
                AggOutput::parse("n", "count()", ty).unwrap(),
                AggOutput::parse("total", "sum(amount)", ty).unwrap(),
                AggOutput::parse("mean", "avg(amount)", ty).unwrap(),
                AggOutput::parse("top", "max(amount)", ty).unwrap(),
            ],
        ),
        TableSpec::changed("mode", ColumnType::Utf8),
    ]
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const MODES: [&str; 3] = ["heat", "cool", "off"];

fn touch(state: &mut ShardState, keys: &[String], rng: &mut Rng) {
    let r = rng.next();
    let k = Val::Str(&keys[(r % keys.len() as u64) as usize]);
    let amount = Val::Int((r >> 20) as i64 % 1000);
    black_box(
        state
            .aggregate_mut(0)
            .unwrap()
            .update(k, NOW_MS, |_| amount)
            .unwrap(),
    );
    let mode = Val::Str(MODES[((r >> 40) % 3) as usize]);
    black_box(state.changed_mut(1).unwrap().update(k, mode).unwrap());
}

/// The shard and a stand-in writer, wired like `ShardCheckpoint`.
struct Shard {
    state: ShardState,
    keys: Vec<String>,
    spare_rx: Receiver<Capture>,
    spare_tx: Sender<Capture>,
    out_tx: Sender<Capture>,
    out_rx: Receiver<Capture>,
    epoch: u64,
}

impl Shard {
    fn build(n: usize, logging: bool) -> Shard {
        let keys: Vec<String> = (0..n).map(|i| format!("user-{i:08}")).collect();
        let mut state = if logging {
            ShardState::new(&specs()).unwrap()
        } else {
            ShardState::without_checkpoints(&specs()).unwrap()
        };
        for (i, k) in keys.iter().enumerate() {
            let v = Val::Int(i as i64);
            state
                .aggregate_mut(0)
                .unwrap()
                .update(Val::Str(k), NOW_MS, |_| v)
                .unwrap();
            state
                .changed_mut(1)
                .unwrap()
                .update(Val::Str(k), Val::Str("off"))
                .unwrap();
        }
        let (spare_tx, spare_rx) = bounded(2);
        let (out_tx, out_rx) = unbounded();
        spare_tx.send(state.empty_capture()).unwrap();
        let mut shard = Shard {
            state,
            keys,
            spare_rx,
            spare_tx,
            out_tx,
            out_rx,
            epoch: 0,
        };
        // The first capture carries every key (as after recovery); recycle
        // it, then run two ordinary epochs so both buffer sets are warm.
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..3 {
            shard.pause();
            shard.writer();
            for _ in 0..UPDATES_PER_EPOCH {
                touch(&mut shard.state, &shard.keys, &mut rng);
            }
        }
        shard
    }

    /// The shard-side pause: what `ShardCheckpoint::submit` does.
    #[inline(never)]
    fn pause(&mut self) {
        self.epoch += 1;
        let spare = self.spare_rx.try_recv().ok();
        let cap = self.state.capture(0, self.epoch, spare);
        self.out_tx.send(cap).unwrap();
    }

    /// The writer's part that matters to the shard: recycle the capture.
    fn writer(&mut self) {
        let mut cap = self.out_rx.recv().unwrap();
        cap.recycle();
        let _ = self.spare_tx.try_send(cap);
    }
}

fn realistic_epochs(shard: &mut Shard) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut pauses = Vec::with_capacity(200);
    let (mut update_allocs, mut pause_allocs) = (0, 0);
    for _ in 0..200 {
        let a = counting::allocations();
        for _ in 0..UPDATES_PER_EPOCH {
            touch(&mut shard.state, &shard.keys, &mut rng);
        }
        let b = counting::allocations();
        let t = Instant::now();
        shard.pause();
        pauses.push(t.elapsed());
        let c = counting::allocations();
        update_allocs += b - a;
        pause_allocs += c - b;
        shard.writer();
    }
    pauses.sort();
    let p = |q: f64| pauses[((pauses.len() - 1) as f64 * q) as usize];
    println!(
        "realistic epochs/{}: {} updates/epoch x 200: pause median {:?}, p99 {:?}, max {:?}; \
         heap allocations: {} in {} updates, {} in 200 pauses",
        shard.keys.len(),
        UPDATES_PER_EPOCH,
        p(0.5),
        p(0.99),
        pauses[pauses.len() - 1],
        update_allocs,
        200 * UPDATES_PER_EPOCH,
        pause_allocs
    );
}

fn benches(c: &mut Criterion) {
    for n in SIZES {
        let mut shard = Shard::build(n, true);
        realistic_epochs(&mut shard);

        let mut group = c.benchmark_group("capture_pause");
        group
            .sample_size(30)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(1));
        let mut rng = Rng(0x1234_5678_9abc_def1);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for _ in 0..16 {
                        touch(&mut shard.state, &shard.keys, &mut rng);
                    }
                    let t = Instant::now();
                    shard.pause();
                    total += t.elapsed();
                    shard.writer();
                }
                total
            })
        });
        group.finish();

        let mut group = c.benchmark_group("update");
        group.measurement_time(Duration::from_secs(2));
        let mut since = 0usize;
        group.bench_function(BenchmarkId::new("logged", n), |b| {
            b.iter(|| {
                let r = rng.next();
                let k = Val::Str(&shard.keys[(r % n as u64) as usize]);
                let amount = Val::Int((r >> 20) as i64 % 1000);
                black_box(
                    shard
                        .state
                        .aggregate_mut(0)
                        .unwrap()
                        .update(k, NOW_MS, |_| amount)
                        .unwrap(),
                );
                // An epoch boundary every 10k updates keeps the log realistic.
                since += 1;
                if since == UPDATES_PER_EPOCH {
                    since = 0;
                    shard.pause();
                    shard.writer();
                }
            })
        });
        group.bench_function(BenchmarkId::new("changed", n), |b| {
            b.iter(|| {
                let r = rng.next();
                let k = Val::Str(&shard.keys[(r % n as u64) as usize]);
                let mode = Val::Str(MODES[((r >> 40) % 3) as usize]);
                black_box(shard.state.changed_mut(1).unwrap().update(k, mode).unwrap());
                since += 1;
                if since == UPDATES_PER_EPOCH {
                    since = 0;
                    shard.pause();
                    shard.writer();
                }
            })
        });
        drop(shard);
        let mut plain = Shard::build(n, false);
        group.bench_function(BenchmarkId::new("unlogged", n), |b| {
            b.iter(|| {
                let r = rng.next();
                let k = Val::Str(&plain.keys[(r % n as u64) as usize]);
                let amount = Val::Int((r >> 20) as i64 % 1000);
                black_box(
                    plain
                        .state
                        .aggregate_mut(0)
                        .unwrap()
                        .update(k, NOW_MS, |_| amount)
                        .unwrap(),
                );
            })
        });
        group.finish();
    }
}

criterion_group!(checkpoint_pause, benches);
criterion_main!(checkpoint_pause);
