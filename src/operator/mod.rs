//! operator (being written).
