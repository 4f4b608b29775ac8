//! What keyed steps share: the owner-shard protocol, the per-key update
//! written once, and its errors.
//!
//! A keyed step ([`KeyedUpdate`]) names a table, a key column and output
//! columns; its kind supplies only its inputs. On the owner shard the step is
//! one table update in the shard's own state ([`update_on_owner`]),
//! allocation-free for a key already present. On any other shard it returns
//! [`Flow::Forward`]: the pipeline stops there, the step's inputs go to the
//! owner as a [`KeyedOp`], the owner runs [`run_on_owner`], which calls the
//! same [`update_on_owner`], and once the [`KeyedReply`] comes back,
//! [`KeyedUpdate::accept`] writes the outputs into the row and the pipeline
//! goes on from the next step.

use crate::forward::{KeyedOp, KeyedReply, Owned, SEQUENCER};
use crate::operator::{Ctx, Flow};
use crate::reply::write_error_json;
use crate::row::{Row, Val};
use crate::state::{DeclaredTable, Outputs, Scope, ShardState};

/// Where a keyed step's inputs come from.
#[derive(Debug, Clone, Copy)]
pub enum Inputs<'a> {
    /// Input `i` is the row's slot `slots[i]` (null for `None`).
    Slots(&'a [Option<usize>]),
    /// One input, already evaluated.
    Value(Val<'a>),
}

impl Inputs<'_> {
    fn len(&self) -> usize {
        match self {
            Inputs::Slots(s) => s.len(),
            Inputs::Value(_) => 1,
        }
    }

    #[inline]
    fn get<'r>(&'r self, row: &'r Row, i: usize) -> Val<'r> {
        match self {
            Inputs::Slots(slots) => slots[i].map_or(Val::Null, |s| row.get(s)),
            Inputs::Value(v) => *v,
        }
    }
}

/// The run-time part every keyed step shares: which table, which key
/// column, which output columns.
#[derive(Debug, Clone)]
pub struct KeyedUpdate {
    /// State table id.
    pub table: usize,
    /// Slot of the key column.
    pub key: usize,
    /// Key column name, for errors.
    pub key_name: String,
    /// Output slot per output of the table's update.
    pub outs: Vec<usize>,
}

impl KeyedUpdate {
    /// Runs the update on this shard when it owns the key, or asks for a
    /// forward to the owner.
    #[inline]
    pub fn apply(
        &self,
        row: &mut Row,
        ctx: &mut Ctx<'_>,
        error_body: &mut Vec<u8>,
        inputs: Inputs<'_>,
    ) -> Flow {
        let key = row.get(self.key);
        let scope = Scope::Partitioned;
        match key_route(ctx, key, &self.key_name, scope, "a keyed step", error_body) {
            Ok(None) => {}
            Ok(Some(owner)) => return Flow::Forward(owner),
            Err(flow) => return flow,
        }
        let (state, now) = ctx.state_and_clock();
        let result = update_on_owner(state, self.table, key, now, |i| inputs.get(row, i));
        match result {
            Ok(outputs) => {
                for (i, &out) in self.outs.iter().enumerate() {
                    row.slot_mut(out).set(outputs.get(i));
                }
                Flow::Continue
            }
            Err((status, message)) => refuse(error_body, status, &message, None),
        }
    }

    /// The operation to send to the owner.
    pub fn forward_op(&self, row: &Row, inputs: Inputs<'_>, now_ms: i64) -> KeyedOp {
        KeyedOp::Update {
            table: self.table,
            key: Owned::from_val(row.get(self.key)),
            inputs: (0..inputs.len())
                .map(|i| Owned::from_val(inputs.get(row, i)))
                .collect(),
            now_ms,
        }
    }

    /// Writes the owner's reply into the row.
    pub fn accept(&self, row: &mut Row, reply: KeyedReply, error_body: &mut Vec<u8>) -> Flow {
        accept_values(&self.outs, row, reply, error_body)
    }
}

/// Answers the request with `status` and the JSON error `message` (naming
/// `field`, when given): the one way a keyed step refuses.
#[inline]
pub(crate) fn refuse(body: &mut Vec<u8>, status: u16, message: &str, field: Option<&str>) -> Flow {
    body.clear();
    write_error_json(body, message, field);
    Flow::Reply(status)
}

