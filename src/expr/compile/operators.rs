//! Lowering SQL operators to typed nodes: unary and binary operators,
//! arithmetic, comparisons, `AND`/`OR`, the `IS` tests, `IN`, `BETWEEN`,
//! `LIKE`, `CAST` and `CASE`. Part of [`Compiler`]; the invariants are
//! those of the parent module.

use std::iter;

use sqlparser::ast::{self, BinaryOperator, DataType, UnaryOperator, Value, ValueWithSpan};

use crate::expr::ExprError;
use crate::expr::ast::{Ast, describe};
use crate::expr::like::Matcher;
use crate::expr::node::{
    AnyNode, Between, BoolNode, Case, Cmp, EQ, FloatNode, GT, InList, IntNode, KeyMatch, LT, Like,
    LikePattern, Pair, Selector, StrNode,
};
use crate::row::ColumnType;

use super::{Arg, Arith, Compiler, Node, NodeType, Num, Result, Typed, any_node, fold};

impl Compiler<'_> {
    pub(super) fn unary(&mut self, op: &UnaryOperator, x: &Ast, e: &Ast) -> Result<Typed> {
        match op {
            UnaryOperator::Minus => {
                if let Ast::Value(ValueWithSpan {
                    value: Value::Number(text, _),
                    ..
                }) = x
                {
                    return self.number(text, true, x);
                }
                let t = self.expr(x)?;
                let (nullable, konst) = (t.nullable, t.konst);
                let node = match self.numeric(t, x, "unary -")? {
                    Num::Null => return Ok(Typed::null()),
                    Num::Int(n) => Node::Int(IntNode::Neg(Box::new(n))),
                    Num::Float(n) => Node::Float(FloatNode::Neg(Box::new(n))),
                };
                Ok(fold(node, nullable, konst))
            }
            UnaryOperator::Plus => {
                let t = self.expr(x)?;
                match t.ty() {
                    Some(ty) if !ty.is_numeric() => Err(self.error(
                        x,
                        format!("unary + expects a number, found {ty} ({})", describe(x)),
                    )),
                    _ => Ok(t),
                }
            }
            UnaryOperator::Not => {
                let t = self.expr(x)?;
                let (nullable, konst) = (t.nullable, t.konst);
                let b = self.want::<BoolNode>(t, x, "NOT")?;
                Ok(fold(
                    Node::Bool(BoolNode::Not(Box::new(b))),
                    nullable,
                    konst,
                ))
            }
            other => Err(self.error(e, format!("unary operator {other} is not supported"))),
        }
    }

    pub(super) fn binary(
        &mut self,
        op: &BinaryOperator,
        l: &Ast,
        r: &Ast,
        e: &Ast,
    ) -> Result<Typed> {
        use BinaryOperator as B;
        match op {
            B::Plus => self.arith(Arith::Add, l, r),
            B::Minus => self.arith(Arith::Sub, l, r),
            B::Multiply => self.arith(Arith::Mul, l, r),
            B::Divide => self.arith(Arith::Div, l, r),
            B::Modulo => self.arith(Arith::Rem, l, r),
            B::StringConcat => self.concat(&[l, r]),
            B::Eq => self.compare(l, r, EQ, false, "="),
            B::NotEq => self.compare(l, r, LT | GT, false, "<>"),
            B::Lt => self.compare(l, r, LT, false, "<"),
            B::LtEq => self.compare(l, r, LT | EQ, false, "<="),
            B::Gt => self.compare(l, r, GT, false, ">"),
            B::GtEq => self.compare(l, r, GT | EQ, false, ">="),
            B::Spaceship => self.compare(l, r, EQ, true, "<=>"),
            B::And => self.logic(true, l, r),
            B::Or => self.logic(false, l, r),
            other => {
                let symbol = other.to_string();
                let offset = self
                    .find_after(self.offset(l), &symbol)
                    .unwrap_or_else(|| self.offset(e));
                Err(ExprError::new(
                    format!("operator {symbol} is not supported"),
                    offset,
                ))
            }
        }
    }

    pub(super) fn arith(&mut self, op: Arith, l_ast: &Ast, r_ast: &Ast) -> Result<Typed> {
        let l = self.expr(l_ast)?;
        let r = self.expr(r_ast)?;
        let sym = op.symbol();
        for (t, at) in [(&l, l_ast), (&r, r_ast)] {
            if let Some(ty) = t.ty()
                && !ty.is_numeric()
            {
                return Err(self.error(
                    at,
                    format!("{sym} expects numbers, found {ty} ({})", describe(at)),
                ));
            }
        }
        let divides = matches!(op, Arith::Div | Arith::Rem);
        let nullable = l.nullable || r.nullable || (divides && !r.node.is_nonzero_const());
        let konst = l.konst && r.konst;
        let float = op == Arith::Div
            || l.ty() == Some(ColumnType::Float64)
            || r.ty() == Some(ColumnType::Float64);
        if !float && l.ty().is_none() && r.ty().is_none() {
            return Ok(Typed::null());
        }
        let node = if float {
            let p = Box::new(Pair(
                self.want::<FloatNode>(l, l_ast, sym)?,
                self.want::<FloatNode>(r, r_ast, sym)?,
            ));
            Node::Float(match op {
                Arith::Add => FloatNode::Add(p),
                Arith::Sub => FloatNode::Sub(p),
                Arith::Mul => FloatNode::Mul(p),
                Arith::Div => FloatNode::Div(p),
                Arith::Rem => FloatNode::Rem(p),
            })
        } else {
            let p = Box::new(Pair(
                self.want::<IntNode>(l, l_ast, sym)?,
                self.want::<IntNode>(r, r_ast, sym)?,
            ));
            Node::Int(match op {
                Arith::Add => IntNode::Add(p),
                Arith::Sub => IntNode::Sub(p),
                Arith::Mul => IntNode::Mul(p),
                Arith::Div | Arith::Rem => IntNode::Rem(p),
            })
        };
        Ok(fold(node, nullable, konst))
    }

    pub(super) fn compare(
        &mut self,
        l_ast: &Ast,
        r_ast: &Ast,
        mask: u8,
        null_safe: bool,
        sym: &str,
    ) -> Result<Typed> {
        let l = self.arg(l_ast)?;
        let r = self.arg(r_ast)?;
        for a in [&l, &r] {
            if let Some(ty) = a.t.ty().filter(|t| t.is_array()) {
                return Err(self.no_array(ty, a.at));
            }
        }
        let ty = match (l.t.ty(), r.t.ty()) {
            (Some(a), Some(b)) if a == b => Some(a),
            (Some(a), Some(b)) if a.is_numeric() && b.is_numeric() => Some(ColumnType::Float64),
            (Some(a), Some(b)) => {
                return Err(self.error(
                    l_ast,
                    format!(
                        "cannot compare {a} with {b}: {} {sym} {}",
                        describe(l_ast),
                        describe(r_ast)
                    ),
                ));
            }
            (a, b) => a.or(b),
        };
        let nullable = !null_safe && (l.t.nullable || r.t.nullable);
        let konst = l.t.konst && r.t.konst;
        let Some(ty) = ty else {
            let v = null_safe.then_some(mask & EQ != 0);
            return Ok(Typed::constant(Node::Bool(BoolNode::Const(v))));
        };
        let node = with_type!(ty, N => N::cmp(Cmp {
            l: self.want::<N>(l.t, l.at, sym)?,
            r: self.want::<N>(r.t, r.at, sym)?,
            mask,
            null_safe,
        }));
        Ok(fold(Node::Bool(node), nullable, konst))
    }

    pub(super) fn logic(&mut self, and: bool, l_ast: &Ast, r_ast: &Ast) -> Result<Typed> {
        let sym = if and { "AND" } else { "OR" };
        let l = self.expr(l_ast)?;
        let r = self.expr(r_ast)?;
        let (nullable, konst) = (l.nullable || r.nullable, l.konst && r.konst);
        let p = Box::new(Pair(
            self.want::<BoolNode>(l, l_ast, sym)?,
            self.want::<BoolNode>(r, r_ast, sym)?,
        ));
        let node = if and {
            BoolNode::And(p)
        } else {
            BoolNode::Or(p)
        };
        Ok(fold(Node::Bool(node), nullable, konst))
    }

    pub(super) fn is_null(&mut self, x: &Ast, negated: bool) -> Result<Typed> {
        let t = self.expr(x)?;
        let konst = t.konst;
        let arg = Box::new(any_node(t.node));
        Ok(fold(
            Node::Bool(BoolNode::IsNull { arg, negated }),
            false,
            konst,
        ))
    }

    pub(super) fn is_bool(
        &mut self,
        x: &Ast,
        value: bool,
        negated: bool,
        sym: &str,
    ) -> Result<Typed> {
        let t = self.expr(x)?;
        let konst = t.konst;
        let arg = Box::new(self.want::<BoolNode>(t, x, sym)?);
        let node = BoolNode::IsBool {
            arg,
            value,
            negated,
        };
        Ok(fold(Node::Bool(node), false, konst))
    }

    pub(super) fn is_unknown(&mut self, x: &Ast, negated: bool) -> Result<Typed> {
        let t = self.expr(x)?;
        let konst = t.konst;
        let sym = if negated {
            "IS NOT UNKNOWN"
        } else {
            "IS UNKNOWN"
        };
        let arg = Box::new(AnyNode::Bool(self.want::<BoolNode>(t, x, sym)?));
        Ok(fold(
            Node::Bool(BoolNode::IsNull { arg, negated }),
            false,
            konst,
        ))
    }

    pub(super) fn in_list(&mut self, x: &Ast, list: &[Ast], negated: bool) -> Result<Typed> {
        let x = self.arg(x)?;
        let items = self.args(list)?;
        let ty = self.unify(iter::once(&x).chain(&items), |a, b| {
            format!("cannot compare {a} with {b} in IN list")
        })?;
        let nullable = x.t.nullable || items.iter().any(|a| a.t.nullable);
        let konst = x.t.konst && items.iter().all(|a| a.t.konst);
        let Some(ty) = ty else {
            return Ok(Typed::constant(Node::Bool(BoolNode::Const(None))));
        };
        let node = with_type!(ty, N => N::in_list(InList {
            x: self.want::<N>(x.t, x.at, "IN")?,
            items: self.want_all::<N>(items, "IN")?,
            negated,
        }));
        Ok(fold(Node::Bool(node), nullable, konst))
    }

    pub(super) fn between(&mut self, x: &Ast, lo: &Ast, hi: &Ast, negated: bool) -> Result<Typed> {
        let x = self.arg(x)?;
        let lo = self.arg(lo)?;
        let hi = self.arg(hi)?;
        let ty = self.unify([&x, &lo, &hi], |a, b| {
            format!("cannot compare {a} with {b} in BETWEEN")
        })?;
        let nullable = x.t.nullable || lo.t.nullable || hi.t.nullable;
        let konst = x.t.konst && lo.t.konst && hi.t.konst;
        let Some(ty) = ty else {
            return Ok(Typed::constant(Node::Bool(BoolNode::Const(None))));
        };
        let node = with_type!(ty, N => N::between(Between {
            x: self.want::<N>(x.t, x.at, "BETWEEN")?,
            lo: self.want::<N>(lo.t, lo.at, "BETWEEN")?,
            hi: self.want::<N>(hi.t, hi.at, "BETWEEN")?,
            negated,
        }));
        Ok(fold(Node::Bool(node), nullable, konst))
    }

    pub(super) fn like(
        &mut self,
        x: &Ast,
        pattern: &Ast,
        escape: Option<&Ast>,
        negated: bool,
    ) -> Result<Typed> {
        let escape = match escape {
            None => '\\',
            Some(e) => match e {
                Ast::Value(ValueWithSpan {
                    value: Value::SingleQuotedString(s),
                    ..
                }) if s.chars().count() == 1 => s.chars().next().unwrap_or('\\'),
                Ast::Value(_) => {
                    return Err(self.error(
                        e,
                        format!(
                            "ESCAPE expects a one-character string literal, found {}",
                            describe(e)
                        ),
                    ));
                }
                _ => {
                    return Err(self.error(
                        e,
                        "ESCAPE expects a one-character string literal, found an expression",
                    ));
                }
            },
        };
        let s = self.expr(x)?;
        let p = self.expr(pattern)?;
        let konst = s.konst && p.konst;
        let mut nullable = s.nullable || p.nullable;
        let arg = self.want::<StrNode>(s, x, "LIKE")?;
        let pattern_node = self.want::<StrNode>(p, pattern, "LIKE pattern")?;
        let pattern = match pattern_node {
            StrNode::Const(None) => return Ok(Typed::constant(Node::Bool(BoolNode::Const(None)))),
            StrNode::Const(Some(text)) => {
                LikePattern::Const(Matcher::compile(&text, escape).map_err(|err| {
                    self.error(pattern, format!("invalid LIKE pattern '{text}': {err}"))
                })?)
            }
            dynamic => {
                // A pattern computed per row may turn out invalid: NULL then.
                nullable = true;
                LikePattern::Dynamic {
                    pattern: dynamic,
                    escape,
                    scratch: Vec::new(),
                }
            }
        };
        let node = BoolNode::Like(Box::new(Like {
            arg,
            pattern,
            negated,
        }));
        Ok(fold(Node::Bool(node), nullable, konst))
    }

    pub(super) fn cast(&mut self, x: &Ast, data_type: &DataType) -> Result<Typed> {
        let Some(target) = cast_target(data_type) else {
            let name = data_type.to_string();
            let offset = self
                .find_after(self.offset(x), &name)
                .unwrap_or_else(|| self.offset(x));
            return Err(ExprError::new(
                format!(
                    "cannot CAST to {name}: supported types are string (varchar, utf8), \
                     bigint (int, integer, int64), double (float, float64), boolean (bool)"
                ),
                offset,
            ));
        };
        let t = self.expr(x)?;
        let Some(from) = t.ty() else {
            return Ok(Typed::constant(Node::null_of(target)));
        };
        if from.is_array() {
            return Err(self.error(
                x,
                format!("cannot CAST {from} to {target} ({})", describe(x)),
            ));
        }
        if from == target {
            return Ok(t);
        }
        let nullable = t.nullable || from == ColumnType::Utf8;
        let konst = t.konst;
        use ColumnType as T;
        let node = match (t.node, target) {
            (Node::Int(n), T::Float64) => Node::Float(FloatNode::FromInt(Box::new(n))),
            (Node::Int(n), T::Boolean) => Node::Bool(BoolNode::FromInt(Box::new(n))),
            (Node::Int(n), T::Utf8) => Node::Str(StrNode::FromInt {
                arg: Box::new(n),
                buf: String::new(),
            }),
            (Node::Float(n), T::Int64) => Node::Int(IntNode::FromFloat(Box::new(n))),
            (Node::Float(n), T::Boolean) => Node::Bool(BoolNode::FromFloat(Box::new(n))),
            (Node::Float(n), T::Utf8) => Node::Str(StrNode::FromFloat {
                arg: Box::new(n),
                buf: String::new(),
            }),
            (Node::Bool(n), T::Int64) => Node::Int(IntNode::FromBool(Box::new(n))),
            (Node::Bool(n), T::Float64) => Node::Float(FloatNode::FromBool(Box::new(n))),
            (Node::Bool(n), T::Utf8) => Node::Str(StrNode::FromBool(Box::new(n))),
            (Node::Str(n), T::Int64) => Node::Int(IntNode::FromStr(Box::new(n))),
            (Node::Str(n), T::Float64) => Node::Float(FloatNode::FromStr(Box::new(n))),
            (Node::Str(n), T::Boolean) => Node::Bool(BoolNode::FromStr(Box::new(n))),
            // Same type (returned above) or NULL (handled above).
            (node, _) => node,
        };
        Ok(fold(node, nullable, konst))
    }

    pub(super) fn case(
        &mut self,
        operand: Option<&Ast>,
        whens: &[ast::CaseWhen],
        otherwise: Option<&Ast>,
    ) -> Result<Typed> {
        let key = operand.map(|o| self.arg(o)).transpose()?;
        let mut conds = Vec::with_capacity(whens.len());
        let mut thens = Vec::with_capacity(whens.len());
        for w in whens {
            conds.push(self.arg(&w.condition)?);
            thens.push(self.arg(&w.result)?);
        }
        let otherwise = otherwise.map(|o| self.arg(o)).transpose()?;
        let konst = key.as_ref().is_none_or(|k| k.t.konst) && conds.iter().all(|c| c.t.konst);
        let selector = match key {
            None => Selector::Searched(self.want_all::<BoolNode>(conds, "CASE WHEN")?),
            Some(key) => {
                let ty = self
                    .unify(iter::once(&key).chain(&conds), |a, b| {
                        format!("cannot compare {a} with {b} in CASE")
                    })?
                    .unwrap_or(ColumnType::Boolean);
                let key = with_type!(ty, N => N::key(KeyMatch {
                    operand: self.want::<N>(key.t, key.at, "CASE")?,
                    values: self.want_all::<N>(conds, "CASE WHEN")?,
                }));
                Selector::Simple(Box::new(key))
            }
        };
        self.build_case(selector, konst, thens, otherwise, "CASE branches")
    }

    /// A `CASE` (or `if()`) whose selector is built; `konst` says whether
    /// the selector reads no column.
    pub(super) fn build_case(
        &self,
        selector: Selector,
        konst: bool,
        thens: Vec<Arg>,
        otherwise: Option<Arg>,
        what: &str,
    ) -> Result<Typed> {
        let ty = self.unify(thens.iter().chain(&otherwise), |a, b| {
            format!("{what} have different types: {a} and {b}")
        })?;
        let nullable =
            otherwise.as_ref().is_none_or(|o| o.t.nullable) || thens.iter().any(|a| a.t.nullable);
        let konst = konst && thens.iter().chain(&otherwise).all(|a| a.t.konst);
        let Some(ty) = ty else {
            return Ok(Typed::null());
        };
        let node = with_type!(ty, N => N::case(Case {
            selector,
            thens: self.want_all::<N>(thens, "CASE")?,
            otherwise: otherwise
                .map(|o| self.want::<N>(o.t, o.at, "CASE"))
                .transpose()?,
        })
        .into_node());
        Ok(fold(node, nullable, konst))
    }
}

/// The coreline type a SQL type name casts to.
fn cast_target(data_type: &DataType) -> Option<ColumnType> {
    use DataType as D;
    Some(match data_type {
        D::String(_)
        | D::Varchar(_)
        | D::Text
        | D::CharacterVarying(_)
        | D::CharVarying(_)
        | D::Nvarchar(_) => ColumnType::Utf8,
        D::BigInt(_) | D::Int(_) | D::Integer(_) | D::Int64 => ColumnType::Int64,
        D::Double(_) | D::DoublePrecision | D::Float(_) | D::Float64 | D::Float8 | D::Real => {
            ColumnType::Float64
        }
        D::Bool | D::Boolean => ColumnType::Boolean,
        D::Custom(name, modifiers) if modifiers.is_empty() && name.0.len() == 1 => {
            match name.to_string().to_ascii_lowercase().as_str() {
                "long" => ColumnType::Int64,
                other => ColumnType::parse(other).filter(|t| !t.is_array())?,
            }
        }
        _ => return None,
    })
}
