//! Shard files: the Arrow IPC layout of `shard-<i>.arrow`, writing it from
//! the writer's mirror, and reading it back into shard states.
//!
//! # Layout
//!
//! One row per (table, key); record batches of at most 65 536 rows, each
//! holding rows of a single table. Columns:
//!
//! | column                 | type            | meaning                                        |
//! |------------------------|-----------------|------------------------------------------------|
//! | `table`                | utf8            | the keyed step's name                          |
//! | `key`                  | utf8            | the key in canonical text: the string itself, an int64 in decimal, `true`/`false` |
//! | `key_type`             | utf8            | `utf8`, `int64` or `bool`                      |
//! | `<table>.<output>`     | int64 / float64 | an aggregate output's current value (exactly what a read returns) |
//! | `<table>.<output>`     | timestamp[ms, UTC] | `first_seen()` outputs: the same unix milliseconds as an Arrow timestamp |
//! | `<table>.<output>.sum` | float64         | `avg` only: running sum                        |
//! | `<table>.<output>.n`   | int64           | `avg` only: number of values                   |
//! | `<table>.value`        | the value type  | a `changed` table's last value                 |
//! | `<table>.<column>`     | the column type | a declared `[[table]]`'s column                |
//! | `<table>#present`      | bool            | a declared table: false records a deleted key  |
//!
//! The columns of a table are its kind's
//! [`state_columns`](crate::state::TableSpec::state_columns), so this file
//! never looks inside a kind: the writer's mirror holds each key's state
//! columns as values, recovery hands them back to the kind's `restore`. A
//! replicated declared table is written once, in shard 0's file, and
//! restored into every shard.
//!
//! Columns of other tables are null in a table's rows. The schema metadata
//! carries `coreline.format`, `coreline.epoch`, `coreline.shard`,
//! `coreline.kind` (`full`/`delta`), `coreline.base` (deltas) and
//! `coreline.tables` (the same JSON table list as the manifest), so a file
//! is self-describing. Delta rows carry a key's full state (an upsert), not
//! an increment. Files written before `first_seen()` became a timestamp hold
//! it as a plain int64 of milliseconds; both read back. Read one with pyarrow:
//! `pyarrow.ipc.open_file("shard-0.arrow").read_all().to_pandas()`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Cursor, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, new_null_array,
};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::manifest::{MANIFEST_FORMAT, SnapshotKind, TableDesc};
use crate::row::{ColumnType, Slot, Val};
use crate::state::{ShardState, TableSpec, key_type_name, owner_shard};

/// Rows per record batch.
const BATCH_ROWS: usize = 64 * 1024;

#[derive(Debug, Clone)]
struct ColDef {
    table: usize,
    ty: ColumnType,
    /// An int64 of unix milliseconds stored as an Arrow timestamp (ms, UTC):
    /// `first_seen()` outputs.
    time: bool,
    name: String,
}

/// The Arrow type of time columns: `timestamp[ms, tz=UTC]`.
pub(crate) fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

impl ColDef {
    /// The column's Arrow type in a file.
    fn arrow_type(&self) -> DataType {
        if self.time {
            time_type()
        } else {
            self.ty.to_arrow()
        }
    }
}

/// The columns of shard files for one table list: every table's state
/// columns ([`TableSpec::state_columns`]), table after table.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    tables: Vec<TableSpec>,
    cols: Vec<ColDef>,
    /// Per table: its columns' range in `cols`.
    ranges: Vec<Range<usize>>,
}

