//! `lookup = { table, key, columns = [...], missing = "null" }`: joins a
//! declared `[[table]]`'s row into the request's row. `columns` (default:
//! all) become row columns; a key without a row gives nulls
//! (`missing = "null"`, the default) or answers the request
//! (`missing = { status = 404, message = "..." }`).
//!
//! On a replicated table the lookup is a local read: no hop, no
//! allocation (`benches/lookup.rs`). On a partitioned one it runs on the
//! key's owner shard, forwarded like keyed state.

use serde::Deserialize;
use toml::Spanned as TomlSpanned;

use super::keyed::{refuse, unexpected_reply};
use super::{Ctx, Flow, Step};
use crate::config::{ConfigError, Spanned, StepChecker};
use crate::forward::{KeyedOp, KeyedReply, Owned};
use crate::plan::Planner;
use crate::row::{Column, Columns, Row};
use crate::state::{Scope, TableSpec};

/// `missing` as written: `"null"` or `{ status, message }`.
enum RawMissing {
    Word(String),
    Answer(RawAnswer),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnswer {
    status: i64,
    message: String,
}

impl<'de> Deserialize<'de> for RawMissing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawMissing, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawMissing;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"null\" or a table like { status = 404, message = \"...\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawMissing, E> {
                Ok(RawMissing::Word(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawMissing, A::Error> {
                RawAnswer::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawMissing::Answer)
            }
        }
        d.deserialize_any(V)
    }
}

/// The step's table in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLookup {
    table: TomlSpanned<String>,
    key: TomlSpanned<String>,
    columns: Option<TomlSpanned<Vec<TomlSpanned<String>>>>,
    missing: Option<TomlSpanned<RawMissing>>,
}

/// What a lookup does for a key without a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The looked-up columns are null.
    Null,
    /// Answer the request with this status and message.
    Answer(u16, String),
}

/// A checked `lookup` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupConfig {
    /// The declared table.
    pub table: Spanned<String>,
    /// The key column of the row.
    pub key: Spanned<String>,
    /// The table columns to add (`None`: all).
    pub columns: Option<Vec<Spanned<String>>>,
    /// What a key without a row does.
    pub missing: Missing,
}

impl LookupConfig {
    pub(crate) fn check(raw: RawLookup, c: &mut StepChecker<'_>) -> Result<LookupConfig, ConfigError> {
        let missing = match raw.missing {
            None => Missing::Null,
            Some(m) => {
                let span = m.span();
                match m.into_inner() {
                    RawMissing::Word(w) if w == "null" => Missing::Null,
                    RawMissing::Word(w) => {
                        return Err(c
                            .error(span, "missing", format!("unknown value {w:?}"))
                            .with_expected("\"null\" or { status = 404, message = \"...\" }"));
                    }
                    RawMissing::Answer(RawAnswer { status, message }) => {
                        let code = status;
                        if !(400..=599).contains(&code) {
                            return Err(c
                                .error(span, "missing.status", format!("status {code} is out of range"))
                                .with_expected("an HTTP error status in 400..=599"));
                        }
                        Missing::Answer(code as u16, message)
                    }
                }
            }
        };
        Ok(LookupConfig {
            table: c.non_empty(raw.table, "table", "table name")?,
            key: c.non_empty(raw.key, "key", "key column")?,
            columns: raw.columns.map(|l| c.column_list(l, "columns")).transpose()?,
            missing,
        })
    }
}

/// Joins a declared table's row into the request's row, compiled.
#[derive(Debug, Clone)]
pub struct Lookup {
    table: usize,
    table_name: String,
    scope: Scope,
    key: usize,
    key_name: String,
    /// (table column index, row slot) per looked-up column.
    cols: Vec<(usize, usize)>,
    missing: Missing,
}

impl Lookup {
    /// Resolves the table, key and columns; adds the columns to the row.
    pub fn plan(config: &LookupConfig, p: &mut Planner<'_>) -> Result<Lookup, ConfigError> {
        let (table, spec, key) = p.table_and_key(&config.table, &config.key)?;
        let wanted: Vec<usize> = match &config.columns {
            None => (0..spec.columns.len()).collect(),
            Some(names) => {
                let mut idx = Vec::with_capacity(names.len());
                for n in names {
                    let Some(i) = spec.columns.iter().position(|(c, _)| *c == n.value) else {
                        let all: Vec<&str> = spec.columns.iter().map(|(c, _)| c.as_str()).collect();
                        return Err(p
                            .error(
                                n.span.clone(),
                                "columns",
                                format!("table {:?} has no column {:?}", config.table.value, n.value),
                            )
                            .with_expected(format!("one of: {}", all.join(", "))));
                    };
                    idx.push(i);
                }
                idx
            }
        };
        let cols = wanted
            .into_iter()
            .map(|i| {
                let (name, ty) = &spec.columns[i];
                let slot = p.add_column(Column {
                    name: name.clone(),
                    ty: *ty,
                    nullable: true,
                });
                (i, slot)
            })
            .collect();
        Ok(Lookup {
            table,
            table_name: config.table.value.clone(),
            scope: spec.scope,
            key,
            key_name: config.key.value.clone(),
            cols,
            missing: config.missing.clone(),
        })
    }

    fn on_missing(&self, row: &mut Row, body: &mut Vec<u8>) -> Flow {
        match &self.missing {
            Missing::Null => {
                for &(_, slot) in &self.cols {
                    row.slot_mut(slot).set_null();
                }
                Flow::Continue
            }
            Missing::Answer(status, message) => refuse(body, *status, message, Some(&self.key_name)),
        }
    }
}

impl Step for Lookup {
    #[inline]
    fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, body: &mut Vec<u8>) -> Flow {
        let key = row.get(self.key);
        if self.scope == Scope::Partitioned && !key.is_null() {
            // A fleet: a key another instance owns is answered 421 there.
            let owner = match ctx.owner(key, &self.key_name, body) {
                Ok(owner) => owner,
                Err(status) => return Flow::Reply(status),
            };
            if owner != ctx.shard {
                return Flow::Forward(owner);
            }
        }
        let found = ctx
            .state
            .declared_table(self.table)
            .and_then(|t| t.get(key));
        match found {
            Some(values) => {
                for &(i, slot) in &self.cols {
                    let v = values[i].get();
                    row.slot_mut(slot).set(v);
                }
                Flow::Continue
            }
            None => self.on_missing(row, body),
        }
    }

    fn describe(&self, columns: &Columns, _tables: &[TableSpec]) -> String {
        let names: Vec<&str> = self
            .cols
            .iter()
            .map(|&(_, s)| columns.get(s).name.as_str())
            .collect();
        format!(
            "lookup {} ({}) by {}  -> {}",
            self.table_name,
            self.scope.name(),
            self.key_name,
            names.join(", ")
        )
    }

    fn forward_op(&self, row: &Row, _now_ms: i64) -> Option<KeyedOp> {
        Some(KeyedOp::Read {
            table: self.table,
            key: Owned::from_val(row.get(self.key)),
        })
    }

    fn accept(&self, row: &mut Row, reply: KeyedReply, body: &mut Vec<u8>) -> Flow {
        match reply {
            KeyedReply::Values(Some(values)) => {
                for &(i, slot) in &self.cols {
                    let v = values.get(i).map_or(crate::row::Val::Null, Owned::as_val);
                    row.slot_mut(slot).set(v);
                }
                Flow::Continue
            }
            KeyedReply::Values(None) => self.on_missing(row, body),
            other => unexpected_reply(other, body),
        }
    }
}
