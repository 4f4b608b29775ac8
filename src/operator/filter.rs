//! `filter { expr, status, message }`: answers early unless the predicate is
//! true. As in SQL `WHERE`, a null predicate rejects the row.

use crate::expr::Expr;
use crate::operator::Flow;
use crate::reply::write_error_json;
use crate::row::{Row, Val};

/// Rejects the request with `status` and a pre-encoded JSON error body when
/// the predicate is false or null.
#[derive(Debug, Clone)]
pub struct Filter {
    predicate: Expr,
    status: u16,
    /// `{"error":"<message>"}`, encoded once at build time.
    body: Vec<u8>,
}

impl Filter {
    /// A filter on a boolean `predicate`.
    pub fn new(predicate: Expr, status: u16, message: &str) -> Filter {
        let mut body = Vec::new();
        write_error_json(&mut body, message, None);
        Filter {
            predicate,
            status,
            body,
        }
    }

    /// Evaluates the predicate; on rejection copies the error body out.
    #[inline]
    pub fn apply(&mut self, row: &mut Row, error_body: &mut Vec<u8>) -> Flow {
        match self.predicate.eval(row) {
            Val::Bool(true) => Flow::Continue,
            _ => {
                error_body.clear();
                error_body.extend_from_slice(&self.body);
                Flow::Reply(self.status)
            }
        }
    }
}
