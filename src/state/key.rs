//! State keys: the stable key hash, owner-shard routing and owned keys.
//!
//! # The key hash (a stable, on-disk-and-on-the-wire contract)
//!
//! [`key_hash`] is a fixed function that must never change between releases:
//! it decides which shard owns a key, and a restart re-hashes every restored
//! key with it. It is
//!
//! ```text
//! key_hash(k) = fmix64(fnv1a64(tag(k) ++ bytes(k)))
//! ```
//!
//! - `fnv1a64`: 64-bit FNV-1a, offset basis `0xcbf29ce484222325`, prime
//!   `0x100000001b3`, one byte at a time.
//! - `tag` / `bytes`: `Str(s)` → `b's'` then the UTF-8 bytes of `s`;
//!   `Int(i)` → `b'i'` then the 8 bytes of `i`, little-endian two's
//!   complement; `Bool(b)` → `b'b'` then one byte `0` or `1`; `Null` → `b'n'`;
//!   `Float(f)` → `b'f'` then the 8 little-endian bytes of `f.to_bits()`, with
//!   `-0.0` written as `0.0` and every NaN as `0x7ff8000000000000`. (Null and
//!   float keys are rejected by the tables; they hash only so that
//!   [`owner_shard`] is total.)
//! - `fmix64`: MurmurHash3's 64-bit finalizer (`h ^= h >> 33; h *= 0xff51afd7ed558ccd;
//!   h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33`), so that every
//!   output bit depends on every input byte and `h % shards` is balanced even
//!   for sequential integer keys.
//!
//! [`owner_shard`] is `key_hash(k) % shards`. The tables on a shard index
//! their keys by the *high* 32 bits of the same hash, which are independent of
//! the low bits the modulo looks at, so a shard's table is not skewed by the
//! fact that all its keys share one residue.

use crate::row::Val;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

#[inline]
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The stable 64-bit hash of a key; see the module docs for the exact
/// definition, which is part of coreline's compatibility contract.
#[inline]
pub fn key_hash(key: Val<'_>) -> u64 {
    let h = match key {
        Val::Str(s) => fnv1a(fnv1a(FNV_OFFSET, b"s"), s.as_bytes()),
        Val::Int(i) => fnv1a(fnv1a(FNV_OFFSET, b"i"), &i.to_le_bytes()),
        Val::Bool(b) => fnv1a(fnv1a(FNV_OFFSET, b"b"), &[u8::from(b)]),
        Val::Null => fnv1a(FNV_OFFSET, b"n"),
        Val::Float(f) => {
            let bits = if f.is_nan() {
                0x7ff8_0000_0000_0000u64
            } else if f == 0.0 {
                0
            } else {
                f.to_bits()
            };
            fnv1a(fnv1a(FNV_OFFSET, b"f"), &bits.to_le_bytes())
        }
        // Array keys are refused by the plan; they hash only so that this
        // function is total.
        Val::Array(_) => fnv1a(FNV_OFFSET, b"a"),
    };
    fmix64(h)
}

/// The shard that owns `key` among `shards` shards: `key_hash(key) % shards`
/// (0 when `shards` is 0 or 1). Stable across releases and processes.
#[inline]
pub fn owner_shard(key: Val<'_>, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    (key_hash(key) % shards as u64) as usize
}

/// The 32-bit hash a shard's table indexes a key by: the high half of
/// [`key_hash`], independent of the residue [`owner_shard`] uses.
#[inline]
pub(crate) fn table_hash(key: Val<'_>) -> u32 {
    (key_hash(key) >> 32) as u32
}

/// Spreads a stored 32-bit table hash over the 64 bits hashbrown reads (low
/// bits pick the bucket, the top 7 bits are the control byte). Multiplying by
/// an odd constant keeps the low bits a bijection of the input's low bits and
/// fills the top bits from all 32.
#[inline]
pub(crate) fn spread(hash: u32) -> u64 {
    u64::from(hash).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Why a value cannot be a state key. Small and `Copy` for the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key value was null; callers reject null keys before the table.
    #[error("the key is null; keyed steps need a non-null key")]
    Null,
    /// Float keys are not supported (equality on floats is not a key).
    #[error("the key is a float64; keys must be utf8, int64 or bool")]
    Float,
    /// Array keys are not supported (refused by the plan as well).
    #[error("the key is an array; keys must be utf8, int64 or bool")]
    Array,
}

