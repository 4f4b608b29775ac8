//! The sqlparser side of expressions: parsing one expression (generic
//! dialect, whole input consumed, length limit), byte offsets of tokens for
//! errors, and walking the AST (children, depth, names of constructs).

use sqlparser::ast::{
    self, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectNamePart, UnaryOperator, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use super::ExprError;

pub(super) type Ast = ast::Expr;

type Result<T> = std::result::Result<T, ExprError>;

/// Longest source accepted. sqlparser builds chains like `a + b + c ...`
/// without recursion but drops them recursively; 16 KiB bounds such a
/// chain to 8192 levels, which a 2 MiB stack drops safely even unoptimized.
const MAX_LEN: usize = 16 * 1024;

/// Parses one expression; the whole input must be consumed.
pub(super) fn parse(sql: &str) -> Result<Ast> {
    if sql.trim().is_empty() {
        return Err(ExprError::new("empty expression", 0));
    }
    if sql.len() > MAX_LEN {
        return Err(ExprError::new(
            format!(
                "expression is {} bytes long; the limit is {MAX_LEN}",
                sql.len()
            ),
            MAX_LEN,
        ));
    }
    let dialect = GenericDialect {};
    let mut tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| parser_error(sql, e.into()))?;
    array_calls_as_brackets(&mut tokens);
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let expr = parser.parse_expr().map_err(|e| parser_error(sql, e))?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        let offset = byte_offset(sql, next.span.start).unwrap_or(0);
        let message = match &next.token {
            Token::Word(w) if w.keyword == Keyword::WHERE => {
                "WHERE is not supported in expressions (use a filter step)".to_string()
            }
            Token::Word(w) if w.keyword == Keyword::AS => {
                "AS (aliases) is not supported in expressions: the step names its column"
                    .to_string()
            }
            t => format!("unexpected `{t}` after the end of the expression"),
        };
        return Err(ExprError::new(message, offset));
    }
    Ok(expr)
}

