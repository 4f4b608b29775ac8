//! `delete = { table, key }`: removes the row of a declared `[[table]]`
//! (on the owner shard of a partitioned table; on every shard, through the
//! sequencer, for a replicated one). A key without a row is refused with
//! 422 and changes nothing.

use serde::Deserialize;
use toml::Spanned as TomlSpanned;

use super::keyed::{declared_on_owner, key_route, refuse, unexpected_reply};
use super::{Ctx, Flow, Step};
use crate::config::{ConfigError, Spanned, StepChecker};
use crate::forward::{KeyedOp, KeyedReply, Owned};
use crate::plan::Planner;
use crate::row::{Columns, Row, Val};
use crate::state::{Scope, ShardState, TableSpec};

/// The step's table in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelete {
    table: TomlSpanned<String>,
    key: TomlSpanned<String>,
}

/// A checked `delete` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteConfig {
    /// The declared table.
    pub table: Spanned<String>,
    /// The key column of the row.
    pub key: Spanned<String>,
}

impl DeleteConfig {
    pub(crate) fn check(raw: RawDelete, c: &mut StepChecker<'_>) -> Result<DeleteConfig, ConfigError> {
        Ok(DeleteConfig {
            table: c.non_empty(raw.table, "table", "table name")?,
            key: c.non_empty(raw.key, "key", "key column")?,
        })
    }
}

/// Deletes a declared table's row, compiled.
#[derive(Debug, Clone)]
pub struct Delete {
    table: usize,
    table_name: String,
    scope: Scope,
    key: usize,
    key_name: String,
}

/// The owner-side delete (local, forwarded, or each replicated copy).
pub(crate) fn delete_on_owner(
    state: &mut ShardState,
    table: usize,
    key: Val<'_>,
) -> Result<(), (u16, String)> {
    match declared_on_owner(state, table)?.delete(key) {
        Ok(true) => Ok(()),
        Ok(false) => Err((422, "the key has no row in the table; nothing deleted".into())),
        Err(e) => Err((422, format!("delete refused: {e}"))),
    }
}

impl Delete {
    /// Resolves the table and the key column.
    pub fn plan(config: &DeleteConfig, p: &mut Planner<'_>) -> Result<Delete, ConfigError> {
        let (table, spec, key) = p.table_and_key(&config.table, &config.key)?;
        Ok(Delete {
            table,
            table_name: config.table.value.clone(),
            scope: spec.scope,
            key,
            key_name: config.key.value.clone(),
        })
    }
}

impl Step for Delete {
    fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, body: &mut Vec<u8>) -> Flow {
        let key = row.get(self.key);
        match key_route(ctx, key, &self.key_name, self.scope, "delete", body) {
            Ok(None) => {}
            Ok(Some(owner)) => return Flow::Forward(owner),
            Err(flow) => return flow,
        }
        match delete_on_owner(ctx.state, self.table, key) {
            Ok(()) => Flow::Continue,
            Err((status, message)) => refuse(body, status, &message, Some(&self.key_name)),
        }
    }

    fn describe(&self, _columns: &Columns, _tables: &[TableSpec]) -> String {
        format!(
            "delete from {} ({}) by {}",
            self.table_name,
            self.scope.name(),
            self.key_name
        )
    }

    fn forward_op(&self, row: &Row, _now_ms: i64) -> Option<KeyedOp> {
        Some(KeyedOp::Delete {
            table: self.table,
            key: Owned::from_val(row.get(self.key)),
        })
    }

    fn accept(&self, _row: &mut Row, reply: KeyedReply, body: &mut Vec<u8>) -> Flow {
        match reply {
            KeyedReply::Values(Some(_)) => Flow::Continue,
            other => unexpected_reply(other, body),
        }
    }
}
