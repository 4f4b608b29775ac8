//! From SQL text to typed nodes: parsing (sqlparser, generic dialect),
//! column resolution, type checking, and constant folding.
//!
//! Invariants of the output:
//! - every column is referenced by index into the [`Columns`] it was
//!   compiled against;
//! - every operator node has operands of the types it expects (ints are
//!   promoted to floats by explicit nodes), so evaluation never re-checks a
//!   type;
//! - a subtree that reads no column is evaluated once here and replaced by
//!   its constant;
//! - errors carry the byte offset into the source of the offending token
//!   (0 when sqlparser gives no position).

use sqlparser::ast::{Ident, TrimWhereField, Value, ValueWithSpan};

use super::ExprError;
use super::functions::TrimSide;
use super::node::{
    AnyNode, ArrNode, Between, BoolNode, Case, CaseKey, Cmp, Coalesce, EQ, Eval, Extreme,
    FloatNode, GT, InList, IntNode, KeyMatch, LT, StrNode,
};
use crate::row::{ColumnType, Columns, Row};

use super::ast::{Ast, byte_offset, construct_name, describe, parse, start, too_deep};

/// Deepest nesting accepted. Compilation and evaluation recurse once per
/// level, and so do sqlparser's `Display` and `Spanned` (whose debug-build
/// frames are several KiB: ~300 levels exhaust a 2 MiB thread stack).
const MAX_DEPTH: usize = 128;

/// The compiled form handed to [`super::Expr`].
pub(crate) struct Compiled {
    pub root: AnyNode,
    pub ty: ColumnType,
    pub nullable: bool,
}

/// Parses and compiles `sql` against `columns`.
pub(crate) fn compile(sql: &str, columns: &Columns) -> Result<Compiled> {
    let ast = parse(sql)?;
    if let Some(deep) = too_deep(&ast, MAX_DEPTH) {
        let offset = start(deep).and_then(|l| byte_offset(sql, l)).unwrap_or(0);
        return Err(ExprError::new(
            format!(
                "expression is nested too deeply (more than {MAX_DEPTH} levels); \
                 split it into several steps"
            ),
            offset,
        ));
    }
    let mut compiler = Compiler {
        src: sql,
        columns,
        depth: 0,
    };
    let t = compiler.expr(&ast)?;
    Ok(Compiled {
        ty: t.ty().unwrap_or(ColumnType::Utf8),
        nullable: t.nullable,
        root: any_node(t.node),
    })
}

/// A type for messages; `null` for an untyped NULL.
fn type_name(ty: Option<ColumnType>) -> &'static str {
    ty.map_or("null", ColumnType::name)
}

/// A compiled subexpression of a known type, or an untyped NULL literal
/// (which takes whatever type its context needs).
enum Node {
    Null,
    Bool(BoolNode),
    Int(IntNode),
    Float(FloatNode),
    Str(StrNode),
    /// A vector and its type (one of the `array<...>` types).
    Arr(ArrNode, ColumnType),
}

impl Node {
    fn ty(&self) -> Option<ColumnType> {
        match self {
            Node::Null => None,
            Node::Bool(_) => Some(ColumnType::Boolean),
            Node::Int(_) => Some(ColumnType::Int64),
            Node::Float(_) => Some(ColumnType::Float64),
            Node::Str(_) => Some(ColumnType::Utf8),
            Node::Arr(_, ty) => Some(*ty),
        }
    }

    fn is_null_const(&self) -> bool {
        matches!(
            self,
            Node::Null
                | Node::Bool(BoolNode::Const(None))
                | Node::Int(IntNode::Const(None))
                | Node::Float(FloatNode::Const(None))
                | Node::Str(StrNode::Const(None))
                | Node::Arr(ArrNode::Null, _)
        )
    }

    fn is_nonzero_const(&self) -> bool {
        match self {
            Node::Int(IntNode::Const(Some(i))) => *i != 0,
            Node::Float(FloatNode::Const(Some(f))) => *f != 0.0,
            _ => false,
        }
    }

