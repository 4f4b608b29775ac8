//! `score = { model, inputs, outputs | output, nulls }`: scores a trained
//! model on the row and adds its outputs as columns.
//!
//! ```toml
//! [[route.step]]
//! score = { model = "models/iris.onnx", inputs = ["a", "b", "c", "d"], outputs = { label = "label", proba = "probabilities" } }
//! [[route.step]]
//! score = { linear = { weights = [0.4, -1.2], bias = 0.1, link = "logistic" }, inputs = ["x", "y"], output = "p" }
//! ```
//!
//! - `model`: a file relative to the configuration: `.onnx`, `.json`
//!   (XGBoost), `.txt` (LightGBM); or `linear` inline. Loaded, checked and
//!   optimised at start-up ([`crate::model`]); each shard gets its own
//!   runner when the route is built for it.
//! - `inputs`: numeric columns in the model's feature order. A null is a
//!   missing value (NaN) for tree and linear models; for ONNX it answers
//!   422 naming the column unless `nulls = "nan"`.
//! - `outputs`: new column = model output name; `output = "y"` for a model
//!   with one output (or the first, `prediction`, of a tree model). Floats
//!   become `float64`, labels `int64`.
//! - A model error at run time answers 500 for that request.

use std::path::PathBuf;

use serde::Deserialize;
use sync_wrapper::SyncWrapper;
use toml::Spanned as TomlSpanned;

use super::{Ctx, Flow, Step};
use crate::config::{ConfigError, Spanned, StepChecker};
use crate::model::{Kind, LinearLink, Model, OutputKind, Outputs, Runner, Value};
use crate::plan::Planner;
use crate::reply::write_error_json;
use crate::row::{Column, ColumnType, Columns, Row, Val};
use crate::state::TableSpec;

/// The step's table in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScore {
    model: Option<TomlSpanned<String>>,
    linear: Option<TomlSpanned<RawLinear>>,
    inputs: TomlSpanned<Vec<TomlSpanned<String>>>,
    outputs: Option<TomlSpanned<toml::Table>>,
    output: Option<TomlSpanned<String>>,
    nulls: Option<TomlSpanned<String>>,
}

/// `linear = { weights, bias, link }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLinear {
    weights: Vec<f64>,
    #[serde(default)]
    bias: f64,
    link: Option<String>,
}

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// A model file, as written (relative to the configuration file).
    File(Spanned<String>),
    /// An inline linear model.
    Linear {
        /// One weight per input feature.
        weights: Vec<f64>,
        /// The intercept.
        bias: f64,
        /// Identity or logistic.
        link: LinearLink,
        /// Where `linear` was written.
        span: std::ops::Range<usize>,
    },
}

// Weights are checked finite when the model is built, so equality is an
// equivalence.
impl Eq for ModelSource {}

/// A checked `score` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreConfig {
    /// The model.
    pub model: ModelSource,
    /// Input columns, in feature order.
    pub inputs: Vec<Spanned<String>>,
    /// (new column, model output) pairs, in the file's order.
    pub outputs: Vec<(Spanned<String>, String)>,
    /// `nulls = "nan"`: nulls are NaN for ONNX models too.
    pub nulls_as_nan: bool,
}

impl ScoreConfig {
    pub(crate) fn check(
        raw: RawScore,
        c: &mut StepChecker<'_>,
    ) -> Result<ScoreConfig, ConfigError> {
        let model = match (raw.model, raw.linear) {
            (Some(m), None) => ModelSource::File(c.non_empty(m, "model", "model file path")?),
            (None, Some(l)) => {
                let span = l.span();
                let l = l.into_inner();
                let link = match l.link.as_deref() {
                    None | Some("identity") => LinearLink::Identity,
                    Some("logistic") => LinearLink::Logistic,
                    Some(other) => {
                        return Err(c
                            .error(span, "linear.link", format!("unknown link {other:?}"))
                            .with_expected("\"identity\" or \"logistic\""));
                    }
                };
                ModelSource::Linear {
                    weights: l.weights,
                    bias: l.bias,
                    link,
                    span,
                }
            }
            (Some(m), Some(_)) => {
                return Err(c
                    .error(m.span(), "model", "both model and linear are given")
                    .with_expected("one of model = \"file\" or linear = { ... }"));
            }
            (None, None) => {
                return Err(c
                    .error(raw.inputs.span(), "model", "no model")
                    .with_expected(
                        "model = \"path/to/model.onnx|.json|.txt\" or linear = { ... }",
                    ));
            }
        };
        let inputs_span = raw.inputs.span();
        let inputs = c.column_list(raw.inputs, "inputs")?;
        let outputs = match (raw.outputs, raw.output) {
            (Some(map), None) => {
                let span = map.span();
                let mut pairs = vec![];
                for (column, v) in map.into_inner() {
                    let Some(name) = v.as_str() else {
                        return Err(c
                            .error(
                                span.clone(),
                                &format!("outputs.{column}"),
                                format!("found {v}"),
                            )
                            .with_expected("a model output name (a string)"));
                    };
                    pairs.push((
                        Spanned {
                            value: column,
                            span: span.clone(),
                        },
                        name.to_string(),
                    ));
                }
                if pairs.is_empty() {
                    return Err(c
                        .error(span, "outputs", "no outputs")
                        .with_expected("at least one `new_column = \"model output\"`"));
                }
                pairs
            }
            (None, Some(o)) => {
                let column = c.non_empty(o, "output", "column name")?;
                // The model's first output; planning checks it has only one
                // (or is a tree model, whose first output is `prediction`).
                vec![(column, String::new())]
            }
            (Some(m), Some(_)) => {
                return Err(c
                    .error(m.span(), "outputs", "both outputs and output are given")
                    .with_expected(
                        "outputs = { column = \"model output\" } or output = \"column\"",
                    ));
            }
            (None, None) => {
                return Err(c.error(inputs_span, "outputs", "no outputs").with_expected(
                    "outputs = { column = \"model output\" } or output = \"column\"",
                ));
            }
        };
        let nulls_as_nan = match raw.nulls {
            None => false,
            Some(n) => match n.get_ref().as_str() {
                "nan" => true,
                "reject" => false,
                other => {
                    return Err(c
                        .error(n.span(), "nulls", format!("unknown nulls policy {other:?}"))
                        .with_expected("\"nan\" (nulls are missing values) or \"reject\" (422)"));
                }
            },
        };
        Ok(ScoreConfig {
            model,
            inputs,
            outputs,
            nulls_as_nan,
        })
    }
}

