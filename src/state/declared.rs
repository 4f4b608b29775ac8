//! [`DeclaredTable`]: a `[[table]]` of the configuration, written by
//! `upsert`/`delete` steps and read by `lookup` steps and read routes.
//!
//! Each key holds one value per declared column. A deleted key keeps its
//! slot (slots are never reused, see `slots.rs`) with `present = false`, so
//! the delete travels through the delta log like any other change: its
//! record's `#present` column is false and recovery drops the key.
//!
//! Scope is a property of the spec ([`DeclaredSpec::scope`]): a
//! partitioned table holds the keys its shard owns, a replicated one every
//! key on every shard (the write path in `forward.rs` keeps the copies
//! equal); the table itself is the same structure either way.

use hashbrown::HashTable;

use super::key::{Key, spread, table_hash};
use super::log::DeltaLog;
use super::slots::{Entry, find_slot, insert_key};
use super::kind::KindSpec;
use super::{ColumnDesc, KeyedTable, StateColumn, StateError, TableDesc, TableKind, TableSpec, UpdateError};
use crate::row::{ColumnType, Slot, Val};

/// Where a declared table's rows live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each key on its owner shard (the default): writes and lookups go to
    /// the owner, one hop when the request landed elsewhere.
    Partitioned,
    /// Every shard holds every row: lookups are local reads, writes are
    /// applied on every shard before they are answered.
    Replicated,
}

impl Scope {
    /// `"partitioned"` or `"replicated"`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Partitioned => "partitioned",
            Scope::Replicated => "replicated",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        match name {
            "partitioned" => Some(Scope::Partitioned),
            "replicated" => Some(Scope::Replicated),
            _ => None,
        }
    }
}

/// What a `[[table]]` declares.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredSpec {
    /// The key column's name.
    pub key: String,
    /// The key's type (utf8, int64 or bool).
    pub key_type: ColumnType,
    /// The value columns, in declared order.
    pub columns: Vec<(String, ColumnType)>,
    /// Partitioned or replicated.
    pub scope: Scope,
}

impl TableSpec {
    /// A declared `[[table]]`.
    pub fn declared(name: impl Into<String>, spec: DeclaredSpec) -> TableSpec {
        TableSpec {
            name: name.into(),
            kind: TableKind::Declared(spec),
        }
    }
}

impl KindSpec for DeclaredSpec {
    type Table = DeclaredTable;

    fn build(&self, name: String, logging: bool) -> DeclaredTable {
        DeclaredTable::new(name, self, logging)
    }

    /// At least one column.
    fn validate(&self, table: &str) -> Result<(), StateError> {
        if self.columns.is_empty() {
            return Err(StateError::Outputs {
                table: table.to_string(),
                message: "no columns; declare at least one".into(),
            });
        }
        Ok(())
    }

    /// One per value column, then `#present`.
    fn state_columns(&self, table: &str) -> Vec<StateColumn> {
        let mut cols: Vec<StateColumn> = self
            .columns
            .iter()
            .map(|(name, ty)| StateColumn::new(format!("{table}.{name}"), *ty))
            .collect();
        cols.push(StateColumn::new(
            format!("{table}#present"),
            ColumnType::Boolean,
        ));
        cols
    }

    fn read_values(&self) -> Vec<(String, ColumnType, bool)> {
        self.columns
            .iter()
            .map(|(n, t)| (n.clone(), *t, false))
            .collect()
    }

    /// Same key type and scope; columns are matched by name (a new column
    /// starts null, a dropped one is ignored) and must keep their type.
    fn reconcile(
        &self,
        name: &str,
        written: &DeclaredSpec,
        warnings: &mut Vec<String>,
    ) -> Result<(), String> {
        if written.key_type != self.key_type {
            return Err(format!(
                "the key is {} in the checkpoint but {} in the configuration",
                written.key_type, self.key_type
            ));
        }
        for (c, ty) in &self.columns {
            match written.columns.iter().find(|(w, _)| w == c) {
                Some((_, wty)) if wty != ty => {
                    return Err(format!(
                        "column `{c}` is {wty} in the checkpoint but {ty} in the configuration"
                    ));
                }
                Some(_) => {}
                None => warnings.push(format!(
                    "table `{name}` column `{c}` is new; it is null for restored keys"
                )),
            }
        }
        for (w, _) in &written.columns {
            if !self.columns.iter().any(|(c, _)| c == w) {
                warnings.push(format!(
                    "table `{name}` column `{w}` is not declared any more; its values are ignored"
                ));
            }
        }
        Ok(())
    }

