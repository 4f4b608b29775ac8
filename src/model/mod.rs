//! Trained models scored one row at a time: tree ensembles (XGBoost,
//! LightGBM) on a native evaluator, ONNX graphs through tract, and inline
//! linear/logistic models.
//!
//! A [`Model`] is loaded once at start-up ([`Model::load`] picks the format
//! from the file's extension) and is immutable. Each shard asks it for a
//! [`Runner`], which owns everything a request needs (scratch margins, the
//! ONNX plan, state and input tensor), and an [`Outputs`] of reusable
//! buffers laid out as [`Model::outputs`]. [`Runner::score`] then reads a
//! feature slice and writes the outputs without allocating (tract's own
//! allocations inside an ONNX run aside: see [`onnx`]).
//!
//! Missing values are NaN features. Tree models send them the way the
//! model learnt (each node's default direction); a linear model gives NaN;
//! an ONNX graph computes with them as its operators do.
//!
//! # Layout
//! - [`tree`]: the flattened ensemble and its evaluator.
//! - [`xgboost`]: XGBoost JSON files into an ensemble.
//! - [`lightgbm`]: LightGBM text files into an ensemble.
//! - [`onnx`]: ONNX through tract, with extra ONNX-ML operators.
//! - [`linear`]: `w·x + b` with an identity or logistic link.

pub mod lightgbm;
pub mod linear;
pub mod onnx;
pub mod tree;
pub mod version;
pub mod xgboost;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use linear::{Linear, LinearLink};
pub use onnx::{OnnxModel, OnnxRunner};
pub use tree::Ensemble;

/// Why a model could not be loaded. Each variant names the file and, where
/// the format allows, the place in it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read.
    #[error("{path}: cannot read the model file: {source}")]
    Io {
        /// The model file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The extension names no known format.
    #[error(
        "{path}: unknown model format; expected a file ending in .onnx (ONNX), .json (XGBoost \
         save_model) or .txt (LightGBM save_model)"
    )]
    UnknownFormat {
        /// The model file.
        path: PathBuf,
    },
    /// A JSON file that does not parse as an XGBoost model.
    #[error("{path}:{line}:{column}: not an XGBoost JSON model: {message}")]
    Json {
        /// The model file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// A LightGBM text file with an error on a line.
    #[error("{path}:{line}: {message}")]
    Text {
        /// The model file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A well-formed file describing something unsupported or inconsistent;
    /// the message starts with the dotted path of the field.
    #[error("{path}: {message}")]
    Format {
        /// The model file.
        path: PathBuf,
        /// What is wrong, and where.
        message: String,
    },
    /// An ONNX graph using operators tract's registry does not know.
    #[error("{path}: unsupported ONNX operator(s): {}", ops.join(", "))]
    UnsupportedOnnxOps {
        /// The model file.
        path: PathBuf,
        /// The operator types, sorted.
        ops: Vec<String>,
    },
    /// Any other ONNX loading error (tract's message).
    #[error("{path}: {message}")]
    Onnx {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An inline linear model with bad parameters.
    #[error("linear model: {0}")]
    Linear(String),
}

/// Why scoring one row failed. Small and `Copy`: it is a hot-path error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ScoreError {
    /// The feature slice has the wrong length.
    #[error("the model expects {expected} features, got {got}")]
    FeatureCount {
        /// The model's feature count.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// The ONNX run failed (tract's error is logged).
    #[error("the model failed to run")]
    Runtime,
}

/// The kind of one model output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// One float (a regression, or a binary classifier's probability).
    Float,
    /// One integer class label.
    Label,
    /// A float vector of a fixed length (class probabilities).
    Vector(usize),
}

/// A named model output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// The output's name (`prediction`, `label`, `probabilities`, or the
    /// ONNX graph's output name).
    pub name: String,
    /// Its kind.
    pub kind: OutputKind,
}

/// The model's input, for `coreline check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// The input's name (ONNX input name, or `features`).
    pub name: String,
    /// Its shape (`[1, n]`).
    pub shape: Vec<usize>,
    /// Its element type.
    pub dtype: &'static str,
}

/// One output value, reused from request to request.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A float.
    Float(f64),
    /// An integer label.
    Label(i64),
    /// A vector; its buffer is kept and refilled.
    Vector(Vec<f64>),
}

