//! Typed evaluation nodes: the compiled form of an expression.
//!
//! There is one node enum per result type ([`BoolNode`], [`IntNode`],
//! [`FloatNode`], [`StrNode`]), so every operator is chosen for its operand
//! types when the expression is compiled and evaluation never checks a type
//! that was already known. `None` is SQL NULL.
//!
//! Invariants:
//! - a node only reads the row columns it was compiled against (by index);
//! - evaluation never allocates once warm: nodes that produce new text own a
//!   scratch `String` that is cleared and refilled on every evaluation, and
//!   text results borrow either that buffer, a row slot or a constant;
//! - evaluation is total: every operator has a defined result (often NULL)
//!   for every input, it never panics.
//!
//! This file holds the [`Eval`] trait and the typed node enums with their
//! evaluation; the generic nodes they share, one instance per operand type,
//! live in:
//!
//! - `predicate.rs`: SQL's total order ([`SqlOrd`]), comparisons, `IN`,
//!   `BETWEEN` and `LIKE`;
//! - `choice.rs`: `CASE`, `coalesce`, `least` and `greatest`.

use super::cast;
use super::functions::{self, TrimSide};
use crate::row::{ArrayRef, Row, Val};

mod choice;
mod predicate;

pub(crate) use choice::{Case, CaseKey, Coalesce, Extreme, KeyMatch, Selector};
pub(crate) use predicate::{Between, Cmp, EQ, GT, InList, LT, Like, LikePattern, SqlOrd};

/// Evaluation of a typed node against one row.
pub(crate) trait Eval {
    /// The non-null result type; borrows the node or the row for `'a`.
    type Out<'a>: Copy + SqlOrd
    where
        Self: 'a;

    /// Evaluates the node; `None` is NULL.
    fn eval<'a>(&'a mut self, row: &'a Row) -> Option<Self::Out<'a>>;
}

/// Two operands of a binary operator.
#[derive(Debug, Clone)]
pub(crate) struct Pair<N>(pub N, pub N);

/// A node of any type, for operators that take every type (`IS NULL`,
/// `concat`) and for the root of an expression.
#[derive(Debug, Clone)]
pub(crate) enum AnyNode {
    Bool(BoolNode),
    Int(IntNode),
    Float(FloatNode),
    Str(StrNode),
    Arr(ArrNode),
}

impl AnyNode {
    /// Evaluates to a borrowed [`Val`].
    #[inline]
    pub(crate) fn eval<'a>(&'a mut self, row: &'a Row) -> Val<'a> {
        match self {
            AnyNode::Bool(n) => n.eval(row).map_or(Val::Null, Val::Bool),
            AnyNode::Int(n) => n.eval(row).map_or(Val::Null, Val::Int),
            AnyNode::Float(n) => n.eval(row).map_or(Val::Null, Val::Float),
            AnyNode::Str(n) => n.eval(row).map_or(Val::Null, Val::Str),
            AnyNode::Arr(n) => n.eval(row).map_or(Val::Null, Val::Array),
        }
    }

    /// Appends the value formatted as `CAST(x AS string)` would; `false`
    /// when it is null.
    fn push_to(&mut self, row: &Row, buf: &mut String) -> bool {
        match self {
            AnyNode::Bool(n) => n.eval(row).map(|b| buf.push_str(cast::bool_str(b))),
            AnyNode::Int(n) => n.eval(row).map(|i| cast::push_int(buf, i)),
            AnyNode::Float(n) => n.eval(row).map(|f| cast::push_float(buf, f)),
            AnyNode::Str(n) => n.eval(row).map(|s| buf.push_str(s)),
            // The compiler refuses arrays in `concat`.
            AnyNode::Arr(_) => None,
        }
        .is_some()
    }
}

