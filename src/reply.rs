//! reply (being written).
