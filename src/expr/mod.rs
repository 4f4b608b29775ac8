//! SQL expressions: parsed once with `sqlparser`, compiled against a route's
//! [`Columns`] into a typed evaluator, evaluated per request.
//!
//! [`compile`] resolves every column to its index, checks every operand's
//! type, picks each operator's implementation for those types, and folds
//! subexpressions that read no column into constants. [`Expr::eval`] then
//! does no parsing, no name lookup and no allocation: functions that build
//! text (`lower`, `concat`, `CAST(x AS string)`, ...) write into scratch
//! buffers owned by their node and reused from one request to the next.
//! Each shard clones its own [`Expr`] (it is `Clone + Send`, not `Sync`).
//!
//! # Syntax
//!
//! Column names (case-sensitive; `"double quoted"` or `` `backticked` ``
//! for odd characters or keywords), literals (`42` int64, `4.2`/`1e3`
//! float64, `'text'` taken verbatim with `''` for a quote, `E'\n'` for
//! C-style escapes, `TRUE`/`FALSE`, `NULL`), `+ - * / %`, unary `-`/`+`,
//! `||`,
//! `= <> != < <= > >= <=>`, `AND OR NOT`, `IS [NOT] NULL|TRUE|FALSE|UNKNOWN`,
//! `IS [NOT] DISTINCT FROM`, `[NOT] IN (...)`, `[NOT] BETWEEN a AND b`,
//! `[NOT] LIKE p [ESCAPE 'c']`, `CASE [x] WHEN ... THEN ... [ELSE ...] END`,
//! `CAST(x AS t)` / `TRY_CAST` / `x::t` for t in string (varchar, text,
//! utf8), bigint (int, integer, int64, long), double (float, real,
//! float64), boolean (bool); functions (case-insensitive): `length`
//! (`char_length`), `lower` (`lcase`), `upper` (`ucase`), `trim` (also
//! `TRIM([BOTH|LEADING|TRAILING] chars FROM s)`), `ltrim`, `rtrim`,
//! `concat`, `substring`/`substr` (also `SUBSTRING(s FROM p FOR n)`),
//! `abs`, `round`, `floor`, `ceil`/`ceiling`, `sqrt`, `exp`, `ln`,
//! `pow`/`power`, `mod`, `least`, `greatest`, `coalesce`, `nvl`/`ifnull`,
//! `if(c, a, b)`. Subqueries, aggregates, window functions and `WHERE` are
//! rejected with an error, as is anything else sqlparser accepts that is
//! not listed here. An expression may be up to 16 KiB long and 128 levels
//! deep (a chain `a + b + c ...` is one level per operator).
//!
//! # Semantics: Spark SQL with ANSI mode off
//!
//! - NULL propagates through arithmetic, comparisons and functions
//!   (`concat` with any NULL is NULL). `AND`/`OR` use three-valued logic
//!   (`false AND NULL` = false, `true OR NULL` = true); `NOT NULL` is NULL.
//! - `/` always yields float64; `/` or `%` by zero is NULL. `%` on int64
//!   is int64 with the sign of the dividend. int64 overflow wraps. int64
//!   mixed with float64 (arithmetic, comparison, `CASE`, `IN`, ...)
//!   promotes to float64.
//! - Comparisons order NaN above every number and equal to itself,
//!   `-0.0 = 0.0`; text compares by UTF-8 bytes; `false < true`.
//! - `x IN (...)` with no match and a NULL in the list is NULL; `BETWEEN`
//!   is `x >= a AND x <= b`. `<=>`/`IS NOT DISTINCT FROM` treat two NULLs
//!   as equal and are never NULL.
//! - `CAST` of unparsable text is NULL (`CAST('abc' AS bigint)`); text to
//!   bigint accepts surrounding blanks, a sign and a discarded fraction
//!   (`'1.9'` → 1) and is NULL out of range; text to boolean accepts
//!   `t/true/y/yes/1` and `f/false/n/no/0`. float to bigint truncates toward
//!   zero (NaN → 0, ±Infinity saturate); bool ↔ number is 1/0, number → bool
//!   is `x <> 0`. Anything to string prints like Spark: `1.0`, `1.0E7`,
//!   `1.0E-4`, `NaN`, `Infinity`, shortest round-trip digits.
//! - `length` counts characters. `substring(s, pos[, len])` is 1-based,
//!   `pos` 0 acts as 1, negative `pos` counts from the end, `len <= 0`
//!   gives `''`. `trim` removes spaces only (or the given characters).
//!   `lower`/`upper` map full Unicode, per character.
//! - `round(x[, d])` rounds HALF_UP (on the shortest decimal repr, so
//!   `round(2.675, 2)` = 2.68), keeps int64 for int64 input, `d` may be
//!   negative and must be a constant. `floor`/`ceil` return int64.
//!   `sqrt`/`exp`/`ln`/`pow` return float64; `ln(x <= 0)` is NULL,
//!   `sqrt(-1)` is NaN. `abs(i64::MIN)` wraps.
//! - `least`/`greatest` skip NULLs (NULL only if all are); `coalesce`
//!   returns the first non-NULL argument.
//! - `LIKE`: `%` any run, `_` one character, default escape `\`, which may
//!   only precede `%`, `_` or itself. Constant patterns are checked and
//!   compiled once; a per-row pattern that is invalid yields NULL.
//! - Types are checked at compile time; text, numbers and booleans are
//!   never coerced into each other implicitly (except by `concat`, which
//!   formats its arguments like `CAST(x AS string)`): `length(1)`, `'a' = 1`
//!   and `b = 1` are errors. A bare
//!   `NULL` takes the type its context needs; an expression that is only
//!   `NULL` has type utf8.