/// A node producing a boolean.
#[derive(Debug, Clone)]
pub(crate) enum BoolNode {
    Const(Option<bool>),
    Col(usize),
    Not(Box<BoolNode>),
    And(Box<Pair<BoolNode>>),
    Or(Box<Pair<BoolNode>>),
    IsNull {
        arg: Box<AnyNode>,
        negated: bool,
    },
    /// `arg IS [NOT] TRUE|FALSE`: never null.
    IsBool {
        arg: Box<BoolNode>,
        value: bool,
        negated: bool,
    },
    CmpBool(Box<Cmp<BoolNode>>),
    CmpInt(Box<Cmp<IntNode>>),
    CmpFloat(Box<Cmp<FloatNode>>),
    CmpStr(Box<Cmp<StrNode>>),
    InBool(Box<InList<BoolNode>>),
    InInt(Box<InList<IntNode>>),
    InFloat(Box<InList<FloatNode>>),
    InStr(Box<InList<StrNode>>),
    BetweenBool(Box<Between<BoolNode>>),
    BetweenInt(Box<Between<IntNode>>),
    BetweenFloat(Box<Between<FloatNode>>),
    BetweenStr(Box<Between<StrNode>>),
    Like(Box<Like>),
    FromInt(Box<IntNode>),
    FromFloat(Box<FloatNode>),
    FromStr(Box<StrNode>),
    Case(Box<Case<BoolNode>>),
    Coalesce(Box<Coalesce<BoolNode>>),
    Extreme(Box<Extreme<BoolNode>>),
}

impl Eval for BoolNode {
    type Out<'a> = bool;

    fn eval<'a>(&'a mut self, row: &'a Row) -> Option<bool> {
        match self {
            BoolNode::Const(v) => *v,
            BoolNode::Col(i) => match row.get(*i) {
                Val::Bool(b) => Some(b),
                _ => None,
            },
            BoolNode::Not(a) => a.eval(row).map(|b| !b),
            BoolNode::And(p) => match p.0.eval(row) {
                Some(false) => Some(false),
                l => match p.1.eval(row) {
                    Some(false) => Some(false),
                    Some(true) => l,
                    None => None,
                },
            },
            BoolNode::Or(p) => match p.0.eval(row) {
                Some(true) => Some(true),
                l => match p.1.eval(row) {
                    Some(true) => Some(true),
                    Some(false) => l,
                    None => None,
                },
            },
            BoolNode::IsNull { arg, negated } => Some(arg.eval(row).is_null() != *negated),
            BoolNode::IsBool {
                arg,
                value,
                negated,
            } => Some((arg.eval(row) == Some(*value)) != *negated),
            BoolNode::CmpBool(c) => c.eval(row),
            BoolNode::CmpInt(c) => c.eval(row),
            BoolNode::CmpFloat(c) => c.eval(row),
            BoolNode::CmpStr(c) => c.eval(row),
            BoolNode::InBool(c) => c.eval(row),
            BoolNode::InInt(c) => c.eval(row),
            BoolNode::InFloat(c) => c.eval(row),
            BoolNode::InStr(c) => c.eval(row),
            BoolNode::BetweenBool(c) => c.eval(row),
            BoolNode::BetweenInt(c) => c.eval(row),
            BoolNode::BetweenFloat(c) => c.eval(row),
            BoolNode::BetweenStr(c) => c.eval(row),
            BoolNode::Like(l) => l.eval(row),
            BoolNode::FromInt(a) => a.eval(row).map(|i| i != 0),
            BoolNode::FromFloat(a) => a.eval(row).map(|f| f != 0.0),
            BoolNode::FromStr(a) => a.eval(row).and_then(cast::parse_bool),
            BoolNode::Case(c) => c.eval(row),
            BoolNode::Coalesce(c) => c.eval(row),
            BoolNode::Extreme(c) => c.eval(row),
        }
    }
}

/// A node producing a 64-bit integer. Arithmetic wraps on overflow.
#[derive(Debug, Clone)]
pub(crate) enum IntNode {
    Const(Option<i64>),
    Col(usize),
    Neg(Box<IntNode>),
    Abs(Box<IntNode>),
    Add(Box<Pair<IntNode>>),
    Sub(Box<Pair<IntNode>>),
    Mul(Box<Pair<IntNode>>),
    Rem(Box<Pair<IntNode>>),
    /// `round(x, d)` for `d < 0`; `pow10` is `10^-d`, 0 when it exceeds i128.
    Round {
        arg: Box<IntNode>,
        pow10: i128,
    },
    Floor(Box<FloatNode>),
    Ceil(Box<FloatNode>),
    Length(Box<StrNode>),
    /// `size(arr)`: the number of elements, -1 for NULL (Spark's
    /// `size` with `spark.sql.legacy.sizeOfNull`, its default with ANSI off).
    Size(Box<ArrNode>),
    /// `element_at(arr, i)` on an `array<int64>`.
    ElementAt(Box<ElementAt>),
    FromFloat(Box<FloatNode>),
    FromStr(Box<StrNode>),
    FromBool(Box<BoolNode>),
    Case(Box<Case<IntNode>>),
    Coalesce(Box<Coalesce<IntNode>>),
    Extreme(Box<Extreme<IntNode>>),
}