impl Layout {
    /// The layout for `tables`; an error if two tables or outputs would
    /// produce the same column name.
    pub(crate) fn new(tables: &[TableSpec]) -> Result<Layout, String> {
        let mut cols = Vec::new();
        let mut ranges = Vec::with_capacity(tables.len());
        for (t, spec) in tables.iter().enumerate() {
            let start = cols.len();
            cols.extend(spec.state_columns().into_iter().map(|c| ColDef {
                table: t,
                ty: c.ty,
                time: c.time,
                name: c.name,
            }));
            ranges.push(start..cols.len());
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for name in ["table", "key", "key_type"] {
            seen.insert(name, usize::MAX);
        }
        for c in &cols {
            if let Some(&other) = seen.get(c.name.as_str()) {
                let owner = |t: usize| {
                    if t == usize::MAX {
                        "the file's own columns".to_string()
                    } else {
                        format!("table `{}`", tables[t].name)
                    }
                };
                return Err(format!(
                    "checkpoint column `{}` of table `{}` clashes with {}; rename the step or output",
                    c.name,
                    tables[c.table].name,
                    owner(other)
                ));
            }
            seen.insert(&c.name, c.table);
        }
        Ok(Layout {
            tables: tables.to_vec(),
            cols,
            ranges,
        })
    }

    /// For each state column of `current`, the index of the column of the
    /// same name of written table `written` in this layout (`None`: not in
    /// the file).
    pub(crate) fn sources(&self, written: usize, current: &TableSpec) -> Vec<Option<usize>> {
        let range = self.ranges[written].clone();
        current
            .state_columns()
            .iter()
            .map(|c| range.clone().find(|&i| self.cols[i].name == c.name))
            .collect()
    }

    /// The schema of one file, with its metadata.
    pub(crate) fn schema(
        &self,
        epoch: u64,
        shard: usize,
        kind: SnapshotKind,
        base: Option<u64>,
    ) -> Schema {
        let mut fields = vec![
            Field::new("table", DataType::Utf8, false),
            Field::new("key", DataType::Utf8, false),
            Field::new("key_type", DataType::Utf8, false),
        ];
        fields.extend(
            self.cols
                .iter()
                .map(|c| Field::new(&c.name, c.arrow_type(), true)),
        );
        let descs: Vec<TableDesc> = self.tables.iter().map(TableDesc::of).collect();
        let mut meta = HashMap::new();
        meta.insert("coreline.format".to_string(), MANIFEST_FORMAT.to_string());
        meta.insert("coreline.epoch".to_string(), epoch.to_string());
        meta.insert("coreline.shard".to_string(), shard.to_string());
        meta.insert("coreline.kind".to_string(), kind.name().to_string());
        if let Some(b) = base {
            meta.insert("coreline.base".to_string(), b.to_string());
        }
        meta.insert(
            "coreline.tables".to_string(),
            serde_json::to_string(&descs).unwrap_or_default(),
        );
        Schema::new_with_metadata(fields, meta)
    }

    pub(crate) fn tables(&self) -> &[TableSpec] {
        &self.tables
    }
}

/// A `Write` that computes the CRC-32 and length of everything written.
struct CrcFile {
    file: File,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl Write for CrcFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// What writing a file produced.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    pub(crate) bytes: u64,
    pub(crate) crc32: u32,
    pub(crate) rows: u64,
}

/// Writes one shard file, batch by batch. Rows are pushed per table.
pub(crate) struct ShardFileWriter<'l> {
    layout: &'l Layout,
    schema: SchemaRef,
    out: FileWriter<BufWriter<CrcFile>>,
    rows: u64,
}

/// One row of a table: the key and its state columns' values.
pub(crate) type StateRow<'a> = (Val<'a>, &'a [Slot]);