impl Value {
    /// Refills a vector value in place (no allocation once its capacity
    /// suffices).
    #[inline]
    pub fn set_vector(&mut self, v: &[f64]) {
        match self {
            Value::Vector(buf) => {
                buf.clear();
                buf.extend_from_slice(v);
            }
            other => *other = Value::Vector(v.to_vec()),
        }
    }
}

/// A model's outputs for one row, in [`Model::outputs`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    /// One value per output.
    pub values: Vec<Value>,
}

impl Outputs {
    /// Buffers for `specs`, vectors at full capacity.
    pub fn new(specs: &[OutputSpec]) -> Outputs {
        let values = specs
            .iter()
            .map(|s| match s.kind {
                OutputKind::Float => Value::Float(0.0),
                OutputKind::Label => Value::Label(0),
                OutputKind::Vector(n) => Value::Vector(Vec::with_capacity(n)),
            })
            .collect();
        Outputs { values }
    }
}

/// The kinds of model, statically dispatched.
#[derive(Debug, Clone)]
pub enum Kind {
    /// An inline linear or logistic model.
    Linear(Linear),
    /// A tree ensemble (XGBoost or LightGBM).
    Trees(Ensemble),
    /// An ONNX graph.
    Onnx(OnnxModel),
}

/// A loaded model: what it is, its outputs, and how long it took to load.
#[derive(Debug, Clone)]
pub struct Model {
    kind: Kind,
    format: &'static str,
    source: Option<PathBuf>,
    outputs: Vec<OutputSpec>,
    load_time: Duration,
}

impl Model {
    /// Loads a model file; the format comes from the extension: `.onnx`,
    /// `.json` (XGBoost `save_model`), `.txt` (LightGBM `save_model`),
    /// `.linear` (a linear model as JSON, `{"weights": [...], "bias": b,
    /// "link": "identity" | "logistic"}`, the form `PUT /models` stores).
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let start = Instant::now();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let read = || {
            std::fs::read_to_string(path).map_err(|source| ModelError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let (kind, format) = match ext {
            "onnx" => {
                if let Err(source) = std::fs::metadata(path) {
                    return Err(ModelError::Io {
                        path: path.to_path_buf(),
                        source,
                    });
                }
                (Kind::Onnx(OnnxModel::load(path)?), "ONNX")
            }
            "json" => (Kind::Trees(xgboost::parse(path, &read()?)?), "XGBoost"),
            "txt" => (Kind::Trees(lightgbm::parse(path, &read()?)?), "LightGBM"),
            "linear" => (Kind::Linear(linear::parse(path, &read()?)?), "linear"),
            _ => {
                return Err(ModelError::UnknownFormat {
                    path: path.to_path_buf(),
                });
            }
        };
        let mut model = Model::from_kind(kind, format);
        model.source = Some(path.to_path_buf());
        model.load_time = start.elapsed();
        Ok(model)
    }

    /// An inline linear (`Identity`) or logistic (`Logistic`) model.
    pub fn linear(weights: Vec<f64>, bias: f64, link: LinearLink) -> Result<Model, ModelError> {
        let start = Instant::now();
        let mut model = Model::from_kind(Kind::Linear(Linear::new(weights, bias, link)?), "linear");
        model.load_time = start.elapsed();
        Ok(model)
    }

    fn from_kind(kind: Kind, format: &'static str) -> Model {
        let outputs = match &kind {
            Kind::Linear(l) => l.output_specs(),
            Kind::Trees(e) => e.output_specs(),
            Kind::Onnx(o) => o.output_specs().to_vec(),
        };
        Model {
            kind,
            format,
            source: None,
            outputs,
            load_time: Duration::ZERO,
        }
    }

    /// What kind of model this is.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    /// `"ONNX"`, `"XGBoost"`, `"LightGBM"` or `"linear"`.
    pub fn format(&self) -> &'static str {
        self.format
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        match &self.kind {
            Kind::Linear(l) => l.n_features(),
            Kind::Trees(e) => e.n_features,
            Kind::Onnx(o) => o.n_features(),
        }
    }

    /// The model's outputs, in the order of [`Outputs::values`].
    pub fn outputs(&self) -> &[OutputSpec] {
        &self.outputs
    }

