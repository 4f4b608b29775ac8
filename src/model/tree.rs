//! A tree ensemble flattened into structure-of-arrays node tables, and its
//! evaluator.
//!
//! Every tree of the ensemble lives in the same five arrays, indexed by a
//! global node id: `feature`, `threshold` (the leaf value for a leaf),
//! `left`, `right` and `flags`. A tree is a root id and the output group
//! (class) it adds to. Walking a tree is a loop over array reads: no pointer
//! chasing, no allocation. The two libraries differ in the comparison
//! (XGBoost goes left when `x < t` on `f32` values, LightGBM when `x <= t`
//! on `f64`), in how a missing value (NaN) travels, and in how margins are
//! turned into predictions ([`Link`]); the loaders in [`super::xgboost`] and
//! [`super::lightgbm`] encode both into the flags and the ensemble's
//! [`Comparison`] and [`Link`].
//!
//! Invariant: every child index is inside the arrays and a walk from any
//! root reaches a leaf (the loaders check both), so [`Ensemble::margins`]
//! cannot loop or index out of bounds.

use super::{OutputKind, OutputSpec, Outputs, ScoreError, Value};

/// Marks a leaf in [`Ensemble`]'s `feature` array.
pub(crate) const LEAF: u32 = u32::MAX;

/// Node flag: a missing value goes to the left child.
pub(crate) const DEFAULT_LEFT: u8 = 1;
/// Node flag: a NaN is missing and follows the default direction
/// (XGBoost always; LightGBM missing type `NaN`).
pub(crate) const NAN_MISSING: u8 = 2;
/// Node flag: zero (and NaN) is missing and follows the default direction
/// (LightGBM missing type `Zero`).
pub(crate) const ZERO_MISSING: u8 = 4;
// Neither NAN_MISSING nor ZERO_MISSING: LightGBM missing type `None`, where a
// NaN is compared as 0.0.

/// LightGBM's `kZeroThreshold`: values within it of zero count as zero.
const ZERO_THRESHOLD: f64 = 1e-35;

/// How a split compares a feature value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// XGBoost: left when `(x as f32) < threshold` (thresholds are `f32`).
    LessF32,
    /// LightGBM: left when `x <= threshold` in `f64`.
    LessOrEqual,
}

/// How the summed margins become predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    /// Prediction is the margin (regression, ranking, raw scores).
    Identity,
    /// `1 / (1 + exp(-scale * margin))`, a binary classifier.
    Logistic {
        /// LightGBM's `sigmoid:` parameter; 1 for XGBoost.
        scale: f64,
    },
    /// `exp(margin)` (Poisson, gamma, Tweedie regression).
    Exp,
    /// Softmax over the groups, a multi-class classifier (prediction is the
    /// probability vector).
    Softmax,
    /// Softmax over the groups, prediction is the class index
    /// (XGBoost `multi:softmax`).
    SoftmaxIndex,
    /// One logistic per group (LightGBM `multiclassova`), not normalised.
    LogisticPerClass {
        /// LightGBM's `sigmoid:` parameter.
        scale: f64,
    },
}

/// A tree ensemble in flat node arrays. See the module documentation.
#[derive(Debug, Clone)]
pub struct Ensemble {
    /// Split feature per node, [`LEAF`] for a leaf.
    pub(crate) feature: Vec<u32>,
    /// Split threshold per node, or the leaf's value.
    pub(crate) threshold: Vec<f64>,
    /// Left child per node (global node id).
    pub(crate) left: Vec<u32>,
    /// Right child per node (global node id).
    pub(crate) right: Vec<u32>,
    /// [`DEFAULT_LEFT`], [`NAN_MISSING`], [`ZERO_MISSING`] per node.
    pub(crate) flags: Vec<u8>,
    /// Root node of each tree.
    pub(crate) roots: Vec<u32>,
    /// Output group (class) each tree adds to.
    pub(crate) groups: Vec<u32>,
    /// Starting margin of each group.
    pub(crate) base: Vec<f64>,
    /// Margins are divided by this before the link (LightGBM
    /// `average_output`, random forests); 1 otherwise.
    pub(crate) divisor: f64,
    /// Number of input features.
    pub(crate) n_features: usize,
    /// The split comparison.
    pub(crate) comparison: Comparison,
    /// The objective's link.
    pub(crate) link: Link,
    /// Feature names from the model file, if it has them.
    pub(crate) feature_names: Vec<String>,
    /// The objective as written in the file (for `describe`).
    pub(crate) objective: String,
}

impl Ensemble {
    /// Number of trees.
    pub fn trees(&self) -> usize {
        self.roots.len()
    }

