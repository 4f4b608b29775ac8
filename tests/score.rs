//! The `score` step over real sockets, one model of each format, against
//! the library predictions committed in `tests/models/` (see `models.rs`).

mod common;

use common::{Client, start};
use serde_json::Value;

fn expected(name: &str) -> Value {
    let path = format!(
        "{}/tests/models/{name}.expected.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A service with one route scoring `model` on scalar request fields
/// `f0..fN`, replying with `columns`.
fn service(n: usize, score: &str, columns: &str) -> String {
    let fields: Vec<String> = (0..n)
        .map(|i| format!("f{i} = {{ type = \"float64\", nullable = true }}"))
        .collect();
    let inputs: Vec<String> = (0..n).map(|i| format!("\"f{i}\"")).collect();
    format!(
        r#"
[service]
name = "score"
base_port = 0
shards = 1

[[route]]
path = "/score"
request = {{ {} }}
  [[route.step]]
  score = {{ {score}, inputs = [{}] }}
  [route.reply]
  columns = [{columns}]
"#,
        fields.join(", "),
        inputs.join(", ")
    )
}

fn body(row: &Value) -> String {
    let fields: Vec<String> = row
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, v)| format!("\"f{i}\":{v}"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-5 * a.abs().max(b.abs())
}

/// Every row of a fixture through the server; `check` compares one reply.
fn run(name: &str, score: &str, columns: &str, check: impl Fn(usize, &Value, &Value)) {
    let doc = expected(name);
    let n = doc["features"].as_u64().unwrap() as usize;
    let toml = service(n, score, columns)
        .replace("tests/", &format!("{}/tests/", env!("CARGO_MANIFEST_DIR")));
    let svc = start(&toml);
    let mut c = Client::connect(svc.shard_addrs()[0]);
    for (r, row) in doc["rows"].as_array().unwrap().iter().enumerate() {
        let resp = c.post("/score", &body(row));
        assert_eq!(resp.status, 200, "{name} row {r}: {}", resp.text());
        check(r, &resp.json(), &doc["outputs"]);
    }
}

#[test]
fn xgboost_over_sockets_matches_xgboost() {
    run(
        "xgb_multi",
        r#"model = "tests/models/xgb_multi.json", outputs = { label = "label" }"#,
        r#""label""#,
        |r, got, want| {
            let probs: Vec<f64> = want["prediction"][r]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let best = (0..probs.len()).fold(0, |b, i| if probs[i] > probs[b] { i } else { b });
            assert_eq!(got["label"].as_i64().unwrap(), best as i64, "row {r}");
        },
    );
    run(
        "xgb_reg",
        r#"model = "tests/models/xgb_reg.json", output = "y""#,
        r#""y""#,
        |r, got, want| {
            let (g, w) = (
                got["y"].as_f64().unwrap(),
                want["prediction"][r].as_f64().unwrap(),
            );
            assert!(close(g, w), "row {r}: {g} vs {w}");
        },
    );
}

#[test]
fn lightgbm_over_sockets_matches_lightgbm() {
    run(
        "lgb_binary",
        r#"model = "tests/models/lgb_binary.txt", outputs = { p = "prediction", fraud = "label" }"#,
        r#""p", "fraud""#,
        |r, got, want| {
            let (g, w) = (
                got["p"].as_f64().unwrap(),
                want["prediction"][r].as_f64().unwrap(),
            );
            assert!(close(g, w), "row {r}: {g} vs {w}");
            assert_eq!(got["fraud"].as_i64().unwrap(), (w > 0.5) as i64);
        },
    );
}

#[test]
fn onnx_over_sockets_matches_onnxruntime() {
    run(
        "iris",
        r#"model = "tests/models/iris.onnx", outputs = { species = "label" }"#,
        r#""species""#,
        |r, got, want| {
            assert_eq!(got["species"], want["label"][r], "row {r}");
        },
    );
}

#[test]
fn linear_over_sockets() {
    let doc = serde_json::json!({"features": 2, "rows": [[1.0, 2.0], [0.5, null]], "outputs": {}});
    let toml = service(
        2,
        r#"linear = { weights = [2.0, -1.0], bias = 0.5 }, output = "y""#,
        r#""y""#,
    );
    let svc = start(&toml);
    let mut c = Client::connect(svc.shard_addrs()[0]);
    let resp = c.post("/score", &body(&doc["rows"][0]));
    assert_eq!(resp.json()["y"].as_f64(), Some(0.5));
    let _ = doc;
}

#[test]
fn a_null_into_onnx_is_422_naming_the_column_and_nan_with_nulls_nan() {
    let toml = service(
        4,
        r#"model = "tests/models/iris.onnx", outputs = { species = "label" }"#,
        r#""species""#,
    )
    .replace("tests/", &format!("{}/tests/", env!("CARGO_MANIFEST_DIR")));
    let svc = start(&toml);
    let mut c = Client::connect(svc.shard_addrs()[0]);
    let resp = c.post("/score", r#"{"f0":5.1,"f1":null,"f2":1.4,"f3":0.2}"#);
    assert_eq!(resp.status, 422, "{}", resp.text());
    assert!(
        resp.text().contains("f1: null is not a valid model input"),
        "{}",
        resp.text()
    );
    // The shard keeps serving.
    let resp = c.post("/score", r#"{"f0":5.1,"f1":3.5,"f2":1.4,"f3":0.2}"#);
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn config_errors_point_at_the_step() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let check = |score: &str, n: usize| -> String {
        let toml = service(n, score, r#""y""#).replace("tests/", &format!("{dir}/tests/"));
        let config = coreline::config::parse(coreline::config::Source {
            path: "test.toml".into(),
            text: toml,
        })
        .map_err(|e| e.to_string());
        match config {
            Err(e) => e,
            Ok(c) => match coreline::pipeline::plan(c) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{score}: accepted"),
            },
        }
    };
    let e = check(r#"model = "tests/models/iris.onnx", output = "y""#, 3);
    assert!(
        e.contains("the model expects 4 features; the inputs give 3: f0, f1, f2"),
        "{e}"
    );
    let e = check(
        r#"model = "tests/models/iris.onnx", outputs = { y = "proba" }"#,
        4,
    );
    assert!(
        e.contains("no output \"proba\"; it has: label, probabilities"),
        "{e}"
    );
    let e = check(r#"model = "tests/models/nope.json", output = "y""#, 4);
    assert!(e.contains("cannot read the model file"), "{e}");
    let e = check(
        r#"model = "tests/models/unsupported_tree_regressor.onnx", output = "y""#,
        10,
    );
    assert!(
        e.contains("unsupported ONNX operator(s): TreeEnsembleRegressor"),
        "{e}"
    );
    assert!(e.contains("test.toml:"), "{e}");
}

/// `configs/fraud.toml` over sockets: aggregate features and the XGBoost
/// model in one pipeline; the outlier is declined with 402.
#[test]
fn fraud_config_declines_an_outlier() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/fraud.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("base_port = 8920", "base_port = 0")
        .replace("admin_port = 8992", "admin_port = 0");
    let config = coreline::config::parse(coreline::config::Source { path, text }).unwrap();
    let svc = coreline::runtime::Service::start(coreline::pipeline::plan(config).unwrap()).unwrap();
    // The card's owner shard answers either way (forwarding); use shard 0.
    let mut c = Client::connect(svc.shard_addrs()[0]);
    for a in [50, 55, 48, 52, 50] {
        let resp = c.post("/pay", &format!(r#"{{"card":"c1","amount":{a}}}"#));
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["decision"], "approve", "{}", resp.text());
    }
    let resp = c.post("/pay", r#"{"card":"c1","amount":1000}"#);
    assert_eq!(resp.status, 402, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["decision"], "decline");
    assert_eq!(body["n"], 6);
    // XGBoost's own prediction for these features is 0.9989478.
    let p = body["p_fraud"].as_f64().unwrap();
    assert!(close(p, 0.9989478) || (p - 0.9989478).abs() < 1e-6, "{p}");
}

/// `configs/iris.toml` over sockets: the ONNX pipeline and the inline model.
#[test]
fn iris_config_names_the_species() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/iris.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("base_port = 8930", "base_port = 0")
        .replace("admin_port = 8993", "admin_port = 0");
    let config = coreline::config::parse(coreline::config::Source { path, text }).unwrap();
    let svc = coreline::runtime::Service::start(coreline::pipeline::plan(config).unwrap()).unwrap();
    let mut c = Client::connect(svc.shard_addrs()[0]);
    let flower = r#"{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}"#;
    let resp = c.post("/predict", flower);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json(),
        serde_json::json!({"species": 0, "name": "setosa"})
    );
    let resp = c.post("/linear", flower);
    let z: f64 = 0.1 * 5.1 + 0.2 * 3.5 - 0.3 * 1.4 - 0.4 * 0.2 + 0.5;
    let want = 1.0 / (1.0 + (-z).exp());
    assert!(
        close(resp.json()["score"].as_f64().unwrap(), want),
        "{}",
        resp.text()
    );
}

/// A service scoring `model` on one array column `features` of `n`
/// elements, replying with `columns`.
fn array_service(n: usize, score: &str, columns: &str) -> String {
    format!(
        r#"
[service]
name = "score"
base_port = 0
shards = 1

[[route]]
path = "/score"
request = {{ features = {{ type = "array<float64>", len = {n} }} }}
  [[route.step]]
  score = {{ {score}, inputs = ["features"], nulls = "nan" }}
  [route.reply]
  columns = [{columns}]
"#
    )
    .replace("tests/", &format!("{}/tests/", env!("CARGO_MANIFEST_DIR")))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Vector outputs from an array input, over sockets: each element within
/// 1e-5 of the library's own (onnxruntime's, XGBoost's, LightGBM's).
fn vectors(name: &str, score: &str, output: &str) {
    let doc = expected(name);
    let n = doc["features"].as_u64().unwrap() as usize;
    let svc = start(&array_service(n, score, r#""proba""#));
    let mut c = Client::connect(svc.shard_addrs()[0]);
    for (r, row) in doc["rows"].as_array().unwrap().iter().enumerate() {
        let resp = c.post("/score", &format!(r#"{{"features":{row}}}"#));
        assert_eq!(resp.status, 200, "{name} row {r}: {}", resp.text());
        let got = floats(&resp.json()["proba"]);
        let want = floats(&doc["outputs"][output][r]);
        assert_eq!(got.len(), want.len(), "{name} row {r}");
        for (g, w) in got.iter().zip(&want) {
            assert!(close(*g, *w), "{name} row {r}: {got:?} vs {want:?}");
        }
    }
}

#[test]
fn vector_outputs_from_an_array_input_match_each_library() {
    vectors(
        "iris",
        r#"model = "tests/models/iris.onnx", outputs = { proba = "probabilities" }"#,
        "probabilities",
    );
    vectors(
        "digits_mlp",
        r#"model = "tests/models/digits_mlp.onnx", outputs = { proba = "probabilities" }"#,
        "probabilities",
    );
    vectors(
        "xgb_multi",
        r#"model = "tests/models/xgb_multi.json", outputs = { proba = "probabilities" }"#,
        "prediction",
    );
    vectors(
        "lgb_multi",
        r#"model = "tests/models/lgb_multi.txt", outputs = { proba = "probabilities" }"#,
        "prediction",
    );
}

#[test]
fn an_array_input_of_the_wrong_length_is_a_422() {
    // No `len` on the field: the step itself checks the length.
    let toml = array_service(
        4,
        r#"model = "tests/models/iris.onnx", outputs = { proba = "probabilities" }"#,
        r#""proba""#,
    )
    .replace(", len = 4", "");
    let svc = start(&toml);
    let mut c = Client::connect(svc.shard_addrs()[0]);
    let resp = c.post("/score", r#"{"features":[1.0, 2.0, 3.0]}"#);
    assert_eq!(resp.status, 422, "{}", resp.text());
    assert!(
        resp.text()
            .contains("features: expected 4 elements (the model's features), found 3"),
        "{}",
        resp.text()
    );
    let resp = c.post("/score", r#"{"features":[5.1, 3.5, 1.4, 0.2]}"#);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(floats(&resp.json()["proba"]).len(), 3);
}
