//! Operators: the steps of a route, built once per shard from the plan and
//! run synchronously, in order, on every request's row.
//!
//! An operator is a plain function of the row and its own scratch state; it
//! never awaits, locks or allocates once warm. It either lets the row go on
//! ([`Flow::Continue`]) or answers the request itself ([`Flow::Reply`]), as a
//! filter does. `select` has no runtime part: it only narrows the columns that
//! later steps and the reply may name, which the plan resolves at compile time.

mod filter;
mod keyed;
mod with_column;

pub use filter::Filter;
pub use keyed::{Aggregate, Changed, Keyed, read_state, run_on_owner};
pub use with_column::WithColumn;

use crate::row::Row;
use crate::state::ShardState;

/// What keyed steps need from their shard.
pub struct Ctx<'a> {
    /// This shard's state.
    pub state: &'a mut ShardState,
    /// This shard's index.
    pub shard: usize,
    /// Number of shards (for the owner hash).
    pub shards: usize,
    /// Request time, read from the clock on first use only: routes without
    /// keyed steps never pay for it.
    now_ms: Option<i64>,
}

impl<'a> Ctx<'a> {
    /// A context for shard `shard` of `shards`.
    pub fn new(state: &'a mut ShardState, shard: usize, shards: usize) -> Ctx<'a> {
        Ctx {
            state,
            shard,
            shards,
            now_ms: None,
        }
    }

    /// The request's time, unix milliseconds.
    pub fn now_ms(&mut self) -> i64 {
        *self.now_ms.get_or_insert_with(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0)
        })
    }
}

/// What a route does after an operator ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next step.
    Continue,
    /// Stop and answer with this status; the body is the JSON error the
    /// operator wrote into the route's error buffer.
    Reply(u16),
    /// The step's key belongs to this shard index: forward the step there.
    Forward(usize),
}

/// One compiled step of a route.
#[derive(Debug, Clone)]
pub enum Operator {
    /// Computes a column.
    WithColumn(WithColumn),
    /// Answers early when a predicate is false or null.
    Filter(Filter),
    /// A keyed step (`aggregate`, `changed`).
    Keyed(Keyed),
}

impl Operator {
    /// Runs the operator on `row`. A filter that rejects the row writes its
    /// JSON error body into `error_body`; a keyed step whose key another
    /// shard owns returns [`Flow::Forward`].
    #[inline]
    pub fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, error_body: &mut Vec<u8>) -> Flow {
        match self {
            Operator::WithColumn(op) => {
                op.apply(row);
                Flow::Continue
            }
            Operator::Filter(op) => op.apply(row, error_body),
            Operator::Keyed(op) => op.apply(row, ctx, error_body),
        }
    }
}
