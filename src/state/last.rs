//! [`LastTable`]: the last value seen per key, for `last` steps (a
//! throwaway kind proving that a keyed kind is one file here plus one
//! registry line).

use hashbrown::HashTable;

use super::key::{Key, table_hash};
use super::kind::{KindSpec, StepTable};
use super::log::DeltaLog;
use super::slots::{Entry, find_slot, insert_key};
use super::{KeyedTable, Outputs, StateColumn, TableDesc, UpdateError};
use crate::row::{ColumnType, Slot, Val};

/// What a `last` step declares: the type of its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastSpec {
    /// The value expression's type.
    pub value_type: ColumnType,
}

impl KindSpec for LastSpec {
    type Table = LastTable;

    fn build(&self, name: String, logging: bool) -> LastTable {
        LastTable {
            name,
            value_type: self.value_type,
            index: HashTable::new(),
            keys: Vec::new(),
            vals: Vec::new(),
            marks: Vec::new(),
            log: DeltaLog::new(1),
            logging,
        }
    }

    fn state_columns(&self, table: &str) -> Vec<StateColumn> {
        vec![StateColumn::new(format!("{table}.last"), self.value_type)]
    }

    fn read_values(&self) -> Vec<(String, ColumnType, bool)> {
        vec![("last".to_string(), self.value_type, false)]
    }

    fn reconcile(&self, _: &str, written: &LastSpec, _: &mut Vec<String>) -> Result<(), String> {
        (written == self)
            .then_some(())
            .ok_or_else(|| format!("the value is {} in the checkpoint", written.value_type))
    }

    fn describe(&self, desc: &mut TableDesc) {
        desc.value_type = Some(self.value_type.name().to_string());
    }

    fn from_desc(desc: &TableDesc) -> Result<LastSpec, String> {
        let t = desc.value_type.as_deref().unwrap_or_default();
        Ok(LastSpec {
            value_type: desc.column_type(t)?,
        })
    }
}

/// The last value per key of one `last` step on one shard.
#[derive(Debug)]
pub struct LastTable {
    name: String,
    value_type: ColumnType,
    index: HashTable<Entry>,
    keys: Vec<Key>,
    vals: Vec<Slot>,
    marks: Vec<u32>,
    log: DeltaLog,
    logging: bool,
}

impl LastTable {
    fn set(&mut self, key: Val<'_>, value: Val<'_>) -> Result<usize, UpdateError> {
        Key::check(key)?;
        let value = super::declared::coerce(self.value_type, 0, value)?;
        let hash = table_hash(key);
        let slot = match find_slot(&self.index, &self.keys, key, hash) {
            Some(slot) => slot,
            None => {
                let new_keys = self.logging.then_some(&mut self.log.new_keys);
                let (index, keys, marks) = (&mut self.index, &mut self.keys, &mut self.marks);
                let slot = insert_key(index, keys, marks, new_keys, key, hash)?;
                self.vals.push(Slot::default());
                slot
            }
        };
        self.vals[slot].set(value);
        if self.logging {
            let v = self.vals[slot].get();
            self.log.record(&mut self.marks, slot, std::iter::once(v));
        }
        Ok(slot)
    }
}

impl KeyedTable for LastTable {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn swap_log(&mut self, spare: &mut DeltaLog) {
        self.log.swap(spare, self.keys.len());
    }

    fn restore(
        &mut self,
        key: Val<'_>,
        cols: &[Option<Val<'_>>],
        _: i64,
    ) -> Result<(), UpdateError> {
        self.set(key, cols.first().copied().flatten().unwrap_or(Val::Null))
            .map(drop)
    }

    fn get_values(&self, key: Val<'_>, value: &mut dyn FnMut(Val<'_>)) -> bool {
        let hash = table_hash(key);
        let slot = Key::check(key)
            .ok()
            .and_then(|_| find_slot(&self.index, &self.keys, key, hash));
        slot.map(|s| value(self.vals[s].get())).is_some()
    }

    fn for_each(&self, f: &mut dyn FnMut(Val<'_>, &mut dyn Iterator<Item = Val<'_>>)) {
        for (k, v) in self.keys.iter().zip(&self.vals) {
            f(k.as_val(), &mut std::iter::once(v.get()));
        }
    }
}

impl StepTable for LastTable {
    #[inline]
    fn update_step<'v>(
        &mut self,
        key: Val<'_>,
        _now_ms: impl FnOnce() -> i64,
        input: impl Fn(usize) -> Val<'v>,
    ) -> Result<Outputs<'_>, UpdateError> {
        let slot = self.set(key, input(0))?;
        Ok(Outputs::One(self.vals[slot].get()))
    }
}
