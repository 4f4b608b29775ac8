//! `upsert = { table, key, set = { column = "expr", ... } }`: writes the
//! row of a declared `[[table]]`. Columns `set` names get the expression's
//! value; the others keep theirs (null for a new key). The row after the
//! write becomes row columns, named like the table's columns, for the reply.
//!
//! A partitioned table is written on the key's owner shard (forwarded when
//! the request landed elsewhere); a replicated one through the sequencer on
//! shard 0, which applies it on every shard before the request is answered
//! (see `forward::sequencer`).

use serde::Deserialize;
use toml::Spanned as TomlSpanned;

use super::keyed::{accept_values, declared_on_owner, key_route, refuse};
use super::{Ctx, Flow, Step};
use crate::config::raw::Ordered;
use crate::config::{ConfigError, Spanned, StepChecker};
use crate::expr::Expr;
use crate::forward::{KeyedOp, KeyedReply, Owned};
use crate::plan::Planner;
use crate::row::{Column, ColumnType, Columns, Row, Slot, Val};
use crate::state::{Scope, ShardState, TableSpec};

/// The step's table in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpsert {
    table: TomlSpanned<String>,
    key: TomlSpanned<String>,
    set: TomlSpanned<Ordered<String>>,
}

/// A checked `upsert` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertConfig {
    /// The declared table.
    pub table: Spanned<String>,
    /// The key column of the row.
    pub key: Spanned<String>,
    /// Table column and the expression it is set to, in file order.
    pub set: Vec<(Spanned<String>, Spanned<String>)>,
}

impl UpsertConfig {
    pub(crate) fn check(
        raw: RawUpsert,
        c: &mut StepChecker<'_>,
    ) -> Result<UpsertConfig, ConfigError> {
        let table = c.non_empty(raw.table, "table", "table name")?;
        let key = c.non_empty(raw.key, "key", "key column")?;
        let span = raw.set.span();
        let entries = raw.set.into_inner().0;
        if entries.is_empty() {
            return Err(c
                .error(span, "set", "nothing to set")
                .with_expected("at least one column, e.g. set = { desired = \"desired\" }"));
        }
        let mut set = Vec::with_capacity(entries.len());
        for (col, expr) in entries {
            let field = format!("set.{}", col.get_ref());
            set.push((
                Spanned::from_toml(col),
                c.non_empty(expr, &field, "expression")?,
            ));
        }
        Ok(UpsertConfig { table, key, set })
    }
}

/// Writes a declared table's row, compiled.
#[derive(Debug, Clone)]
pub struct Upsert {
    table: usize,
    table_name: String,
    scope: Scope,
    key: usize,
    key_name: String,
    /// Per table column: the expression setting it, if any.
    set: Vec<Option<Expr>>,
    /// This request's values, per table column (kept for a forward).
    scratch: Vec<Slot>,
    /// Row slot per table column: the row after the write.
    outs: Vec<usize>,
}

/// The owner-side write, run for a local step, a forwarded one and each
/// replicated copy: sets the columns `set(i)` names and returns the row.
pub(crate) fn upsert_on_owner<'s, 'v>(
    state: &'s mut ShardState,
    table: usize,
    key: Val<'_>,
    set: impl Fn(usize) -> Option<Val<'v>>,
) -> Result<&'s [Slot], (u16, String)> {
    declared_on_owner(state, table)?
        .upsert(key, set)
        .map_err(|e| (422, format!("upsert refused: {e}")))
}

/// Checks that a value of type `got` may be stored in a column of `want`.
pub(crate) fn fits(want: ColumnType, got: ColumnType) -> bool {
    want == got || (want == ColumnType::Float64 && got == ColumnType::Int64)
}

impl Upsert {
    /// Resolves the table and key, compiles and type-checks every `set`
    /// expression, and adds the table's columns to the row.
    pub fn plan(config: &UpsertConfig, p: &mut Planner<'_>) -> Result<Upsert, ConfigError> {
        let (table, spec, key) = p.table_and_key(&config.table, &config.key)?;
        let mut set: Vec<Option<Expr>> = vec![None; spec.columns.len()];
        for (col, text) in &config.set {
            let field = format!("set.{}", col.value);
            let Some(i) = spec.columns.iter().position(|(n, _)| *n == col.value) else {
                let names: Vec<&str> = spec.columns.iter().map(|(n, _)| n.as_str()).collect();
                return Err(p
                    .error(
                        col.span.clone(),
                        &field,
                        format!("table {:?} has no column {:?}", config.table.value, col.value),
                    )
                    .with_expected(format!("one of: {}", names.join(", "))));
            };
            let expr = p.compile(text, &field)?;
            let want = spec.columns[i].1;
            if !fits(want, expr.ty()) {
                return Err(p.error(
                    text.span.clone(),
                    &field,
                    format!(
                        "`{}` is {}, but column {:?} is {want}",
                        text.value,
                        expr.ty(),
                        col.value
                    ),
                ));
            }
            set[i] = Some(expr);
        }
        let outs = spec
            .columns
            .iter()
            .map(|(name, ty)| {
                p.add_column(Column {
                    name: name.clone(),
                    ty: *ty,
                    nullable: true,
                })
            })
            .collect();
        Ok(Upsert {
            table,
            table_name: config.table.value.clone(),
            scope: spec.scope,
            key,
            key_name: config.key.value.clone(),
            scratch: vec![Slot::default(); set.len()],
            set,
            outs,
        })
    }
}

impl Step for Upsert {
    #[inline]
    fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, body: &mut Vec<u8>) -> Flow {
        let key = row.get(self.key);
        let forward = match key_route(ctx, key, &self.key_name, self.scope, "upsert", body) {
            Ok(forward) => forward,
            Err(flow) => return flow,
        };
        for (expr, slot) in self.set.iter_mut().zip(self.scratch.iter_mut()) {
            if let Some(e) = expr {
                slot.set(e.eval(row));
            }
        }
        if let Some(owner) = forward {
            return Flow::Forward(owner);
        }
        let (set, scratch) = (&self.set, &self.scratch);
        let key = row.get(self.key);
        let result = upsert_on_owner(ctx.state, self.table, key, |i| {
            set[i].as_ref().map(|_| scratch[i].get())
        });
        match result {
            Ok(values) => {
                let values: &[Slot] = values;
                for (&out, v) in self.outs.iter().zip(values) {
                    row.slot_mut(out).set(v.get());
                }
                Flow::Continue
            }
            Err((status, message)) => refuse(body, status, &message, None),
        }
    }

    fn describe(&self, _columns: &Columns, _tables: &[TableSpec]) -> String {
        format!(
            "upsert {} ({}) by {}",
            self.table_name,
            self.scope.name(),
            self.key_name
        )
    }

    fn forward_op(&self, row: &Row, _now_ms: i64) -> Option<KeyedOp> {
        Some(KeyedOp::Upsert {
            table: self.table,
            key: Owned::from_val(row.get(self.key)),
            set: self
                .set
                .iter()
                .zip(&self.scratch)
                .map(|(e, s)| e.as_ref().map(|_| Owned::from_val(s.get())))
                .collect(),
        })
    }

    fn accept(&self, row: &mut Row, reply: KeyedReply, body: &mut Vec<u8>) -> Flow {
        accept_values(&self.outs, row, reply, body)
    }
}
