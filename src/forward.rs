//! Messages between shards: a keyed step or state read whose key another
//! shard owns is sent to that owner, run there, and answered.
//!
//! Every key belongs to exactly one shard, `state::owner_shard(key, shards)`.
//! A request that arrives at another shard is decoded and run there up to
//! its keyed step; the step's inputs travel to the owner as a
//! [`KeyedOp`] with owned values, the owner applies it to its own state
//! (synchronously, between two of its own requests) and sends back a
//! [`KeyedReply`]. The originating connection waits for that reply before it
//! decodes its next request, so responses keep their order per connection.
//!
//! The forwarded path allocates (owned keys and values); the local path does
//! not. Messages travel over glommio's shared channels rather than crossbeam:
//! a shared channel wakes the receiving executor through its event fd, so a
//! forwarded request costs one cross-core wake-up, not a polling interval.

use crate::row::{ArrayRef, Val};

/// An owned value, to cross threads.
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    /// SQL NULL.
    Null,
    /// Boolean.
    Bool(bool),
    /// 64-bit integer.
    Int(i64),
    /// 64-bit float.
    Float(f64),
    /// Text.
    Str(String),
    /// An `array<float64>` vector.
    F64s(Vec<f64>),
    /// An `array<float32>` vector.
    F32s(Vec<f32>),
    /// An `array<int64>` vector.
    I64s(Vec<i64>),
}

impl Owned {
    /// Copies a borrowed value.
    pub fn from_val(v: Val<'_>) -> Owned {
        match v {
            Val::Null => Owned::Null,
            Val::Bool(b) => Owned::Bool(b),
            Val::Int(i) => Owned::Int(i),
            Val::Float(f) => Owned::Float(f),
            Val::Str(s) => Owned::Str(s.to_string()),
            Val::Array(ArrayRef::F64(a)) => Owned::F64s(a.to_vec()),
            Val::Array(ArrayRef::F32(a)) => Owned::F32s(a.to_vec()),
            Val::Array(ArrayRef::I64(a)) => Owned::I64s(a.to_vec()),
        }
    }

    /// Borrows the value.
    pub fn as_val(&self) -> Val<'_> {
        match self {
            Owned::Null => Val::Null,
            Owned::Bool(b) => Val::Bool(*b),
            Owned::Int(i) => Val::Int(*i),
            Owned::Float(f) => Val::Float(*f),
            Owned::Str(s) => Val::Str(s),
            Owned::F64s(a) => Val::Array(ArrayRef::F64(a)),
            Owned::F32s(a) => Val::Array(ArrayRef::F32(a)),
            Owned::I64s(a) => Val::Array(ArrayRef::I64(a)),
        }
    }
}

/// A keyed operation to run on the key's owner shard.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyedOp {
    /// Update an aggregate table with one request's inputs (one per output;
    /// null for outputs without an input).
    Aggregate {
        /// State table id.
        table: usize,
        /// The key.
        key: Owned,
        /// Inputs in output order.
        inputs: Vec<Owned>,
        /// Request time (unix ms), for `first_seen()`.
        now_ms: i64,
    },
    /// Update a `changed` table.
    Changed {
        /// State table id.
        table: usize,
        /// The key.
        key: Owned,
        /// The value to compare with the key's last one.
        value: Owned,
    },
    /// Read a key's state without changing it.
    Read {
        /// State table id.
        table: usize,
        /// The key.
        key: Owned,
    },
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyedReply {
    /// Aggregate outputs after the update, or a read's values (`None`: the
    /// key has no state).
    Values(Option<Vec<Owned>>),
    /// Whether a `changed` value differs from the last one.
    Changed(bool),
    /// The op failed on the owner; the request is answered with this
    /// status and message.
    Failed(u16, String),
}

/// One message between shards.
#[derive(Debug)]
pub enum ShardMessage {
    /// Run `op` and reply to shard `from`, waking its connection `slot`.
    Request {
        /// Sending shard.
        from: usize,
        /// Connection slot on the sending shard.
        slot: usize,
        /// Generation of that slot's forward, to drop stale replies.
        generation: u64,
        /// What to run.
        op: KeyedOp,
    },
    /// The answer to a request.
    Reply {
        /// Connection slot on the receiving shard.
        slot: usize,
        /// Generation the request carried.
        generation: u64,
        /// The result.
        reply: KeyedReply,
    },
}
