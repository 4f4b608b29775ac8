//! Allocations per warm `score` call, per model kind, counted by a
//! counting global allocator (this test binary has a single test, so no
//! other thread allocates while it counts).
//!
//! Linear and tree runners must not allocate at all. For ONNX the figure is
//! tract's own (intermediate tensors per operator); it is printed and
//! bounded here so that a regression shows, and reported in the README.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use coreline::model::{LinearLink, Model};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only
// counts allocations on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per call over 100 warm calls, after 10 warm-up calls.
fn per_call(model: &Model, rows: &[Vec<f64>]) -> f64 {
    let mut runner = model.runner().unwrap();
    let mut out = model.new_outputs();
    for row in rows.iter().cycle().take(10) {
        runner.score(row, &mut out).unwrap();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for row in rows.iter().cycle().take(100) {
        runner.score(row, &mut out).unwrap();
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / 100.0
}

fn rows(name: &str, n_features: usize) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/models/{name}.expected.json")),
    )
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<Vec<f64>> = doc["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    assert_eq!(rows[0].len(), n_features);
    rows
}

fn load(file: &str) -> Model {
    Model::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/models")
            .join(file),
    )
    .unwrap()
}

#[test]
fn warm_scoring_allocations() {
    let linear = Model::linear(vec![0.5; 4], 0.1, LinearLink::Logistic).unwrap();
    assert_eq!(per_call(&linear, &rows("iris", 4)), 0.0, "linear");
    for (file, name) in [
        ("xgb_binary_100.json", "xgb_binary_100"),
        ("xgb_multi.json", "xgb_multi"),
        ("lgb_binary.txt", "lgb_binary"),
        ("lgb_multi.txt", "lgb_multi"),
    ] {
        let m = load(file);
        let n = per_call(&m, &rows(name, m.n_features()));
        eprintln!("{file}: {n} allocations per warm score");
        assert_eq!(n, 0.0, "{file}");
    }
    for (file, name) in [("iris.onnx", "iris"), ("digits_mlp.onnx", "digits_mlp")] {
        let m = load(file);
        let n = per_call(&m, &rows(name, m.n_features()));
        eprintln!("{file}: {n} allocations per warm score (inside tract's run)");
        // tract allocates each operator's output tensor; a bound, not zero.
        assert!(n <= 64.0, "{file}: {n} allocations per call");
    }
}
