//! Models as control data over real processes: `PUT /models/<step>` under
//! steady load on persistent connections answers every request (each from
//! the old or the new model, never an error, and never the old one again on
//! a shard once the new one answered there); a model that fails its check
//! is refused while the old one keeps serving; `kill -9` after a committed
//! epoch restarts with the swapped-in model.
//!
//! The expected predictions come from `coreline::model` on the committed
//! fixtures (checked against each library's own predictions by
//! tests/models.rs), keyed by the version the reply names.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Client, Proc, Response, TempDir};
use coreline::model::version::content_version;
use coreline::model::{Model, Value};
use serde_json::Value as Json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name)
}

fn config(dir: &TempDir, shards: usize) -> PathBuf {
    let text = format!(
        r#"
[service]
name = "swap"
base_port = 0
shards = {shards}
admin_port = 0

[checkpoint]
dir = "{ckpt}"
interval = "1h"

[[route]]
path = "/score"
request = {{ id = "int64", features = {{ type = "array<float64>", len = 30 }} }}
  [[route.step]]
  score = {{ name = "cancer", model = "{model}", inputs = ["features"], outputs = {{ p = "prediction" }} }}
  [[route.step]]
  with_column = {{ name = "v", expr = "model_version('cancer')" }}
  [route.reply]
  columns = ["id", "p", "v"]
"#,
        ckpt = dir.join("ckpt").display(),
        model = fixture("xgb_binary.json").display(),
    );
    dir.write("swap.toml", &text)
}

/// The 40 test rows of the breast-cancer fixtures (nulls are missing
/// values).
fn rows() -> Vec<Json> {
    let doc: Json = serde_json::from_str(
        &std::fs::read_to_string(fixture("xgb_binary.expected.json")).unwrap(),
    )
    .unwrap();
    doc["rows"].as_array().unwrap().clone()
}

/// Each row's prediction by the model in `file`, through coreline's own
/// evaluator.
fn predictions(file: &str, rows: &[Json]) -> Vec<f64> {
    let model = Model::load(&fixture(file)).unwrap();
    let mut runner = model.runner().unwrap();
    let mut out = model.new_outputs();
    rows.iter()
        .map(|r| {
            let f: Vec<f64> = r
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect();
            runner.score(&f, &mut out).unwrap();
            match out.values[0] {
                Value::Float(p) => p,
                ref other => panic!("prediction is {other:?}"),
            }
        })
        .collect()
}

fn version_of(file: &str) -> String {
    content_version(&std::fs::read(fixture(file)).unwrap())
}