impl<'l> ShardFileWriter<'l> {
    /// Creates the file at `path`, which must not exist (see
    /// [`create_new_file`](super::manifest::create_new_file)).
    pub(crate) fn create(
        path: &Path,
        layout: &'l Layout,
        schema: Schema,
    ) -> Result<ShardFileWriter<'l>, String> {
        let file = super::manifest::create_new_file(path)
            .map_err(|e| format!("create {}: {e}", path.display()))?;
        let sink = BufWriter::with_capacity(
            1 << 20,
            CrcFile {
                file,
                crc: crc32fast::Hasher::new(),
                bytes: 0,
            },
        );
        let schema = Arc::new(schema);
        let out = FileWriter::try_new(sink, &schema)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(ShardFileWriter {
            layout,
            schema,
            out,
            rows: 0,
        })
    }

    fn key_columns<'a>(
        name: &str,
        keys: impl Iterator<Item = Val<'a>> + Clone,
        len: usize,
    ) -> [ArrayRef; 3] {
        let table = StringArray::from_iter_values(std::iter::repeat_n(name, len));
        let mut key = StringBuilder::with_capacity(len, len * 8);
        let mut ibuf = itoa::Buffer::new();
        for k in keys.clone() {
            match k {
                Val::Str(s) => key.append_value(s),
                Val::Int(i) => key.append_value(ibuf.format(i)),
                Val::Bool(b) => key.append_value(if b { "true" } else { "false" }),
                Val::Null | Val::Float(_) | Val::Array(_) => key.append_value(""),
            }
        }
        let key_type = StringArray::from_iter_values(keys.map(key_type_name));
        [Arc::new(table), Arc::new(key.finish()), Arc::new(key_type)]
    }

    fn finish_batch(
        &mut self,
        table: usize,
        fixed: [ArrayRef; 3],
        mut own: impl FnMut(&ColDef) -> ArrayRef,
        len: usize,
    ) -> Result<(), String> {
        let mut columns: Vec<ArrayRef> = fixed.into();
        for c in &self.layout.cols {
            columns.push(if c.table == table {
                own(c)
            } else {
                new_null_array(&c.arrow_type(), len)
            });
        }
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| e.to_string())?;
        self.out.write(&batch).map_err(|e| e.to_string())?;
        self.rows += len as u64;
        Ok(())
    }

    /// Writes rows of table `table`: each key with its state columns.
    pub(crate) fn rows<'a>(
        &mut self,
        table: usize,
        rows: impl Iterator<Item = StateRow<'a>>,
    ) -> Result<(), String> {
        let name = self.layout.tables[table].name.clone();
        let start = self.layout.ranges[table].start;
        let mut buf: Vec<StateRow<'a>> = Vec::with_capacity(BATCH_ROWS.min(1024));
        let mut rows = rows.peekable();
        while rows.peek().is_some() {
            buf.clear();
            buf.extend(rows.by_ref().take(BATCH_ROWS));
            let len = buf.len();
            let fixed = Self::key_columns(&name, buf.iter().map(|r| r.0), len);
            let mut j = 0;
            let own = |c: &ColDef| -> ArrayRef {
                let at = j;
                j += 1;
                let vals = buf.iter().map(|r| r.1.get(at).map_or(Val::Null, Slot::get));
                if c.time {
                    Arc::new(
                        TimestampMillisecondArray::from_iter(vals.map(|v| match v {
                            Val::Int(ms) => Some(ms),
                            _ => None,
                        }))
                        .with_timezone("UTC"),
                    )
                } else {
                    typed(c.ty, vals)
                }
            };
            debug_assert_eq!(start, self.layout.ranges[table].start);
            self.finish_batch(table, fixed, own, len)?;
        }
        Ok(())
    }

    /// Finishes the IPC file and flushes it; fsyncs it if `sync` (a file
    /// that may be thrown away unread is fsynced later, if it is kept).
    pub(crate) fn finish(mut self, sync: bool) -> Result<Written, String> {
        self.out.finish().map_err(|e| e.to_string())?;
        let sink = self.out.into_inner().map_err(|e| e.to_string())?;
        let crc_file = sink.into_inner().map_err(|e| e.error().to_string())?;
        if sync {
            crc_file
                .file
                .sync_all()
                .map_err(|e| format!("fsync: {e}"))?;
        }
        Ok(Written {
            bytes: crc_file.bytes,
            crc32: crc_file.crc.finalize(),
            rows: self.rows,
        })
    }
}

