//! `with_column { name, expr }`: evaluates an expression into a column.

use crate::expr::Expr;
use crate::row::{Row, Slot};

/// Evaluates `expr` on the row and stores the result in column `out`.
#[derive(Debug, Clone)]
pub struct WithColumn {
    expr: Expr,
    out: usize,
    /// Evaluation lands here first (the result may borrow the row), then is
    /// swapped into the row; both buffers cycle without allocating.
    scratch: Slot,
}

impl WithColumn {
    /// A step writing `expr`'s value into column index `out`.
    pub fn new(expr: Expr, out: usize) -> WithColumn {
        WithColumn {
            expr,
            out,
            scratch: Slot::default(),
        }
    }

    /// Evaluates and stores the column.
    #[inline]
    pub fn apply(&mut self, row: &mut Row) {
        let value = self.expr.eval(row);
        self.scratch.set(value);
        row.swap_slot(self.out, &mut self.scratch);
    }
}