/// Rewrites Spark's `array(a, b)` into `ARRAY[a, b]`: sqlparser's generic
/// dialect reads `ARRAY(...)` as an array subquery, and its bracket form
/// is the same vector constructor. Only the two parentheses change, so
/// every token keeps its position for error messages.
fn array_calls_as_brackets(tokens: &mut [TokenWithSpan]) {
    let significant = |t: &TokenWithSpan| !matches!(t.token, Token::Whitespace(_));
    for i in 0..tokens.len() {
        let is_array = matches!(&tokens[i].token, Token::Word(w) if w.keyword == Keyword::ARRAY && w.quote_style.is_none());
        if !is_array {
            continue;
        }
        let Some(open) = (i + 1..tokens.len()).find(|&j| significant(&tokens[j])) else {
            continue;
        };
        if tokens[open].token != Token::LParen {
            continue;
        }
        let mut depth = 0usize;
        for j in open..tokens.len() {
            match tokens[j].token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        tokens[open].token = Token::LBracket;
                        tokens[j].token = Token::RBracket;
                        break;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Turns a sqlparser error (whose text ends in ` at Line: L, Column: C`
/// when it has a position) into an [`ExprError`] with a byte offset.
pub(super) fn parser_error(src: &str, e: ParserError) -> ExprError {
    let text = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => {
            return ExprError::new("expression is nested too deeply", 0);
        }
    };
    let (message, offset) = match text.rfind(" at Line: ") {
        Some(i) => {
            let loc = text[i + " at Line: ".len()..]
                .split_once(", Column: ")
                .and_then(|(l, c)| Some(Location::new(l.parse().ok()?, c.parse().ok()?)));
            let offset = loc.and_then(|l| byte_offset(src, l)).unwrap_or(0);
            (&text[..i], offset)
        }
        // Errors at the end of input carry no position.
        None if text.contains("found: EOF") => (text.as_str(), src.len()),
        None => (text.as_str(), 0),
    };
    let message = message.replace("found: EOF", "found: end of input");
    ExprError::new(format!("syntax error: {message}"), offset)
}

/// The byte offset of a sqlparser location (1-based line, 1-based column
/// counted in characters); `None` for the empty location.
pub(super) fn byte_offset(src: &str, loc: Location) -> Option<usize> {
    if loc.line == 0 || loc.column == 0 {
        return None;
    }
    let mut start = 0;
    for _ in 1..loc.line {
        start += src[start..].find('\n')? + 1;
    }
    let rest = &src[start..];
    let col = (loc.column - 1) as usize;
    Some(start + rest.char_indices().nth(col).map_or(rest.len(), |(i, _)| i))
}

/// How an AST node is named in error messages. Only called on nodes that
/// were compiled, so their depth is bounded.
pub(super) fn describe(e: &Ast) -> String {
    match e {
        Ast::Identifier(id) => format!("column \"{}\"", id.value),
        Ast::Nested(inner) => describe(inner),
        Ast::Value(v) if v.value == Value::Null => "NULL".to_string(),
        Ast::Value(v) => format!("literal {}", v.value),
        Ast::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } if matches!(**expr, Ast::Value(_)) => format!("literal {e}"),
        _ => {
            let mut text = e.to_string();
            if let Some((cut, _)) = text.char_indices().nth(60) {
                text.truncate(cut);
                text.push_str("...");
            }
            format!("expression `{text}`")
        }
    }
}

/// Where a node starts in the source, found without recursion (sqlparser's
/// `Spanned` recurses through the whole subtree): a leaf's own position,
/// else where its first subexpression (in source order, as
/// [`for_each_child`] gives them) starts.
pub(super) fn start(mut e: &Ast) -> Option<Location> {
    loop {
        e = match e {
            Ast::Identifier(id) => return Some(id.span.start),
            Ast::CompoundIdentifier(ids) => return ids.first().map(|i| i.span.start),
            Ast::Value(v) => return Some(v.span.start),
            Ast::TypedString(t) => return Some(t.value.span.start),
            Ast::Case { case_token, .. } => return Some(case_token.0.span.start),
            Ast::Function(f) => {
                return match f.name.0.first() {
                    Some(ObjectNamePart::Identifier(id)) => Some(id.span.start),
                    _ => None,
                };
            }
            // Rejected constructs: where their operand starts.
            Ast::AnyOp { left: x, .. }
            | Ast::AllOp { left: x, .. }
            | Ast::InSubquery { expr: x, .. }
            | Ast::InUnnest { expr: x, .. }
            | Ast::Convert { expr: x, .. }
            | Ast::Extract { expr: x, .. }
            | Ast::Overlay { expr: x, .. }
            | Ast::Collate { expr: x, .. }
            | Ast::Named { expr: x, .. }
            | Ast::AtTimeZone { timestamp: x, .. } => x,
            _ => {
                let mut first = None;
                for_each_child(e, |c| {
                    first.get_or_insert(c);
                });
                first?
            }
        };
    }
}

/// Calls `f` on every subexpression of the node kinds coreline compiles,
/// in source order: the one walk of the AST, used for depth ([`too_deep`])
/// and positions ([`start`]). It does not enter the constructs coreline
/// rejects, so that they are named in errors however deep their insides.
pub(super) fn for_each_child<'a>(e: &'a Ast, mut f: impl FnMut(&'a Ast)) {
    match e {
        Ast::BinaryOp { left, right, .. }
        | Ast::IsDistinctFrom(left, right)
        | Ast::IsNotDistinctFrom(left, right) => {
            f(left);
            f(right);
        }
        Ast::UnaryOp { expr, .. }
        | Ast::Nested(expr)
        | Ast::IsFalse(expr)
        | Ast::IsNotFalse(expr)
        | Ast::IsTrue(expr)
        | Ast::IsNotTrue(expr)
        | Ast::IsNull(expr)
        | Ast::IsNotNull(expr)
        | Ast::IsUnknown(expr)
        | Ast::IsNotUnknown(expr)
        | Ast::Cast { expr, .. }
        | Ast::Ceil { expr, .. }
        | Ast::Floor { expr, .. } => f(expr),
        Ast::InList { expr, list, .. } => {
            f(expr);
            list.iter().for_each(f);
        }
        Ast::Between {
            expr, low, high, ..
        } => {
            f(expr);
            f(low);
            f(high);
        }
        Ast::Like {
            expr,
            pattern,
            escape_char,
            ..
        }
        | Ast::ILike {
            expr,
            pattern,
            escape_char,
            ..
        }
        | Ast::SimilarTo {
            expr,
            pattern,
            escape_char,
            ..
        } => {
            f(expr);
            f(pattern);
            if let Some(c) = escape_char {
                f(c);
            }
        }
        Ast::RLike { expr, pattern, .. }
        | Ast::Position {
            expr,
            r#in: pattern,
        } => {
            f(expr);
            f(pattern);
        }
        Ast::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            if let Some(o) = operand {
                f(o);
            }
            for w in conditions {
                f(&w.condition);
                f(&w.result);
            }
            if let Some(x) = else_result {
                f(x);
            }
        }
        Ast::Function(func) => {
            if let FunctionArguments::List(list) = &func.args {
                for a in &list.args {
                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(x))
                    | FunctionArg::Named {
                        arg: FunctionArgExpr::Expr(x),
                        ..
                    }
                    | FunctionArg::ExprNamed {
                        arg: FunctionArgExpr::Expr(x),
                        ..
                    } = a
                    {
                        f(x);
                    }
                }
            }
        }
        Ast::Substring {
            expr,
            substring_from,
            substring_for,
            ..
        } => {
            f(expr);
            substring_from
                .iter()
                .chain(substring_for)
                .for_each(|x| f(x));
        }
        Ast::Trim {
            expr,
            trim_what,
            trim_characters,
            ..
        } => {
            // `TRIM(BOTH what FROM expr)`: `what` comes first.
            if let Some(w) = trim_what {
                f(w);
            }
            f(expr);
            trim_characters.iter().flatten().for_each(f);
        }
        _ => {}
    }
}

