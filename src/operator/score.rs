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
use crate::model::version::content_version;
use crate::model::{Kind, LinearLink, Model, OutputKind, Outputs, Runner, Value};
use crate::plan::Planner;
use crate::reply::write_error_json;
use crate::row::{ArrayRef, Column, ColumnType, Columns, Row, Val};
use crate::state::TableSpec;

/// The step's table in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScore {
    name: Option<TomlSpanned<String>>,
    model: Option<TomlSpanned<String>>,
    /// Boxed: it would make this the one large variant of `RawStepKind`.
    linear: Option<Box<TomlSpanned<RawLinear>>>,
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
    /// The step's name (`name = "..."`, or the model file's stem, or
    /// `linear`): what `PUT /models/<name>` and `model_version('<name>')`
    /// call it. Unique in the service.
    pub name: Spanned<String>,
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
                let l = (*l).into_inner();
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
        let name = match raw.name {
            Some(n) => c.non_empty(n, "name", "step name")?,
            None => {
                let (value, span) = match &model {
                    ModelSource::File(path) => (
                        std::path::Path::new(&path.value)
                            .file_stem()
                            .and_then(|s| s.to_str())
                            .unwrap_or("model")
                            .to_string(),
                        path.span.clone(),
                    ),
                    ModelSource::Linear { span, .. } => ("linear".to_string(), span.clone()),
                };
                Spanned { value, span }
            }
        };
        if let Some(bad) = name
            .value
            .chars()
            .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.')))
        {
            return Err(c
                .error(
                    name.span.clone(),
                    "name",
                    format!("step name {:?} contains {bad:?}", name.value),
                )
                .with_expected("letters, digits, '_', '-' and '.' (it is a URL path segment)"));
        }
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
            name,
            model,
            inputs,
            outputs,
            nulls_as_nan,
        })
    }
}

/// The hidden column that holds the version of the model step `name`
/// scored a row with; `model_version('name')` in an expression reads it.
pub fn version_column(name: &str) -> String {
    format!("model_version('{name}')")
}

/// A model checked against a `score` step and ready to be installed on one
/// shard ([`Score::install`]): built off the request path (by `PUT
/// /models` or at start-up from a checkpoint), sent to the shard in a
/// message, swapped in between two requests.
#[derive(Debug)]
pub struct ModelSwap {
    /// The step it replaces the model of.
    pub step: String,
    /// Its version (the file's content hash).
    pub version: String,
    /// The file it was loaded from, for `GET /models` and `coreline check`.
    pub file: String,
    model: Box<Model>,
    /// Built for the receiving shard.
    runner: Runner,
    writes: Vec<(usize, usize)>,
    reject_nulls: bool,
}

impl ModelSwap {
    /// The same swap for another shard, with its own runner.
    pub fn another(&self) -> Result<ModelSwap, crate::model::ModelError> {
        Ok(ModelSwap {
            step: self.step.clone(),
            version: self.version.clone(),
            file: self.file.clone(),
            runner: self.model.runner()?,
            model: self.model.clone(),
            writes: self.writes.clone(),
            reject_nulls: self.reject_nulls,
        })
    }

    /// The model's format (`ONNX`, `XGBoost`, ...).
    pub fn format(&self) -> &'static str {
        self.model.format()
    }
}

/// Scores the model on the input columns and writes the mapped outputs.
pub struct Score {
    /// The step's name (see [`ScoreConfig::name`]).
    name: String,
    /// Where the name was written, for the duplicate-name error.
    name_span: std::ops::Range<usize>,
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
    /// Input slots, in feature order (one slot when `array_input`).
    inputs: Vec<usize>,
    /// The features come from one array column.
    array_input: bool,
    /// The model's feature count.
    n_features: usize,
    /// `(row slot, model output index)`.
    writes: Vec<(usize, usize)>,
    /// Per write: the model output it was planned for (`""`: the first)
    /// and its kind. A model swapped in must have the same.
    planned: Vec<(String, OutputKind)>,
    /// A null input answers 422 (ONNX without `nulls = "nan"`).
    reject_nulls: bool,
    /// `nulls = "nan"` was written.
    nulls_as_nan: bool,
    /// The 422 body per input, encoded once.
    null_bodies: Vec<Vec<u8>>,
    /// Features gathered from the row.
    features: Vec<f64>,
    /// The active model's version, written into `version_slot`.
    version: String,
    version_slot: usize,
    /// The active model's file as written or stored, for `describe`.
    source: String,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

impl std::fmt::Debug for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Score")
            .field("name", &self.name)
            .field("model", &self.source)
            .field("version", &self.version)
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
            name: self.name.clone(),
            name_span: self.name_span.clone(),
            model: self.model.clone(),
            runner: SyncWrapper::new(self.model.runner().ok()),
            outputs: self.model.new_outputs(),
            inputs: self.inputs.clone(),
            array_input: self.array_input,
            n_features: self.n_features,
            writes: self.writes.clone(),
            planned: self.planned.clone(),
            reject_nulls: self.reject_nulls,
            nulls_as_nan: self.nulls_as_nan,
            null_bodies: self.null_bodies.clone(),
            features: self.features.clone(),
            version: self.version.clone(),
            version_slot: self.version_slot,
            source: self.source.clone(),
            input_names: self.input_names.clone(),
            output_names: self.output_names.clone(),
        }
    }
}

