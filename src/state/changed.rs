//! [`ChangedTable`]: the last value seen per key, for `changed` steps.
//!
//! `update` answers "does this value differ from the last one seen for this
//! key?" and remembers it. The first value seen for a key counts as a change
//! (`true`): the thermostat pattern "send a control when it changes" must
//! send the first one. Null is a value like any other (null after null is no
//! change; null after 3 is). Floats compare by `==`, except that NaN equals
//! NaN, so a NaN stream does not fire on every request.

use hashbrown::HashTable;

use super::UpdateError;
use super::key::{Key, spread, table_hash};
use super::slots::{Entry, NewKeys, find_slot, insert_key, mark, shrink};
use crate::row::{ColumnType, Slot, Val};

/// A value as stored in a changed-table log: scalar bits inline, text in the
/// log's byte arena at `start` with `cap` bytes reserved so a later, not
/// longer value for the same key overwrites in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogVal {
    pub(crate) kind: u8,
    pub(crate) bits: u64,
    pub(crate) start: usize,
    pub(crate) len: u32,
    pub(crate) cap: u32,
}

pub(crate) const V_NULL: u8 = 0;
pub(crate) const V_BOOL: u8 = 1;
pub(crate) const V_INT: u8 = 2;
pub(crate) const V_FLOAT: u8 = 3;
pub(crate) const V_STR: u8 = 4;

/// The delta log of a [`ChangedTable`](super::ChangedTable).
#[derive(Debug, Default)]
pub(crate) struct ChangedLog {
    pub(crate) slot_base: usize,
    pub(crate) new_keys: NewKeys,
    pub(crate) slots: Vec<u32>,
    pub(crate) vals: Vec<LogVal>,
    pub(crate) text: Vec<u8>,
}

impl ChangedLog {
    pub(crate) fn clear(&mut self) {
        self.new_keys.clear();
        self.slots.clear();
        self.vals.clear();
        self.text.clear();
    }

    pub(crate) fn shrink(&mut self) {
        self.new_keys.shrink();
        shrink(&mut self.slots);
        shrink(&mut self.vals);
        shrink(&mut self.text);
    }

    /// Writes `value` as the record at `pos`, or appends a record when `pos`
    /// is `None`. Returns the record's position.
    pub(crate) fn put(&mut self, pos: Option<usize>, value: Val<'_>) -> usize {
        let (kind, bits, text): (u8, u64, &[u8]) = match value {
            Val::Null => (V_NULL, 0, &[]),
            Val::Bool(b) => (V_BOOL, u64::from(b), &[]),
            Val::Int(i) => (V_INT, i as u64, &[]),
            Val::Float(f) => (V_FLOAT, f.to_bits(), &[]),
            Val::Str(s) => (V_STR, 0, s.as_bytes()),
        };
        let (mut start, mut cap) = match pos {
            Some(p) => (self.vals[p].start, self.vals[p].cap as usize),
            None => (0, 0),
        };
        if text.len() > cap {
            // Reserve a power of two so a key whose text keeps growing
            // appends O(log len) times per epoch, not once per update.
            cap = text.len().next_power_of_two().min(u32::MAX as usize);
            start = self.text.len();
            self.text.resize(start + cap, 0);
        }
        self.text[start..start + text.len()].copy_from_slice(text);
        let rec = LogVal {
            kind,
            bits,
            start,
            len: text.len() as u32,
            cap: cap as u32,
        };
        match pos {
            Some(p) => {
                self.vals[p] = rec;
                p
            }
            None => {
                self.vals.push(rec);
                self.vals.len() - 1
            }
        }
    }

    /// The value of record `i`; an error only if the arena was corrupted.
    pub(crate) fn val(&self, i: usize) -> Result<Val<'_>, std::str::Utf8Error> {
        let r = self.vals[i];
        Ok(match r.kind {
            V_BOOL => Val::Bool(r.bits != 0),
            V_INT => Val::Int(r.bits as i64),
            V_FLOAT => Val::Float(f64::from_bits(r.bits)),
            V_STR => Val::Str(std::str::from_utf8(
                &self.text[r.start..r.start + r.len as usize],
            )?),
            _ => Val::Null,
        })
    }
}

