//! Keyed steps: `aggregate` and `changed`, run on the shard that owns the
//! request's key.
//!
//! On the owner shard a keyed step is one table update in the shard's own
//! state, allocation-free for a key already present. On any other shard it
//! returns [`Flow::Forward`]: the pipeline stops there, the step's inputs go
//! to the owner as a [`KeyedOp`], and once the [`KeyedReply`] comes back,
//! [`Keyed::accept`] writes the outputs into the row and the pipeline goes on
//! from the next step.

use crate::expr::Expr;
use crate::forward::{KeyedOp, KeyedReply, Owned};
use crate::operator::{Ctx, Flow};
use crate::reply::write_error_json;
use crate::row::{Row, Slot, Val};
use crate::state::{ShardState, UpdateError, owner_shard};

/// `aggregate { name, key, outputs }`.
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

/// `changed { name, key, value, output }`.
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

/// Either keyed step.
#[derive(Debug, Clone)]
pub enum Keyed {
    /// An aggregate.
    Aggregate(Aggregate),
    /// A change detector.
    Changed(Changed),
}

fn null_key(name: &str, error_body: &mut Vec<u8>) -> Flow {
    error_body.clear();
    write_error_json(
        error_body,
        &format!("key field \"{name}\" is null; a keyed step needs a key"),
        Some(name),
    );
    Flow::Reply(422)
}

fn update_failed(e: UpdateError, error_body: &mut Vec<u8>) -> Flow {
    error_body.clear();
    write_error_json(error_body, &format!("state update failed: {e}"), None);
    Flow::Reply(500)
}

fn missing_table(table: usize, error_body: &mut Vec<u8>) -> Flow {
    error_body.clear();
    write_error_json(
        error_body,
        &format!("state table #{table} is missing on this shard"),
        None,
    );
    Flow::Reply(500)
}

impl Keyed {
    /// Runs the step on this shard, or asks for a forward to the owner.
    #[inline]
    pub fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, error_body: &mut Vec<u8>) -> Flow {
        match self {
            Keyed::Aggregate(a) => {
                let key = row.get(a.key);
                if key.is_null() {
                    return null_key(&a.key_name, error_body);
                }
                let owner = owner_shard(key, ctx.shards);
                if owner != ctx.shard {
                    return Flow::Forward(owner);
                }
                let inputs = &a.inputs;
                let now_ms = ctx.now_ms();
                let Some(table) = ctx.state.aggregate_mut(a.table) else {
                    return missing_table(a.table, error_body);
                };
                let result = table.update(key, now_ms, |i| match inputs[i] {
                    Some(slot) => row.get(slot),
                    None => Val::Null,
                });
                match result {
                    Ok(values) => {
                        for (i, &out) in a.outs.iter().enumerate() {
                            row.slot_mut(out).set(values.get(i));
                        }
                        Flow::Continue
                    }
                    Err(e) => update_failed(e, error_body),
                }
            }
            Keyed::Changed(c) => {
                let key = row.get(c.key);
                if key.is_null() {
                    return null_key(&c.key_name, error_body);
                }
                let value = c.value.eval(row);
                c.scratch.set(value);
                let owner = owner_shard(key, ctx.shards);
                if owner != ctx.shard {
                    return Flow::Forward(owner);
                }
                let Some(table) = ctx.state.changed_mut(c.table) else {
                    return missing_table(c.table, error_body);
                };
                match table.update(key, c.scratch.get()) {
                    Ok(changed) => {
                        row.slot_mut(c.out).set(Val::Bool(changed));
                        Flow::Continue
                    }
                    Err(e) => update_failed(e, error_body),
                }
            }
        }
    }

    /// The operation to send to the owner (after `apply` asked for it).
    pub fn forward_op(&self, row: &Row, now_ms: i64) -> KeyedOp {
        match self {
            Keyed::Aggregate(a) => KeyedOp::Aggregate {
                table: a.table,
                key: Owned::from_val(row.get(a.key)),
                inputs: a
                    .inputs
                    .iter()
                    .map(|i| i.map_or(Owned::Null, |s| Owned::from_val(row.get(s))))
                    .collect(),
                now_ms,
            },
            Keyed::Changed(c) => KeyedOp::Changed {
                table: c.table,
                key: Owned::from_val(row.get(c.key)),
                value: Owned::from_val(c.scratch.get()),
            },
        }
    }

    /// Writes the owner's reply into the row.
    pub fn accept(&self, row: &mut Row, reply: KeyedReply, error_body: &mut Vec<u8>) -> Flow {
        match (self, reply) {
            (Keyed::Aggregate(a), KeyedReply::Values(Some(values))) => {
                for (&out, v) in a.outs.iter().zip(&values) {
                    row.slot_mut(out).set(v.as_val());
                }
                Flow::Continue
            }
            (Keyed::Changed(c), KeyedReply::Changed(changed)) => {
                row.slot_mut(c.out).set(Val::Bool(changed));
                Flow::Continue
            }
            (_, KeyedReply::Failed(status, message)) => {
                error_body.clear();
                write_error_json(error_body, &message, None);
                Flow::Reply(status)
            }
            (_, other) => {
                error_body.clear();
                write_error_json(
                    error_body,
                    &format!("owner shard sent an unexpected reply: {other:?}"),
                    None,
                );
                Flow::Reply(500)
            }
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