    /// Number of nodes, leaves included.
    pub fn nodes(&self) -> usize {
        self.feature.len()
    }

    /// Number of output groups (1, or the number of classes).
    pub fn groups(&self) -> usize {
        self.base.len()
    }

    /// Checks the invariant of the module documentation: children in bounds
    /// and every walk ends at a leaf (a node's children come after it, or
    /// at least the walk is acyclic, checked by a bounded walk per tree).
    pub(crate) fn validate(&self) -> Result<(), String> {
        let n = self.feature.len();
        if [
            self.threshold.len(),
            self.left.len(),
            self.right.len(),
            self.flags.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            return Err("node arrays of different lengths".into());
        }
        for (i, &f) in self.feature.iter().enumerate() {
            if f == LEAF {
                continue;
            }
            if f as usize >= self.n_features {
                return Err(format!(
                    "node {i} splits on feature {f} but the model has {} features",
                    self.n_features
                ));
            }
            for c in [self.left[i], self.right[i]] {
                if c as usize >= n {
                    return Err(format!("node {i} has child {c}, beyond the {n} nodes"));
                }
            }
        }
        for (t, &root) in self.roots.iter().enumerate() {
            if root as usize >= n {
                return Err(format!("tree {t} has root {root}, beyond the {n} nodes"));
            }
            if self.groups[t] as usize >= self.base.len() {
                return Err(format!("tree {t} adds to class {}", self.groups[t]));
            }
            // Depth-first over the tree: a cycle would exceed n steps.
            let mut stack = vec![(root, 0usize)];
            while let Some((node, depth)) = stack.pop() {
                if depth > n {
                    return Err(format!("tree {t} has a cycle"));
                }
                if self.feature[node as usize] != LEAF {
                    stack.push((self.left[node as usize], depth + 1));
                    stack.push((self.right[node as usize], depth + 1));
                }
            }
        }
        Ok(())
    }

    /// Output names and kinds: `prediction`, and for classifiers `label`
    /// and `probabilities`.
    pub(crate) fn output_specs(&self) -> Vec<OutputSpec> {
        let k = self.groups();
        let prediction = |kind| OutputSpec {
            name: "prediction".into(),
            kind,
        };
        let label = OutputSpec {
            name: "label".into(),
            kind: OutputKind::Label,
        };
        let probabilities = |len| OutputSpec {
            name: "probabilities".into(),
            kind: OutputKind::Vector(len),
        };
        match self.link {
            Link::Identity | Link::Exp if k == 1 => vec![prediction(OutputKind::Float)],
            Link::Identity | Link::Exp => vec![prediction(OutputKind::Vector(k))],
            Link::Logistic { .. } | Link::LogisticPerClass { .. } if k == 1 => {
                vec![prediction(OutputKind::Float), label, probabilities(2)]
            }
            Link::Softmax | Link::Logistic { .. } | Link::LogisticPerClass { .. } => {
                vec![prediction(OutputKind::Vector(k)), label, probabilities(k)]
            }
            Link::SoftmaxIndex => {
                vec![prediction(OutputKind::Float), label, probabilities(k)]
            }
        }
    }

    /// Sums every tree's leaf into `margins` (one per group), starting from
    /// the base margins.
    #[inline]
    pub(crate) fn margins(&self, x: &[f64], margins: &mut [f64]) {
        margins.copy_from_slice(&self.base);
        match self.comparison {
            Comparison::LessF32 => self.sum_trees::<true>(x, margins),
            Comparison::LessOrEqual => self.sum_trees::<false>(x, margins),
        }
        if self.divisor != 1.0 {
            for m in margins.iter_mut() {
                *m /= self.divisor;
            }
        }
    }

    #[inline]
    fn sum_trees<const XGB: bool>(&self, x: &[f64], margins: &mut [f64]) {
        for (&root, &group) in self.roots.iter().zip(&self.groups) {
            let leaf = self.walk::<XGB>(root as usize, x);
            margins[group as usize] += self.threshold[leaf];
        }
    }

    /// The leaf a row reaches from `node`. See the module invariant.
    #[inline(always)]
    fn walk<const XGB: bool>(&self, mut node: usize, x: &[f64]) -> usize {
        loop {
            let f = self.feature[node];
            if f == LEAF {
                return node;
            }
            let v = x[f as usize];
            let t = self.threshold[node];
            let flags = self.flags[node];
            let left = if v.is_nan() {
                if flags & (NAN_MISSING | ZERO_MISSING) != 0 {
                    flags & DEFAULT_LEFT != 0
                } else {
                    // LightGBM missing type None: NaN is compared as zero.
                    0.0 <= t
                }
            } else if !XGB && flags & ZERO_MISSING != 0 && v.abs() <= ZERO_THRESHOLD {
                flags & DEFAULT_LEFT != 0
            } else if XGB {
                // Thresholds were stored as f32 values; XGBoost compares f32.
                ((v as f32) as f64) < t
            } else {
                v <= t
            };
            node = if left {
                self.left[node]
            } else {
                self.right[node]
            } as usize;
        }
    }