/// An owned key as a table stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Str(Box<str>),
    Int(i64),
    Bool(bool),
}

impl Key {
    /// Validates a borrowed key without allocating.
    #[inline]
    pub(crate) fn check(key: Val<'_>) -> Result<(), KeyError> {
        match key {
            Val::Str(_) | Val::Int(_) | Val::Bool(_) => Ok(()),
            Val::Null => Err(KeyError::Null),
            Val::Float(_) => Err(KeyError::Float),
            Val::Array(_) => Err(KeyError::Array),
        }
    }

    /// An owned copy of a borrowed key.
    pub(crate) fn from_val(key: Val<'_>) -> Result<Key, KeyError> {
        match key {
            Val::Str(s) => Ok(Key::Str(s.into())),
            Val::Int(i) => Ok(Key::Int(i)),
            Val::Bool(b) => Ok(Key::Bool(b)),
            Val::Null => Err(KeyError::Null),
            Val::Float(_) => Err(KeyError::Float),
            Val::Array(_) => Err(KeyError::Array),
        }
    }

    /// The borrowed view of this key.
    #[inline]
    pub(crate) fn as_val(&self) -> Val<'_> {
        match self {
            Key::Str(s) => Val::Str(s),
            Key::Int(i) => Val::Int(*i),
            Key::Bool(b) => Val::Bool(*b),
        }
    }

    /// True when this key equals the borrowed key (same type and value).
    #[inline]
    pub(crate) fn eq_val(&self, key: Val<'_>) -> bool {
        match (self, key) {
            (Key::Str(a), Val::Str(b)) => **a == *b,
            (Key::Int(a), Val::Int(b)) => *a == b,
            (Key::Bool(a), Val::Bool(b)) => *a == b,
            _ => false,
        }
    }
}

/// The key type names used in checkpoint files (`key_type` column).
pub(crate) fn key_type_name(key: Val<'_>) -> &'static str {
    match key {
        Val::Str(_) => "utf8",
        Val::Int(_) => "int64",
        Val::Bool(_) => "bool",
        Val::Float(_) => "float64",
        Val::Array(_) => "array",
        Val::Null => "null",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        // Reference FNV-1a 64 test vectors (Fowler/Noll/Vo).
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn key_hash_is_stable() {
        // These values are a compatibility contract: a change here moves keys
        // between shards and breaks restoring old checkpoints' routing.
        let cases: [(Val<'_>, u64); 6] = [
            (Val::Str(""), 0xcc38350dbfbd2cea),
            (Val::Str("user-1"), 0xf72220dd6e5364c5),
            (Val::Str("sensor-42"), 0x00fd422eb2e76eaf),
            (Val::Int(0), 0xf91e3bab850ef2ff),
            (Val::Int(-7), 0x29ed376646a17607),
            (Val::Bool(true), 0x405ee9d6aeb89baf),
        ];
        for (key, expected) in cases {
            assert_eq!(key_hash(key), expected, "key_hash({key:?})");
        }
        // Computed independently (Python) from the definition in the docs.
        assert_eq!(owner_shard(Val::Str("user-1"), 4), 1);
        assert_eq!(owner_shard(Val::Int(-7), 3), 2);
    }

    #[test]
    fn owner_shard_is_balanced_and_typed() {
        assert_eq!(owner_shard(Val::Str("x"), 1), 0);
        assert_eq!(owner_shard(Val::Str("x"), 0), 0);
        assert_ne!(key_hash(Val::Int(1)), key_hash(Val::Str("1")));
        assert_eq!(key_hash(Val::Float(0.0)), key_hash(Val::Float(-0.0)));
        let mut counts = [0usize; 4];
        for i in 0..40_000i64 {
            counts[owner_shard(Val::Int(i), 4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "unbalanced: {counts:?}");
        }
    }

    #[test]
    fn keys_compare_by_type_and_value() {
        let k = Key::from_val(Val::Str("a")).unwrap();
        assert!(k.eq_val(Val::Str("a")));
        assert!(!k.eq_val(Val::Str("b")));
        assert!(!Key::Int(1).eq_val(Val::Str("1")));
        assert_eq!(Key::from_val(Val::Null), Err(KeyError::Null));
        assert_eq!(Key::check(Val::Float(1.0)), Err(KeyError::Float));
    }
}
