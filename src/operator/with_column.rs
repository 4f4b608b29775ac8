//! `with_column = { name, expr }`: evaluates an expression into a column
//! (adding it, or shadowing an earlier column of that name).

use serde::Deserialize;
use toml::Spanned as TomlSpanned;

use super::{Ctx, Flow, Step};
use crate::config::{ConfigError, Spanned, StepChecker};
use crate::expr::Expr;
use crate::plan::Planner;
use crate::row::{Column, Columns, Row, Slot};
use crate::state::TableSpec;

/// The step's table in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWithColumn {
    name: TomlSpanned<String>,
    expr: TomlSpanned<String>,
}

/// A checked `with_column` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithColumnConfig {
    /// The new column's name (non-empty).
    pub name: Spanned<String>,
    /// Its expression (non-empty).
    pub expr: Spanned<String>,
}

impl WithColumnConfig {
    pub(crate) fn check(
        raw: RawWithColumn,
        c: &mut StepChecker<'_>,
    ) -> Result<WithColumnConfig, ConfigError> {
        Ok(WithColumnConfig {
            name: c.non_empty(raw.name, "name", "column name")?,
            expr: c.non_empty(raw.expr, "expr", "expression")?,
        })
    }
}

/// Evaluates `expr` on the row and stores the result in column `out`.
#[derive(Debug, Clone)]
pub struct WithColumn {
    name: String,
    expr: Expr,
    out: usize,
    /// Evaluation lands here first (the result may borrow the row), then is
    /// swapped into the row; both buffers cycle without allocating.
    scratch: Slot,
}

impl WithColumn {
    /// Compiles the expression and adds its column.
    pub fn plan(config: &WithColumnConfig, p: &mut Planner<'_>) -> Result<WithColumn, ConfigError> {
        let expr = p.compile(&config.expr, "expr")?;
        let out = p.add_column(Column {
            name: config.name.value.clone(),
            ty: expr.ty(),
            nullable: expr.nullable(),
        });
        Ok(WithColumn {
            name: config.name.value.clone(),
            expr,
            out,
            scratch: Slot::default(),
        })
    }
}

impl Step for WithColumn {
    #[inline]
    fn apply(&mut self, row: &mut Row, _: &mut Ctx<'_>, _: &mut Vec<u8>) -> Flow {
        let value = self.expr.eval(row);
        self.scratch.set(value);
        row.swap_slot(self.out, &mut self.scratch);
        Flow::Continue
    }

    fn describe(&self, columns: &Columns, _: &[TableSpec]) -> String {
        let c = columns.get(self.out);
        format!(
            "with_column {} = {}  -> {}: {}{}",
            self.name,
            self.expr.source(),
            self.name,
            c.ty,
            if c.nullable { " (nullable)" } else { "" }
        )
    }
}