impl Eval for IntNode {
    type Out<'a> = i64;

    fn eval<'a>(&'a mut self, row: &'a Row) -> Option<i64> {
        match self {
            IntNode::Const(v) => *v,
            IntNode::Col(i) => match row.get(*i) {
                Val::Int(v) => Some(v),
                _ => None,
            },
            IntNode::Neg(a) => a.eval(row).map(i64::wrapping_neg),
            IntNode::Abs(a) => a.eval(row).map(i64::wrapping_abs),
            IntNode::Add(p) => Some(p.0.eval(row)?.wrapping_add(p.1.eval(row)?)),
            IntNode::Sub(p) => Some(p.0.eval(row)?.wrapping_sub(p.1.eval(row)?)),
            IntNode::Mul(p) => Some(p.0.eval(row)?.wrapping_mul(p.1.eval(row)?)),
            IntNode::Rem(p) => {
                let a = p.0.eval(row)?;
                match p.1.eval(row)? {
                    0 => None,
                    b => Some(a.wrapping_rem(b)),
                }
            }
            IntNode::Round { arg, pow10 } => {
                arg.eval(row).map(|x| functions::round_long(x, *pow10))
            }
            // `as` saturates and maps NaN to 0, exactly like the JVM's d2l.
            IntNode::Floor(a) => a.eval(row).map(|f| f.floor() as i64),
            IntNode::Ceil(a) => a.eval(row).map(|f| f.ceil() as i64),
            IntNode::Length(a) => a.eval(row).map(|s| s.chars().count() as i64),
            IntNode::Size(a) => Some(a.eval(row).map_or(-1, |a| a.len() as i64)),
            IntNode::ElementAt(e) => match e.eval(row)? {
                (ArrayRef::I64(a), i) => Some(a[i]),
                // The compiler builds this node for int64 arrays only.
                _ => None,
            },
            IntNode::FromFloat(a) => a.eval(row).map(|f| f as i64),
            IntNode::FromStr(a) => a.eval(row).and_then(cast::parse_long),
            IntNode::FromBool(a) => a.eval(row).map(i64::from),
            IntNode::Case(c) => c.eval(row),
            IntNode::Coalesce(c) => c.eval(row),
            IntNode::Extreme(c) => c.eval(row),
        }
    }
}

/// A node producing a 64-bit float.
#[derive(Debug, Clone)]
pub(crate) enum FloatNode {
    Const(Option<f64>),
    Col(usize),
    FromInt(Box<IntNode>),
    Neg(Box<FloatNode>),
    Abs(Box<FloatNode>),
    Add(Box<Pair<FloatNode>>),
    Sub(Box<Pair<FloatNode>>),
    Mul(Box<Pair<FloatNode>>),
    Div(Box<Pair<FloatNode>>),
    Rem(Box<Pair<FloatNode>>),
    Round {
        arg: Box<FloatNode>,
        scale: i32,
    },
    Sqrt(Box<FloatNode>),
    Exp(Box<FloatNode>),
    Ln(Box<FloatNode>),
    Pow(Box<Pair<FloatNode>>),
    /// `element_at(arr, i)` on an `array<float64>` or `array<float32>`.
    ElementAt(Box<ElementAt>),
    FromStr(Box<StrNode>),
    FromBool(Box<BoolNode>),
    Case(Box<Case<FloatNode>>),
    Coalesce(Box<Coalesce<FloatNode>>),
    Extreme(Box<Extreme<FloatNode>>),
}

impl Eval for FloatNode {
    type Out<'a> = f64;