    /// The index of the output called `name`, or an error listing the
    /// outputs the model has.
    pub fn output_index(&self, name: &str) -> Result<usize, String> {
        self.outputs
            .iter()
            .position(|o| o.name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.outputs.iter().map(|o| o.name.as_str()).collect();
                format!(
                    "the model has no output {name:?}; it has: {}",
                    names.join(", ")
                )
            })
    }

    /// A runner for one shard, and its output buffers.
    pub fn runner(&self) -> Result<Runner, ModelError> {
        Ok(match &self.kind {
            Kind::Linear(l) => Runner::Linear(l.clone()),
            Kind::Trees(e) => Runner::Trees {
                ensemble: Box::new(e.clone()),
                margins: vec![0.0; e.groups()],
            },
            Kind::Onnx(o) => Runner::Onnx(Box::new(o.runner()?)),
        })
    }

    /// Output buffers for this model.
    pub fn new_outputs(&self) -> Outputs {
        Outputs::new(&self.outputs)
    }

    /// What `coreline check` prints about the model.
    pub fn describe(&self) -> Description {
        let (input, size) = match &self.kind {
            Kind::Linear(l) => (
                features_input(l.n_features()),
                format!("{} weights, {:?} link", l.n_features(), l.link()),
            ),
            Kind::Trees(e) => {
                let mut input = features_input(e.n_features);
                if !e.feature_names.is_empty() {
                    input.name = e.feature_names.join(",");
                }
                (
                    input,
                    format!(
                        "{} trees, {} nodes, {} class(es), objective {}",
                        e.trees(),
                        e.nodes(),
                        e.groups(),
                        e.objective
                    ),
                )
            }
            Kind::Onnx(o) => {
                let total: usize = o.operators().values().sum();
                let ops: Vec<String> = o
                    .operators()
                    .iter()
                    .map(|(k, v)| format!("{k}×{v}"))
                    .collect();
                (
                    o.input().clone(),
                    format!("{total} operators ({})", ops.join(", ")),
                )
            }
        };
        Description {
            format: self.format,
            source: self.source.clone(),
            input,
            outputs: self.outputs.clone(),
            size,
            load_time: self.load_time,
        }
    }
}

fn features_input(n: usize) -> InputSpec {
    InputSpec {
        name: "features".into(),
        shape: vec![1, n],
        dtype: "float64",
    }
}

/// A model's description for `coreline check`.
#[derive(Debug, Clone)]
pub struct Description {
    /// The format.
    pub format: &'static str,
    /// The file it came from.
    pub source: Option<PathBuf>,
    /// The input.
    pub input: InputSpec,
    /// The outputs.
    pub outputs: Vec<OutputSpec>,
    /// Trees and nodes, or ONNX operators.
    pub size: String,
    /// How long loading (and optimising) took.
    pub load_time: Duration,
}

impl fmt::Display for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(p) => write!(f, "{} model {}", self.format, p.display())?,
            None => write!(f, "{} model (inline)", self.format)?,
        }
        writeln!(f, ", loaded in {:.1?}", self.load_time)?;
        writeln!(
            f,
            "  input: {} {:?} {}",
            self.input.name, self.input.shape, self.input.dtype
        )?;
        for o in &self.outputs {
            let kind = match o.kind {
                OutputKind::Float => "float64".to_string(),
                OutputKind::Label => "int64 (label)".to_string(),
                OutputKind::Vector(n) => format!("array<float64> [{n}]"),
            };
            writeln!(f, "  output: {} {kind}", o.name)?;
        }
        write!(f, "  size: {}", self.size)
    }
}

/// One shard's means of scoring a model: a copy of the model's parameters
/// and reusable scratch. Not shared between shards.
#[derive(Debug)]
pub enum Runner {
    /// A linear model.
    Linear(Linear),
    /// A tree ensemble and its per-group margins.
    Trees {
        /// The ensemble (this shard's copy; boxed to keep the enum small).
        ensemble: Box<Ensemble>,
        /// Scratch, one margin per group.
        margins: Vec<f64>,
    },
    /// An ONNX plan and state.
    Onnx(Box<OnnxRunner>),
}

impl Runner {
    /// Scores one row of features (NaN = missing) into `out`, which must
    /// come from [`Model::new_outputs`] of the same model.
    #[inline]
    pub fn score(&mut self, features: &[f64], out: &mut Outputs) -> Result<(), ScoreError> {
        match self {
            Runner::Linear(l) => l.score(features, out),
            Runner::Trees { ensemble, margins } => ensemble.score(features, margins, out),
            Runner::Onnx(o) => o.score(features, out),
        }
    }
}
