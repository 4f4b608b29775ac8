//! The boolean nodes generic over their operands' type: SQL's total order
//! ([`SqlOrd`], Spark's: `NaN` above every number), comparisons by an
//! ordering mask, `IN`, `BETWEEN`, and `LIKE` with a constant or per-row
//! pattern.

use std::cmp::Ordering;

use super::{Eval, StrNode};
use crate::expr::like::{self, LikeTok, Matcher};
use crate::row::Row;

/// Spark's total order for one type: `NaN` equals itself and sorts above
/// every other double, `-0.0 = 0.0`, text compares by UTF-8 bytes.
pub(crate) trait SqlOrd: Copy {
    /// Compares two non-null values.
    fn sql_cmp(self, other: Self) -> Ordering;
}

impl SqlOrd for bool {
    #[inline]
    fn sql_cmp(self, other: bool) -> Ordering {
        self.cmp(&other)
    }
}

impl SqlOrd for i64 {
    #[inline]
    fn sql_cmp(self, other: i64) -> Ordering {
        self.cmp(&other)
    }
}

impl SqlOrd for f64 {
    #[inline]
    fn sql_cmp(self, other: f64) -> Ordering {
        match self.partial_cmp(&other) {
            Some(o) => o,
            None => self.is_nan().cmp(&other.is_nan()),
        }
    }
}

impl SqlOrd for &str {
    #[inline]
    fn sql_cmp(self, other: &str) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

/// Bit set of the orderings for which a comparison is true.
pub(crate) const LT: u8 = 1;
/// See [`LT`].
pub(crate) const EQ: u8 = 2;
/// See [`LT`].
pub(crate) const GT: u8 = 4;

#[inline]
fn holds(mask: u8, ord: Ordering) -> bool {
    let bit = match ord {
        Ordering::Less => LT,
        Ordering::Equal => EQ,
        Ordering::Greater => GT,
    };
    mask & bit != 0
}

/// A comparison `l op r`; `mask` says which orderings make it true.
#[derive(Debug, Clone)]
pub(crate) struct Cmp<N> {
    pub l: N,
    pub r: N,
    pub mask: u8,
    /// `<=>` / `IS [NOT] DISTINCT FROM`: two nulls are equal, a null and a
    /// value are different, the result is never null.
    pub null_safe: bool,
}

impl<N: Eval> Cmp<N> {
    #[inline]
    pub(super) fn eval(&mut self, row: &Row) -> Option<bool> {
        let l = self.l.eval(row);
        if l.is_none() && !self.null_safe {
            return None;
        }
        let r = self.r.eval(row);
        match (l, r) {
            (Some(a), Some(b)) => Some(holds(self.mask, a.sql_cmp(b))),
            (None, None) if self.null_safe => Some(self.mask & EQ != 0),
            _ if self.null_safe => Some(self.mask & (LT | GT) != 0),
            _ => None,
        }
    }
}

/// `x [NOT] IN (items)`.
#[derive(Debug, Clone)]
pub(crate) struct InList<N> {
    pub x: N,
    pub items: Vec<N>,
    pub negated: bool,
}

impl<N: Eval> InList<N> {
    pub(super) fn eval(&mut self, row: &Row) -> Option<bool> {
        let x = self.x.eval(row)?;
        let mut saw_null = false;
        for item in self.items.iter_mut() {
            match item.eval(row) {
                Some(v) if x.sql_cmp(v) == Ordering::Equal => return Some(!self.negated),
                Some(_) => {}
                None => saw_null = true,
            }
        }
        if saw_null { None } else { Some(self.negated) }
    }
}

/// `x [NOT] BETWEEN lo AND hi`, i.e. `x >= lo AND x <= hi`.
#[derive(Debug, Clone)]
pub(crate) struct Between<N> {
    pub x: N,
    pub lo: N,
    pub hi: N,
    pub negated: bool,
}

impl<N: Eval> Between<N> {
    pub(super) fn eval(&mut self, row: &Row) -> Option<bool> {
        let x = self.x.eval(row)?;
        let above = self.lo.eval(row).map(|lo| x.sql_cmp(lo) != Ordering::Less);
        let below = self
            .hi
            .eval(row)
            .map(|hi| x.sql_cmp(hi) != Ordering::Greater);
        let inside = and3(above, below);
        if self.negated {
            inside.map(|b| !b)
        } else {
            inside
        }
    }
}

#[inline]
fn and3(l: Option<bool>, r: Option<bool>) -> Option<bool> {
    match (l, r) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

/// `s [NOT] LIKE pattern`.
#[derive(Debug, Clone)]
pub(crate) struct Like {
    pub arg: StrNode,
    pub pattern: LikePattern,
    pub negated: bool,
}

/// A LIKE pattern: compiled once when constant, else compiled per row into
/// a reused token buffer.
#[derive(Debug, Clone)]
pub(crate) enum LikePattern {
    Const(Matcher),
    Dynamic {
        pattern: StrNode,
        escape: char,
        scratch: Vec<LikeTok>,
    },
}

impl Like {
    pub(super) fn eval(&mut self, row: &Row) -> Option<bool> {
        let s = self.arg.eval(row)?;
        let matched = match &mut self.pattern {
            LikePattern::Const(m) => m.matches(s),
            LikePattern::Dynamic {
                pattern,
                escape,
                scratch,
            } => {
                let p = pattern.eval(row)?;
                // An invalid pattern computed at run time yields NULL
                // (Spark raises an error; evaluation here is total).
                like::tokenize_into(p, *escape, scratch).ok()?;
                like::match_tokens(scratch, s)
            }
        };
        Some(matched != self.negated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_order_is_sparks() {
        assert_eq!(f64::NAN.sql_cmp(f64::NAN), Ordering::Equal);
        assert_eq!(f64::NAN.sql_cmp(f64::INFINITY), Ordering::Greater);
        assert_eq!(1.0.sql_cmp(f64::NAN), Ordering::Less);
        assert_eq!((-0.0f64).sql_cmp(0.0), Ordering::Equal);
        assert_eq!("a".sql_cmp("b"), Ordering::Less);
        assert_eq!("é".sql_cmp("z"), Ordering::Greater);
    }

    #[test]
    fn comparison_masks() {
        assert!(holds(LT | EQ, Ordering::Less));
        assert!(holds(LT | EQ, Ordering::Equal));
        assert!(!holds(LT | EQ, Ordering::Greater));
        assert!(holds(LT | GT, Ordering::Greater));
        assert!(!holds(LT | GT, Ordering::Equal));
    }
}