    fn eval<'a>(&'a mut self, row: &'a Row) -> Option<f64> {
        match self {
            FloatNode::Const(v) => *v,
            FloatNode::Col(i) => match row.get(*i) {
                Val::Float(v) => Some(v),
                // A float64 column holding an integer (e.g. decoded from
                // `3`) reads as that number.
                Val::Int(v) => Some(v as f64),
                _ => None,
            },
            FloatNode::FromInt(a) => a.eval(row).map(|i| i as f64),
            FloatNode::Neg(a) => a.eval(row).map(|f| -f),
            FloatNode::Abs(a) => a.eval(row).map(f64::abs),
            FloatNode::Add(p) => Some(p.0.eval(row)? + p.1.eval(row)?),
            FloatNode::Sub(p) => Some(p.0.eval(row)? - p.1.eval(row)?),
            FloatNode::Mul(p) => Some(p.0.eval(row)? * p.1.eval(row)?),
            FloatNode::Div(p) => {
                let a = p.0.eval(row)?;
                let b = p.1.eval(row)?;
                if b == 0.0 { None } else { Some(a / b) }
            }
            FloatNode::Rem(p) => {
                let a = p.0.eval(row)?;
                let b = p.1.eval(row)?;
                if b == 0.0 { None } else { Some(a % b) }
            }
            FloatNode::Round { arg, scale } => {
                arg.eval(row).map(|f| functions::round_double(f, *scale))
            }
            FloatNode::Sqrt(a) => a.eval(row).map(f64::sqrt),
            FloatNode::Exp(a) => a.eval(row).map(f64::exp),
            FloatNode::Ln(a) => a
                .eval(row)
                .and_then(|f| (f > 0.0 || f.is_nan()).then(|| f.ln())),
            FloatNode::Pow(p) => Some(functions::pow(p.0.eval(row)?, p.1.eval(row)?)),
            FloatNode::ElementAt(e) => match e.eval(row)? {
                (ArrayRef::F64(a), i) => Some(a[i]),
                (ArrayRef::F32(a), i) => Some(f64::from(a[i])),
                // The compiler builds this node for float arrays only.
                (ArrayRef::I64(_), _) => None,
            },
            FloatNode::FromStr(a) => a.eval(row).and_then(cast::parse_double),
            FloatNode::FromBool(a) => a.eval(row).map(|b| if b { 1.0 } else { 0.0 }),
            FloatNode::Case(c) => c.eval(row),
            FloatNode::Coalesce(c) => c.eval(row),
            FloatNode::Extreme(c) => c.eval(row),
        }
    }
}

/// A node producing text. Nodes that build new text own the buffer the
/// result borrows.
#[derive(Debug, Clone)]
pub(crate) enum StrNode {
    Const(Option<String>),
    Col(usize),
    Lower {
        arg: Box<StrNode>,
        buf: String,
    },
    Upper {
        arg: Box<StrNode>,
        buf: String,
    },
    /// Trims `chars` (a set of characters; a space when absent) from the
    /// chosen side(s). The result borrows the argument.
    Trim {
        arg: Box<StrNode>,
        chars: Option<Box<StrNode>>,
        side: TrimSide,
    },
    /// Spark's 1-based `substring`; the result borrows the argument.
    Substring {
        arg: Box<StrNode>,
        pos: Box<IntNode>,
        len: Option<Box<IntNode>>,
    },
    Concat {
        args: Vec<AnyNode>,
        buf: String,
    },
    FromInt {
        arg: Box<IntNode>,
        buf: String,
    },
    FromFloat {
        arg: Box<FloatNode>,
        buf: String,
    },
    FromBool(Box<BoolNode>),
    Case(Box<Case<StrNode>>),
    Coalesce(Box<Coalesce<StrNode>>),
    Extreme(Box<Extreme<StrNode>>),
}

impl Eval for StrNode {
    type Out<'a> = &'a str;