    fn replicated(&self) -> bool {
        self.scope == Scope::Replicated
    }

    fn describe(&self, desc: &mut TableDesc) {
        desc.key = Some(ColumnDesc {
            name: self.key.clone(),
            ty: self.key_type.name().to_string(),
        });
        desc.columns = self
            .columns
            .iter()
            .map(|(name, ty)| ColumnDesc {
                name: name.clone(),
                ty: ty.name().to_string(),
            })
            .collect();
        desc.scope = Some(self.scope.name().to_string());
    }

    fn from_desc(desc: &TableDesc) -> Result<DeclaredSpec, String> {
        let key = desc
            .key
            .as_ref()
            .ok_or_else(|| format!("table `{}` has no key", desc.name))?;
        let mut columns = Vec::with_capacity(desc.columns.len());
        for c in &desc.columns {
            columns.push((c.name.clone(), desc.column_type(&c.ty)?));
        }
        let scope = desc.scope.as_deref().unwrap_or("partitioned");
        let scope = Scope::parse(scope)
            .ok_or_else(|| format!("table `{}` has unknown scope `{scope}`", desc.name))?;
        Ok(DeclaredSpec {
            key: key.name.clone(),
            key_type: desc.column_type(&key.ty)?,
            columns,
            scope,
        })
    }
}

/// The rows of one declared table on one shard.
#[derive(Debug)]
pub struct DeclaredTable {
    name: String,
    types: Box<[ColumnType]>,
    index: HashTable<Entry>,
    keys: Vec<Key>,
    /// `width` values per slot.
    vals: Vec<Slot>,
    present: Vec<bool>,
    live: usize,
    marks: Vec<u32>,
    log: DeltaLog,
    logging: bool,
}