/// The column type a model output is written as.
fn output_type(kind: OutputKind) -> ColumnType {
    match kind {
        OutputKind::Float => ColumnType::Float64,
        OutputKind::Label => ColumnType::Int64,
        OutputKind::Vector(_) => ColumnType::Float64Array,
    }
}

fn kind_name(kind: OutputKind) -> String {
    match kind {
        OutputKind::Float => "float64".into(),
        OutputKind::Label => "int64 (label)".into(),
        OutputKind::Vector(n) => format!("array<float64> of {n}"),
    }
}

impl Score {
    /// Loads the model, checks inputs and outputs against it, adds the
    /// output columns.
    pub fn plan(config: &ScoreConfig, p: &mut Planner<'_>) -> Result<Score, ConfigError> {
        let (model, source, version) = match &config.model {
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
                let bytes = std::fs::read(&full).map_err(|e| {
                    p.error(
                        path.span.clone(),
                        "model",
                        format!("{}: cannot read the model file: {e}", full.display()),
                    )
                })?;
                (model, path.value.clone(), content_version(&bytes))
            }
            ModelSource::Linear {
                weights,
                bias,
                link,
                span,
            } => {
                let model = Model::linear(weights.clone(), *bias, *link)
                    .map_err(|e| p.error(span.clone(), "linear", e.to_string()))?;
                // The version of the same model sent as a `.linear` file.
                let link = match link {
                    LinearLink::Identity => "identity",
                    LinearLink::Logistic => "logistic",
                };
                let text =
                    serde_json::json!({ "weights": weights, "bias": bias, "link": link }).to_string();
                (model, "linear".to_string(), content_version(text.as_bytes()))
            }
        };

