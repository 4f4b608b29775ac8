//! What keyed steps share: the owner-shard protocol and its errors.
//!
//! On the owner shard a keyed step is one table update in the shard's own
//! state, allocation-free for a key already present. On any other shard it
//! returns [`Flow::Forward`]: the pipeline stops there, the step's inputs go
//! to the owner as a [`KeyedOp`] ([`Step::forward_op`](super::Step::forward_op)),
//! the owner runs [`run_on_owner`], and once the [`KeyedReply`] comes back,
//! [`Step::accept`](super::Step::accept) writes the outputs into the row and
//! the pipeline goes on from the next step.

use crate::forward::{KeyedOp, KeyedReply, Owned};
use crate::operator::Flow;
use crate::reply::write_error_json;
use crate::row::Val;
use crate::state::{ShardState, UpdateError};

pub(crate) fn null_key(name: &str, error_body: &mut Vec<u8>) -> Flow {
    error_body.clear();
    write_error_json(
        error_body,
        &format!("key field \"{name}\" is null; a keyed step needs a key"),
        Some(name),
    );
    Flow::Reply(422)
}

pub(crate) fn update_failed(e: UpdateError, error_body: &mut Vec<u8>) -> Flow {
    error_body.clear();
    write_error_json(error_body, &format!("state update failed: {e}"), None);
    Flow::Reply(500)
}

pub(crate) fn missing_table(table: usize, error_body: &mut Vec<u8>) -> Flow {
    error_body.clear();
    write_error_json(
        error_body,
        &format!("state table #{table} is missing on this shard"),
        None,
    );
    Flow::Reply(500)
}

/// The answer to a reply of the wrong shape: 500, or the owner's own
/// failure status and message.
pub(crate) fn unexpected_reply(reply: KeyedReply, error_body: &mut Vec<u8>) -> Flow {
    error_body.clear();
    match reply {
        KeyedReply::Failed(status, message) => {
            write_error_json(error_body, &message, None);
            Flow::Reply(status)
        }
        other => {
            write_error_json(
                error_body,
                &format!("owner shard sent an unexpected reply: {other:?}"),
                None,
            );
            Flow::Reply(500)
        }
    }
}

/// Runs a forwarded operation on the owner's state.
pub fn run_on_owner(state: &mut ShardState, op: &KeyedOp) -> KeyedReply {
    match op {
        KeyedOp::Aggregate {
            table,
            key,
            inputs,
            now_ms,
        } => {
            let Some(t) = state.aggregate_mut(*table) else {
                return KeyedReply::Failed(500, format!("no aggregate table #{table}"));
            };
            match t.update(key.as_val(), *now_ms, |i| {
                inputs.get(i).map_or(Val::Null, Owned::as_val)
            }) {
                Ok(values) => {
                    KeyedReply::Values(Some(values.iter().map(Owned::from_val).collect()))
                }
                Err(e) => KeyedReply::Failed(500, format!("state update failed: {e}")),
            }
        }
        KeyedOp::Changed { table, key, value } => {
            let Some(t) = state.changed_mut(*table) else {
                return KeyedReply::Failed(500, format!("no changed table #{table}"));
            };
            match t.update(key.as_val(), value.as_val()) {
                Ok(changed) => KeyedReply::Changed(changed),
                Err(e) => KeyedReply::Failed(500, format!("state update failed: {e}")),
            }
        }
        KeyedOp::Read { table, key } => KeyedReply::Values(read_state(state, *table, key.as_val())),
    }
}

/// A key's state as values: an aggregate's outputs, or a `changed` table's
/// last value (one element). `None` when the key has no state.
pub fn read_state(state: &ShardState, table: usize, key: Val<'_>) -> Option<Vec<Owned>> {
    if let Some(t) = state.aggregate(table) {
        return t.get(key).map(|v| v.iter().map(Owned::from_val).collect());
    }
    if let Some(t) = state.changed(table) {
        return t.get(key).map(|v| vec![Owned::from_val(v)]);
    }
    None
}
