//! A `lookup` on a replicated `[[table]]`: the local read every reading of
//! the thermostat does (issue target: <= 50 ns).
//!
//! `cargo bench --bench lookup`
//!
//! - `lookup/step/<keys>`: the compiled `lookup` step of
//!   `configs/thermostat.toml` (`/readings`, step 0) applied to a decoded
//!   row: key from the row, table probe, three float columns written into
//!   the row. Keys cycle through the table in a scrambled order.
//! - `lookup/get/<keys>`: the table probe alone (`DeclaredTable::get`).
//!
//! First run (2-core machine, load average ~10 from other builds): step
//! 23.6 ns / get 13.6 ns at 1,000 keys; 99 / 81 ns at 100,000; 473 / 254 ns
//! at 1,000,000: every lookup of the scrambled walk misses the cache once
//! the table outgrows it (a row is `width` `Slot`s of ~80 bytes each).

use std::hint::black_box;

use coreline::config::{Source, parse};
use coreline::operator::{Ctx, Flow, Step};
use coreline::pipeline::plan;
use coreline::row::{Row, Val};
use coreline::state::ShardState;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

fn bench(c: &mut Criterion) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/thermostat.toml"
    ))
    .unwrap();
    let config = parse(Source {
        path: "thermostat.toml".into(),
        text,
    })
    .unwrap();
    let plan = plan(config).unwrap();
    let route = plan
        .routes
        .iter()
        .find(|r| r.path == "/readings")
        .unwrap()
        .clone();
    let mut g = c.benchmark_group("lookup");
    for keys in SIZES {
        let mut state = ShardState::new(&plan.tables).unwrap();
        let table = state.declared_table_mut(0).unwrap();
        for k in 0..keys as i64 {
            table
                .upsert(Val::Int(k), |i| Some(Val::Float(20.0 + i as f64)))
                .unwrap();
        }
        // A scrambled walk over every key (an odd stride mod a power of two).
        let mask = keys.next_power_of_two() - 1;
        let mut step = route.steps[0].clone();
        let mut row = Row::with_width(route.columns.len());
        let mut body = Vec::new();
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("step", keys), &keys, |b, &keys| {
            let mut ctx = Ctx::new(&mut state, 0, 2);
            b.iter(|| {
                i = (i.wrapping_mul(5).wrapping_add(1)) & mask;
                let k = (i % keys) as i64;
                row.slot_mut(0).set(Val::Int(k));
                let flow = step.apply(&mut row, &mut ctx, &mut body);
                debug_assert_eq!(flow, Flow::Continue);
                black_box(row.get(2));
            })
        });
        let table = state.declared_table(0).unwrap();
        g.bench_with_input(BenchmarkId::new("get", keys), &keys, |b, &keys| {
            b.iter(|| {
                i = (i.wrapping_mul(5).wrapping_add(1)) & mask;
                let k = (i % keys) as i64;
                black_box(table.get(black_box(Val::Int(k))).map(|r| r[0].get()));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