    fn eval<'a>(&'a mut self, row: &'a Row) -> Option<&'a str> {
        match self {
            StrNode::Const(v) => v.as_deref(),
            StrNode::Col(i) => match row.get(*i) {
                Val::Str(s) => Some(s),
                _ => None,
            },
            StrNode::Lower { arg, buf } => {
                let s = arg.eval(row)?;
                buf.clear();
                functions::push_lower(buf, s);
                Some(buf.as_str())
            }
            StrNode::Upper { arg, buf } => {
                let s = arg.eval(row)?;
                buf.clear();
                functions::push_upper(buf, s);
                Some(buf.as_str())
            }
            StrNode::Trim { arg, chars, side } => {
                let s = arg.eval(row)?;
                match chars {
                    None => Some(functions::trim(s, *side, |c| c == ' ')),
                    Some(set) => {
                        let set = set.eval(row)?;
                        Some(functions::trim(s, *side, |c| set.contains(c)))
                    }
                }
            }
            StrNode::Substring { arg, pos, len } => {
                let s = arg.eval(row)?;
                let pos = pos.eval(row)?;
                let len = match len {
                    Some(l) => l.eval(row)?,
                    None => i64::MAX,
                };
                Some(functions::substring(s, pos, len))
            }
            StrNode::Concat { args, buf } => {
                buf.clear();
                for a in args.iter_mut() {
                    if !a.push_to(row, buf) {
                        return None;
                    }
                }
                Some(buf.as_str())
            }
            StrNode::FromInt { arg, buf } => {
                let i = arg.eval(row)?;
                buf.clear();
                cast::push_int(buf, i);
                Some(buf.as_str())
            }
            StrNode::FromFloat { arg, buf } => {
                let f = arg.eval(row)?;
                buf.clear();
                cast::push_float(buf, f);
                Some(buf.as_str())
            }
            StrNode::FromBool(a) => a.eval(row).map(cast::bool_str),
            StrNode::Case(c) => c.eval(row),
            StrNode::Coalesce(c) => c.eval(row),
            StrNode::Extreme(c) => c.eval(row),
        }
    }
}

/// `element_at(arr, index)`: Spark's 1-based index, negative counting from
/// the end.
#[derive(Debug, Clone)]
pub(crate) struct ElementAt {
    pub arr: ArrNode,
    pub index: IntNode,
}

impl ElementAt {
    /// The vector and the 0-based position of the element; `None` (NULL)
    /// for a NULL vector or index, index 0, or an index out of range (Spark
    /// with ANSI mode off answers NULL out of range, but raises an error
    /// for index 0; evaluation here is total).
    #[inline]
    fn eval<'a>(&'a mut self, row: &'a Row) -> Option<(ArrayRef<'a>, usize)> {
        let index = self.index.eval(row)?;
        let arr = self.arr.eval(row)?;
        let len = arr.len() as u64;
        let at = if index > 0 {
            index as u64 - 1
        } else if index < 0 {
            len.checked_sub(index.unsigned_abs())?
        } else {
            return None;
        };
        (at < len).then_some((arr, at as usize))
    }
}

/// A node producing a vector. Nodes that build one own the buffer the result
/// borrows.
#[derive(Debug, Clone)]
pub(crate) enum ArrNode {
    /// A NULL vector.
    Null,
    Col(usize),
    /// `array(a, b, ...)` of numbers, at least one float64: a NULL
    /// argument is a NaN element (a missing value).
    BuildFloat {
        args: Vec<FloatNode>,
        buf: Vec<f64>,
    },
    /// `array(a, b, ...)` of int64s: NULL when any argument is NULL
    /// (`array<int64>` elements cannot be missing).
    BuildInt {
        args: Vec<IntNode>,
        buf: Vec<i64>,
    },
}

impl ArrNode {
    /// Evaluates the node; `None` is NULL.
    #[inline]
    pub(crate) fn eval<'a>(&'a mut self, row: &'a Row) -> Option<ArrayRef<'a>> {
        match self {
            ArrNode::Null => None,
            ArrNode::Col(i) => match row.get(*i) {
                Val::Array(a) => Some(a),
                _ => None,
            },
            ArrNode::BuildFloat { args, buf } => {
                buf.clear();
                for a in args.iter_mut() {
                    buf.push(a.eval(row).unwrap_or(f64::NAN));
                }
                Some(ArrayRef::F64(buf))
            }
            ArrNode::BuildInt { args, buf } => {
                buf.clear();
                for a in args.iter_mut() {
                    buf.push(a.eval(row)?);
                }
                Some(ArrayRef::I64(buf))
            }
        }
    }
}