/// The first node found deeper than `limit`, by an explicit-stack walk
/// (left-deep chains such as `a + b + c ...` can be thousands deep).
pub(super) fn too_deep(root: &Ast, limit: usize) -> Option<&Ast> {
    let mut stack = vec![(root, 1usize)];
    while let Some((e, depth)) = stack.pop() {
        if depth > limit {
            return Some(e);
        }
        for_each_child(e, |c| stack.push((c, depth + 1)));
    }
    None
}

/// The name of a construct coreline does not support, for errors.
pub(super) fn construct_name(e: &Ast) -> &'static str {
    match e {
        Ast::TypedString(_) => "typed literals (DATE '...', TIMESTAMP '...')",
        Ast::Interval(_) => "INTERVAL",
        Ast::Extract { .. } => "EXTRACT",
        Ast::Position { .. } => "POSITION",
        Ast::Overlay { .. } => "OVERLAY",
        Ast::Collate { .. } => "COLLATE",
        Ast::AtTimeZone { .. } => "AT TIME ZONE",
        Ast::Convert { .. } => "CONVERT",
        Ast::AnyOp { .. } | Ast::AllOp { .. } => "ANY/ALL comparisons",
        Ast::InUnnest { .. } => "IN UNNEST",
        Ast::Array(_) | Ast::Map(_) | Ast::Struct { .. } | Ast::Tuple(_) => {
            "arrays, maps, structs and tuples"
        }
        Ast::CompoundFieldAccess { .. } | Ast::JsonAccess { .. } => "field and element access",
        Ast::Lambda(_) => "lambda functions",
        Ast::IsNormalized { .. } | Ast::IsJson { .. } => "IS NORMALIZED / IS JSON",
        Ast::GroupingSets(_) | Ast::Cube(_) | Ast::Rollup(_) => "grouping sets",
        _ => "this syntax",
    }
}
