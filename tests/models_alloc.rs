//! Allocations per warm `score` call, per model kind, and per warm request
//! on a whole route with a tree model, counted by the shared counting
//! allocator (this test binary has a single test, so no other thread
//! allocates while it counts).
//!
//! Linear and tree runners must not allocate at all. For ONNX the figure is
//! tract's own (intermediate tensors per operator); it is printed and
//! bounded here so that a regression shows, and reported in the README.

#[path = "common/counting.rs"]
mod counting;

use std::path::Path;

use coreline::http::{
    ContentType, Decoded, Decoder, HttpDate, Limits, ResponseOptions, write_response,
};
use coreline::model::{LinearLink, Model};
use coreline::operator::Ctx;
use coreline::pipeline::{Match, Outcome, Router, plan};
use coreline::state::ShardState;

/// Allocations per call over 100 warm calls, after 10 warm-up calls.
fn per_call(model: &Model, rows: &[Vec<f64>]) -> f64 {
    let mut runner = model.runner().unwrap();
    let mut out = model.new_outputs();
    for row in rows.iter().cycle().take(10) {
        runner.score(row, &mut out).unwrap();
    }
    let before = counting::allocations();
    for row in rows.iter().cycle().take(100) {
        runner.score(row, &mut out).unwrap();
    }
    (counting::allocations() - before) as f64 / 100.0
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
    whole_route_with_a_tree_model_does_not_allocate();
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

/// The whole request path of a route with a `score` step on the 100-tree
/// XGBoost model: HTTP decode, JSON decode, score, reply, response head.
fn whole_route_with_a_tree_model_does_not_allocate() {
    let n = 30;
    let fields: Vec<String> = (0..n)
        .map(|i| format!("f{i} = {{ type = \"float64\", nullable = true }}"))
        .collect();
    let inputs: Vec<String> = (0..n).map(|i| format!("\"f{i}\"")).collect();
    let toml = format!(
        r#"
[service]
name = "score"
base_port = 0
shards = 1
[[route]]
path = "/score"
request = {{ {} }}
  [[route.step]]
  score = {{ model = "{}/tests/models/xgb_binary_100.json", inputs = [{}], outputs = {{ p = "prediction", label = "label" }} }}
  [route.reply]
  columns = ["p", "label"]
"#,
        fields.join(", "),
        env!("CARGO_MANIFEST_DIR"),
        inputs.join(", ")
    );
    let cfg = coreline::config::parse(coreline::config::Source {
        path: "alloc.toml".into(),
        text: toml,
    })
    .unwrap();
    let mut router = Router::from_plan(&plan(cfg).unwrap());
    let mut input = Vec::new();
    for row in rows("xgb_binary_100", n).iter().take(8) {
        let fields: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if v.is_nan() {
                    format!("\"f{i}\":null")
                } else {
                    format!("\"f{i}\":{v}")
                }
            })
            .collect();
        let json = format!("{{{}}}", fields.join(","));
        input.extend_from_slice(
            format!(
                "POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            )
            .as_bytes(),
        );
    }
    let mut decoder = Decoder::new();
    let limits = Limits::default();
    let date = HttpDate::new(std::time::SystemTime::now());
    let (mut out, mut body) = (Vec::with_capacity(8192), Vec::with_capacity(512));
    let mut state = ShardState::without_checkpoints(&[]).unwrap();
    let mut serve = |out: &mut Vec<u8>, body: &mut Vec<u8>| {
        let mut ctx = Ctx::new(&mut state, 0, 1);
        let mut start = 0;
        out.clear();
        while start < input.len() {
            match decoder.decode(&input[start..], &limits).unwrap() {
                Decoded::Request { request, consumed } => {
                    body.clear();
                    let status = match router.find(request.method, request.path) {
                        Match::Route(i) => match router.handle(i, &request, &mut ctx, body) {
                            Outcome::Done(status) => status,
                            other => panic!("unexpected {other:?}"),
                        },
                        other => panic!("unexpected {other:?}"),
                    };
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
                    write_response(
                        out,
                        &date,
                        status,
                        ContentType::Json,
                        body,
                        ResponseOptions::for_request(&request),
                    );
                    start += consumed;
                }
                Decoded::Incomplete { .. } => panic!("complete input"),
            }
        }
    };
    for _ in 0..10 {
        serve(&mut out, &mut body);
    }
    let before = counting::allocations();
    for _ in 0..100 {
        serve(&mut out, &mut body);
    }
    let per_request = (counting::allocations() - before) as f64 / 800.0;
    eprintln!("route with xgb_binary_100.json: {per_request} allocations per warm request");
    assert_eq!(per_request, 0.0);
}
