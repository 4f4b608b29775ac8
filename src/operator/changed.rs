//! `changed = { name, key, value, output }`: whether `value` differs from the
//! key's last one (the first value of a key counts as a change), kept in a
//! table on the shard that owns the key.

use serde::Deserialize;
use toml::Spanned as TomlSpanned;

use super::keyed::{missing_table, null_key, unexpected_reply, update_failed};
use super::{Ctx, Flow, Step};
use crate::config::{ConfigError, Spanned, StepChecker};
use crate::expr::Expr;
use crate::forward::{KeyedOp, KeyedReply, Owned};
use crate::plan::Planner;
use crate::row::{Column, ColumnType, Columns, Row, Slot, Val};
use crate::state::{TableSpec, owner_shard};

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
    /// State table id.
    pub table: usize,
    /// Slot of the key column.
    pub key: usize,
    /// Key column name, for errors.
    pub key_name: String,
    /// The compared value.
    pub value: Expr,
    /// Output slot (bool).
    pub out: usize,
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
            table,
            key,
            key_name: config.key.value.clone(),
            value,
            out,
            scratch: Slot::default(),
        })
    }
}

impl Step for Changed {
    #[inline]
    fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, error_body: &mut Vec<u8>) -> Flow {
        let key = row.get(self.key);
        if key.is_null() {
            return null_key(&self.key_name, error_body);
        }
        let value = self.value.eval(row);
        self.scratch.set(value);
        let owner = owner_shard(key, ctx.shards);
        if owner != ctx.shard {
            return Flow::Forward(owner);
        }
        let Some(table) = ctx.state.changed_mut(self.table) else {
            return missing_table(self.table, error_body);
        };
        match table.update(key, self.scratch.get()) {
            Ok(changed) => {
                row.slot_mut(self.out).set(Val::Bool(changed));
                Flow::Continue
            }
            Err(e) => update_failed(e, error_body),
        }
    }

    fn describe(&self, columns: &Columns, tables: &[TableSpec]) -> String {
        format!(
            "changed {} by {} on {}  -> {}: bool",
            tables[self.table].name,
            self.key_name,
            self.value.source(),
            columns.get(self.out).name
        )
    }

    fn forward_op(&self, row: &Row, _now_ms: i64) -> Option<KeyedOp> {
        Some(KeyedOp::Changed {
            table: self.table,
            key: Owned::from_val(row.get(self.key)),
            value: Owned::from_val(self.scratch.get()),
        })
    }

    fn accept(&self, row: &mut Row, reply: KeyedReply, error_body: &mut Vec<u8>) -> Flow {
        match reply {
            KeyedReply::Changed(changed) => {
                row.slot_mut(self.out).set(Val::Bool(changed));
                Flow::Continue
            }
            other => unexpected_reply(other, error_body),
        }
    }
}
