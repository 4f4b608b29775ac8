//! A `read` route (`GET path?key=…`): the key comes from the query string
//! ([`KeyQuery`]) into slot 0 of the row, and one [`Read`] operator looks the
//! key's state up on its owner shard into the slots after it; the route's
//! reply then encodes `{"key": …, <value>: …}`. Not a step kind of the file:
//! a route's `read = "<state>"` plans it.

use super::keyed::{refuse, unexpected_reply};
use super::{Ctx, Flow, Step, read_state};
use crate::forward::{KeyedOp, KeyedReply, Owned};
use crate::reply::{write_error_json, write_json_value};
use crate::row::{ColumnType, Columns, Row, Val};
use crate::state::TableSpec;

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
    let message = format!("no state for key {}", String::from_utf8_lossy(&k));
    refuse(body, 404, &message, Some("key"))
}

impl Step for Read {
    fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, body: &mut Vec<u8>) -> Flow {
        let key = row.get(0);
        let owner = match ctx.owner(key, "key", body) {
            Ok(owner) => owner,
            Err(status) => return Flow::Reply(status),
        };
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
            other => unexpected_reply(other, body),
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
            ColumnType::Float64
            | ColumnType::Float64Array
            | ColumnType::Float32Array
            | ColumnType::Int64Array => {
                unreachable!("float and array keys are refused by the plan")
            }
        };
        row.slot_mut(0).set(key);
        Ok(())
    }
}

/// The raw value of `name` in a query string, borrowed from the request.
///
/// Kept by hand rather than `form_urlencoded::parse`: that decodes every
/// pair it walks into a `Cow` (an allocation per escaped pair) and replaces
/// invalid UTF-8 silently, while a read answers 400 for it; this borrows and
/// allocates nothing (tests/alloc.rs counts 0 per warm request).
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Percent-decodes `raw` (and `+` as space, as in HTML forms) into `out`
/// with the `percent-encoding` crate, reusing `out`'s buffer; false if an
/// escape is malformed (`%zz`, a lone `%`) or the result is not UTF-8.
/// The crate passes malformed escapes through as text, so they are refused
/// here first: a key must mean one thing.
fn percent_decode(raw: &str, out: &mut String) -> bool {
    let bytes = raw.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return false;
    }
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    for (i, piece) in raw.split('+').enumerate() {
        if i > 0 {
            buf.push(b' ');
        }
        buf.extend(percent_encoding::percent_decode_str(piece));
    }
    match String::from_utf8(buf) {
        Ok(s) => {
            *out = s;
            true
        }
        Err(e) => {
            // Keep the buffer for the next request.
            let mut buf = e.into_bytes();
            buf.clear();
            *out = String::from_utf8(buf).expect("empty is UTF-8");
            false
        }
    }
}