        let mut inputs = vec![];
        let mut array_input = false;
        for name in &config.inputs {
            let i = p.column(name, &p.key("inputs"))?;
            let c = p.columns().get(i);
            let array = matches!(
                c.ty,
                ColumnType::Float64Array | ColumnType::Float32Array | ColumnType::Int64Array
            );
            if array && config.inputs.len() == 1 {
                array_input = true;
            } else if !matches!(c.ty, ColumnType::Int64 | ColumnType::Float64) {
                return Err(p
                    .error(
                        name.span.clone(),
                        "inputs",
                        format!("input column \"{}\" is {}", name.value, c.ty),
                    )
                    .with_expected(
                        "numeric columns (int64 or float64), or one array column \
                         (array<float64>, array<float32>, array<int64>)",
                    ));
            }
            inputs.push(i);
        }
        let names: Vec<&str> = config.inputs.iter().map(|s| s.value.as_str()).collect();
        if !array_input && inputs.len() != model.n_features() {
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
        let mut planned = vec![];
        let mut output_names = vec![];
        for (column, output) in &config.outputs {
            let index = output_index(&model, output).map_err(|m| {
                let field = if output.is_empty() {
                    "output".to_string()
                } else {
                    format!("outputs.{}", column.value)
                };
                let e = p.error(column.span.clone(), &field, m);
                if output.is_empty() {
                    e.with_expected("outputs = { column = \"model output\", ... }")
                } else {
                    e
                }
            })?;
            let spec = &model.outputs()[index];
            let slot = p.add_column(Column {
                name: column.value.clone(),
                ty: output_type(spec.kind),
                nullable: false,
            });
            writes.push((slot, index));
            planned.push((output.clone(), spec.kind));
            output_names.push(format!("{} = {}", column.value, spec.name));
        }
        // Named by `model_version('<name>')` only: hidden from the reply and
        // from column names.
        let version_slot = p.add_column(Column {
            name: version_column(&config.name.value),
            ty: ColumnType::Utf8,
            nullable: false,
        });
        p.hide_column(version_slot);

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
            name: config.name.value.clone(),
            name_span: config.name.span.clone(),
            outputs: model.new_outputs(),
            runner: SyncWrapper::new(Some(runner)),
            features: Vec::with_capacity(model.n_features()),
            n_features: model.n_features(),
            inputs,
            array_input,
            writes,
            planned,
            reject_nulls,
            nulls_as_nan: config.nulls_as_nan,
            null_bodies,
            version,
            version_slot,
            source,
            input_names: names.iter().map(|s| s.to_string()).collect(),
            output_names,
            model: Box::new(model),
        })
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the step's name was written (or its model, when it has no
    /// `name`).
    pub fn name_span(&self) -> std::ops::Range<usize> {
        self.name_span.clone()
    }

    /// The active model's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The active model's file (as written in the configuration, or where
    /// a swapped-in model is stored), `linear` for an inline model.
    pub fn file(&self) -> &str {
        &self.source
    }

    /// The active model's format.
    pub fn format(&self) -> &'static str {
        self.model.format()
    }

    /// Checks `model` against this step (feature count, every output the
    /// step maps, with the same kind) and prepares its swap for one shard.
    /// The error says what does not match; the step is left unchanged.
    pub fn prepare(&self, model: Model, version: String, file: String) -> Result<ModelSwap, String> {
        if model.n_features() != self.n_features {
            return Err(format!(
                "the new {} model expects {} features; step \"{}\" gives {} ({})",
                model.format(),
                model.n_features(),
                self.name,
                self.n_features,
                self.input_names.join(", ")
            ));
        }
        let mut writes = Vec::with_capacity(self.writes.len());
        for ((slot, _), (output, kind)) in self.writes.iter().zip(&self.planned) {
            let index = output_index(&model, output)?;
            let new = model.outputs()[index].kind;
            if new != *kind {
                return Err(format!(
                    "output \"{}\" of the new model is {}; the step writes it as {}",
                    model.outputs()[index].name,
                    kind_name(new),
                    kind_name(*kind)
                ));
            }
            writes.push((*slot, index));
        }
        let runner = model.runner().map_err(|e| e.to_string())?;
        Ok(ModelSwap {
            step: self.name.clone(),
            version,
            file,
            reject_nulls: matches!(model.kind(), Kind::Onnx(_)) && !self.nulls_as_nan,
            model: Box::new(model),
            runner,
            writes,
        })
    }

    /// Installs a prepared model: the next request is scored by it.
    pub fn install(&mut self, swap: ModelSwap) {
        self.outputs = swap.model.new_outputs();
        self.runner = SyncWrapper::new(Some(swap.runner));
        self.model = swap.model;
        self.writes = swap.writes;
        self.reject_nulls = swap.reject_nulls;
        self.version = swap.version;
        self.source = swap.file;
    }

    /// Gathers the features of one array column; `Err` is the status of
    /// the answer written into `body`.
    #[cold]
    fn array_error(&self, body: &mut Vec<u8>, found: Option<usize>) -> Flow {
        body.clear();
        let name = &self.input_names[0];
        let message = match found {
            Some(n) => format!(
                "{name}: expected {} elements (the model's features), found {n}",
                self.n_features
            ),
            None => format!("{name}: expected an array of {} numbers, found null", self.n_features),
        };
        write_error_json(body, &message, Some(name));
        Flow::Reply(422)
    }
}

/// The index of `output` in `model` (`""`: the only output, or the first of
/// a tree or linear model), or an error listing what the model has.
fn output_index(model: &Model, output: &str) -> Result<usize, String> {
    if !output.is_empty() {
        return model.output_index(output);
    }
    let trees = matches!(model.kind(), Kind::Trees(_) | Kind::Linear(_));
    if model.outputs().len() != 1 && !trees {
        let all: Vec<&str> = model.outputs().iter().map(|o| o.name.as_str()).collect();
        return Err(format!(
            "the model has {} outputs: {}",
            all.len(),
            all.join(", ")
        ));
    }
    Ok(0)
}

impl Step for Score {
    #[inline]
    fn apply(&mut self, row: &mut Row, _: &mut Ctx<'_>, body: &mut Vec<u8>) -> Flow {
        self.features.clear();
        if self.array_input {
            let values = match row.get(self.inputs[0]) {
                Val::Array(a) => a,
                _ => return self.array_error(body, None),
            };
            if values.len() != self.n_features {
                return self.array_error(body, Some(values.len()));
            }
            match values {
                ArrayRef::F64(v) => self.features.extend_from_slice(v),
                ArrayRef::F32(v) => self.features.extend(v.iter().map(|&x| f64::from(x))),
                ArrayRef::I64(v) => self.features.extend(v.iter().map(|&x| x as f64)),
            }
            // A null element decodes as NaN: the ONNX null policy applies.
            if self.reject_nulls && self.features.iter().any(|x| x.is_nan()) {
                body.clear();
                body.extend_from_slice(&self.null_bodies[0]);
                return Flow::Reply(422);
            }
        } else {
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
                Value::Vector(v) => Val::Array(ArrayRef::F64(v)),
            };
            row.slot_mut(slot).set(v);
        }
        row.slot_mut(self.version_slot)
            .set(Val::Str(self.version.as_str()));
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
            "score \"{}\" {} ({})  -> {}\n      version {}\n      {d}",
            self.name,
            self.source,
            self.input_names.join(", "),
            outs.join(", "),
            self.version
        )
    }
}
