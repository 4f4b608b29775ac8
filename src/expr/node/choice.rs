//! The nodes that pick one of several operands, generic over their type:
//! `CASE` (searched or simple), `coalesce`, `least` and `greatest`.

use std::cmp::Ordering;

use super::{BoolNode, Eval, FloatNode, IntNode, SqlOrd, StrNode};
use crate::row::Row;

/// Picks the branch of a `CASE`.
#[derive(Debug, Clone)]
pub(crate) enum Selector {
    /// `CASE WHEN cond THEN ...`: the first condition that is true.
    Searched(Vec<BoolNode>),
    /// `CASE x WHEN v THEN ...`: the first value equal to `x`.
    Simple(Box<CaseKey>),
}

impl Selector {
    fn select(&mut self, row: &Row) -> Option<usize> {
        match self {
            Selector::Searched(conds) => conds.iter_mut().position(|c| c.eval(row) == Some(true)),
            Selector::Simple(key) => match &mut **key {
                CaseKey::Bool(k) => k.first(row),
                CaseKey::Int(k) => k.first(row),
                CaseKey::Float(k) => k.first(row),
                CaseKey::Str(k) => k.first(row),
            },
        }
    }
}

/// The operand and `WHEN` values of a simple `CASE`, by their common type.
#[derive(Debug, Clone)]
pub(crate) enum CaseKey {
    Bool(KeyMatch<BoolNode>),
    Int(KeyMatch<IntNode>),
    Float(KeyMatch<FloatNode>),
    Str(KeyMatch<StrNode>),
}

/// Finds the first of `values` equal to `operand` (the operand is
/// evaluated once).
#[derive(Debug, Clone)]
pub(crate) struct KeyMatch<N> {
    pub operand: N,
    pub values: Vec<N>,
}

impl<N: Eval> KeyMatch<N> {
    fn first(&mut self, row: &Row) -> Option<usize> {
        let key = self.operand.eval(row)?;
        for (i, v) in self.values.iter_mut().enumerate() {
            if let Some(v) = v.eval(row)
                && key.sql_cmp(v) == Ordering::Equal
            {
                return Some(i);
            }
        }
        None
    }
}

/// `CASE`: `thens[i]` for the branch the selector picks, else `otherwise`
/// (NULL when absent).
#[derive(Debug, Clone)]
pub(crate) struct Case<N> {
    pub selector: Selector,
    pub thens: Vec<N>,
    pub otherwise: Option<N>,
}

impl<N: Eval> Case<N> {
    pub(super) fn eval<'a>(&'a mut self, row: &'a Row) -> Option<N::Out<'a>> {
        match self.selector.select(row) {
            Some(i) => self.thens[i].eval(row),
            None => match &mut self.otherwise {
                Some(e) => e.eval(row),
                None => None,
            },
        }
    }
}

/// `coalesce(args)`: the first non-null argument.
#[derive(Debug, Clone)]
pub(crate) struct Coalesce<N> {
    pub args: Vec<N>,
}

impl<N: Eval> Coalesce<N> {
    pub(super) fn eval<'a>(&'a mut self, row: &'a Row) -> Option<N::Out<'a>> {
        self.args.iter_mut().find_map(|a| a.eval(row))
    }
}

/// `least(args)` / `greatest(args)`: nulls are skipped.
#[derive(Debug, Clone)]
pub(crate) struct Extreme<N> {
    pub args: Vec<N>,
    pub greatest: bool,
}

impl<N: Eval> Extreme<N> {
    pub(super) fn eval<'a>(&'a mut self, row: &'a Row) -> Option<N::Out<'a>> {
        let want = if self.greatest {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        let mut best: Option<N::Out<'a>> = None;
        for a in self.args.iter_mut() {
            if let Some(v) = a.eval(row) {
                best = match best {
                    Some(b) if v.sql_cmp(b) != want => Some(b),
                    _ => Some(v),
                };
            }
        }
        best
    }
}
