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

use std::iter;

use sqlparser::ast::{
    self, BinaryOperator, CeilFloorKind, DataType, DateTimeField, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, ObjectNamePart, TrimWhereField, UnaryOperator, Value, ValueWithSpan,
};

use super::ExprError;
use super::functions::TrimSide;
use super::like::Matcher;
use super::node::{
    AnyNode, ArrNode, Between, BoolNode, Case, CaseKey, Cmp, Coalesce, EQ, ElementAt, Eval,
    Extreme, FloatNode, GT, InList, IntNode, KeyMatch, LT, Like, LikePattern, Pair, Selector,
    StrNode,
};
use crate::row::{ColumnType, Columns, Row};

use super::ast::{Ast, byte_offset, construct_name, describe, parse, start, too_deep};

/// Deepest nesting accepted. Compilation and evaluation recurse once per
/// level, and so do sqlparser's `Display` and `Spanned` (whose debug-build
/// frames are several KiB: ~300 levels exhaust a 2 MiB thread stack).
const MAX_DEPTH: usize = 128;

/// Functions that exist in SQL but aggregate over rows.
const AGGREGATES: &[&str] = &[
    "any",
    "any_value",
    "approx_count_distinct",
    "array_agg",
    "avg",
    "bool_and",
    "bool_or",
    "collect_list",
    "collect_set",
    "count",
    "count_if",
    "every",
    "first",
    "first_value",
    "last",
    "last_value",
    "max",
    "max_by",
    "mean",
    "median",
    "min",
    "min_by",
    "percentile",
    "percentile_approx",
    "some",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "sum",
    "var_pop",
    "var_samp",
    "variance",
];

/// Window-only functions.
const WINDOW_FUNCTIONS: &[&str] = &[
    "cume_dist",
    "dense_rank",
    "lag",
    "lead",
    "nth_value",
    "ntile",
    "percent_rank",
    "rank",
    "row_number",
];