/// Where a keyed step (`what`, for the error) runs for `key`, the value of
/// the row's column `key_name`: `Ok(None)` here, `Ok(Some(shard))` on that
/// shard (the key's owner; the sequencer for every write of a replicated
/// table, `scope`), `Err` the refusal written into `body`: a null key
/// (422), or a key another instance of the fleet owns (421).
#[inline]
pub(crate) fn key_route(
    ctx: &Ctx<'_>,
    key: Val<'_>,
    key_name: &str,
    scope: Scope,
    what: &str,
    body: &mut Vec<u8>,
) -> Result<Option<usize>, Flow> {
    if key.is_null() {
        let message = format!("key field \"{key_name}\" is null; {what} needs a key");
        return Err(refuse(body, 422, &message, Some(key_name)));
    }
    let owner = match scope {
        Scope::Replicated => return Ok(Some(SEQUENCER)),
        Scope::Partitioned => ctx.owner(key, key_name, body).map_err(Flow::Reply)?,
    };
    Ok((owner != ctx.shard).then_some(owner))
}

/// Writes the values of an owner's reply into the row's slots `outs`, in
/// order (or answers a failed or misshapen reply).
pub(crate) fn accept_values(
    outs: &[usize],
    row: &mut Row,
    reply: KeyedReply,
    error_body: &mut Vec<u8>,
) -> Flow {
    match reply {
        KeyedReply::Values(Some(values)) => {
            for (&out, v) in outs.iter().zip(&values) {
                row.slot_mut(out).set(v.as_val());
            }
            Flow::Continue
        }
        other => unexpected_reply(other, error_body),
    }
}

/// The declared table with state id `table`, for an owner-side write.
pub(crate) fn declared_on_owner(
    state: &mut ShardState,
    table: usize,
) -> Result<&mut DeclaredTable, (u16, String)> {
    state
        .declared_table_mut(table)
        .ok_or_else(|| (500, format!("table #{table} is missing on this shard")))
}

/// The owner-side update of a keyed step, written once: a local step and a
/// forwarded one both run this. An error is the status and message the
/// request is answered with.
#[inline]
pub(crate) fn update_on_owner<'s, 'v>(
    state: &'s mut ShardState,
    table: usize,
    key: Val<'_>,
    now_ms: impl FnOnce() -> i64,
    input: impl Fn(usize) -> Val<'v>,
) -> Result<Outputs<'s>, (u16, String)> {
    let Some(t) = state.table_mut(table) else {
        return Err((
            500,
            format!("state table #{table} is missing on this shard"),
        ));
    };
    t.update(key, now_ms, input)
        .map_err(|e| (500, format!("state update failed: {e}")))
}

/// The answer to a reply of the wrong shape: 500, or the owner's own
/// failure status and message.
pub(crate) fn unexpected_reply(reply: KeyedReply, error_body: &mut Vec<u8>) -> Flow {
    match reply {
        KeyedReply::Failed(status, message) => refuse(error_body, status, &message, None),
        other => refuse(
            error_body,
            500,
            &format!("owner shard sent an unexpected reply: {other:?}"),
            None,
        ),
    }
}

/// Runs a forwarded operation on the owner's state.
pub fn run_on_owner(state: &mut ShardState, op: &KeyedOp) -> KeyedReply {
    match op {
        KeyedOp::Update {
            table,
            key,
            inputs,
            now_ms,
        } => {
            let input = |i: usize| inputs.get(i).map_or(Val::Null, Owned::as_val);
            match update_on_owner(state, *table, key.as_val(), || *now_ms, input) {
                Ok(outputs) => KeyedReply::Values(Some(
                    (0..outputs.len())
                        .map(|i| Owned::from_val(outputs.get(i)))
                        .collect(),
                )),
                Err((status, message)) => KeyedReply::Failed(status, message),
            }
        }
        KeyedOp::Upsert { table, key, set } => {
            let set = |i: usize| set.get(i).and_then(|v| v.as_ref().map(Owned::as_val));
            match super::upsert::upsert_on_owner(state, *table, key.as_val(), set) {
                Ok(row) => {
                    KeyedReply::Values(Some(row.iter().map(|s| Owned::from_val(s.get())).collect()))
                }
                Err((status, message)) => KeyedReply::Failed(status, message),
            }
        }
        KeyedOp::Delete { table, key } => {
            match super::delete::delete_on_owner(state, *table, key.as_val()) {
                Ok(()) => KeyedReply::Values(Some(Vec::new())),
                Err((status, message)) => KeyedReply::Failed(status, message),
            }
        }
        KeyedOp::Read { table, key } => KeyedReply::Values(read_state(state, *table, key.as_val())),
    }
}

/// A key's state as values: an aggregate's outputs, or a `changed` table's
/// last value (one element). `None` when the key has no state.
pub fn read_state(state: &ShardState, table: usize, key: Val<'_>) -> Option<Vec<Owned>> {
    let mut values = Vec::new();
    state
        .get(table, key, |v| values.push(Owned::from_val(v)))
        .then_some(values)
}
