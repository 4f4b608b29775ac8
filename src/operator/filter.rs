//! `filter = { expr, status, message }`: answers early unless the predicate
//! is true. As in SQL `WHERE`, a null predicate rejects the row.

use serde::Deserialize;
use toml::Spanned as TomlSpanned;

use super::{Ctx, Flow, Step};
use crate::config::{ConfigError, Spanned, StepChecker};
use crate::expr::Expr;
use crate::plan::Planner;
use crate::reply::write_error_json;
use crate::row::{ColumnType, Columns, Row, Val};
use crate::state::TableSpec;

/// The step's table in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFilter {
    expr: TomlSpanned<String>,
    status: Option<TomlSpanned<i64>>,
    message: Option<TomlSpanned<String>>,
}

/// A checked `filter` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfig {
    /// The predicate (non-empty).
    pub expr: Spanned<String>,
    /// 400..=599; default 400.
    pub status: u16,
    /// Default `filtered: <expr>`.
    pub message: String,
}

impl FilterConfig {
    pub(crate) fn check(
        raw: RawFilter,
        c: &mut StepChecker<'_>,
    ) -> Result<FilterConfig, ConfigError> {
        let expr = c.non_empty(raw.expr, "expr", "expression")?;
        let status = match &raw.status {
            None => 400,
            Some(s) => {
                let v = *s.get_ref();
                if !(400..=599).contains(&v) {
                    return Err(c
                        .error(
                            s.span(),
                            "status",
                            format!("status {v} is not an error status"),
                        )
                        .with_expected("an HTTP status in 400..=599"));
                }
                v as u16
            }
        };
        let message = match raw.message {
            Some(m) => m.into_inner(),
            None => format!("filtered: {}", expr.value),
        };
        Ok(FilterConfig {
            expr,
            status,
            message,
        })
    }
}

/// Rejects the request with `status` and a pre-encoded JSON error body when
/// the predicate is false or null.
#[derive(Debug, Clone)]
pub struct Filter {
    predicate: Expr,
    status: u16,
    message: String,
    /// `{"error":"<message>"}`, encoded once at build time.
    body: Vec<u8>,
}

impl Filter {
    /// Compiles the predicate, which must be a bool.
    pub fn plan(config: &FilterConfig, p: &mut Planner<'_>) -> Result<Filter, ConfigError> {
        let predicate = p.compile(&config.expr, "expr")?;
        if predicate.ty() != ColumnType::Boolean {
            return Err(p.error(
                config.expr.span.clone(),
                "expr",
                format!("a filter needs a bool expression, found {}", predicate.ty()),
            ));
        }
        let mut body = Vec::new();
        write_error_json(&mut body, &config.message, None);
        Ok(Filter {
            predicate,
            status: config.status,
            message: config.message.clone(),
            body,
        })
    }
}

impl Step for Filter {
    /// Evaluates the predicate; on rejection copies the error body out.
    #[inline]
    fn apply(&mut self, row: &mut Row, _: &mut Ctx<'_>, error_body: &mut Vec<u8>) -> Flow {
        match self.predicate.eval(row) {
            Val::Bool(true) => Flow::Continue,
            _ => {
                error_body.clear();
                error_body.extend_from_slice(&self.body);
                Flow::Reply(self.status)
            }
        }
    }

    fn describe(&self, _: &Columns, _: &[TableSpec]) -> String {
        format!(
            "filter {}  else {} \"{}\"",
            self.predicate.source(),
            self.status,
            self.message
        )
    }
}