/// Scores the model on the input columns and writes the mapped outputs.
pub struct Score {
    /// Boxed: a tree ensemble's tables make `Model` large, and the
    /// `Operator` enum is as large as its largest step.
    model: Box<Model>,
    /// This shard's runner. The plan is shared by the shards' threads while
    /// a runner (an ONNX state) is not `Sync`: `SyncWrapper` only hands it
    /// out through `&mut`, and a clone builds a new one. `None` only if
    /// building one failed on a clone (one was built at plan time, so that
    /// does not happen in practice; the request then answers 500).
    runner: SyncWrapper<Option<Runner>>,
    outputs: Outputs,
    /// Input slots, in feature order.
    inputs: Vec<usize>,
    /// `(row slot, model output index)`.
    writes: Vec<(usize, usize)>,
    /// A null input answers 422 (ONNX without `nulls = "nan"`).
    reject_nulls: bool,
    /// The 422 body per input, encoded once.
    null_bodies: Vec<Vec<u8>>,
    /// Features gathered from the row.
    features: Vec<f64>,
    /// `model` as written, for `describe`.
    source: String,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

impl std::fmt::Debug for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Score")
            .field("model", &self.source)
            .field("inputs", &self.input_names)
            .field("outputs", &self.output_names)
            .finish()
    }
}

impl Clone for Score {
    /// A copy for another shard, with its own runner (an ONNX plan and state
    /// are per shard).
    fn clone(&self) -> Score {
        Score {
            model: self.model.clone(),
            runner: SyncWrapper::new(self.model.runner().ok()),
            outputs: self.model.new_outputs(),
            inputs: self.inputs.clone(),
            writes: self.writes.clone(),
            reject_nulls: self.reject_nulls,
            null_bodies: self.null_bodies.clone(),
            features: self.features.clone(),
            source: self.source.clone(),
            input_names: self.input_names.clone(),
            output_names: self.output_names.clone(),
        }
    }
}