mod ast;
mod cast;
mod compile;
mod functions;
mod like;
mod node;
#[cfg(test)]
mod tests;

use crate::row::{ColumnType, Columns, Row, Val};
use node::AnyNode;

/// A compiled expression, bound to the [`Columns`] it was compiled against.
#[derive(Debug, Clone)]
pub struct Expr {
    root: AnyNode,
    ty: ColumnType,
    nullable: bool,
    source: String,
}

impl Expr {
    /// The result type.
    pub fn ty(&self) -> ColumnType {
        self.ty
    }

    /// False only when the result can never be null.
    pub fn nullable(&self) -> bool {
        self.nullable
    }

    /// Evaluates the expression against a row laid out like the columns it
    /// was compiled against. Never fails: every operation has a defined
    /// result, often NULL. Text results borrow the row or the expression's
    /// scratch buffers, hence `&mut self`.
    ///
    /// # Panics
    ///
    /// If `row` has fewer slots than the columns the expression reads.
    #[inline]
    pub fn eval<'a>(&'a mut self, row: &'a Row) -> Val<'a> {
        self.root.eval(row)
    }

    /// The source text the expression was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Parses and compiles `sql` against `columns`.
///
/// ```
/// use coreline::expr::compile;
/// use coreline::row::{Column, ColumnType, Columns, Row, Val};
///
/// let mut columns = Columns::new();
/// let foo = columns.push(Column { name: "foo".into(), ty: ColumnType::Utf8, nullable: false });
/// let mut length = compile("length(foo)", &columns).unwrap();
/// assert_eq!(length.ty(), ColumnType::Int64);
///
/// let mut row = Row::with_width(columns.len());
/// row.slot_mut(foo).set(Val::Str("hello world"));
/// assert_eq!(length.eval(&row), Val::Int(11));
///
/// let err = compile("length(bar)", &columns).unwrap_err();
/// assert_eq!(err.message, r#"unknown column "bar"; known columns: foo"#);
/// assert_eq!(err.offset, 7);
/// ```
pub fn compile(sql: &str, columns: &Columns) -> Result<Expr, ExprError> {
    let compiled = compile::compile(sql, columns)?;
    Ok(Expr {
        root: compiled.root,
        ty: compiled.ty,
        nullable: compiled.nullable,
        source: sql.to_string(),
    })
}

/// Why an expression does not compile: what was wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// What was wrong and what was expected, e.g. `length() expects utf8,
    /// found int64 (column "bar")`.
    pub message: String,
    /// Byte offset into the source of the offending token or column; 0 when
    /// unknown.
    pub offset: usize,
}

impl ExprError {
    fn new(message: impl Into<String>, offset: usize) -> ExprError {
        ExprError {
            message: message.into(),
            offset,
        }
    }

    /// The message, then the source with a caret under the offending
    /// position, for showing to a person:
    ///
    /// ```text
    /// length() expects utf8, found int64 (column "bar")
    ///   length(bar) + 1
    ///          ^
    /// ```
    pub fn render(&self, source: &str) -> String {
        let mut offset = self.offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[offset..]
            .find('\n')
            .map_or(source.len(), |i| offset + i);
        let column = source[line_start..offset].chars().count();
        format!(
            "{}\n  {}\n  {}^",
            self.message,
            &source[line_start..line_end],
            " ".repeat(column)
        )
    }
}