    /// A NULL of the given type.
    fn null_of(ty: ColumnType) -> Node {
        match ty {
            ColumnType::Boolean => Node::Bool(BoolNode::Const(None)),
            ColumnType::Int64 => Node::Int(IntNode::Const(None)),
            ColumnType::Float64 => Node::Float(FloatNode::Const(None)),
            ColumnType::Utf8 => Node::Str(StrNode::Const(None)),
            ColumnType::Float64Array | ColumnType::Float32Array | ColumnType::Int64Array => {
                Node::Arr(ArrNode::Null, ty)
            }
        }
    }
}

/// An untyped NULL becomes a null text constant where any node will do.
fn any_node(node: Node) -> AnyNode {
    match node {
        Node::Null => AnyNode::Str(StrNode::Const(None)),
        Node::Bool(n) => AnyNode::Bool(n),
        Node::Int(n) => AnyNode::Int(n),
        Node::Float(n) => AnyNode::Float(n),
        Node::Str(n) => AnyNode::Str(n),
        Node::Arr(n, _) => AnyNode::Arr(n),
    }
}

/// A compiled subexpression with what the compiler knows about it.
struct Typed {
    node: Node,
    /// False only when the value can never be null.
    nullable: bool,
    /// True when it reads no column (and so was folded to a constant).
    konst: bool,
}

impl Typed {
    fn ty(&self) -> Option<ColumnType> {
        self.node.ty()
    }

    fn constant(node: Node) -> Typed {
        Typed {
            nullable: node.is_null_const(),
            node,
            konst: true,
        }
    }

    fn null() -> Typed {
        Typed::constant(Node::Null)
    }
}

/// Finishes a node: when it reads no column it is evaluated now and
/// replaced by its value.
fn fold(node: Node, nullable: bool, konst: bool) -> Typed {
    if !konst {
        return Typed {
            node,
            nullable,
            konst,
        };
    }
    let row = Row::default();
    Typed::constant(match node {
        Node::Null => Node::Null,
        Node::Bool(mut n) => Node::Bool(BoolNode::Const(n.eval(&row))),
        Node::Int(mut n) => Node::Int(IntNode::Const(n.eval(&row))),
        Node::Float(mut n) => Node::Float(FloatNode::Const(n.eval(&row))),
        Node::Str(mut n) => Node::Str(StrNode::Const(n.eval(&row).map(str::to_owned))),
        // Vectors are not folded: a constant `array(1, 2)` is rebuilt per
        // evaluation into its own buffer, which costs no allocation.
        Node::Arr(n, ty) => {
            return Typed {
                node: Node::Arr(n, ty),
                nullable,
                konst,
            };
        }
    })
}

/// A compiled argument and the AST it came from (for error messages).
struct Arg<'e> {
    t: Typed,
    at: &'e Ast,
}

/// The numeric view of an operand.
enum Num {
    Null,
    Int(IntNode),
    Float(FloatNode),
}

/// The operations shared by the four node types, so that generic
/// operators (`CASE`, `IN`, comparisons, ...) are built once.
trait NodeType: Eval + Sized {
    /// What a context expecting this type says it expects.
    const EXPECTED: &'static str;
    /// The node as this type (ints promote to floats; NULL fits all).
    fn from_node(node: Node) -> Option<Self>;
    fn into_node(self) -> Node;
    fn cmp(c: Cmp<Self>) -> BoolNode;
    fn in_list(l: InList<Self>) -> BoolNode;
    fn between(b: Between<Self>) -> BoolNode;
    fn key(k: KeyMatch<Self>) -> CaseKey;
    fn case(c: Case<Self>) -> Self;
    fn coalesce(c: Coalesce<Self>) -> Self;
    fn extreme(e: Extreme<Self>) -> Self;
}

