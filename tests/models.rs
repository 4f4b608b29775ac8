//! Every committed model in `tests/models/` scored on every test row, against
//! the predictions its own library made for the same rows
//! (`tests/models/make.py`: XGBoost, LightGBM, onnxruntime), and the load
//! and input errors.

use std::path::{Path, PathBuf};

use coreline::model::{LinearLink, Model, ModelError, OutputKind, ScoreError, Value};
use serde_json::Value as Json;

/// Relative tolerance of the issue: `|a - b| <= 1e-5 * max(|a|, |b|)`.
const REL: f64 = 1e-5;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

fn number(v: &Json) -> f64 {
    if v.is_null() {
        f64::NAN
    } else {
        v.as_f64().expect("a number")
    }
}

/// Scores every row of `<name>.expected.json`; returns the largest relative
/// error seen and the number of values compared.
fn check(name: &str) -> (f64, usize) {
    let doc: Json = serde_json::from_str(
        &std::fs::read_to_string(dir().join(format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();
    let model = Model::load(&dir().join(doc["model"].as_str().unwrap())).unwrap();
    assert_eq!(
        model.n_features() as u64,
        doc["features"].as_u64().unwrap(),
        "{name}"
    );
    let mut runner = model.runner().unwrap();
    let mut out = model.new_outputs();
    let rows = doc["rows"].as_array().unwrap();
    let expected = doc["outputs"].as_object().unwrap();
    let mut worst: f64 = 0.0;
    let mut compared = 0;
    let mut features = vec![];
    for (r, row) in rows.iter().enumerate() {
        features.clear();
        features.extend(row.as_array().unwrap().iter().map(number));
        runner.score(&features, &mut out).unwrap();
        for (output, values) in expected {
            let i = model.output_index(output).unwrap();
            let want = &values[r];
            let got = &out.values[i];
            let pairs: Vec<(f64, f64)> = match (got, want) {
                (Value::Float(g), w) if w.is_number() => vec![(*g, number(w))],
                (Value::Float(g), Json::Array(w)) if w.len() == 1 => vec![(*g, number(&w[0]))],
                (Value::Label(g), w) => {
                    let w = if let Json::Array(a) = w { &a[0] } else { w };
                    assert_eq!(*g, w.as_i64().unwrap(), "{name} row {r} {output}");
                    continue;
                }
                (Value::Vector(g), Json::Array(w)) => {
                    assert_eq!(g.len(), w.len(), "{name} row {r} {output}");
                    g.iter().copied().zip(w.iter().map(number)).collect()
                }
                (g, w) => panic!("{name} row {r} {output}: got {g:?}, expected {w}"),
            };
            for (g, w) in pairs {
                let err = (g - w).abs() / g.abs().max(w.abs()).max(f64::MIN_POSITIVE);
                let err = if g == w { 0.0 } else { err };
                assert!(
                    err <= REL,
                    "{name} row {r} {output}: coreline {g}, library {w} (relative error {err:e})"
                );
                worst = worst.max(err);
                compared += 1;
            }
        }
    }
    eprintln!(
        "{name}: {} rows, {compared} values, max relative error {worst:e}",
        rows.len()
    );
    (worst, compared)
}

#[test]
fn xgboost_binary_matches_xgboost() {
    check("xgb_binary");
}

#[test]
fn xgboost_binary_100_trees_matches_xgboost() {
    check("xgb_binary_100");
}

#[test]
fn xgboost_multiclass_matches_xgboost() {
    check("xgb_multi");
}

#[test]
fn xgboost_regressor_matches_xgboost() {
    check("xgb_reg");
}

#[test]
fn lightgbm_binary_matches_lightgbm() {
    check("lgb_binary");
}

#[test]
fn lightgbm_multiclass_matches_lightgbm() {
    check("lgb_multi");
}

#[test]
fn lightgbm_regressor_with_zero_as_missing_matches_lightgbm() {
    check("lgb_reg");
}

#[test]
fn onnx_scaler_pipeline_matches_onnxruntime() {
    check("iris");
}

#[test]
fn onnx_mlp_matches_onnxruntime() {
    check("digits_mlp");
}

#[test]
fn outputs_are_named_by_the_model() {
    let names = |m: &Model| {
        m.outputs()
            .iter()
            .map(|o| o.name.clone())
            .collect::<Vec<_>>()
    };
    let xgb = Model::load(&dir().join("xgb_multi.json")).unwrap();
    assert_eq!(names(&xgb), ["prediction", "label", "probabilities"]);
    assert_eq!(xgb.outputs()[2].kind, OutputKind::Vector(3));
    let reg = Model::load(&dir().join("lgb_reg.txt")).unwrap();
    assert_eq!(names(&reg), ["prediction"]);
    let mlp = Model::load(&dir().join("digits_mlp.onnx")).unwrap();
    assert_eq!(names(&mlp), ["label", "probabilities"]);
    assert_eq!(mlp.outputs()[0].kind, OutputKind::Label);
    assert_eq!(mlp.outputs()[1].kind, OutputKind::Vector(10));
    let err = mlp.output_index("proba").unwrap_err();
    assert!(
        err.contains("no output \"proba\"") && err.contains("label, probabilities"),
        "{err}"
    );
}

#[test]
fn describe_names_format_inputs_outputs_and_size() {
    let d = Model::load(&dir().join("digits_mlp.onnx"))
        .unwrap()
        .describe()
        .to_string();
    assert!(d.starts_with("ONNX model "), "{d}");
    assert!(d.contains("input: X [1, 64] float32"), "{d}");
    assert!(
        d.contains("output: probabilities array<float64> [10]"),
        "{d}"
    );
    assert!(
        d.contains("ArrayFeatureExtractor×1") && d.contains("MatMul×3"),
        "{d}"
    );
    let d = Model::load(&dir().join("xgb_binary_100.json"))
        .unwrap()
        .describe()
        .to_string();
    assert!(
        d.contains("100 trees") && d.contains("binary:logistic"),
        "{d}"
    );
    assert!(d.contains("input: features [1, 30] float64"), "{d}");
}

#[test]
fn linear_and_logistic_models() {
    let m = Model::linear(vec![1.0, -2.0], 0.5, LinearLink::Identity).unwrap();
    let (mut r, mut out) = (m.runner().unwrap(), m.new_outputs());
    r.score(&[3.0, 1.0], &mut out).unwrap();
    assert_eq!(out.values[0], Value::Float(1.5));
    let m = Model::linear(vec![2.0], 0.0, LinearLink::Logistic).unwrap();
    let (mut r, mut out) = (m.runner().unwrap(), m.new_outputs());
    r.score(&[0.0], &mut out).unwrap();
    assert_eq!(
        out.values,
        [
            Value::Float(0.5),
            Value::Label(0),
            Value::Vector(vec![0.5, 0.5])
        ]
    );
    r.score(&[1.0], &mut out).unwrap();
    let p = 1.0 / (1.0 + (-2.0f64).exp());
    assert_eq!(out.values[0], Value::Float(p));
    assert_eq!(out.values[1], Value::Label(1));
    let err = Model::linear(vec![1.0, f64::NAN], 0.0, LinearLink::Identity).unwrap_err();
    assert_eq!(
        err.to_string(),
        "linear model: weights[1]: expected a finite number, found NaN"
    );
}

#[test]
fn a_missing_file_names_the_file() {
    let path = dir().join("no_such_model.json");
    let err = Model::load(&path).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", path.display())),
        "{err}"
    );
    let err = Model::load(&dir().join("no_such_model.onnx")).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
}

#[test]
fn an_unknown_extension_lists_the_formats() {
    let err = Model::load(&dir().join("make.py")).unwrap_err();
    assert!(
        err.to_string().contains(".onnx (ONNX), .json (XGBoost"),
        "{err}"
    );
}

fn temp(name: &str, contents: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("coreline-models-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

#[test]
fn corrupt_json_gives_line_and_column() {
    let p = temp(
        "corrupt.json",
        "{\n  \"learner\": {\n    \"objective\": ,\n  }\n}\n",
    );
    let err = Model::load(&p).unwrap_err();
    match &err {
        ModelError::Json { line, column, .. } => assert_eq!((*line, *column), (3, 18), "{err}"),
        other => panic!("expected a JSON error, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3:18: ", p.display())),
        "{err}"
    );
}

#[test]
fn an_unsupported_objective_is_named_with_its_field() {
    let text = std::fs::read_to_string(dir().join("xgb_reg.json")).unwrap();
    let p = temp(
        "survival.json",
        &text.replace("reg:squarederror", "survival:cox"),
    );
    let err = Model::load(&p).unwrap_err().to_string();
    assert!(
        err.contains("learner.objective.name: objective \"survival:cox\" is not supported"),
        "{err}"
    );
}

#[test]
fn corrupt_lightgbm_text_gives_the_line() {
    let text = std::fs::read_to_string(dir().join("lgb_binary.txt")).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("threshold="))
        .unwrap()
        + 1;
    let broken = text.replacen("threshold=", "threshold=abc ", 1);
    let err = Model::load(&temp("broken.txt", &broken)).unwrap_err();
    match &err {
        ModelError::Text {
            line: l, message, ..
        } => {
            assert_eq!(*l, line, "{err}");
            assert!(message.contains("\"abc\" is not a valid number"), "{err}");
        }
        other => panic!("expected a text error, got {other:?}"),
    }
    let err = Model::load(&temp("not_lgb.txt", "hello\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(":1: expected \"tree\" (a LightGBM model), found \"hello\""),
        "{err}"
    );
}

#[test]
fn an_unsupported_onnx_operator_is_named() {
    let err = Model::load(&dir().join("unsupported_tree_regressor.onnx")).unwrap_err();
    match &err {
        ModelError::UnsupportedOnnxOps { ops, .. } => assert_eq!(ops, &["TreeEnsembleRegressor"]),
        other => panic!("expected unsupported operators, got {other:?}"),
    }
    assert!(
        err.to_string()
            .ends_with("unsupported ONNX operator(s): TreeEnsembleRegressor")
    );
}

#[test]
fn a_corrupt_onnx_file_is_an_error() {
    let err = Model::load(&temp("garbage.onnx", "this is not protobuf")).unwrap_err();
    assert!(
        err.to_string().contains("not a readable ONNX model"),
        "{err}"
    );
}

#[test]
fn wrong_feature_count_is_an_error_for_every_kind() {
    for file in ["iris.onnx", "xgb_multi.json", "lgb_multi.txt"] {
        let m = Model::load(&dir().join(file)).unwrap();
        let (mut r, mut out) = (m.runner().unwrap(), m.new_outputs());
        assert_eq!(
            r.score(&[1.0, 2.0, 3.0], &mut out),
            Err(ScoreError::FeatureCount {
                expected: 4,
                got: 3
            }),
            "{file}"
        );
        // The runner keeps working after the error.
        r.score(&[5.1, 3.5, 1.4, 0.2], &mut out).unwrap();
    }
    let m = Model::linear(vec![1.0; 4], 0.0, LinearLink::Identity).unwrap();
    let (mut r, mut out) = (m.runner().unwrap(), m.new_outputs());
    assert_eq!(
        r.score(&[1.0], &mut out),
        Err(ScoreError::FeatureCount {
            expected: 4,
            got: 1
        })
    );
}