/// An arrow array of `ty` from values (values of another type become null).
fn typed<'a>(ty: ColumnType, vals: impl Iterator<Item = Val<'a>>) -> ArrayRef {
    match ty {
        ColumnType::Int64 => Arc::new(Int64Array::from_iter(vals.map(|v| match v {
            Val::Int(i) => Some(i),
            _ => None,
        }))),
        ColumnType::Float64 => Arc::new(Float64Array::from_iter(vals.map(|v| match v {
            Val::Float(f) => Some(f),
            _ => None,
        }))),
        ColumnType::Boolean => Arc::new(BooleanArray::from_iter(vals.map(|v| match v {
            Val::Bool(b) => Some(b),
            _ => None,
        }))),
        ColumnType::Utf8 => {
            let mut b = StringBuilder::new();
            for v in vals {
                match v {
                    Val::Str(s) => b.append_value(s),
                    _ => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        // Keyed state never stores arrays (the plan refuses them).
        ColumnType::Float64Array | ColumnType::Float32Array | ColumnType::Int64Array => {
            arrow_array::new_null_array(&ty.to_arrow(), vals.count())
        }
    }
}

/// A typed view of one column of a batch being read.
enum ColRef<'a> {
    I(&'a Int64Array),
    /// An int64 of unix milliseconds written as a timestamp.
    T(&'a TimestampMillisecondArray),
    F(&'a Float64Array),
    B(&'a BooleanArray),
    S(&'a StringArray),
}

impl<'a> ColRef<'a> {
    fn of(array: &'a ArrayRef, ty: ColumnType, name: &str) -> Result<ColRef<'a>, String> {
        let bad = || {
            format!(
                "column `{name}` has type {}, expected {}",
                array.data_type(),
                ty.to_arrow()
            )
        };
        Ok(match ty {
            // Time columns (`first_seen()`) are timestamps since they became
            // one, plain int64 in files written before: both read back.
            ColumnType::Int64 => match array.data_type() {
                DataType::Timestamp(TimeUnit::Millisecond, _) => ColRef::T(
                    array
                        .as_primitive_opt::<TimestampMillisecondType>()
                        .ok_or_else(bad)?,
                ),
                _ => ColRef::I(array.as_primitive_opt::<Int64Type>().ok_or_else(bad)?),
            },
            ColumnType::Float64 => {
                ColRef::F(array.as_primitive_opt::<Float64Type>().ok_or_else(bad)?)
            }
            ColumnType::Boolean => ColRef::B(array.as_boolean_opt().ok_or_else(bad)?),
            ColumnType::Utf8 => ColRef::S(array.as_string_opt::<i32>().ok_or_else(bad)?),
            ColumnType::Float64Array | ColumnType::Float32Array | ColumnType::Int64Array => {
                return Err(format!(
                    "column `{name}` has type {ty}; keyed state does not store arrays"
                ));
            }
        })
    }

    fn val(&self, row: usize) -> Val<'a> {
        match self {
            ColRef::I(a) if a.is_valid(row) => Val::Int(a.value(row)),
            ColRef::T(a) if a.is_valid(row) => Val::Int(a.value(row)),
            ColRef::F(a) if a.is_valid(row) => Val::Float(a.value(row)),
            ColRef::B(a) if a.is_valid(row) => Val::Bool(a.value(row)),
            ColRef::S(a) if a.is_valid(row) => Val::Str(a.value(row)),
            _ => Val::Null,
        }
    }
}

/// How a written table maps onto the current configuration.
#[derive(Debug, Clone)]
pub(crate) enum TableMap {
    /// Not declared any more: rows are skipped.
    Dropped,
    /// Restored into current table `id`.
    Mapped {
        /// Current state id.
        id: usize,
        /// Per current state column: the written layout's column, if any.
        cols: Vec<Option<usize>>,
        /// Every shard holds every key (a replicated table).
        replicated: bool,
    },
}

/// Reads one verified shard file and upserts every row into the shard state
/// that owns its key among `states`. `written` is the table list the file was
/// written with, `map` its mapping onto the current tables (by written index).
pub(crate) fn load_file(
    bytes: Vec<u8>,
    written: &Layout,
    map: &[TableMap],
    states: &mut [ShardState],
    now_ms: i64,
) -> Result<u64, String> {
    // arrow-ipc 60 panics on some malformed record batches (a buffer offset
    // past the batch body, found by the `checkpoint` fuzz target) instead of
    // returning an error. A damaged file is an unusable file, like any other
    // read error: the caller discards the partly filled states.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_file(bytes, written, map, states, now_ms)
    }))
    .unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        Err(format!("the Arrow IPC reader failed: {why}"))
    })
}

fn read_file(
    bytes: Vec<u8>,
    written: &Layout,
    map: &[TableMap],
    states: &mut [ShardState],
    now_ms: i64,
) -> Result<u64, String> {
    check_blocks(&bytes)?;
    let mut reader = FileReader::try_new(Cursor::new(bytes), None).map_err(|e| e.to_string())?;
    let schema = reader.schema();
    // Resolve every written column's index once per file.
    let mut col_index = Vec::with_capacity(written.cols.len());
    for c in &written.cols {
        col_index.push(
            schema
                .index_of(&c.name)
                .map_err(|_| format!("column `{}` is missing", c.name))?,
        );
    }
    let by_name: HashMap<&str, usize> = written
        .tables
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let shards = states.len();
    let mut rows = 0u64;
    for batch in reader.by_ref() {
        let batch = batch.map_err(|e| e.to_string())?;
        let get_str = |name: &str| -> Result<&StringArray, String> {
            let i = schema
                .index_of(name)
                .map_err(|_| format!("column `{name}` is missing"))?;
            batch
                .column(i)
                .as_string_opt::<i32>()
                .ok_or_else(|| format!("column `{name}` is not utf8"))
        };
        let (tables, keys, key_types) = (get_str("table")?, get_str("key")?, get_str("key_type")?);
        let mut refs: Vec<ColRef<'_>> = Vec::with_capacity(written.cols.len());
        for (c, &i) in written.cols.iter().zip(&col_index) {
            refs.push(ColRef::of(batch.column(i), c.ty, &c.name)?);
        }
        let mut vals: Vec<Option<Val<'_>>> = Vec::new();
        for row in 0..batch.num_rows() {
            let tname = tables.value(row);
            let w = *by_name.get(tname).ok_or_else(|| {
                format!("row {row} names table `{tname}`, which the file does not declare")
            })?;
            let text = keys.value(row);
            let key = match key_types.value(row) {
                "utf8" => Val::Str(text),
                "int64" => Val::Int(
                    text.parse()
                        .map_err(|_| format!("key `{text}` is not an int64"))?,
                ),
                "bool" => match text {
                    "true" => Val::Bool(true),
                    "false" => Val::Bool(false),
                    _ => return Err(format!("key `{text}` is not a bool")),
                },
                t => return Err(format!("unknown key_type `{t}`")),
            };
            let TableMap::Mapped {
                id,
                cols,
                replicated,
            } = &map[w]
            else {
                continue;
            };
            vals.clear();
            vals.extend(cols.iter().map(|c| c.map(|i| refs[i].val(row))));
            let owners = if *replicated {
                0..shards
            } else {
                let o = owner_shard(key, shards);
                o..o + 1
            };
            for owner in owners {
                states[owner]
                    .restore(*id, key, &vals, now_ms)
                    .map_err(|e| format!("table `{tname}` key `{text}`: {e}"))?;
            }
            rows += 1;
        }
    }
    Ok(rows)
}

/// Refuses a file whose footer declares a block that does not lie inside
/// the file. arrow-ipc allocates (zeroed) a block's declared body length
/// before it reads it, so a damaged footer could make recovery ask for
/// gigabytes: the `checkpoint` fuzz target found a 140 kB input that
/// allocated 8 GiB.
pub(super) fn check_blocks(bytes: &[u8]) -> Result<(), String> {
    let len = bytes.len();
    let Some(trailer) = len
        .checked_sub(10)
        .and_then(|at| <[u8; 10]>::try_from(&bytes[at..]).ok())
    else {
        return Err(format!("{len} bytes is too short for an Arrow IPC file"));
    };
    let footer_len = arrow_ipc::reader::read_footer_length(trailer).map_err(|e| e.to_string())?;
    let data_end = len.checked_sub(10 + footer_len).ok_or_else(|| {
        format!("the footer ({footer_len} bytes) is longer than the file ({len} bytes)")
    })?;
    let footer = arrow_ipc::root_as_footer(&bytes[data_end..len - 10])
        .map_err(|e| format!("the footer is not valid: {e}"))?;
    let blocks = footer
        .recordBatches()
        .into_iter()
        .chain(footer.dictionaries());
    for block in blocks.flatten() {
        let (offset, meta, body) = (block.offset(), block.metaDataLength(), block.bodyLength());
        let end = i128::from(offset) + i128::from(meta) + i128::from(body);
        if offset < 0 || meta < 0 || body < 0 || end > data_end as i128 {
            return Err(format!(
                "a block at offset {offset} ({meta} bytes of metadata, {body} bytes of body) does not lie inside the file's {data_end} bytes of data"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod fuzz_regressions {
    use crate::checkpoint::recover;
    use crate::row::ColumnType;
    use crate::state::{AggOutput, TableSpec};

    /// Found by the `checkpoint` fuzz target: a shard file (with a manifest
    /// that vouches for its size and CRC-32) whose record batch points a
    /// buffer past the batch body made arrow-ipc panic inside recovery.
    #[test]
    fn a_buffer_past_the_batch_body_fails_the_file_without_a_panic() {
        let input = include_bytes!("../../fuzz/regressions/checkpoint-arrow-buffer-offset");
        let at = input
            .iter()
            .position(|&b| b == 0)
            .expect("manifest, NUL, file");
        let (manifest, file) = (&input[..at], &input[at + 1..]);
        let mut m: serde_json::Value = serde_json::from_slice(manifest).expect("manifest JSON");
        let epoch = m["epoch"].as_u64().expect("epoch");
        let files = m["files"].as_array_mut().expect("files");
        let shards = files.len();
        for f in files {
            f["bytes"] = file.len().into();
            f["crc32"] = crc32fast::hash(file).into();
        }
        let dir =
            std::env::temp_dir().join(format!("coreline-fuzz-regression-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let edir = dir.join(format!("epoch-{epoch}"));
        std::fs::create_dir_all(&edir).unwrap();
        std::fs::write(edir.join("MANIFEST"), serde_json::to_vec(&m).unwrap()).unwrap();
        for i in 0..shards {
            std::fs::write(edir.join(format!("shard-{i}.arrow")), file).unwrap();
        }
        let n = AggOutput::parse("n", "count()", |_| Some(ColumnType::Int64)).unwrap();
        let tables = [TableSpec::aggregate("user_counts", vec![n])];
        let why = match recover(&dir, 2, &tables) {
            Ok(r) => {
                assert_eq!(r.epoch, 0, "the damaged epoch was restored");
                r.skipped
                    .into_iter()
                    .map(|(_, why)| why)
                    .collect::<String>()
            }
            Err(e) => e.to_string(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        assert!(why.contains("the Arrow IPC reader failed"), "{why}");
    }
}
