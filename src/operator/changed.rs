//! `changed = { name, key, value, output }`: whether `value` differs from the
//! key's last one (the first value of a key counts as a change), kept in a
//! table on the shard that owns the key.

use serde::Deserialize;
use toml::Spanned as TomlSpanned;

use super::{Ctx, Flow, Inputs, KeyedUpdate, Step};
use crate::config::{ConfigError, Spanned, StepChecker};
use crate::expr::Expr;
use crate::forward::{KeyedOp, KeyedReply};
use crate::plan::Planner;
use crate::row::{Column, ColumnType, Columns, Row, Slot};
use crate::state::TableSpec;

/// The step's table in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChanged {
    name: TomlSpanned<String>,
    key: TomlSpanned<String>,
    value: TomlSpanned<String>,
    output: TomlSpanned<String>,
}

/// A checked `changed` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedConfig {
    /// The state's name, unique among the service's keyed states.
    pub name: Spanned<String>,
    /// The key column.
    pub key: Spanned<String>,
    /// The expression whose changes are tracked.
    pub value: Spanned<String>,
    /// The output column's name.
    pub output: Spanned<String>,
}

impl ChangedConfig {
    pub(crate) fn check(
        raw: RawChanged,
        c: &mut StepChecker<'_>,
    ) -> Result<ChangedConfig, ConfigError> {
        let name = c.non_empty(raw.name, "name", "state name")?;
        c.declare_state(&name, "name")?;
        Ok(ChangedConfig {
            name,
            key: c.non_empty(raw.key, "key", "key column")?,
            value: c.non_empty(raw.value, "value", "expression")?,
            output: c.non_empty(raw.output, "output", "column name")?,
        })
    }
}

/// `changed { name, key, value, output }`, compiled.
#[derive(Debug, Clone)]
pub struct Changed {
    /// Table, key and the bool output slot.
    pub keyed: KeyedUpdate,
    /// The compared value.
    pub value: Expr,
    /// The evaluated value of this request, kept for a forward.
    pub scratch: Slot,
}

impl Changed {
    /// Compiles the value, declares the table, adds the bool output.
    pub fn plan(config: &ChangedConfig, p: &mut Planner<'_>) -> Result<Changed, ConfigError> {
        let (key, key_type) = p.key_column(&config.key, "key")?;
        let value = p.compile(&config.value, "value")?;
        let table = p.declare_table(
            TableSpec::changed(config.name.value.clone(), value.ty()),
            key_type,
        );
        let out = p.add_column(Column {
            name: config.output.value.clone(),
            ty: ColumnType::Boolean,
            nullable: false,
        });
        Ok(Changed {
            keyed: KeyedUpdate {
                table,
                key,
                key_name: config.key.value.clone(),
                outs: vec![out],
            },
            value,
            scratch: Slot::default(),
        })
    }
}

impl Step for Changed {
    #[inline]
    fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, error_body: &mut Vec<u8>) -> Flow {
        // Evaluated before the owner is known: a forward carries it.
        let value = self.value.eval(row);
        self.scratch.set(value);
        let inputs = Inputs::Value(self.scratch.get());
        self.keyed.apply(row, ctx, error_body, inputs)
    }

    fn describe(&self, columns: &Columns, tables: &[TableSpec]) -> String {
        format!(
            "changed {} by {} on {}  -> {}: bool",
            tables[self.keyed.table].name,
            self.keyed.key_name,
            self.value.source(),
            columns.get(self.keyed.outs[0]).name
        )
    }

    fn forward_op(&self, row: &Row, now_ms: i64) -> Option<KeyedOp> {
        Some(
            self.keyed
                .forward_op(row, Inputs::Value(self.scratch.get()), now_ms),
        )
    }

    fn accept(&self, row: &mut Row, reply: KeyedReply, error_body: &mut Vec<u8>) -> Flow {
        self.keyed.accept(row, reply, error_body)
    }
}