macro_rules! node_type {
    ($t:ident, $variant:ident, $expected:literal, $cmp:ident, $in:ident, $between:ident, $key:ident) => {
        impl NodeType for $t {
            const EXPECTED: &'static str = $expected;
            fn from_node(node: Node) -> Option<Self> {
                match node {
                    Node::$variant(n) => Some(n),
                    Node::Null => Some($t::Const(None)),
                    _ => None,
                }
            }
            fn into_node(self) -> Node {
                Node::$variant(self)
            }
            fn cmp(c: Cmp<Self>) -> BoolNode {
                BoolNode::$cmp(Box::new(c))
            }
            fn in_list(l: InList<Self>) -> BoolNode {
                BoolNode::$in(Box::new(l))
            }
            fn between(b: Between<Self>) -> BoolNode {
                BoolNode::$between(Box::new(b))
            }
            fn key(k: KeyMatch<Self>) -> CaseKey {
                CaseKey::$key(k)
            }
            fn case(c: Case<Self>) -> Self {
                $t::Case(Box::new(c))
            }
            fn coalesce(c: Coalesce<Self>) -> Self {
                $t::Coalesce(Box::new(c))
            }
            fn extreme(e: Extreme<Self>) -> Self {
                $t::Extreme(Box::new(e))
            }
        }
    };
}

node_type!(BoolNode, Bool, "bool", CmpBool, InBool, BetweenBool, Bool);
node_type!(IntNode, Int, "int64", CmpInt, InInt, BetweenInt, Int);
node_type!(StrNode, Str, "utf8", CmpStr, InStr, BetweenStr, Str);

impl NodeType for FloatNode {
    const EXPECTED: &'static str = "a number";
    fn from_node(node: Node) -> Option<Self> {
        match node {
            Node::Float(n) => Some(n),
            Node::Int(IntNode::Const(v)) => Some(FloatNode::Const(v.map(|i| i as f64))),
            Node::Int(n) => Some(FloatNode::FromInt(Box::new(n))),
            Node::Null => Some(FloatNode::Const(None)),
            _ => None,
        }
    }
    fn into_node(self) -> Node {
        Node::Float(self)
    }
    fn cmp(c: Cmp<Self>) -> BoolNode {
        BoolNode::CmpFloat(Box::new(c))
    }
    fn in_list(l: InList<Self>) -> BoolNode {
        BoolNode::InFloat(Box::new(l))
    }
    fn between(b: Between<Self>) -> BoolNode {
        BoolNode::BetweenFloat(Box::new(b))
    }
    fn key(k: KeyMatch<Self>) -> CaseKey {
        CaseKey::Float(k)
    }
    fn case(c: Case<Self>) -> Self {
        FloatNode::Case(Box::new(c))
    }
    fn coalesce(c: Coalesce<Self>) -> Self {
        FloatNode::Coalesce(Box::new(c))
    }
    fn extreme(e: Extreme<Self>) -> Self {
        FloatNode::Extreme(Box::new(e))
    }
}