fn body(id: usize, row: &Json) -> String {
    format!(r#"{{"id":{id},"features":{row}}}"#)
}

/// `PUT /models/<step>` with `bytes`; `header` adds `X-Coreline-Admin: 1`.
/// Waits up to a minute: the answer comes after the model file is fsynced,
/// which takes seconds on this machine while other builds write.
fn put(p: &Proc, target: &str, bytes: &[u8], header: bool) -> Response {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(p.admin.expect("admin port")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "PUT {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n",
        bytes.len()
    );
    if header {
        req += "X-Coreline-Admin: 1\r\n";
    }
    req += "\r\n";
    let mut all = req.into_bytes();
    all.extend_from_slice(bytes);
    s.write_all(&all).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .unwrap_or_else(|e| panic!("PUT {target}: {e}; log:\n{}", p.log_text()));
    common::parse_response(&buf)
        .unwrap_or_else(|| panic!("PUT {target}: no answer; log:\n{}", p.log_text()))
        .0
}

fn models(p: &Proc) -> Json {
    let r = p.admin_get("/models");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Scores every row on every shard and checks each answer is `version`'s.
fn all_from(p: &Proc, rows: &[Json], version: &str, expected: &[f64]) {
    for &addr in &p.shards {
        let mut c = Client::connect(addr);
        for (i, row) in rows.iter().enumerate() {
            let r = c.post("/score", &body(i, row));
            assert_eq!(r.status, 200, "{}", r.text());
            let j = r.json();
            assert_eq!(j["v"], version, "row {i} on {addr}");
            let got = j["p"].as_f64().unwrap();
            assert!(close(got, expected[i]), "row {i}: {got} vs {}", expected[i]);
        }
    }
}

#[test]
fn swap_under_load_refusals_and_kill9_restore() {
    let dir = TempDir::new("model-swap");
    let cfg = config(&dir, 2);
    let rows = Arc::new(rows());
    let old = version_of("xgb_binary.json");
    let new = version_of("lgb_binary.txt");
    let by_version: Arc<HashMap<String, Vec<f64>>> = Arc::new(HashMap::from([
        (old.clone(), predictions("xgb_binary.json", &rows)),
        (new.clone(), predictions("lgb_binary.txt", &rows)),
    ]));

    let p = Proc::spawn(&cfg);
    let m = models(&p);
    assert_eq!(m["models"][0]["step"], "cancer", "{m}");
    assert_eq!(m["models"][0]["version"], old.as_str(), "{m}");
    assert_eq!(m["models"][0]["origin"], "config", "{m}");
    all_from(&p, &rows, &old, &by_version[&old]);

    // Steady load: two persistent connections per shard.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for k in 0..4 {
        let addr = p.shards[k % p.shards.len()];
        let (rows, by_version, stop) = (rows.clone(), by_version.clone(), stop.clone());
        let (old, new) = (old.clone(), new.clone());
        clients.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let (mut n_old, mut n_new) = (0u64, 0u64);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let r = c.post("/score", &body(i, &rows[i % rows.len()]));
                assert_eq!(r.status, 200, "request {i} on {addr}: {}", r.text());
                let j = r.json();
                let v = j["v"].as_str().unwrap().to_string();
                let want = by_version
                    .get(&v)
                    .unwrap_or_else(|| panic!("unknown version {v}"))[i % rows.len()];
                let got = j["p"].as_f64().unwrap();
                assert!(close(got, want), "request {i} ({v}): {got} vs {want}");
                if v == old {
                    assert_eq!(
                        n_new, 0,
                        "the old model answered after the new one on {addr}"
                    );
                    n_old += 1;
                } else {
                    assert_eq!(v, new);
                    n_new += 1;
                }
                i += 1;
            }
            (n_old, n_new)
        }));
    }
    std::thread::sleep(Duration::from_millis(400));
    let lgb = std::fs::read(fixture("lgb_binary.txt")).unwrap();
    // No format given: sniffed from the body (a LightGBM text file).
    let r = put(&p, "/models/cancer", &lgb, true);
    assert_eq!(r.status, 200, "{}\nlog:\n{}", r.text(), p.log_text());
    let j = r.json();
    assert_eq!(j["version"], new.as_str(), "{j}");
    assert_eq!(j["previous"], old.as_str(), "{j}");
    assert_eq!(j["format"], "LightGBM", "{j}");
    assert_eq!(j["shards"], 2, "{j}");
    // Every shard installed it before the answer: a new request is new.
    for &addr in &p.shards {
        let r = Client::connect(addr).post("/score", &body(0, &rows[0]));
        assert_eq!(r.json()["v"], new.as_str());
    }
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    let (mut n_old, mut n_new) = (0, 0);
    for c in clients {
        let (o, n) = c.join().expect("a client failed");
        assert!(n > 0, "a client never saw the new model");
        n_old += o;
        n_new += n;
    }
    eprintln!("under load: {n_old} answers from the old model, {n_new} from the new, 0 errors");
    assert!(n_old > 0);

    // Refusals: each leaves the new model serving.
    let reg = std::fs::read(fixture("xgb_reg.json")).unwrap();
    let r = put(&p, "/models/cancer", &reg, true);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("expects 10 features") && r.text().contains("gives 30"),
        "{}",
        r.text()
    );
    let r = put(&p, "/models/cancer", b"not a model", true);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("cannot tell the model format"),
        "{}",
        r.text()
    );
    let r = put(&p, "/models/cancer?format=onnx", b"not a model", true);
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("does not load"), "{}", r.text());
    let r = put(&p, "/models/cancer?format=svm", &lgb, true);
    assert_eq!(r.status, 422, "{}", r.text());
    let iris = std::fs::read(fixture("iris.onnx")).unwrap();
    let r = put(&p, "/models/cancer", &iris, true);
    assert_eq!(r.status, 422, "{}", r.text());
    let r = put(&p, "/models/cancer", &lgb, false);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = put(&p, "/models/nosuch", &lgb, true);
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("score steps: cancer"), "{}", r.text());
    assert_eq!(models(&p)["models"][0]["version"], new.as_str());
    all_from(&p, &rows, &new, &by_version[&new]);
    // Refused files are not kept.
    let kept: Vec<String> = std::fs::read_dir(dir.join("ckpt/models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept, vec![format!("{new}.txt")]);

    // Committed, then kill -9: the restart serves the swapped-in model.
    let epoch = p.checkpoint();
    let manifest: Json = serde_json::from_slice(
        &std::fs::read(dir.join(format!("ckpt/epoch-{epoch}/MANIFEST"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["models"]["cancer"],
        format!("{new}.txt"),
        "{manifest}"
    );
    p.kill9();
    let p = Proc::spawn(&cfg);
    let m = models(&p);
    assert_eq!(m["models"][0]["version"], new.as_str(), "{m}");
    assert_eq!(m["models"][0]["origin"], "checkpoint", "{m}");
    all_from(&p, &rows, &new, &by_version[&new]);

    // Swapped back, with the format named; not committed before kill -9:
    // the restart serves the committed (new) model, not the file's.
    let xgb = std::fs::read(fixture("xgb_binary.json")).unwrap();
    let r = put(&p, "/models/cancer?format=xgboost", &xgb, true);
    assert_eq!(r.status, 200, "{}", r.text());
    all_from(&p, &rows, &old, &by_version[&old]);
    p.kill9();
    let p = Proc::spawn(&cfg);
    all_from(&p, &rows, &new, &by_version[&new]);
    p.stop();
}

#[test]
fn model_version_needs_an_earlier_score_step() {
    let dir = TempDir::new("model-version-check");
    let cfg = dir.write(
        "bad.toml",
        &format!(
            r#"
[service]
name = "bad"
base_port = 0

[[route]]
path = "/score"
request = {{ features = {{ type = "array<float64>", len = 30 }} }}
  [[route.step]]
  with_column = {{ name = "v", expr = "model_version('cancer')" }}
  [[route.step]]
  score = {{ name = "cancer", model = "{}", inputs = ["features"], output = "p" }}
"#,
            fixture("xgb_binary.json").display()
        ),
    );
    let err = Proc::try_spawn(&cfg).err().expect("refused");
    assert!(
        err.contains("no score step named \"cancer\" runs before this expression"),
        "{err}"
    );
}

/// A hot reload changes the pipeline, not the models: a model swapped in
/// with `PUT` keeps serving after `POST /reload` (the reply gains a column
/// here), and `GET /models` still lists it as the `put` version.
#[test]
fn a_reload_keeps_the_live_model() {
    let dir = TempDir::new("model-swap-reload");
    let cfg = config(&dir, 2);
    let rows = rows();
    let new = version_of("lgb_binary.txt");
    let expected = predictions("lgb_binary.txt", &rows);
    let p = Proc::spawn(&cfg);
    let lgb = std::fs::read(fixture("lgb_binary.txt")).unwrap();
    let r = put(&p, "/models/cancer", &lgb, true);
    assert_eq!(r.status, 200, "{}", r.text());
    all_from(&p, &rows, &new, &expected);

    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        r#"columns = ["id", "p", "v"]"#,
        r#"columns = ["id", "p", "v", "reloaded"]"#,
    );
    let text = text.replace(
        "  [route.reply]",
        "  [[route.step]]\n  with_column = { name = \"reloaded\", expr = \"true\" }\n  [route.reply]",
    );
    std::fs::write(&cfg, text).unwrap();
    let r = p.admin_post("/reload");
    assert_eq!(r.status, 200, "{}", r.text());
    all_from(&p, &rows, &new, &expected);
    let mut c = Client::connect(p.shards[0]);
    let j = c.post("/score", &body(0, &rows[0])).json();
    assert_eq!(j["reloaded"], true, "{j}");
    let m = models(&p);
    assert_eq!(m["models"][0]["version"], new.as_str(), "{m}");
    assert_eq!(m["models"][0]["origin"], "put", "{m}");
    p.stop();
}