/// Checks (and coerces: int64 is accepted for float64) one value for a
/// column of type `ty`; `i` is the column index, for the error.
#[inline]
pub(super) fn coerce(ty: ColumnType, i: usize, value: Val<'_>) -> Result<Val<'_>, UpdateError> {
    let got = match (ty, value) {
        (_, Val::Null)
        | (ColumnType::Utf8, Val::Str(_))
        | (ColumnType::Int64, Val::Int(_))
        | (ColumnType::Float64, Val::Float(_))
        | (ColumnType::Boolean, Val::Bool(_)) => return Ok(value),
        (ColumnType::Float64, Val::Int(x)) => return Ok(Val::Float(x as f64)),
        (_, Val::Str(_)) => "utf8",
        (_, Val::Int(_)) => "int64",
        (_, Val::Float(_)) => "float64",
        (_, Val::Bool(_)) => "bool",
        (_, Val::Array(a)) => a.ty().name(),
    };
    Err(UpdateError::Input {
        output: i,
        expected: ty,
        got,
    })
}

impl DeclaredTable {
    pub(crate) fn new(name: String, spec: &DeclaredSpec, logging: bool) -> DeclaredTable {
        let types: Box<[ColumnType]> = spec.columns.iter().map(|(_, t)| *t).collect();
        DeclaredTable {
            name,
            log: DeltaLog::new(types.len() + 1),
            types,
            index: HashTable::new(),
            keys: Vec::new(),
            vals: Vec::new(),
            present: Vec::new(),
            live: 0,
            marks: Vec::new(),
            logging,
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of keys with a row.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no key has a row.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Number of value columns.
    pub fn width(&self) -> usize {
        self.types.len()
    }

    /// Sets the columns `set(i)` names (`Some(value)`) of `key`'s row,
    /// keeping the others (null for a new key), and returns the row. Every
    /// value is type-checked before anything changes.
    #[inline]
    pub fn upsert<'v>(
        &mut self,
        key: Val<'_>,
        set: impl Fn(usize) -> Option<Val<'v>>,
    ) -> Result<&[Slot], UpdateError> {
        Key::check(key)?;
        for (i, &ty) in self.types.iter().enumerate() {
            if let Some(v) = set(i) {
                coerce(ty, i, v)?;
            }
        }
        let w = self.types.len();
        let hash = table_hash(key);
        let slot = match find_slot(&self.index, &self.keys, key, hash) {
            Some(slot) => {
                if !self.present[slot] {
                    self.vals[slot * w..slot * w + w]
                        .iter_mut()
                        .for_each(Slot::set_null);
                }
                slot
            }
            None => self.insert(key, hash)?,
        };
        if !self.present[slot] {
            self.present[slot] = true;
            self.live += 1;
        }
        for (i, &ty) in self.types.iter().enumerate() {
            if let Some(v) = set(i) {
                // Checked above.
                let v = coerce(ty, i, v).unwrap_or(Val::Null);
                self.vals[slot * w + i].set(v);
            }
        }
        self.log_slot(slot);
        Ok(&self.vals[slot * w..slot * w + w])
    }

    /// Removes `key`'s row; `false` if it had none.
    pub fn delete(&mut self, key: Val<'_>) -> Result<bool, UpdateError> {
        Key::check(key)?;
        let Some(slot) = find_slot(&self.index, &self.keys, key, table_hash(key)) else {
            return Ok(false);
        };
        if !self.present[slot] {
            return Ok(false);
        }
        self.present[slot] = false;
        self.live -= 1;
        self.log_slot(slot);
        Ok(true)
    }

    /// `key`'s row, if it has one.
    #[inline]
    pub fn get(&self, key: Val<'_>) -> Option<&[Slot]> {
        Key::check(key).ok()?;
        let slot = find_slot(&self.index, &self.keys, key, table_hash(key))?;
        if !self.present[slot] {
            return None;
        }
        let w = self.types.len();
        Some(&self.vals[slot * w..slot * w + w])
    }

    /// Every key with a row, and the row, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (Val<'_>, &[Slot])> {
        let w = self.types.len();
        self.keys
            .iter()
            .enumerate()
            .filter(|(s, _)| self.present[*s])
            .map(move |(s, k)| (k.as_val(), &self.vals[s * w..s * w + w]))
    }

    fn insert(&mut self, key: Val<'_>, hash: u32) -> Result<usize, UpdateError> {
        let new_keys = self.logging.then_some(&mut self.log.new_keys);
        let slot = insert_key(
            &mut self.index,
            &mut self.keys,
            &mut self.marks,
            new_keys,
            key,
            hash,
        )?;
        self.vals
            .extend(std::iter::repeat_with(Slot::default).take(self.types.len()));
        self.present.push(false);
        Ok(slot)
    }

    #[inline]
    fn log_slot(&mut self, slot: usize) {
        if !self.logging {
            return;
        }
        let w = self.types.len();
        let present = self.present[slot];
        let row = &self.vals[slot * w..slot * w + w];
        let values = row
            .iter()
            .map(|s| if present { s.get() } else { Val::Null })
            .chain(std::iter::once(Val::Bool(present)));
        self.log.record(&mut self.marks, slot, values);
    }
}

impl KeyedTable for DeclaredTable {
    fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> usize {
        self.live
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
        let w = self.types.len();
        // A row without `#present` (never written) counts as present.
        let present = !matches!(cols.get(w), Some(Some(Val::Bool(false))));
        if present {
            self.upsert(key, |i| {
                Some(cols.get(i).copied().flatten().unwrap_or(Val::Null))
            })?;
        } else {
            self.delete(key)?;
        }
        Ok(())
    }

    fn get_values(&self, key: Val<'_>, value: &mut dyn FnMut(Val<'_>)) -> bool {
        match self.get(key) {
            Some(row) => {
                row.iter().for_each(|s| value(s.get()));
                true
            }
            None => false,
        }
    }

    fn for_each(&self, f: &mut dyn FnMut(Val<'_>, &mut dyn Iterator<Item = Val<'_>>)) {
        for (k, row) in self.iter() {
            f(k, &mut row.iter().map(Slot::get));
        }
    }
}

