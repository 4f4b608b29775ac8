//! XGBoost models saved with `booster.save_model("m.json")`, read into an
//! [`Ensemble`].
//!
//! What the file says and how it is read:
//! - `learner.learner_model_param.base_score` is written in the objective's
//!   output space ("probability" for `binary:logistic`), as `"5E-1"` before
//!   XGBoost 2 and as a bracketed vector `"[6.2E-1]"` (one per class) from
//!   2 on. The starting margin is its inverse link: `ln(p / (1 - p))` for the
//!   logistic objectives, `ln(y)` for Poisson/gamma/Tweedie, itself
//!   otherwise (XGBoost's `ProbToMargin`).
//! - Trees are `left_children`/`right_children` (−1 at a leaf),
//!   `split_indices`, `split_conditions` (the leaf value at a leaf) and
//!   `default_left` (where a missing value goes). XGBoost stores features
//!   and thresholds as `f32` and goes left when `x < threshold`.
//! - `tree_info[i]` is the class tree `i` adds to.

use std::path::Path;

use serde::Deserialize;

use super::ModelError;
use super::tree::{Comparison, DEFAULT_LEFT, Ensemble, LEAF, Link, NAN_MISSING};

#[derive(Deserialize)]
struct File {
    learner: Learner,
}

#[derive(Deserialize)]
struct Learner {
    learner_model_param: ModelParam,
    objective: Objective,
    gradient_booster: Booster,
    #[serde(default)]
    feature_names: Vec<String>,
}

#[derive(Deserialize)]
struct ModelParam {
    base_score: String,
    #[serde(default)]
    num_class: Option<String>,
    num_feature: String,
    #[serde(default)]
    num_target: Option<String>,
}

#[derive(Deserialize)]
struct Objective {
    name: String,
}

#[derive(Deserialize)]
struct Booster {
    name: String,
    #[serde(default)]
    model: Option<TreeModel>,
}

#[derive(Deserialize)]
struct TreeModel {
    trees: Vec<Tree>,
    tree_info: Vec<u32>,
}

#[derive(Deserialize)]
struct Tree {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<u32>,
    split_conditions: Vec<f64>,
    default_left: Vec<Flag>,
    #[serde(default)]
    split_type: Vec<u8>,
}

/// `default_left` is `0`/`1` in recent files and `true`/`false` in some
/// older ones.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Int(i64),
}

impl Flag {
    fn is_set(self) -> bool {
        match self {
            Flag::Bool(b) => b,
            Flag::Int(i) => i != 0,
        }
    }
}

