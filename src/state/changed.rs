//! [`ChangedTable`]: the last value seen per key, for `changed` steps.
//!
//! `update` answers "does this value differ from the last one seen for this
//! key?" and remembers it. The first value seen for a key counts as a change
//! (`true`): the thermostat pattern "send a control when it changes" must
//! send the first one. Null is a value like any other (null after null is no
//! change; null after 3 is). Floats compare by `==`, except that NaN equals
//! NaN, so a NaN stream does not fire on every request.

use hashbrown::HashTable;

use super::key::{Key, spread, table_hash};
use super::log::DeltaLog;
use super::slots::{Entry, find_slot, insert_key};
use super::kind::{KindSpec, StepTable};
use super::{
    KeyedTable, Outputs, ShardState, StateColumn, TableDesc, TableKind, TableSpec, UpdateError,
};
use crate::row::{ColumnType, Slot, Val};

/// What a `changed` step declares: the type of its watched value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangedSpec {
    /// The value expression's type.
    pub value_type: ColumnType,
}

impl TableSpec {
    /// A `changed` table.
    pub fn changed(name: impl Into<String>, value_type: ColumnType) -> TableSpec {
        TableSpec {
            name: name.into(),
            kind: TableKind::Changed(ChangedSpec { value_type }),
        }
    }
}

impl KindSpec for ChangedSpec {
    type Table = ChangedTable;

    fn build(&self, name: String, logging: bool) -> ChangedTable {
        ChangedTable::new(name, self.value_type, logging)
    }

    /// One column, `<table>.value`.
    fn state_columns(&self, table: &str) -> Vec<StateColumn> {
        vec![StateColumn::new(format!("{table}.value"), self.value_type)]
    }

    fn read_values(&self) -> Vec<(String, ColumnType, bool)> {
        vec![("value".to_string(), self.value_type, false)]
    }

    fn reconcile(
        &self,
        _table: &str,
        written: &ChangedSpec,
        _warnings: &mut Vec<String>,
    ) -> Result<(), String> {
        let (wt, ct) = (written.value_type, self.value_type);
        if wt != ct {
            return Err(format!(
                "the watched value is {wt} in the checkpoint but {ct} in the configuration"
            ));
        }
        Ok(())
    }

    fn describe(&self, desc: &mut TableDesc) {
        desc.value_type = Some(self.value_type.name().to_string());
    }

    fn from_desc(desc: &TableDesc) -> Result<ChangedSpec, String> {
        let t = desc
            .value_type
            .as_deref()
            .ok_or_else(|| format!("changed table `{}` has no value_type", desc.name))?;
        Ok(ChangedSpec {
            value_type: desc.column_type(t)?,
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
    log: DeltaLog,
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
            log: DeltaLog::new(1),
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
    /// anything else of the wrong type is an error (the rule of declared
    /// tables, [`super::declared::coerce`]).
    #[inline]
    fn coerce<'v>(&self, value: Val<'v>) -> Result<Val<'v>, UpdateError> {
        super::declared::coerce(self.value_type, 0, value)
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
        self.log
            .record(&mut self.marks, slot, std::iter::once(value));
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
}

impl KeyedTable for ChangedTable {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn swap_log(&mut self, spare: &mut DeltaLog) {
        let slots = self.keys.len();
        self.log.swap(spare, slots);
    }

    fn restore(
        &mut self,
        key: Val<'_>,
        cols: &[Option<Val<'_>>],
        _now_ms: i64,
    ) -> Result<(), UpdateError> {
        let value = cols.first().copied().flatten().unwrap_or(Val::Null);
        ChangedTable::restore(self, key, value)
    }

    fn get_values(&self, key: Val<'_>, value: &mut dyn FnMut(Val<'_>)) -> bool {
        self.get(key).map(value).is_some()
    }

    fn for_each(&self, f: &mut dyn FnMut(Val<'_>, &mut dyn Iterator<Item = Val<'_>>)) {
        for (k, v) in self.iter() {
            f(k, &mut std::iter::once(v));
        }
    }
}

impl StepTable for ChangedTable {
    #[inline]
    fn update_step<'v>(
        &mut self,
        key: Val<'_>,
        _now_ms: impl FnOnce() -> i64,
        input: impl Fn(usize) -> Val<'v>,
    ) -> Result<Outputs<'_>, UpdateError> {
        self.update(key, input(0))
            .map(|changed| Outputs::One(Val::Bool(changed)))
    }
}

impl ShardState {
    /// The changed table with state id `id`; `None` if out of range or of
    /// another kind.
    #[inline]
    pub fn changed(&self, id: usize) -> Option<&ChangedTable> {
        self.step_table(id)
    }

    /// Mutable [`ShardState::changed`].
    #[inline]
    pub fn changed_mut(&mut self, id: usize) -> Option<&mut ChangedTable> {
        self.step_table_mut(id)
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
        assert_eq!(t.log.val(0, 0).unwrap(), Val::Str("short"));
        assert_eq!(t.log.val(1, 0).unwrap(), Val::Str("x"));
        let mut spare = DeltaLog::default();
        t.swap_log(&mut spare);
        assert_eq!(spare.slots.len(), 2);
        assert_eq!(spare.new_keys.len(), 2);
        // After the swap the key is logged afresh, not overwritten in the old log.
        t.update(Val::Str("k"), Val::Str("again")).unwrap();
        assert_eq!(t.log.slots, vec![0]);
        assert_eq!(t.log.slot_base, 2);
        assert_eq!(spare.val(0, 0).unwrap(), Val::Str("short"));
    }
}
