//! `select = { columns }`: only these columns stay visible to later steps
//! and the reply. Resolved entirely at plan time; nothing runs per request.

use serde::Deserialize;
use toml::Spanned as TomlSpanned;

use super::{Ctx, Flow, Step};
use crate::config::{ConfigError, Spanned, StepChecker};
use crate::plan::Planner;
use crate::row::{Columns, Row};
use crate::state::TableSpec;

/// The step's table in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSelect {
    columns: TomlSpanned<Vec<TomlSpanned<String>>>,
}

/// A checked `select` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectConfig {
    /// At least one, no duplicates.
    pub columns: Vec<Spanned<String>>,
}

impl SelectConfig {
    pub(crate) fn check(
        raw: RawSelect,
        c: &mut StepChecker<'_>,
    ) -> Result<SelectConfig, ConfigError> {
        Ok(SelectConfig {
            columns: c.column_list(raw.columns, "columns")?,
        })
    }
}

/// The kept columns (for the description; the plan did the work).
#[derive(Debug, Clone)]
pub struct Select {
    columns: Vec<String>,
}

impl Select {
    /// Hides every column not named.
    pub fn plan(config: &SelectConfig, p: &mut Planner<'_>) -> Result<Select, ConfigError> {
        let key = p.key("columns");
        let kept = config
            .columns
            .iter()
            .map(|name| p.column(name, &key))
            .collect::<Result<Vec<usize>, ConfigError>>()?;
        p.keep_only(&kept);
        Ok(Select {
            columns: config.columns.iter().map(|c| c.value.clone()).collect(),
        })
    }
}

impl Step for Select {
    #[inline]
    fn apply(&mut self, _: &mut Row, _: &mut Ctx<'_>, _: &mut Vec<u8>) -> Flow {
        Flow::Continue
    }

    fn describe(&self, _: &Columns, _: &[TableSpec]) -> String {
        format!("select {}", self.columns.join(", "))
    }

    fn runs(&self) -> bool {
        false
    }
}