/// The last value per key of one `changed` step on one shard.
///
/// Same slot discipline as [`AggregateTable`](super::AggregateTable): keys
/// are never removed, slot numbers are stable, updating an existing key does
/// not allocate unless its text value outgrows the key's buffer.
#[derive(Debug)]
pub struct ChangedTable {
    name: String,
    value_type: ColumnType,
    index: HashTable<Entry>,
    keys: Vec<Key>,
    vals: Vec<Slot>,
    marks: Vec<u32>,
    log: ChangedLog,
    logging: bool,
}

fn same(a: Val<'_>, b: Val<'_>) -> bool {
    match (a, b) {
        (Val::Float(x), Val::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
        _ => a == b,
    }
}

impl ChangedTable {
    pub(crate) fn new(name: String, value_type: ColumnType, logging: bool) -> ChangedTable {
        ChangedTable {
            name,
            value_type,
            index: HashTable::new(),
            keys: Vec::new(),
            vals: Vec::new(),
            marks: Vec::new(),
            log: ChangedLog::default(),
            logging,
        }
    }

    /// The step name this table belongs to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared type of the watched value.
    pub fn value_type(&self) -> ColumnType {
        self.value_type
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key was ever updated.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Reserves room for `additional` more keys (see
    /// [`AggregateTable::reserve`](super::AggregateTable::reserve)).
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional, |e| spread(e.hash));
        self.keys.reserve(additional);
        self.vals.reserve(additional);
        self.marks.reserve(additional);
    }

    /// Coerces `value` to the declared type: int64 is accepted for float64;
    /// anything else of the wrong type is an error.
    #[inline]
    fn coerce<'v>(&self, value: Val<'v>) -> Result<Val<'v>, UpdateError> {
        let got = match (self.value_type, value) {
            (_, Val::Null)
            | (ColumnType::Utf8, Val::Str(_))
            | (ColumnType::Int64, Val::Int(_))
            | (ColumnType::Float64, Val::Float(_))
            | (ColumnType::Boolean, Val::Bool(_)) => return Ok(value),
            (ColumnType::Float64, Val::Int(i)) => return Ok(Val::Float(i as f64)),
            (_, Val::Str(_)) => "utf8",
            (_, Val::Int(_)) => "int64",
            (_, Val::Float(_)) => "float64",
            (_, Val::Bool(_)) => "bool",
        };
        Err(UpdateError::Input {
            output: 0,
            expected: self.value_type,
            got,
        })
    }

    /// Records `value` as the key's latest and returns `true` when it differs
    /// from the previous one, or when the key is seen for the first time.
    #[inline]
    pub fn update(&mut self, key: Val<'_>, value: Val<'_>) -> Result<bool, UpdateError> {
        Key::check(key)?;
        let value = self.coerce(value)?;
        let hash = table_hash(key);
        let slot = match find_slot(&self.index, &self.keys, key, hash) {
            Some(slot) => {
                if same(self.vals[slot].get(), value) {
                    return Ok(false);
                }
                self.vals[slot].set(value);
                slot
            }
            None => self.insert(key, hash, value)?,
        };
        self.log_slot(slot, value);
        Ok(true)
    }

    /// The key's last value, without changing anything. `None` for an
    /// unknown key; `Some(Val::Null)` when the last value seen was null.
    pub fn get(&self, key: Val<'_>) -> Option<Val<'_>> {
        Key::check(key).ok()?;
        let slot = find_slot(&self.index, &self.keys, key, table_hash(key))?;
        Some(self.vals[slot].get())
    }

    /// Every key with its last value, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (Val<'_>, Val<'_>)> {
        self.keys
            .iter()
            .zip(&self.vals)
            .map(|(k, v)| (k.as_val(), v.get()))
    }

    fn insert(&mut self, key: Val<'_>, hash: u32, value: Val<'_>) -> Result<usize, UpdateError> {
        let new_keys = self.logging.then_some(&mut self.log.new_keys);
        let slot = insert_key(
            &mut self.index,
            &mut self.keys,
            &mut self.marks,
            new_keys,
            key,
            hash,
        )?;
        let mut stored = Slot::default();
        stored.set(value);
        self.vals.push(stored);
        Ok(slot)
    }

    #[inline]
    fn log_slot(&mut self, slot: usize, value: Val<'_>) {
        if !self.logging {
            return;
        }
        let pos = mark(&mut self.marks, &mut self.log.slots, slot);
        self.log.put(pos, value);
    }

    /// Sets the key's last value (recovery), logged like an update.
    pub(crate) fn restore(&mut self, key: Val<'_>, value: Val<'_>) -> Result<(), UpdateError> {
        Key::check(key)?;
        let value = self.coerce(value)?;
        let hash = table_hash(key);
        let slot = match find_slot(&self.index, &self.keys, key, hash) {
            Some(slot) => {
                self.vals[slot].set(value);
                slot
            }
            None => self.insert(key, hash, value)?,
        };
        self.log_slot(slot, value);
        Ok(())
    }

    /// Swaps the active delta log with `spare` (cleared first); O(1).
    pub(crate) fn swap_log(&mut self, spare: &mut ChangedLog) {
        spare.clear();
        spare.slot_base = self.keys.len();
        std::mem::swap(&mut self.log, spare);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_value_and_changes_fire() {
        let mut t = ChangedTable::new("c".into(), ColumnType::Utf8, true);
        assert!(t.update(Val::Str("s1"), Val::Str("on")).unwrap());
        assert!(!t.update(Val::Str("s1"), Val::Str("on")).unwrap());
        assert!(t.update(Val::Str("s1"), Val::Str("off")).unwrap());
        assert!(t.update(Val::Str("s1"), Val::Null).unwrap());
        assert!(!t.update(Val::Str("s1"), Val::Null).unwrap());
        assert_eq!(t.get(Val::Str("s1")), Some(Val::Null));
        assert!(t.update(Val::Str("s2"), Val::Null).unwrap());
        assert_eq!(t.get(Val::Str("s3")), None);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn floats_coerce_and_nan_is_stable() {
        let mut t = ChangedTable::new("c".into(), ColumnType::Float64, true);
        assert!(t.update(Val::Int(1), Val::Int(2)).unwrap());
        assert!(!t.update(Val::Int(1), Val::Float(2.0)).unwrap());
        assert!(t.update(Val::Int(1), Val::Float(f64::NAN)).unwrap());
        assert!(!t.update(Val::Int(1), Val::Float(f64::NAN)).unwrap());
        let e = t.update(Val::Int(1), Val::Str("x")).unwrap_err();
        assert_eq!(
            e,
            UpdateError::Input {
                output: 0,
                expected: ColumnType::Float64,
                got: "utf8"
            }
        );
    }

    #[test]
    fn log_keeps_one_record_per_key_with_latest_text() {
        let mut t = ChangedTable::new("c".into(), ColumnType::Utf8, true);
        t.update(Val::Str("k"), Val::Str("a")).unwrap();
        t.update(Val::Str("k"), Val::Str("a much longer value"))
            .unwrap();
        t.update(Val::Str("k"), Val::Str("short")).unwrap();
        t.update(Val::Str("j"), Val::Str("x")).unwrap();
        assert_eq!(t.log.slots, vec![0, 1]);
        assert_eq!(t.log.val(0).unwrap(), Val::Str("short"));
        assert_eq!(t.log.val(1).unwrap(), Val::Str("x"));
        let mut spare = ChangedLog::default();
        t.swap_log(&mut spare);
        assert_eq!(spare.slots.len(), 2);
        assert_eq!(spare.new_keys.len(), 2);
        // After the swap the key is logged afresh, not overwritten in the old log.
        t.update(Val::Str("k"), Val::Str("again")).unwrap();
        assert_eq!(t.log.slots, vec![0]);
        assert_eq!(t.log.slot_base, 2);
        assert_eq!(spare.val(0).unwrap(), Val::Str("short"));
    }
}
