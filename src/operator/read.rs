//! A `read` route (`GET path?key=…`): the key comes from the query string
//! ([`KeyQuery`]) into slot 0 of the row, and one [`Read`] operator looks the
//! key's state up on its owner shard into the slots after it; the route's
//! reply then encodes `{"key": …, <value>: …}`. Not a step kind of the file:
//! a route's `read = "<state>"` plans it.

use super::{Ctx, Flow, Step, read_state};
use crate::forward::{KeyedOp, KeyedReply, Owned};
use crate::reply::{write_error_json, write_json_value};
use crate::row::{ColumnType, Columns, Row, Val};
use crate::state::{TableSpec, owner_shard};

/// Looks a key's state up (on the owner shard) into the row.
#[derive(Debug, Clone)]
pub struct Read {
    /// State table id.
    pub table: usize,
}

impl Read {
    fn write_values(row: &mut Row, values: &[Owned]) {
        for (i, v) in values.iter().enumerate() {
            row.slot_mut(1 + i).set(v.as_val());
        }
    }
}

/// `404 no state for key <key>`.
fn not_found(body: &mut Vec<u8>, key: Val<'_>) -> Flow {
    let mut k = Vec::new();
    write_json_value(&mut k, key);
    body.clear();
    write_error_json(
        body,
        &format!("no state for key {}", String::from_utf8_lossy(&k)),
        Some("key"),
    );
    Flow::Reply(404)
}

impl Step for Read {
    fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, body: &mut Vec<u8>) -> Flow {
        let key = row.get(0);
        let owner = owner_shard(key, ctx.shards);
        if owner != ctx.shard {
            return Flow::Forward(owner);
        }
        match read_state(ctx.state, self.table, key) {
            Some(values) => {
                Read::write_values(row, &values);
                Flow::Continue
            }
            None => not_found(body, key),
        }
    }

    fn describe(&self, columns: &Columns, tables: &[TableSpec]) -> String {
        let values: Vec<&str> = columns.iter().skip(1).map(|c| c.name.as_str()).collect();
        format!(
            "read: {}?key=<{}> -> {{key, {}}} (from the key's owner shard)",
            tables[self.table].name,
            columns.get(0).ty,
            values.join(", ")
        )
    }

    fn forward_op(&self, row: &Row, _now_ms: i64) -> Option<KeyedOp> {
        Some(KeyedOp::Read {
            table: self.table,
            key: Owned::from_val(row.get(0)),
        })
    }

    fn accept(&self, row: &mut Row, reply: KeyedReply, body: &mut Vec<u8>) -> Flow {
        match reply {
            KeyedReply::Values(Some(values)) => {
                Read::write_values(row, &values);
                Flow::Continue
            }
            KeyedReply::Values(None) => not_found(body, row.get(0)),
            KeyedReply::Failed(status, message) => {
                body.clear();
                write_error_json(body, &message, None);
                Flow::Reply(status)
            }
        }
    }
}

/// The key of a read request: the `key` query parameter, percent-decoded
/// and parsed as the table's key type, into slot 0 of the row.
#[derive(Debug, Clone)]
pub struct KeyQuery {
    key_type: ColumnType,
    /// The percent-decoded text, reused between requests.
    text: String,
}

impl KeyQuery {
    /// Keys of type `key_type`.
    pub fn new(key_type: ColumnType) -> KeyQuery {
        KeyQuery {
            key_type,
            text: String::new(),
        }
    }

    /// Decodes the key of `query` into slot 0 of `row`; on a bad key writes
    /// the 400 error into `body` and returns the status.
    pub fn decode(&mut self, query: &str, row: &mut Row, body: &mut Vec<u8>) -> Result<(), u16> {
        let bad = |body: &mut Vec<u8>, message: &str| {
            write_error_json(body, message, Some("key"));
            Err(400)
        };
        let Some(raw) = query_param(query, "key") else {
            return bad(body, "missing query parameter \"key\"");
        };
        if !percent_decode(raw, &mut self.text) {
            return bad(
                body,
                "query parameter \"key\" is not valid percent-encoded UTF-8",
            );
        }
        let key = match self.key_type {
            ColumnType::Utf8 => Val::Str(&self.text),
            ColumnType::Int64 => match self.text.parse::<i64>() {
                Ok(i) => Val::Int(i),
                Err(_) => {
                    return bad(
                        body,
                        &format!("key must be an int64, found \"{}\"", self.text),
                    );
                }
            },
            ColumnType::Boolean => match self.text.as_str() {
                "true" => Val::Bool(true),
                "false" => Val::Bool(false),
                other => {
                    return bad(
                        body,
                        &format!("key must be true or false, found \"{other}\""),
                    );
                }
            },
            ColumnType::Float64 => unreachable!("float keys are refused by the plan"),
        };
        row.slot_mut(0).set(key);
        Ok(())
    }
}

/// The raw value of `name` in a query string.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Percent-decodes `raw` (and `+` as space) into `out`; false if the result
/// is not UTF-8 or an escape is malformed.
fn percent_decode(raw: &str, out: &mut String) -> bool {
    let bytes = raw.as_bytes();
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return false;
                };
                buf.push((h * 16 + l) as u8);
                i += 3;
            }
            b'+' => {
                buf.push(b' ');
                i += 1;
            }
            b => {
                buf.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(buf) {
        Ok(s) => {
            *out = s;
            true
        }
        Err(_) => false,
    }
}
