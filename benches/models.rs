//! One warm request's scoring per model kind, on the committed fixtures of
//! `tests/models/`: the runner's `score` from a feature slice to its output
//! buffers (no decode, no reply).
//!
//! `cargo bench --bench models`
//!
//! Targets (issue 8): linear ≤ 100 ns, the 100-tree depth-6 XGBoost model
//! ≤ 3 µs, the ONNX 64-32 MLP ≤ 10 µs.

use std::hint::black_box;
use std::path::Path;

use coreline::model::{LinearLink, Model};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;

fn fixture(name: &str) -> (Model, Vec<Vec<f64>>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models");
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();
    let model = Model::load(&dir.join(doc["model"].as_str().unwrap())).unwrap();
    let rows = doc["rows"]
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
    (model, rows)
}

fn bench_model(c: &mut Criterion, id: &str, model: &Model, rows: &[Vec<f64>]) {
    let mut runner = model.runner().unwrap();
    let mut out = model.new_outputs();
    let mut i = 0;
    c.bench_function(id, |b| {
        b.iter(|| {
            // Cycle through the test rows so branch predictors see real paths.
            i = (i + 1) % rows.len();
            runner.score(black_box(&rows[i]), &mut out).unwrap();
            black_box(&out);
        })
    });
}

fn models(c: &mut Criterion) {
    let weights: Vec<f64> = (0..30).map(|i| (i as f64 - 15.0) / 10.0).collect();
    let linear = Model::linear(weights, 0.1, LinearLink::Logistic).unwrap();
    let rows: Vec<Vec<f64>> = (0..40)
        .map(|r| (0..30).map(|i| ((r * 31 + i) % 17) as f64 / 17.0).collect())
        .collect();
    bench_model(c, "linear_logistic_30", &linear, &rows);

    for (id, name) in [
        ("xgboost_100_trees_depth6", "xgb_binary_100"),
        ("xgboost_20_trees_depth3", "xgb_binary"),
        ("xgboost_multiclass_30_trees", "xgb_multi"),
        ("lightgbm_binary_20_trees", "lgb_binary"),
        ("onnx_iris_scaler_logreg", "iris"),
        ("onnx_digits_mlp_64_32", "digits_mlp"),
    ] {
        let (model, rows) = fixture(name);
        bench_model(c, id, &model, &rows);
    }
}

criterion_group!(benches, models);
criterion_main!(benches);