/// Runs `$body` with `$n` bound to the node type of a [`ColumnType`].
macro_rules! with_type {
    ($ty:expr, $n:ident => $body:expr) => {
        match $ty {
            ColumnType::Boolean => {
                type $n = BoolNode;
                $body
            }
            ColumnType::Int64 => {
                type $n = IntNode;
                $body
            }
            ColumnType::Float64 => {
                type $n = FloatNode;
                $body
            }
            ColumnType::Utf8 => {
                type $n = StrNode;
                $body
            }
            // Callers refuse vectors first (`no_arrays`), with a position.
            ty @ (ColumnType::Float64Array | ColumnType::Float32Array | ColumnType::Int64Array) => {
                return Err(ExprError::new(format!("{ty} is not supported here"), 0));
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl Arith {
    fn symbol(self) -> &'static str {
        match self {
            Arith::Add => "+",
            Arith::Sub => "-",
            Arith::Mul => "*",
            Arith::Div => "/",
            Arith::Rem => "%",
        }
    }
}

/// `least`, `greatest` or `coalesce`.
#[derive(Debug, Clone, Copy)]
enum Variadic {
    Least,
    Greatest,
    Coalesce,
}

struct Compiler<'s> {
    src: &'s str,
    columns: &'s Columns,
    depth: usize,
}

type Result<T> = std::result::Result<T, ExprError>;

impl Compiler<'_> {
    fn error(&self, at: &Ast, message: impl Into<String>) -> ExprError {
        ExprError::new(message, self.offset(at))
    }

    fn offset(&self, at: &Ast) -> usize {
        start(at)
            .and_then(|l| byte_offset(self.src, l))
            .unwrap_or(0)
    }

    /// Case-insensitive search for `needle` in the source from `from`, for
    /// things sqlparser keeps no position for (operators, type names).
    fn find_after(&self, from: usize, needle: &str) -> Option<usize> {
        let hay = self.src.as_bytes();
        let n = needle.as_bytes();
        // The needle is rendered by sqlparser and can be longer than the
        // source text it came from (`t::d40mT(...)` renders its arguments).
        let last = hay.len().checked_sub(n.len())?;
        (from..=last).find(|&i| hay[i..i + n.len()].eq_ignore_ascii_case(n))
    }

    /// `want::<N>`: the typed node, or an error naming what was expected
    /// and what was found.
    fn want<N: NodeType>(&self, t: Typed, at: &Ast, ctx: &str) -> Result<N> {
        let found = t.ty();
        N::from_node(t.node).ok_or_else(|| {
            self.error(
                at,
                format!(
                    "{ctx} expects {}, found {} ({})",
                    N::EXPECTED,
                    type_name(found),
                    describe(at)
                ),
            )
        })
    }

    /// The error for a vector where only scalars are supported.
    fn no_array(&self, ty: ColumnType, at: &Ast) -> ExprError {
        self.error(
            at,
            format!(
                "expected a scalar (utf8, int64, float64 or bool), found {ty} ({}); \
                 read an element with element_at() or the length with size()",
                describe(at)
            ),
        )
    }

    fn want_all<N: NodeType>(&self, args: Vec<Arg>, ctx: &str) -> Result<Vec<N>> {
        args.into_iter()
            .map(|a| self.want::<N>(a.t, a.at, ctx))
            .collect()
    }

    fn numeric(&self, t: Typed, at: &Ast, ctx: &str) -> Result<Num> {
        match t.node {
            Node::Null => Ok(Num::Null),
            Node::Int(n) => Ok(Num::Int(n)),
            Node::Float(n) => Ok(Num::Float(n)),
            other => Err(self.error(
                at,
                format!(
                    "{ctx} expects a number, found {} ({})",
                    type_name(other.ty()),
                    describe(at)
                ),
            )),
        }
    }

    /// The common type of `args`: equal types, or int64 with float64
    /// giving float64; untyped NULLs fit anything. `None` when all are NULL.
    fn unify<'x, 'e: 'x>(
        &self,
        args: impl IntoIterator<Item = &'x Arg<'e>>,
        mismatch: impl Fn(ColumnType, ColumnType) -> String,
    ) -> Result<Option<ColumnType>> {
        let mut acc: Option<ColumnType> = None;
        for a in args {
            let Some(ty) = a.t.ty() else { continue };
            if ty.is_array() {
                return Err(self.no_array(ty, a.at));
            }
            acc = match acc {
                None => Some(ty),
                Some(prev) if prev == ty => Some(ty),
                Some(prev) if prev.is_numeric() && ty.is_numeric() => Some(ColumnType::Float64),
                Some(prev) => {
                    return Err(
                        self.error(a.at, format!("{} ({})", mismatch(prev, ty), describe(a.at)))
                    );
                }
            };
        }
        Ok(acc)
    }

    fn arg<'e>(&mut self, e: &'e Ast) -> Result<Arg<'e>> {
        Ok(Arg {
            t: self.expr(e)?,
            at: e,
        })
    }

    fn args<'e>(&mut self, es: impl IntoIterator<Item = &'e Ast>) -> Result<Vec<Arg<'e>>> {
        es.into_iter().map(|e| self.arg(e)).collect()
    }

    fn expr(&mut self, e: &Ast) -> Result<Typed> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(
                e,
                format!("expression is nested too deeply (more than {MAX_DEPTH} levels)"),
            ));
        }
        self.depth += 1;
        let t = self.expr_inner(e);
        self.depth -= 1;
        t
    }

    fn expr_inner(&mut self, e: &Ast) -> Result<Typed> {
        match e {
            Ast::Identifier(id) => self.column(id),
            Ast::CompoundIdentifier(parts) => {
                let name: Vec<&str> = parts.iter().map(|p| p.value.as_str()).collect();
                Err(self.error(
                    e,
                    format!(
                        "qualified name `{}` is not supported: refer to a column by its plain \
                         name, double-quoted if it has odd characters (\"{}\")",
                        name.join("."),
                        name.join(".")
                    ),
                ))
            }
            Ast::Value(v) => self.literal(v, e),
            Ast::Nested(inner) => self.expr(inner),
            Ast::UnaryOp { op, expr } => self.unary(op, expr, e),
            Ast::BinaryOp { left, op, right } => self.binary(op, left, right, e),
            Ast::IsNull(x) => self.is_null(x, false),
            Ast::IsNotNull(x) => self.is_null(x, true),
            Ast::IsTrue(x) => self.is_bool(x, true, false, "IS TRUE"),
            Ast::IsNotTrue(x) => self.is_bool(x, true, true, "IS NOT TRUE"),
            Ast::IsFalse(x) => self.is_bool(x, false, false, "IS FALSE"),
            Ast::IsNotFalse(x) => self.is_bool(x, false, true, "IS NOT FALSE"),
            Ast::IsUnknown(x) => self.is_unknown(x, false),
            Ast::IsNotUnknown(x) => self.is_unknown(x, true),
            Ast::IsDistinctFrom(a, b) => self.compare(a, b, LT | GT, true, "IS DISTINCT FROM"),
            Ast::IsNotDistinctFrom(a, b) => self.compare(a, b, EQ, true, "IS NOT DISTINCT FROM"),
            Ast::InList {
                expr,
                list,
                negated,
            } => self.in_list(expr, list, *negated),
            Ast::Between {
                expr,
                negated,
                low,
                high,
            } => self.between(expr, low, high, *negated),
            Ast::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any {
                    return Err(self.error(e, "LIKE ANY is not supported"));
                }
                self.like(expr, pattern, escape_char.as_deref(), *negated)
            }
            Ast::ILike { .. } => Err(self.error(
                e,
                "ILIKE is not supported; use lower(x) LIKE 'lower-case pattern'",
            )),
            Ast::SimilarTo { .. } | Ast::RLike { .. } => Err(self.error(
                e,
                "regular expressions (SIMILAR TO, RLIKE, REGEXP) are not supported; use LIKE",
            )),
            Ast::Cast {
                expr,
                data_type,
                format,
                ..
            } => {
                if format.is_some() {
                    return Err(self.error(e, "CAST ... FORMAT is not supported"));
                }
                self.cast(expr, data_type)
            }
            Ast::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(operand.as_deref(), conditions, else_result.as_deref()),
            Ast::Function(f) => self.function(f, e),
            Ast::Array(array) => {
                if array.elem.is_empty() {
                    return Err(self.error(e, "array() takes at least 1 argument, found 0"));
                }
                let elems: Vec<&Ast> = array.elem.iter().collect();
                self.build_array(&elems, "array()")
            }
            Ast::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => self.substring(expr, substring_from.as_deref(), substring_for.as_deref()),
            Ast::Trim {
                expr,
                trim_where,
                trim_what,
                trim_characters,
            } => {
                let side = match trim_where {
                    None | Some(TrimWhereField::Both) => TrimSide::Both,
                    Some(TrimWhereField::Leading) => TrimSide::Leading,
                    Some(TrimWhereField::Trailing) => TrimSide::Trailing,
                };
                let chars = match (trim_what, trim_characters.as_deref()) {
                    (Some(what), _) => Some(&**what),
                    (None, Some([one])) => Some(one),
                    (None, Some([])) | (None, None) => None,
                    (None, Some([_, second, ..])) => {
                        return Err(
                            self.error(second, "trim() takes one string of characters to remove")
                        );
                    }
                };
                self.trim(expr, side, chars, "trim()")
            }
            Ast::Ceil { expr, field } => self.ceil_floor_form(expr, field, true, e),
            Ast::Floor { expr, field } => self.ceil_floor_form(expr, field, false, e),
            Ast::Subquery(_) | Ast::Exists { .. } | Ast::InSubquery { .. } => {
                Err(self.error(e, "subqueries are not supported in expressions"))
            }
            Ast::Wildcard(_) | Ast::QualifiedWildcard(..) => {
                Err(self.error(e, "`*` is not supported in expressions"))
            }
            _ => Err(self.error(
                e,
                format!("{} is not supported in expressions", construct_name(e)),
            )),
        }
    }

    fn column(&self, id: &Ident) -> Result<Typed> {
        let Some(i) = self.columns.index_of(&id.value) else {
            let mut message = format!("unknown column \"{}\"", id.value);
            if let Some(j) = self.columns.index_of_ignore_case(&id.value) {
                message += &format!(" (did you mean \"{}\"?)", self.columns.get(j).name);
            } else if id.quote_style == Some('"') {
                message += &format!(
                    " (double quotes name a column; write text in single quotes: '{}')",
                    id.value
                );
            }
            let names = self.columns.visible_names();
            if names.is_empty() {
                message += "; there are no columns";
            } else {
                message += &format!("; known columns: {}", names.join(", "));
            }
            let offset = byte_offset(self.src, id.span.start)
                .or_else(|| self.src.find(&id.value))
                .unwrap_or(0);
            return Err(ExprError::new(message, offset));
        };
        let c = self.columns.get(i);
        let node = match c.ty {
            ColumnType::Boolean => Node::Bool(BoolNode::Col(i)),
            ColumnType::Int64 => Node::Int(IntNode::Col(i)),
            ColumnType::Float64 => Node::Float(FloatNode::Col(i)),
            ColumnType::Utf8 => Node::Str(StrNode::Col(i)),
            ty @ (ColumnType::Float64Array | ColumnType::Float32Array | ColumnType::Int64Array) => {
                Node::Arr(ArrNode::Col(i), ty)
            }
        };
        Ok(Typed {
            node,
            nullable: c.nullable,
            konst: false,
        })
    }

    fn literal(&self, v: &ValueWithSpan, e: &Ast) -> Result<Typed> {
        let node = match &v.value {
            Value::Number(text, _) => return self.number(text, false, e),
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::UnicodeStringLiteral(s)
            | Value::TripleSingleQuotedString(s)
            | Value::NationalStringLiteral(s) => Node::Str(StrNode::Const(Some(s.clone()))),
            Value::Boolean(b) => Node::Bool(BoolNode::Const(Some(*b))),
            Value::Null => Node::Null,
            other => return Err(self.error(e, format!("unsupported literal {other}"))),
        };
        Ok(Typed::constant(node))
    }

    /// A numeric literal: digits only is int64, anything else float64.
    /// `negative` folds a leading minus in, so that i64::MIN is writable.
    fn number(&self, text: &str, negative: bool, e: &Ast) -> Result<Typed> {
        let signed = if negative {
            format!("-{text}")
        } else {
            text.to_string()
        };
        let node = if text.bytes().all(|b| b.is_ascii_digit()) {
            match signed.parse::<i64>() {
                Ok(i) => Node::Int(IntNode::Const(Some(i))),
                Err(_) => {
                    return Err(self.error(
                        e,
                        format!(
                            "integer literal {signed} does not fit in int64; \
                             write {signed}.0 for a float64"
                        ),
                    ));
                }
            }
        } else {
            match signed.parse::<f64>() {
                Ok(f) => Node::Float(FloatNode::Const(Some(f))),
                Err(_) => return Err(self.error(e, format!("invalid number literal {signed}"))),
            }
        };
        Ok(Typed::constant(node))
    }
}

// After the macros above: `node_type!` and `with_type!` are in textual
// scope only below their definitions.
mod builtins;
mod operators;
