//! Operators: the steps of a route, built once per shard from the plan and
//! run synchronously, in order, on every request's row.
//!
//! An operator is a plain function of the row and its own scratch state; it
//! never awaits, locks or allocates once warm. It either lets the row go on
//! ([`Flow::Continue`]) or answers the request itself ([`Flow::Reply`]), as a
//! filter does. `select` has no runtime part: it only narrows the columns that
//! later steps and the reply may name, which the plan resolves at compile time.

mod filter;
mod with_column;

pub use filter::Filter;
pub use with_column::WithColumn;

use crate::row::Row;

/// What a route does after an operator ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next step.
    Continue,
    /// Stop and answer with this status; the body is the JSON error the
    /// operator wrote into the route's error buffer.
    Reply(u16),
}

/// One compiled step of a route.
#[derive(Debug, Clone)]
pub enum Operator {
    /// Computes a column.
    WithColumn(WithColumn),
    /// Answers early when a predicate is false or null.
    Filter(Filter),
}

impl Operator {
    /// Runs the operator on `row`. A filter that rejects the row writes its
    /// JSON error body into `error_body`.
    #[inline]
    pub fn apply(&mut self, row: &mut Row, error_body: &mut Vec<u8>) -> Flow {
        match self {
            Operator::WithColumn(op) => {
                op.apply(row);
                Flow::Continue
            }
            Operator::Filter(op) => op.apply(row, error_body),
        }
    }
}