    /// Scores one row into `out` (laid out as [`Self::output_specs`]),
    /// using `margins` (one per group) as scratch.
    pub(crate) fn score(
        &self,
        x: &[f64],
        margins: &mut [f64],
        out: &mut Outputs,
    ) -> Result<(), ScoreError> {
        if x.len() != self.n_features {
            return Err(ScoreError::FeatureCount {
                expected: self.n_features,
                got: x.len(),
            });
        }
        self.margins(x, margins);
        let k = margins.len();
        match self.link {
            Link::Identity | Link::Exp => {
                if self.link == Link::Exp {
                    for m in margins.iter_mut() {
                        *m = m.exp();
                    }
                }
                if k == 1 {
                    out.values[0] = Value::Float(margins[0]);
                } else {
                    out.values[0].set_vector(margins);
                }
            }
            Link::Logistic { scale } | Link::LogisticPerClass { scale } if k == 1 => {
                let p = sigmoid(scale * margins[0]);
                out.values[0] = Value::Float(p);
                out.values[1] = Value::Label((p > 0.5) as i64);
                out.values[2].set_vector(&[1.0 - p, p]);
            }
            Link::Logistic { scale } | Link::LogisticPerClass { scale } => {
                for m in margins.iter_mut() {
                    *m = sigmoid(scale * *m);
                }
                out.values[0].set_vector(margins);
                out.values[1] = Value::Label(argmax(margins) as i64);
                out.values[2].set_vector(margins);
            }
            Link::Softmax | Link::SoftmaxIndex => {
                softmax(margins);
                let label = argmax(margins);
                if self.link == Link::Softmax {
                    out.values[0].set_vector(margins);
                } else {
                    out.values[0] = Value::Float(label as f64);
                }
                out.values[1] = Value::Label(label as i64);
                out.values[2].set_vector(margins);
            }
        }
        Ok(())
    }
}

#[inline]
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// In-place softmax, shifted by the maximum for stability.
#[inline]
pub(crate) fn softmax(v: &mut [f64]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// Index of the first maximum.
#[inline]
pub(crate) fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One stump on feature 0 at 0.5: left leaf -1, right leaf +1.
    fn stump(comparison: Comparison, flags: u8) -> Ensemble {
        Ensemble {
            feature: vec![0, LEAF, LEAF],
            threshold: vec![0.5, -1.0, 1.0],
            left: vec![1, 0, 0],
            right: vec![2, 0, 0],
            flags: vec![flags, 0, 0],
            roots: vec![0],
            groups: vec![0],
            base: vec![0.0],
            divisor: 1.0,
            n_features: 1,
            comparison,
            link: Link::Identity,
            feature_names: vec![],
            objective: "test".into(),
        }
    }

    fn margin(e: &Ensemble, x: f64) -> f64 {
        let mut m = [0.0];
        e.margins(&[x], &mut m);
        m[0]
    }

    #[test]
    fn xgboost_is_strictly_less_and_lightgbm_less_or_equal() {
        assert_eq!(margin(&stump(Comparison::LessF32, NAN_MISSING), 0.5), 1.0);
        assert_eq!(
            margin(&stump(Comparison::LessOrEqual, NAN_MISSING), 0.5),
            -1.0
        );
    }

    #[test]
    fn missing_values_follow_the_node_flags() {
        let e = stump(Comparison::LessF32, NAN_MISSING | DEFAULT_LEFT);
        assert_eq!(margin(&e, f64::NAN), -1.0);
        let e = stump(Comparison::LessF32, NAN_MISSING);
        assert_eq!(margin(&e, f64::NAN), 1.0);
        // LightGBM None: NaN compares as 0.0 <= 0.5, left, whatever the default.
        let e = stump(Comparison::LessOrEqual, 0);
        assert_eq!(margin(&e, f64::NAN), -1.0);
        // LightGBM Zero: zero goes the default way (right here) though 0 <= 0.5.
        let e = stump(Comparison::LessOrEqual, ZERO_MISSING);
        assert_eq!(margin(&e, 0.0), 1.0);
        assert_eq!(margin(&e, f64::NAN), 1.0);
    }

    #[test]
    fn validate_rejects_out_of_bounds_children() {
        let mut e = stump(Comparison::LessF32, 0);
        e.right[0] = 9;
        assert!(e.validate().unwrap_err().contains("child 9"));
    }
}
