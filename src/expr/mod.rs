//! expr (being written).
