//! `aggregate = { name, key, outputs }`: keyed running aggregates (count,
//! sum, avg, min, max, first_seen, ...), one table per step, updated on the
//! shard that owns the request's key.

use serde::Deserialize;
use toml::Spanned as TomlSpanned;

use super::keyed::{missing_table, null_key, unexpected_reply, update_failed};
use super::{Ctx, Flow, Step};
use crate::config::raw::Ordered;
use crate::config::{ConfigError, Spanned, StepChecker};
use crate::forward::{KeyedOp, KeyedReply, Owned};
use crate::plan::Planner;
use crate::row::{Column, Columns, Row, Val};
use crate::state::{AggOutput, TableSpec, owner_shard};

/// The step's table in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAggregate {
    name: TomlSpanned<String>,
    key: TomlSpanned<String>,
    outputs: TomlSpanned<Ordered<String>>,
}

/// One output of an `aggregate` step: `name = "spec"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateOutput {
    /// The output column's name.
    pub name: Spanned<String>,
    /// The aggregate function as written, e.g. `sum(amount)` (parsed by the
    /// state module).
    pub spec: Spanned<String>,
}

/// A checked `aggregate` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateConfig {
    /// The state's name, unique among the service's keyed states.
    pub name: Spanned<String>,
    /// The key column.
    pub key: Spanned<String>,
    /// The outputs, in order (at least one).
    pub outputs: Vec<AggregateOutput>,
}

impl AggregateConfig {
    pub(crate) fn check(
        raw: RawAggregate,
        c: &mut StepChecker<'_>,
    ) -> Result<AggregateConfig, ConfigError> {
        let name = c.non_empty(raw.name, "name", "state name")?;
        c.declare_state(&name, "name")?;
        let key = c.non_empty(raw.key, "key", "key column")?;
        let outputs_span = raw.outputs.span();
        let entries = raw.outputs.into_inner().0;
        if entries.is_empty() {
            return Err(c
                .error(outputs_span, "outputs", "no outputs")
                .with_expected("at least one output such as n = \"count()\""));
        }
        let mut outputs = Vec::with_capacity(entries.len());
        for (name, spec) in entries {
            if name.get_ref().is_empty() {
                return Err(c
                    .error(name.span(), "outputs", "empty output name")
                    .with_expected("a non-empty column name"));
            }
            let field = format!("outputs.{}", name.get_ref());
            outputs.push(AggregateOutput {
                name: Spanned::from_toml(name),
                spec: c.non_empty(spec, &field, "aggregate function")?,
            });
        }
        Ok(AggregateConfig { name, key, outputs })
    }
}

/// `aggregate { name, key, outputs }`, compiled.
#[derive(Debug, Clone)]
pub struct Aggregate {
    /// State table id.
    pub table: usize,
    /// Slot of the key column.
    pub key: usize,
    /// Key column name, for errors.
    pub key_name: String,
    /// Input slot per output (`None` for `count()` and `first_seen()`).
    pub inputs: Vec<Option<usize>>,
    /// Output slot per output.
    pub outs: Vec<usize>,
}

impl Aggregate {
    /// Parses the outputs against the visible columns, adds the output
    /// columns and declares the table.
    pub fn plan(config: &AggregateConfig, p: &mut Planner<'_>) -> Result<Aggregate, ConfigError> {
        let (key, key_type) = p.key_column(&config.key, "key")?;
        let mut specs = Vec::with_capacity(config.outputs.len());
        let mut inputs = Vec::with_capacity(config.outputs.len());
        for o in &config.outputs {
            let columns = p.columns();
            let spec = AggOutput::parse(o.name.value.clone(), &o.spec.value, |col| {
                columns.index_of(col).map(|i| columns.get(i).ty)
            })
            .map_err(|e| {
                p.error(
                    o.spec.span.clone(),
                    &format!("outputs.{}", o.name.value),
                    e.to_string(),
                )
            })?;
            inputs.push(spec.input.as_ref().and_then(|c| columns.index_of(c)));
            specs.push(spec);
        }
        let outs = specs
            .iter()
            .map(|o| {
                p.add_column(Column {
                    name: o.name.clone(),
                    ty: o.output_type(),
                    nullable: true,
                })
            })
            .collect();
        let table = p.declare_table(
            TableSpec::aggregate(config.name.value.clone(), specs),
            key_type,
        );
        Ok(Aggregate {
            table,
            key,
            key_name: config.key.value.clone(),
            inputs,
            outs,
        })
    }
}

impl Step for Aggregate {
    #[inline]
    fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, error_body: &mut Vec<u8>) -> Flow {
        let key = row.get(self.key);
        if key.is_null() {
            return null_key(&self.key_name, error_body);
        }
        let owner = owner_shard(key, ctx.shards);
        if owner != ctx.shard {
            return Flow::Forward(owner);
        }
        let inputs = &self.inputs;
        let now_ms = ctx.now_ms();
        let Some(table) = ctx.state.aggregate_mut(self.table) else {
            return missing_table(self.table, error_body);
        };
        let result = table.update(key, now_ms, |i| match inputs[i] {
            Some(slot) => row.get(slot),
            None => Val::Null,
        });
        match result {
            Ok(values) => {
                for (i, &out) in self.outs.iter().enumerate() {
                    row.slot_mut(out).set(values.get(i));
                }
                Flow::Continue
            }
            Err(e) => update_failed(e, error_body),
        }
    }

    fn describe(&self, columns: &Columns, tables: &[TableSpec]) -> String {
        let outs: Vec<String> = self
            .outs
            .iter()
            .map(|&o| {
                let c = columns.get(o);
                format!("{}: {}", c.name, c.ty)
            })
            .collect();
        format!(
            "aggregate {} by {} (state on the key's owner shard)  -> {}",
            tables[self.table].name,
            self.key_name,
            outs.join(", ")
        )
    }

    fn forward_op(&self, row: &Row, now_ms: i64) -> Option<KeyedOp> {
        Some(KeyedOp::Aggregate {
            table: self.table,
            key: Owned::from_val(row.get(self.key)),
            inputs: self
                .inputs
                .iter()
                .map(|i| i.map_or(Owned::Null, |s| Owned::from_val(row.get(s))))
                .collect(),
            now_ms,
        })
    }

    fn accept(&self, row: &mut Row, reply: KeyedReply, error_body: &mut Vec<u8>) -> Flow {
        match reply {
            KeyedReply::Values(Some(values)) => {
                for (&out, v) in self.outs.iter().zip(&values) {
                    row.slot_mut(out).set(v.as_val());
                }
                Flow::Continue
            }
            other => unexpected_reply(other, error_body),
        }
    }
}