impl Score {
    /// Loads the model, checks inputs and outputs against it, adds the
    /// output columns.
    pub fn plan(config: &ScoreConfig, p: &mut Planner<'_>) -> Result<Score, ConfigError> {
        let (model, source) = match &config.model {
            ModelSource::File(path) => {
                let base = p
                    .source()
                    .path
                    .parent()
                    .map(PathBuf::from)
                    .unwrap_or_default();
                let full = base.join(&path.value);
                let model = Model::load(&full)
                    .map_err(|e| p.error(path.span.clone(), "model", e.to_string()))?;
                (model, path.value.clone())
            }
            ModelSource::Linear {
                weights,
                bias,
                link,
                span,
            } => {
                let model = Model::linear(weights.clone(), *bias, *link)
                    .map_err(|e| p.error(span.clone(), "linear", e.to_string()))?;
                (model, "linear".to_string())
            }
        };

        let mut inputs = vec![];
        for name in &config.inputs {
            let i = p.column(name, &p.key("inputs"))?;
            let c = p.columns().get(i);
            if !matches!(c.ty, ColumnType::Int64 | ColumnType::Float64) {
                return Err(p
                    .error(
                        name.span.clone(),
                        "inputs",
                        format!("input column \"{}\" is {}", name.value, c.ty),
                    )
                    .with_expected("numeric columns (int64 or float64)"));
            }
            inputs.push(i);
        }
        let names: Vec<&str> = config.inputs.iter().map(|s| s.value.as_str()).collect();
        if inputs.len() != model.n_features() {
            let span = config.inputs[0].span.start..config.inputs[config.inputs.len() - 1].span.end;
            return Err(p.error(
                span,
                "inputs",
                format!(
                    "the model expects {} features; the inputs give {}: {}",
                    model.n_features(),
                    inputs.len(),
                    names.join(", ")
                ),
            ));
        }
        let reject_nulls = matches!(model.kind(), Kind::Onnx(_)) && !config.nulls_as_nan;

        let mut writes = vec![];
        let mut output_names = vec![];
        for (column, output) in &config.outputs {
            let index = if output.is_empty() {
                let trees = matches!(model.kind(), Kind::Trees(_) | Kind::Linear(_));
                if model.outputs().len() != 1 && !trees {
                    let all: Vec<&str> = model.outputs().iter().map(|o| o.name.as_str()).collect();
                    return Err(p
                        .error(
                            column.span.clone(),
                            "output",
                            format!("the model has {} outputs: {}", all.len(), all.join(", ")),
                        )
                        .with_expected("outputs = { column = \"model output\", ... }"));
                }
                0
            } else {
                model.output_index(output).map_err(|m| {
                    p.error(column.span.clone(), &format!("outputs.{}", column.value), m)
                })?
            };
            let spec = &model.outputs()[index];
            let ty = match spec.kind {
                OutputKind::Float => ColumnType::Float64,
                OutputKind::Label => ColumnType::Int64,
                OutputKind::Vector(n) => {
                    return Err(p
                        .error(
                            column.span.clone(),
                            "outputs",
                            format!(
                                "model output \"{}\" is a vector of {n}; array columns are not \
                                 available in this build",
                                spec.name
                            ),
                        )
                        .with_expected("a scalar output (prediction, label)"));
                }
            };
            let slot = p.add_column(Column {
                name: column.value.clone(),
                ty,
                nullable: false,
            });
            writes.push((slot, index));
            output_names.push(format!("{} = {}", column.value, spec.name));
        }

        let mut null_bodies = vec![];
        for name in &config.inputs {
            let mut body = vec![];
            write_error_json(
                &mut body,
                &format!(
                    "{}: null is not a valid model input (the step does not say nulls = \"nan\")",
                    name.value
                ),
                Some(&name.value),
            );
            null_bodies.push(body);
        }
        let runner = model
            .runner()
            .map_err(|e| p.error(config.inputs[0].span.clone(), "model", e.to_string()))?;
        Ok(Score {
            outputs: model.new_outputs(),
            runner: SyncWrapper::new(Some(runner)),
            features: Vec::with_capacity(inputs.len()),
            inputs,
            writes,
            reject_nulls,
            null_bodies,
            source,
            input_names: names.iter().map(|s| s.to_string()).collect(),
            output_names,
            model: Box::new(model),
        })
    }
}

impl Step for Score {
    #[inline]
    fn apply(&mut self, row: &mut Row, _: &mut Ctx<'_>, body: &mut Vec<u8>) -> Flow {
        self.features.clear();
        for (k, &i) in self.inputs.iter().enumerate() {
            let v = match row.get(i) {
                Val::Float(f) => f,
                Val::Int(n) => n as f64,
                Val::Null if !self.reject_nulls => f64::NAN,
                _ => {
                    body.clear();
                    body.extend_from_slice(&self.null_bodies[k]);
                    return Flow::Reply(422);
                }
            };
            self.features.push(v);
        }
        let Some(runner) = self.runner.get_mut().as_mut() else {
            body.clear();
            write_error_json(body, "the model has no runner on this shard", None);
            return Flow::Reply(500);
        };
        if let Err(e) = runner.score(&self.features, &mut self.outputs) {
            body.clear();
            // Rare error path: formatting the message may allocate.
            write_error_json(body, &format!("model {}: {e}", self.source), None);
            return Flow::Reply(500);
        }
        for &(slot, index) in &self.writes {
            let v = match &self.outputs.values[index] {
                Value::Float(f) => Val::Float(*f),
                Value::Label(l) => Val::Int(*l),
                Value::Vector(_) => Val::Null,
            };
            row.slot_mut(slot).set(v);
        }
        Flow::Continue
    }

    fn describe(&self, columns: &Columns, _: &[TableSpec]) -> String {
        let outs: Vec<String> = self
            .writes
            .iter()
            .zip(&self.output_names)
            .map(|(&(slot, _), n)| format!("{n}: {}", columns.get(slot).ty))
            .collect();
        let d = self.model.describe().to_string().replace('\n', "\n      ");
        format!(
            "score {} ({})  -> {}\n      {d}",
            self.source,
            self.input_names.join(", "),
            outs.join(", ")
        )
    }
}
