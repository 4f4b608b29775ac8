//! An inline linear or logistic model: `weights · x + bias`, through an
//! identity or logistic link.

use super::{ModelError, OutputKind, OutputSpec, Outputs, ScoreError, Value};

/// The link of a [`Linear`] model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearLink {
    /// `y = w·x + b`.
    Identity,
    /// `p = 1 / (1 + exp(-(w·x + b)))`, with `label = p > 0.5`.
    Logistic,
}

/// A linear model as JSON: `{"weights": [...], "bias": 0.1, "link":
/// "identity" | "logistic"}` (bias and link optional), the body of a
/// `PUT /models/<step>?format=linear`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LinearFile {
    weights: Vec<f64>,
    #[serde(default)]
    bias: f64,
    link: Option<String>,
}

/// Parses a linear model file (see [`LinearFile`]).
pub(crate) fn parse(path: &std::path::Path, text: &str) -> Result<Linear, ModelError> {
    let file: LinearFile = serde_json::from_str(text).map_err(|e| ModelError::Format {
        path: path.to_path_buf(),
        message: format!(
            "not a linear model: {e} (a linear model is {{\"weights\": [...], \"bias\": 0.1, \"link\": \"identity\" | \"logistic\"}})"
        ),
    })?;
    let link = match file.link.as_deref() {
        None | Some("identity") => LinearLink::Identity,
        Some("logistic") => LinearLink::Logistic,
        Some(other) => {
            return Err(ModelError::Linear(format!(
                "link: expected \"identity\" or \"logistic\", found {other:?}"
            )));
        }
    };
    Linear::new(file.weights, file.bias, link)
}

/// `weights · x + bias` with a [`LinearLink`].
#[derive(Debug, Clone)]
pub struct Linear {
    weights: Vec<f64>,
    bias: f64,
    link: LinearLink,
}

impl Linear {
    /// A linear model; the weights must be finite and at least one.
    pub fn new(weights: Vec<f64>, bias: f64, link: LinearLink) -> Result<Linear, ModelError> {
        if weights.is_empty() {
            return Err(ModelError::Linear(
                "weights: expected at least one weight".into(),
            ));
        }
        if let Some(i) = weights.iter().position(|w| !w.is_finite()) {
            return Err(ModelError::Linear(format!(
                "weights[{i}]: expected a finite number, found {}",
                weights[i]
            )));
        }
        if !bias.is_finite() {
            return Err(ModelError::Linear(format!(
                "bias: expected a finite number, found {bias}"
            )));
        }
        Ok(Linear {
            weights,
            bias,
            link,
        })
    }

    /// Number of input features.
    pub fn n_features(&self) -> usize {
        self.weights.len()
    }

    /// The link.
    pub fn link(&self) -> LinearLink {
        self.link
    }

    pub(crate) fn output_specs(&self) -> Vec<OutputSpec> {
        let prediction = OutputSpec {
            name: "prediction".into(),
            kind: OutputKind::Float,
        };
        match self.link {
            LinearLink::Identity => vec![prediction],
            LinearLink::Logistic => vec![
                prediction,
                OutputSpec {
                    name: "label".into(),
                    kind: OutputKind::Label,
                },
                OutputSpec {
                    name: "probabilities".into(),
                    kind: OutputKind::Vector(2),
                },
            ],
        }
    }

    /// Scores one row; a NaN feature makes a NaN prediction.
    #[inline]
    pub(crate) fn score(&self, x: &[f64], out: &mut Outputs) -> Result<(), ScoreError> {
        if x.len() != self.weights.len() {
            return Err(ScoreError::FeatureCount {
                expected: self.weights.len(),
                got: x.len(),
            });
        }
        let z = self
            .weights
            .iter()
            .zip(x)
            .fold(self.bias, |acc, (w, v)| acc + w * v);
        match self.link {
            LinearLink::Identity => out.values[0] = Value::Float(z),
            LinearLink::Logistic => {
                let p = 1.0 / (1.0 + (-z).exp());
                out.values[0] = Value::Float(p);
                out.values[1] = Value::Label((p > 0.5) as i64);
                out.values[2].set_vector(&[1.0 - p, p]);
            }
        }
        Ok(())
    }
}
