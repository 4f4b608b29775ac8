//! LightGBM models saved with `booster.save_model("m.txt")`, read into an
//! [`Ensemble`].
//!
//! The text format is a header of `key=value` lines (`num_class`,
//! `num_tree_per_iteration`, `max_feature_idx`, `objective`,
//! `feature_names`, `average_output`), then one `Tree=i` block per tree with
//! space-separated arrays (`split_feature`, `threshold`, `decision_type`,
//! `left_child`, `right_child`, `leaf_value`), then `end of trees`. A child
//! `c < 0` is leaf `!c`. `decision_type` bits: 1 categorical, 2 default
//! left, bits 2–3 the missing type (0 None: NaN compares as 0; 1 Zero: zero
//! and NaN go the default way; 2 NaN: NaN goes the default way). A row goes
//! left when `x <= threshold`, in `f64`. Tree `i` adds to class
//! `i % num_tree_per_iteration`; there is no base score (the first tree
//! carries it).

use std::path::Path;

use super::ModelError;
use super::tree::{Comparison, DEFAULT_LEFT, Ensemble, LEAF, Link, NAN_MISSING, ZERO_MISSING};

/// Reads a LightGBM text model from `text` (the contents of `path`).
pub(crate) fn parse(path: &Path, text: &str) -> Result<Ensemble, ModelError> {
    let err = |line: usize, message: String| ModelError::Text {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
    match lines.next() {
        Some((_, "tree")) => {}
        Some((n, other)) => {
            return Err(err(
                n,
                format!("expected \"tree\" (a LightGBM model), found {other:?}"),
            ));
        }
        None => return Err(err(1, "empty file".into())),
    }

    let mut num_class = 1usize;
    let mut per_iteration = 1usize;
    let mut n_features: Option<usize> = None;
    let mut objective: Option<(usize, String)> = None;
    let mut feature_names = vec![];
    let mut average = false;

    let mut e = Ensemble {
        feature: vec![],
        threshold: vec![],
        left: vec![],
        right: vec![],
        flags: vec![],
        roots: vec![],
        groups: vec![],
        base: vec![],
        divisor: 1.0,
        n_features: 0,
        comparison: Comparison::LessOrEqual,
        link: Link::Identity,
        feature_names: vec![],
        objective: String::new(),
    };

    // Header, up to the first tree.
    let mut next = None;
    for (n, line) in lines.by_ref() {
        if line.starts_with("Tree=") {
            next = Some((n, line));
            break;
        }
        if line == "end of trees" {
            next = Some((n, line));
            break;
        }
        let Some((key, value)) = line.split_once('=') else {
            if line == "average_output" {
                average = true;
            }
            continue;
        };
        let int = |v: &str| {
            v.trim().parse::<usize>().map_err(|_| {
                err(
                    n,
                    format!("{key}: expected a non-negative integer, found {v:?}"),
                )
            })
        };
        match key {
            "num_class" => num_class = int(value)?,
            "num_tree_per_iteration" => per_iteration = int(value)?,
            "max_feature_idx" => n_features = Some(int(value)? + 1),
            "objective" => objective = Some((n, value.to_string())),
            "feature_names" => {
                feature_names = value.split(' ').map(str::to_string).collect();
            }
            _ => {}
        }
    }
    let n_features = n_features.ok_or_else(|| err(1, "no max_feature_idx= line".into()))?;
    let (objective_line, objective) =
        objective.ok_or_else(|| err(1, "no objective= line".into()))?;
    if per_iteration == 0 || num_class == 0 {
        return Err(err(
            1,
            "num_class and num_tree_per_iteration must be at least 1".into(),
        ));
    }
    let mut words = objective.split(' ');
    let name = words.next().unwrap_or_default();
    let sigmoid = words
        .find_map(|w| w.strip_prefix("sigmoid:"))
        .map(|s| {
            s.parse::<f64>().map_err(|_| {
                err(
                    objective_line,
                    format!("objective: expected sigmoid:<number>, found {s:?}"),
                )
            })
        })
        .transpose()?
        .unwrap_or(1.0);
    e.link = match name {
        "regression" | "regression_l2" | "regression_l1" | "l1" | "l2" | "mse" | "mae"
        | "huber" | "fair" | "quantile" | "mape" | "lambdarank" | "rank_xendcg" => Link::Identity,
        "binary" | "cross_entropy" | "xentropy" => Link::Logistic { scale: sigmoid },
        "poisson" | "gamma" | "tweedie" => Link::Exp,
        "multiclass" | "softmax" => Link::Softmax,
        "multiclassova" | "ovr" | "multiclass_ova" | "ova" => {
            Link::LogisticPerClass { scale: sigmoid }
        }
        other => {
            return Err(err(
                objective_line,
                format!(
                    "objective {other:?} is not supported (supported: regression, regression_l1, \
                     huber, fair, quantile, mape, poisson, gamma, tweedie, binary, \
                     cross_entropy, multiclass, multiclassova, lambdarank)"
                ),
            ));
        }
    };
    e.objective = objective.clone();
    e.n_features = n_features;
    e.feature_names = feature_names;
    e.base = vec![0.0; per_iteration];

    // Trees.
    let mut current = next;
    while let Some((tree_line, header)) = current {
        if header == "end of trees" {
            break;
        }
        let (block, after) = read_block(&mut lines);
        parse_tree(&mut e, tree_line, header, &block, per_iteration).map_err(|(l, m)| err(l, m))?;
        current = after;
    }
    if e.roots.is_empty() {
        return Err(err(1, "the model has no trees".into()));
    }
    if average {
        e.divisor = (e.roots.len() / per_iteration) as f64;
    }
    e.validate().map_err(|m| err(1, m))?;
    Ok(e)
}

type Line<'a> = (usize, &'a str);