/// Every function name [`Compiler::function`] accepts (plus the special
/// forms `substring`/`substr`/`trim`/`ceil`/`floor` parsed by sqlparser).
const FUNCTIONS: &str = "abs, array, cardinality, ceil, ceiling, char_length, character_length, \
coalesce, concat, element_at, exp, floor, greatest, if, ifnull, lcase, least, length, ln, lower, \
ltrim, mod, model_version, nvl, pow, power, round, rtrim, size, sqrt, substr, substring, trim, ucase, \
upper";

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
        (from..hay.len().saturating_sub(n.len()) + 1)
            .find(|&i| hay[i..i + n.len()].eq_ignore_ascii_case(n))
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

    fn unary(&mut self, op: &UnaryOperator, x: &Ast, e: &Ast) -> Result<Typed> {
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

    fn binary(&mut self, op: &BinaryOperator, l: &Ast, r: &Ast, e: &Ast) -> Result<Typed> {
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

    fn arith(&mut self, op: Arith, l_ast: &Ast, r_ast: &Ast) -> Result<Typed> {
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

    fn compare(
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

    fn logic(&mut self, and: bool, l_ast: &Ast, r_ast: &Ast) -> Result<Typed> {
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

    fn is_null(&mut self, x: &Ast, negated: bool) -> Result<Typed> {
        let t = self.expr(x)?;
        let konst = t.konst;
        let arg = Box::new(any_node(t.node));
        Ok(fold(
            Node::Bool(BoolNode::IsNull { arg, negated }),
            false,
            konst,
        ))
    }

    fn is_bool(&mut self, x: &Ast, value: bool, negated: bool, sym: &str) -> Result<Typed> {
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

    fn is_unknown(&mut self, x: &Ast, negated: bool) -> Result<Typed> {
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

    fn in_list(&mut self, x: &Ast, list: &[Ast], negated: bool) -> Result<Typed> {
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

    fn between(&mut self, x: &Ast, lo: &Ast, hi: &Ast, negated: bool) -> Result<Typed> {
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

    fn like(
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

    fn cast(&mut self, x: &Ast, data_type: &DataType) -> Result<Typed> {
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

    fn case(
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
    fn build_case(
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

    /// `model_version('step')`: the version of the model the `score` step
    /// `step` scored this row with (the hidden column that step writes).
    fn model_version(&self, arg: &Ast) -> Result<Typed> {
        let Ast::Value(ValueWithSpan {
            value: Value::SingleQuotedString(step),
            ..
        }) = arg
        else {
            return Err(self.error(
                arg,
                "model_version() takes the name of a score step as a string literal, e.g. model_version('iris')",
            ));
        };
        let column = crate::operator::version_column(step);
        let Some(i) = self.columns.index_of_hidden(&column) else {
            return Err(self.error(
                arg,
                format!("model_version('{step}'): no score step named \"{step}\" runs before this expression in this route"),
            ));
        };
        Ok(Typed {
            node: Node::Str(StrNode::Col(i)),
            nullable: false,
            konst: false,
        })
    }

    fn function(&mut self, f: &ast::Function, e: &Ast) -> Result<Typed> {
        let name = match f.name.0.as_slice() {
            // sqlparser reads `user`, `current_date`, ... as calls without
            // parentheses; a column of that name is what was meant.
            [ObjectNamePart::Identifier(id)] if matches!(f.args, FunctionArguments::None) => {
                return self.column(id);
            }
            [ObjectNamePart::Identifier(id)] => id.value.to_ascii_lowercase(),
            _ => {
                return Err(self.error(
                    e,
                    format!(
                        "function \"{}\" does not exist; known functions: {FUNCTIONS}",
                        f.name
                    ),
                ));
            }
        };
        if AGGREGATES.contains(&name.as_str()) {
            let hint = match name.as_str() {
                "min" => "; for the smaller of several values use least()",
                "max" => "; for the larger of several values use greatest()",
                _ => "; use an aggregate step",
            };
            return Err(self.error(
                e,
                format!("aggregate function {name}() is not supported in expressions{hint}"),
            ));
        }
        if f.over.is_some() || WINDOW_FUNCTIONS.contains(&name.as_str()) {
            return Err(self.error(
                e,
                format!("window function {name}() is not supported in expressions"),
            ));
        }
        if f.filter.is_some()
            || !f.within_group.is_empty()
            || f.null_treatment.is_some()
            || f.uses_odbc_syntax
            || !matches!(f.parameters, FunctionArguments::None)
        {
            return Err(self.error(
                e,
                format!(
                    "{name}(): FILTER, WITHIN GROUP, IGNORE NULLS and parameters are not supported"
                ),
            ));
        }
        let args: Vec<&Ast> = match &f.args {
            FunctionArguments::None => Vec::new(), // handled above
            FunctionArguments::Subquery(_) => {
                return Err(self.error(e, "subqueries are not supported in expressions"));
            }
            FunctionArguments::List(list) => {
                if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                    return Err(self.error(
                        e,
                        format!("{name}(): DISTINCT, ALL and clauses inside the argument list are not supported"),
                    ));
                }
                list.args
                    .iter()
                    .map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => Ok(x),
                        FunctionArg::Unnamed(_) => {
                            Err(self
                                .error(e, format!("{name}(): `*` is not supported as an argument")))
                        }
                        _ => {
                            Err(self
                                .error(e, format!("{name}(): named arguments are not supported")))
                        }
                    })
                    .collect::<Result<_>>()?
            }
        };
        let ctx = format!("{name}()");
        let arity = |min: usize, max: usize| -> Result<()> {
            if (min..=max).contains(&args.len()) {
                return Ok(());
            }
            let expected = match (min, max) {
                (1, 1) => "1 argument".to_string(),
                (a, b) if a == b => format!("{a} arguments"),
                (a, usize::MAX) => {
                    format!("at least {a} argument{}", if a == 1 { "" } else { "s" })
                }
                (a, b) => format!("{a} to {b} arguments"),
            };
            Err(self.error(e, format!("{ctx} takes {expected}, found {}", args.len())))
        };
        match name.as_str() {
            "model_version" => {
                arity(1, 1)?;
                self.model_version(args[0])
            }
            "length" | "char_length" | "character_length" => {
                arity(1, 1)?;
                self.str_fn(args[0], &ctx, |s| Node::Int(IntNode::Length(Box::new(s))))
            }
            "lower" | "lcase" => {
                arity(1, 1)?;
                self.str_fn(args[0], &ctx, |s| {
                    Node::Str(StrNode::Lower {
                        arg: Box::new(s),
                        buf: String::new(),
                    })
                })
            }
            "upper" | "ucase" => {
                arity(1, 1)?;
                self.str_fn(args[0], &ctx, |s| {
                    Node::Str(StrNode::Upper {
                        arg: Box::new(s),
                        buf: String::new(),
                    })
                })
            }
            "ltrim" => {
                arity(1, 1)?;
                self.trim(args[0], TrimSide::Leading, None, &ctx)
            }
            "rtrim" => {
                arity(1, 1)?;
                self.trim(args[0], TrimSide::Trailing, None, &ctx)
            }
            "trim" => {
                arity(1, 2)?;
                self.trim(args[0], TrimSide::Both, args.get(1).copied(), &ctx)
            }
            "concat" => self.concat(&args),
            "abs" => {
                arity(1, 1)?;
                let t = self.expr(args[0])?;
                let (nullable, konst) = (t.nullable, t.konst);
                let node = match self.numeric(t, args[0], &ctx)? {
                    Num::Null => return Ok(Typed::null()),
                    Num::Int(n) => Node::Int(IntNode::Abs(Box::new(n))),
                    Num::Float(n) => Node::Float(FloatNode::Abs(Box::new(n))),
                };
                Ok(fold(node, nullable, konst))
            }
            "round" => {
                arity(1, 2)?;
                let scale = match args.get(1) {
                    Some(d) => self.const_int(d, "round() scale")?,
                    None => 0,
                };
                self.round(args[0], scale, &ctx)
            }
            "floor" | "ceil" | "ceiling" => {
                arity(1, 1)?;
                self.ceil_floor(args[0], name != "floor", &ctx)
            }
            "sqrt" | "exp" | "ln" => {
                arity(1, 1)?;
                let t = self.expr(args[0])?;
                // ln(x <= 0) is NULL.
                let (nullable, konst) = (t.nullable || name == "ln", t.konst);
                let x = Box::new(self.want::<FloatNode>(t, args[0], &ctx)?);
                let node = match name.as_str() {
                    "sqrt" => FloatNode::Sqrt(x),
                    "exp" => FloatNode::Exp(x),
                    _ => FloatNode::Ln(x),
                };
                Ok(fold(Node::Float(node), nullable, konst))
            }
            "pow" | "power" => {
                arity(2, 2)?;
                let a = self.expr(args[0])?;
                let b = self.expr(args[1])?;
                let (nullable, konst) = (a.nullable || b.nullable, a.konst && b.konst);
                let p = Box::new(Pair(
                    self.want::<FloatNode>(a, args[0], &ctx)?,
                    self.want::<FloatNode>(b, args[1], &ctx)?,
                ));
                Ok(fold(Node::Float(FloatNode::Pow(p)), nullable, konst))
            }
            "least" => {
                arity(2, usize::MAX)?;
                self.variadic(&args, Variadic::Least, &ctx)
            }
            "greatest" => {
                arity(2, usize::MAX)?;
                self.variadic(&args, Variadic::Greatest, &ctx)
            }
            "coalesce" => {
                arity(1, usize::MAX)?;
                self.variadic(&args, Variadic::Coalesce, &ctx)
            }
            "nvl" | "ifnull" => {
                arity(2, 2)?;
                self.variadic(&args, Variadic::Coalesce, &ctx)
            }
            "if" => {
                arity(3, 3)?;
                let cond = self.expr(args[0])?;
                let konst = cond.konst;
                let cond = self.want::<BoolNode>(cond, args[0], "if() condition")?;
                let then = self.arg(args[1])?;
                let otherwise = self.arg(args[2])?;
                let selector = Selector::Searched(vec![cond]);
                self.build_case(
                    selector,
                    konst,
                    vec![then],
                    Some(otherwise),
                    "if() branches",
                )
            }
            "mod" => {
                arity(2, 2)?;
                self.arith(Arith::Rem, args[0], args[1])
            }
            "size" | "cardinality" => {
                arity(1, 1)?;
                let t = self.expr(args[0])?;
                let konst = t.konst;
                let arr = self.want_array(t, args[0], &ctx)?;
                Ok(fold(Node::Int(IntNode::Size(Box::new(arr))), false, konst))
            }
            "element_at" => {
                arity(2, 2)?;
                let t = self.expr(args[0])?;
                let ty = t.ty();
                let konst = t.konst;
                let arr = self.want_array(t, args[0], &ctx)?;
                let i = self.expr(args[1])?;
                let konst = konst && i.konst;
                let index = self.want::<IntNode>(i, args[1], "element_at() index")?;
                let e = Box::new(ElementAt { arr, index });
                let node = match ty {
                    Some(ColumnType::Int64Array) => Node::Int(IntNode::ElementAt(e)),
                    _ => Node::Float(FloatNode::ElementAt(e)),
                };
                // Out of range (or index 0) is NULL.
                Ok(fold(node, true, konst))
            }
            "array" => {
                arity(1, usize::MAX)?;
                self.build_array(&args, &ctx)
            }
            _ => Err(self.error(
                e,
                format!("function \"{name}\" does not exist; known functions: {FUNCTIONS}"),
            )),
        }
    }

    /// A vector argument: a vector node, a typed NULL vector, or an error
    /// naming what was found. An untyped NULL is an `array<float64>` NULL.
    fn want_array(&self, t: Typed, at: &Ast, ctx: &str) -> Result<ArrNode> {
        match t.node {
            Node::Arr(n, _) => Ok(n),
            Node::Null => Ok(ArrNode::Null),
            other => Err(self.error(
                at,
                format!(
                    "{ctx} expects an array, found {} ({})",
                    type_name(other.ty()),
                    describe(at)
                ),
            )),
        }
    }

    /// `array(a, b, ...)` / `ARRAY[a, b, ...]`: an `array<int64>` when every
    /// argument is int64 (or NULL), else an `array<float64>` (NULL
    /// arguments are NaN).
    fn build_array(&mut self, xs: &[&Ast], ctx: &str) -> Result<Typed> {
        let args = self.args(xs.iter().copied())?;
        for a in &args {
            if let Some(ty) = a.t.ty()
                && !ty.is_numeric()
            {
                return Err(self.error(
                    a.at,
                    format!("{ctx} expects numbers, found {ty} ({})", describe(a.at)),
                ));
            }
        }
        // An untyped NULL fits an int64 vector (which it makes NULL).
        let ints = args
            .iter()
            .all(|a| matches!(a.t.ty(), None | Some(ColumnType::Int64)))
            && args.iter().any(|a| a.t.ty().is_some());
        let konst = args.iter().all(|a| a.t.konst);
        let node = if ints {
            let nullable = args.iter().any(|a| a.t.nullable);
            let args = self.want_all::<IntNode>(args, ctx)?;
            let buf = Vec::with_capacity(args.len());
            return Ok(fold(
                Node::Arr(ArrNode::BuildInt { args, buf }, ColumnType::Int64Array),
                nullable,
                konst,
            ));
        } else {
            let args = self.want_all::<FloatNode>(args, ctx)?;
            let buf = Vec::with_capacity(args.len());
            Node::Arr(ArrNode::BuildFloat { args, buf }, ColumnType::Float64Array)
        };
        Ok(fold(node, false, konst))
    }

    /// An integer constant argument (such as `round`'s scale).
    fn const_int(&mut self, x: &Ast, what: &str) -> Result<i64> {
        let t = self.expr(x)?;
        match t.node {
            Node::Int(IntNode::Const(Some(v))) => Ok(v),
            _ => Err(self.error(
                x,
                format!("{what} must be an integer constant, found {}", describe(x)),
            )),
        }
    }

    /// A one-argument text function.
    fn str_fn(&mut self, x: &Ast, ctx: &str, build: impl FnOnce(StrNode) -> Node) -> Result<Typed> {
        let t = self.expr(x)?;
        let (nullable, konst) = (t.nullable, t.konst);
        let s = self.want::<StrNode>(t, x, ctx)?;
        Ok(fold(build(s), nullable, konst))
    }

    fn trim(&mut self, x: &Ast, side: TrimSide, chars: Option<&Ast>, ctx: &str) -> Result<Typed> {
        let t = self.expr(x)?;
        let (mut nullable, mut konst) = (t.nullable, t.konst);
        let arg = Box::new(self.want::<StrNode>(t, x, ctx)?);
        let chars = match chars {
            Some(c) => {
                let t = self.expr(c)?;
                nullable |= t.nullable;
                konst &= t.konst;
                Some(Box::new(self.want::<StrNode>(t, c, ctx)?))
            }
            None => None,
        };
        Ok(fold(
            Node::Str(StrNode::Trim { arg, chars, side }),
            nullable,
            konst,
        ))
    }

    fn substring(&mut self, x: &Ast, from: Option<&Ast>, len: Option<&Ast>) -> Result<Typed> {
        let t = self.expr(x)?;
        let (mut nullable, mut konst) = (t.nullable, t.konst);
        let arg = Box::new(self.want::<StrNode>(t, x, "substring()")?);
        let mut int_arg = |this: &mut Self, a: &Ast, what: &str| -> Result<Box<IntNode>> {
            let t = this.expr(a)?;
            nullable |= t.nullable;
            konst &= t.konst;
            Ok(Box::new(this.want::<IntNode>(t, a, what)?))
        };
        let pos = match from {
            Some(p) => int_arg(self, p, "substring() position")?,
            None => Box::new(IntNode::Const(Some(1))),
        };
        let len = match len {
            Some(l) => Some(int_arg(self, l, "substring() length")?),
            None => None,
        };
        Ok(fold(
            Node::Str(StrNode::Substring { arg, pos, len }),
            nullable,
            konst,
        ))
    }

    fn concat(&mut self, xs: &[&Ast]) -> Result<Typed> {
        let mut args = Vec::with_capacity(xs.len());
        let (mut nullable, mut konst) = (false, true);
        for x in xs {
            let t = self.expr(x)?;
            if let Some(ty) = t.ty().filter(|t| t.is_array()) {
                return Err(self.no_array(ty, x));
            }
            nullable |= t.nullable;
            konst &= t.konst;
            args.push(any_node(t.node));
        }
        let node = Node::Str(StrNode::Concat {
            args,
            buf: String::new(),
        });
        Ok(fold(node, nullable, konst))
    }

    fn round(&mut self, x: &Ast, scale: i64, ctx: &str) -> Result<Typed> {
        let t = self.expr(x)?;
        let (nullable, konst) = (t.nullable, t.konst);
        let node = match self.numeric(t, x, ctx)? {
            Num::Null => return Ok(Typed::null()),
            Num::Int(n) if scale >= 0 => Node::Int(n),
            Num::Int(n) => {
                let pow10 = u32::try_from(-scale)
                    .ok()
                    .and_then(|p| 10i128.checked_pow(p))
                    .unwrap_or(0);
                Node::Int(IntNode::Round {
                    arg: Box::new(n),
                    pow10,
                })
            }
            Num::Float(n) => Node::Float(FloatNode::Round {
                arg: Box::new(n),
                scale: scale.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
            }),
        };
        Ok(fold(node, nullable, konst))
    }

    /// `CEIL(x)` / `FLOOR(x)` as parsed by sqlparser's special form.
    fn ceil_floor_form(
        &mut self,
        x: &Ast,
        field: &CeilFloorKind,
        ceil: bool,
        e: &Ast,
    ) -> Result<Typed> {
        let ctx = if ceil { "ceil()" } else { "floor()" };
        if !matches!(
            field,
            CeilFloorKind::DateTimeField(DateTimeField::NoDateTime)
        ) {
            return Err(self.error(
                e,
                format!("{ctx} takes one number; a scale or date part is not supported"),
            ));
        }
        self.ceil_floor(x, ceil, ctx)
    }

    fn ceil_floor(&mut self, x: &Ast, ceil: bool, ctx: &str) -> Result<Typed> {
        let t = self.expr(x)?;
        let (nullable, konst) = (t.nullable, t.konst);
        let node = match self.numeric(t, x, ctx)? {
            Num::Null => return Ok(Typed::constant(Node::Int(IntNode::Const(None)))),
            Num::Int(n) => Node::Int(n),
            Num::Float(f) if ceil => Node::Int(IntNode::Ceil(Box::new(f))),
            Num::Float(f) => Node::Int(IntNode::Floor(Box::new(f))),
        };
        Ok(fold(node, nullable, konst))
    }

    fn variadic(&mut self, xs: &[&Ast], kind: Variadic, ctx: &str) -> Result<Typed> {
        let args = self.args(xs.iter().copied())?;
        let ty = self.unify(&args, |a, b| {
            format!("{ctx} arguments have different types: {a} and {b}")
        })?;
        // Null only when every argument is null.
        let nullable = args.iter().all(|a| a.t.nullable);
        let konst = args.iter().all(|a| a.t.konst);
        let Some(ty) = ty else {
            return Ok(Typed::null());
        };
        let node = with_type!(ty, N => {
            let args = self.want_all::<N>(args, ctx)?;
            match kind {
                Variadic::Coalesce => N::coalesce(Coalesce { args }),
                Variadic::Least => N::extreme(Extreme { args, greatest: false }),
                Variadic::Greatest => N::extreme(Extreme { args, greatest: true }),
            }
            .into_node()
        });
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