impl DeclaredTable {
    /// Reserves room for `additional` more keys.
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional, |e| spread(e.hash));
        self.keys.reserve(additional);
        self.marks.reserve(additional);
        self.present.reserve(additional);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DeclaredSpec {
        DeclaredSpec {
            key: "sensor_id".into(),
            key_type: ColumnType::Int64,
            columns: vec![
                ("desired".into(), ColumnType::Float64),
                ("label".into(), ColumnType::Utf8),
            ],
            scope: Scope::Replicated,
        }
    }

    #[test]
    fn upsert_keeps_unnamed_columns_and_delete_removes() {
        let mut t = DeclaredTable::new("s".into(), &spec(), true);
        let row = t
            .upsert(Val::Int(1), |i| (i == 0).then_some(Val::Int(20)))
            .unwrap();
        assert_eq!(row[0].get(), Val::Float(20.0));
        assert_eq!(row[1].get(), Val::Null);
        t.upsert(Val::Int(1), |i| (i == 1).then_some(Val::Str("hall")))
            .unwrap();
        let row = t.get(Val::Int(1)).unwrap();
        assert_eq!(row[0].get(), Val::Float(20.0));
        assert_eq!(row[1].get(), Val::Str("hall"));
        assert_eq!(t.len(), 1);
        assert!(t.delete(Val::Int(1)).unwrap());
        assert!(!t.delete(Val::Int(1)).unwrap());
        assert!(t.get(Val::Int(1)).is_none());
        assert_eq!(t.len(), 0);
        // A re-inserted key starts from nulls.
        let row = t
            .upsert(Val::Int(1), |i| (i == 1).then_some(Val::Str("x")))
            .unwrap();
        assert_eq!(row[0].get(), Val::Null);
    }

    #[test]
    fn wrong_types_change_nothing() {
        let mut t = DeclaredTable::new("s".into(), &spec(), true);
        t.upsert(Val::Int(1), |i| (i == 0).then_some(Val::Float(1.5)))
            .unwrap();
        let e = t
            .upsert(Val::Int(1), |i| {
                Some(if i == 0 { Val::Float(9.0) } else { Val::Int(3) })
            })
            .unwrap_err();
        assert!(matches!(e, UpdateError::Input { output: 1, .. }));
        assert_eq!(t.get(Val::Int(1)).unwrap()[0].get(), Val::Float(1.5));
        assert!(t.upsert(Val::Null, |_| None).is_err());
    }

    #[test]
    fn deletes_travel_through_the_log() {
        let mut t = DeclaredTable::new("s".into(), &spec(), true);
        t.upsert(Val::Int(7), |i| (i == 0).then_some(Val::Float(1.0)))
            .unwrap();
        let mut spare = DeltaLog::default();
        t.swap_log(&mut spare);
        assert_eq!(spare.val(0, 2).unwrap(), Val::Bool(true));
        t.delete(Val::Int(7)).unwrap();
        t.swap_log(&mut spare);
        assert_eq!(spare.slots, vec![0]);
        assert_eq!(spare.val(0, 2).unwrap(), Val::Bool(false));
        let mut r = DeclaredTable::new("s".into(), &spec(), false);
        r.restore(Val::Int(7), &[Some(Val::Float(1.0)), None, None], 0)
            .unwrap();
        assert!(r.get(Val::Int(7)).is_some());
        r.restore(Val::Int(7), &[None, None, Some(Val::Bool(false))], 0)
            .unwrap();
        assert!(r.get(Val::Int(7)).is_none());
    }
}
