//! shard (being written).
