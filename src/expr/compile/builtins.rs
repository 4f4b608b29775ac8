//! Lowering SQL function calls to typed nodes: the functions coreline
//! knows (string, numeric, array and conditional ones), and the messages
//! for the SQL functions it refuses (aggregates, window functions). Part
//! of [`Compiler`]; the invariants are those of the parent module.

use sqlparser::ast::{
    self, CeilFloorKind, DateTimeField, FunctionArg, FunctionArgExpr, FunctionArguments,
    ObjectNamePart, Value, ValueWithSpan,
};

use crate::expr::ExprError;
use crate::expr::ast::{Ast, describe};
use crate::expr::functions::TrimSide;
use crate::expr::node::{
    ArrNode, BoolNode, Coalesce, ElementAt, Extreme, FloatNode, IntNode, Pair, Selector, StrNode,
};
use crate::row::ColumnType;

use super::{
    Arith, Compiler, Node, NodeType, Num, Result, Typed, Variadic, any_node, fold, type_name,
};

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

impl Compiler<'_> {
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

    pub(super) fn function(&mut self, f: &ast::Function, e: &Ast) -> Result<Typed> {
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
    pub(super) fn want_array(&self, t: Typed, at: &Ast, ctx: &str) -> Result<ArrNode> {
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
    pub(super) fn build_array(&mut self, xs: &[&Ast], ctx: &str) -> Result<Typed> {
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
    pub(super) fn const_int(&mut self, x: &Ast, what: &str) -> Result<i64> {
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
    pub(super) fn str_fn(
        &mut self,
        x: &Ast,
        ctx: &str,
        build: impl FnOnce(StrNode) -> Node,
    ) -> Result<Typed> {
        let t = self.expr(x)?;
        let (nullable, konst) = (t.nullable, t.konst);
        let s = self.want::<StrNode>(t, x, ctx)?;
        Ok(fold(build(s), nullable, konst))
    }

    pub(super) fn trim(
        &mut self,
        x: &Ast,
        side: TrimSide,
        chars: Option<&Ast>,
        ctx: &str,
    ) -> Result<Typed> {
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

    pub(super) fn substring(
        &mut self,
        x: &Ast,
        from: Option<&Ast>,
        len: Option<&Ast>,
    ) -> Result<Typed> {
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

    pub(super) fn concat(&mut self, xs: &[&Ast]) -> Result<Typed> {
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

    pub(super) fn round(&mut self, x: &Ast, scale: i64, ctx: &str) -> Result<Typed> {
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
    pub(super) fn ceil_floor_form(
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

    pub(super) fn ceil_floor(&mut self, x: &Ast, ceil: bool, ctx: &str) -> Result<Typed> {
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

    pub(super) fn variadic(&mut self, xs: &[&Ast], kind: Variadic, ctx: &str) -> Result<Typed> {
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