/// The `key=value` lines of one tree block, and the line that ends it (the
/// next `Tree=` or `end of trees`).
fn read_block<'a>(lines: &mut impl Iterator<Item = Line<'a>>) -> (Vec<Line<'a>>, Option<Line<'a>>) {
    let mut block = vec![];
    for (n, line) in lines {
        if line.starts_with("Tree=") || line == "end of trees" {
            return (block, Some((n, line)));
        }
        if !line.is_empty() {
            block.push((n, line));
        }
    }
    (block, None)
}

fn parse_tree(
    e: &mut Ensemble,
    tree_line: usize,
    header: &str,
    block: &[Line<'_>],
    per_iteration: usize,
) -> Result<(), (usize, String)> {
    let field = |key: &str| -> Result<Option<(usize, &str)>, (usize, String)> {
        Ok(block.iter().find_map(|&(n, l)| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix('='))
                .map(|v| (n, v))
        }))
    };
    let required =
        |key: &str| field(key)?.ok_or_else(|| (tree_line, format!("{header}: no {key}= line")));
    fn numbers<T: std::str::FromStr>(
        (n, v): (usize, &str),
        key: &str,
    ) -> Result<Vec<T>, (usize, String)> {
        v.split(' ')
            .map(|w| {
                w.parse::<T>()
                    .map_err(|_| (n, format!("{key}: {w:?} is not a valid number")))
            })
            .collect()
    }

    let num_leaves: usize = numbers::<usize>(required("num_leaves")?, "num_leaves")?
        .first()
        .copied()
        .ok_or_else(|| (tree_line, format!("{header}: empty num_leaves")))?;
    if let Some((n, v)) = field("num_cat")?
        && v.trim() != "0"
    {
        return Err((
            n,
            "categorical splits (num_cat > 0) are not supported".into(),
        ));
    }
    if let Some((n, v)) = field("is_linear")?
        && v.trim() != "0"
    {
        return Err((n, "linear trees (is_linear=1) are not supported".into()));
    }
    let leaf_line = required("leaf_value")?;
    let leaves: Vec<f64> = numbers(leaf_line, "leaf_value")?;
    if leaves.len() != num_leaves {
        return Err((
            leaf_line.0,
            format!(
                "leaf_value has {} values for num_leaves={num_leaves}",
                leaves.len()
            ),
        ));
    }
    let offset = e.feature.len() as u32;
    let group = (e.roots.len() % per_iteration) as u32;
    e.roots.push(offset);
    e.groups.push(group);
    if num_leaves == 1 {
        e.feature.push(LEAF);
        e.threshold.push(leaves[0]);
        e.left.push(0);
        e.right.push(0);
        e.flags.push(0);
        return Ok(());
    }
    let splits = num_leaves - 1;
    let get = |key: &str| -> Result<(usize, Vec<f64>), (usize, String)> {
        let line = required(key)?;
        let v: Vec<f64> = numbers(line, key)?;
        if v.len() != splits {
            return Err((
                line.0,
                format!(
                    "{key} has {} values for {splits} splits (num_leaves={num_leaves})",
                    v.len()
                ),
            ));
        }
        Ok((line.0, v))
    };
    let (fl, feature) = get("split_feature")?;
    let (_, threshold) = get("threshold")?;
    let (dl, decision) = get("decision_type")?;
    let (cl, left) = get("left_child")?;
    let (_, right) = get("right_child")?;

    // Internal nodes first (ids offset..offset+splits), then leaves.
    let leaf_base = offset + splits as u32;
    let child = |c: f64| -> Result<u32, (usize, String)> {
        let c = c as i64;
        if c >= 0 && (c as usize) < splits {
            Ok(offset + c as u32)
        } else if c < 0 && ((!c) as usize) < num_leaves {
            Ok(leaf_base + (!c) as u32)
        } else {
            Err((
                cl,
                format!("child {c} is outside the tree ({num_leaves} leaves)"),
            ))
        }
    };
    for i in 0..splits {
        let f = feature[i];
        if f < 0.0 || f as usize >= e.n_features {
            return Err((fl, format!("split_feature {f} is not a feature index")));
        }
        let d = decision[i] as u32;
        if d & 1 != 0 {
            return Err((dl, "categorical splits are not supported".into()));
        }
        let mut flags = if d & 2 != 0 { DEFAULT_LEFT } else { 0 };
        flags |= match (d >> 2) & 3 {
            0 => 0,
            1 => ZERO_MISSING,
            2 => NAN_MISSING,
            m => return Err((dl, format!("decision_type {d}: unknown missing type {m}"))),
        };
        e.feature.push(f as u32);
        e.threshold.push(threshold[i]);
        e.left.push(child(left[i])?);
        e.right.push(child(right[i])?);
        e.flags.push(flags);
    }
    for &v in &leaves {
        e.feature.push(LEAF);
        e.threshold.push(v);
        e.left.push(0);
        e.right.push(0);
        e.flags.push(0);
    }
    Ok(())
}