/// Reads an XGBoost JSON model from `text` (the contents of `path`).
pub(crate) fn parse(path: &Path, text: &str) -> Result<Ensemble, ModelError> {
    let file: File = serde_json::from_str(text).map_err(|e| ModelError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let bad = |message: String| ModelError::Format {
        path: path.to_path_buf(),
        message,
    };
    let learner = file.learner;
    let param = &learner.learner_model_param;

    let n_features: usize = param.num_feature.trim().parse().map_err(|_| {
        bad(format!(
            "learner.learner_model_param.num_feature: expected an integer, found {:?}",
            param.num_feature
        ))
    })?;
    let num_class: usize = match &param.num_class {
        Some(s) => s.trim().parse().map_err(|_| {
            bad(format!(
                "learner.learner_model_param.num_class: expected an integer, found {s:?}"
            ))
        })?,
        None => 0,
    };
    if let Some(t) = &param.num_target
        && t.trim() != "1"
    {
        return Err(bad(format!(
            "learner.learner_model_param.num_target is {t}: multi-target models are not supported"
        )));
    }
    let groups = num_class.max(1);

    let objective = learner.objective.name.as_str();
    let link = match objective {
        "reg:squarederror"
        | "reg:linear"
        | "reg:squaredlogerror"
        | "reg:pseudohubererror"
        | "reg:absoluteerror"
        | "reg:quantileerror"
        | "binary:logitraw"
        | "rank:pairwise"
        | "rank:ndcg"
        | "rank:map" => Link::Identity,
        "binary:logistic" | "reg:logistic" => Link::Logistic { scale: 1.0 },
        "count:poisson" | "reg:gamma" | "reg:tweedie" => Link::Exp,
        "multi:softprob" => Link::Softmax,
        "multi:softmax" => Link::SoftmaxIndex,
        other => {
            return Err(bad(format!(
                "learner.objective.name: objective {other:?} is not supported (supported: \
                 reg:squarederror, reg:absoluteerror, reg:pseudohubererror, reg:quantileerror, \
                 reg:logistic, binary:logistic, binary:logitraw, count:poisson, reg:gamma, \
                 reg:tweedie, multi:softprob, multi:softmax, rank:*)"
            )));
        }
    };
    if matches!(link, Link::Softmax | Link::SoftmaxIndex) && groups < 2 {
        return Err(bad(format!(
            "learner.learner_model_param.num_class is {num_class} for objective {objective}"
        )));
    }

    // base_score: "5E-1" (XGBoost < 2) or "[6.238185E-1]" / "[a,b,c]" (≥ 2).
    let scores: Vec<f64> = param
        .base_score
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            bad(format!(
                "learner.learner_model_param.base_score: expected a number or a list of numbers, \
                 found {:?}",
                param.base_score
            ))
        })?;
    let scores = match scores.len() {
        1 => vec![scores[0]; groups],
        n if n == groups => scores,
        n => {
            return Err(bad(format!(
                "learner.learner_model_param.base_score has {n} values for {groups} classes"
            )));
        }
    };
    // XGBoost computes in f32: round through it so margins match.
    let base = scores
        .into_iter()
        .map(|p| {
            let p = p as f32 as f64;
            match link {
                Link::Logistic { .. } => (p / (1.0 - p)).ln(),
                Link::Exp => p.ln(),
                _ => p,
            }
        })
        .collect();

    let model = match (
        learner.gradient_booster.name.as_str(),
        learner.gradient_booster.model,
    ) {
        ("gbtree", Some(model)) => model,
        (name, _) => {
            return Err(bad(format!(
                "learner.gradient_booster.name: booster {name:?} is not supported (only gbtree)"
            )));
        }
    };
    if model.tree_info.len() != model.trees.len() {
        return Err(bad(format!(
            "learner.gradient_booster.model: {} trees but {} tree_info entries",
            model.trees.len(),
            model.tree_info.len()
        )));
    }

    let mut e = Ensemble {
        feature: vec![],
        threshold: vec![],
        left: vec![],
        right: vec![],
        flags: vec![],
        roots: vec![],
        groups: model.tree_info.clone(),
        base,
        divisor: 1.0,
        n_features,
        comparison: Comparison::LessF32,
        link,
        feature_names: learner.feature_names,
        objective: objective.to_string(),
    };
    for (t, tree) in model.trees.iter().enumerate() {
        let at = |field: &str| format!("learner.gradient_booster.model.trees[{t}].{field}");
        let n = tree.left_children.len();
        for (field, len) in [
            ("right_children", tree.right_children.len()),
            ("split_indices", tree.split_indices.len()),
            ("split_conditions", tree.split_conditions.len()),
            ("default_left", tree.default_left.len()),
        ] {
            if len != n {
                return Err(bad(format!("{}: {len} entries for {n} nodes", at(field))));
            }
        }
        if n == 0 {
            return Err(bad(format!("{}: empty tree", at("left_children"))));
        }
        if let Some(i) = tree.split_type.iter().position(|&s| s != 0) {
            return Err(bad(format!(
                "{}: node {i} is a categorical split, which is not supported",
                at("split_type")
            )));
        }
        let offset = e.feature.len() as u32;
        e.roots.push(offset);
        for i in 0..n {
            let (l, r) = (tree.left_children[i], tree.right_children[i]);
            if l == -1 {
                e.feature.push(LEAF);
                e.left.push(0);
                e.right.push(0);
                e.flags.push(0);
            } else {
                if l < 0 || r < 0 || l as usize >= n || r as usize >= n {
                    return Err(bad(format!(
                        "{}: node {i} has children {l} and {r}, outside the tree's {n} nodes",
                        at("left_children")
                    )));
                }
                e.feature.push(tree.split_indices[i]);
                e.left.push(offset + l as u32);
                e.right.push(offset + r as u32);
                let left = if tree.default_left[i].is_set() {
                    DEFAULT_LEFT
                } else {
                    0
                };
                e.flags.push(NAN_MISSING | left);
            }
            // Thresholds and leaf values are f32 in XGBoost.
            e.threshold.push(tree.split_conditions[i] as f32 as f64);
        }
    }
    e.validate()
        .map_err(|m| bad(format!("learner.gradient_booster.model.trees: {m}")))?;
    Ok(e)
}
