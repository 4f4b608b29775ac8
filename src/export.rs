//! `coreline state`: a checkpoint's rows as JSON lines, CSV or Parquet.
//!
//! The state is loaded by the same code a restart uses
//! ([`crate::checkpoint::read_state`], the read-only entry of recovery):
//! the full snapshot plus the deltas on it, checksums verified, every key
//! on one shard; the directory is not changed (damaged epochs are skipped,
//! not renamed aside). Each table then becomes rows with plain
//! column names: `key`, then one column per aggregate output (or `value` for
//! a `changed` table), typed as the state is (int64, float64, utf8, bool).
//! `first_seen()` outputs are unix milliseconds in JSON lines and CSV, and a
//! timestamp (milliseconds, UTC) in Parquet.
//!
//! JSON lines carry a `table` member, so one file can hold every table. CSV
//! and Parquet hold one table: with several tables, `--table` is required.
//! Parquet is written by the `parquet` crate's Arrow writer (uncompressed:
//! the crate is built without codecs to keep build time down), which
//! DuckDB, Spark and pandas open directly.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use serde_json::{Map, Value};

use crate::pipeline::Plan;
use crate::row::{ColumnType, Val};
use crate::state::{ShardState, TableSpec};

/// Output formats of `coreline state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line, with a `table` member.
    Jsonl,
    /// RFC 4180 CSV with a header line (one table).
    Csv,
    /// Apache Parquet (one table).
    Parquet,
}

/// What to export.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// A committed epoch, or the newest usable one.
    pub epoch: Option<u64>,
    /// One table, or every table.
    pub table: Option<&'a str>,
    /// The output format.
    pub format: Format,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The configuration has no `[checkpoint]` table.
    #[error("the configuration has no [checkpoint] table, so there is no state to export")]
    NoCheckpoint,
    /// No committed epoch could be read.
    #[error("no committed checkpoint epoch in {0}")]
    Empty(String),
    /// `--table` names no keyed state.
    #[error("no table {name:?}; the configuration declares: {known}")]
    UnknownTable {
        /// The name given.
        name: String,
        /// The names declared.
        known: String,
    },
    /// CSV or Parquet without `--table` while there are several tables.
    #[error("{format} holds one table; pass --table with one of: {known}")]
    NeedsTable {
        /// `csv` or `parquet`.
        format: &'static str,
        /// The names declared.
        known: String,
    },
    /// Recovery failed.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Io(String),
}

impl ExportError {
    /// The process exit code: 2 for a usage or configuration mistake, 1 for
    /// a failure reading or writing.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExportError::NoCheckpoint
            | ExportError::UnknownTable { .. }
            | ExportError::NeedsTable { .. } => 2,
            ExportError::Empty(_) | ExportError::Checkpoint(_) | ExportError::Io(_) => 1,
        }
    }
}

impl From<std::io::Error> for ExportError {
    fn from(e: std::io::Error) -> ExportError {
        ExportError::Io(e.to_string())
    }
}

/// One table's rows, column-wise.
struct TableRows {
    name: String,
    /// Column names: `key`, then the values.
    names: Vec<String>,
    /// Column types (the key's from its first row; utf8 if empty).
    types: Vec<ColumnType>,
    /// Per column: int64 unix milliseconds written as a timestamp
    /// (`first_seen()` outputs).
    times: Vec<bool>,
    /// Row-major values, `names.len()` per row; strings owned.
    rows: Vec<Vec<Value>>,
}

fn val_json(v: Val<'_>) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(b),
        Val::Int(i) => Value::from(i),
        Val::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Val::Str(s) => Value::String(s.to_owned()),
        // Keyed state never stores vectors (the plan refuses them); written
        // as JSON arrays all the same.
        Val::Array(a) => {
            let mut text = Vec::new();
            crate::reply::write_json_value(&mut text, Val::Array(a));
            serde_json::from_slice(&text).unwrap_or(Value::Null)
        }
    }
}

fn val_type(v: Val<'_>) -> Option<ColumnType> {
    match v {
        Val::Null => None,
        Val::Bool(_) => Some(ColumnType::Boolean),
        Val::Int(_) => Some(ColumnType::Int64),
        Val::Float(_) => Some(ColumnType::Float64),
        Val::Str(_) => Some(ColumnType::Utf8),
        Val::Array(a) => Some(a.ty()),
    }
}

fn table_rows(state: &ShardState, id: usize, spec: &TableSpec) -> TableRows {
    let mut t = TableRows {
        name: spec.name.clone(),
        names: vec!["key".into()],
        types: vec![ColumnType::Utf8],
        times: vec![false],
        rows: Vec::new(),
    };
    let mut key_type = None;
    for (name, ty, time) in spec.read_values() {
        t.names.push(name);
        t.types.push(ty);
        t.times.push(time);
    }
    state.for_each(id, |key, values| {
        key_type = key_type.or(val_type(key));
        let mut row = vec![val_json(key)];
        row.extend(values.map(val_json));
        t.rows.push(row);
    });
    t.types[0] = key_type.unwrap_or(ColumnType::Utf8);
    // A stable order: by key, so two exports of one epoch are identical.
    t.rows.sort_by(|a, b| cmp_json(&a[0], &b[0]));
    t
}

fn cmp_json(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Exports the checkpoint of `plan` as `request` asks, to `out`. Returns a
/// one-line summary for stderr (`epoch 12: 2 tables, 340 rows`).
pub fn export(
    plan: &Plan,
    request: &Request<'_>,
    mut out: impl Write,
) -> Result<String, ExportError> {
    let cp = plan
        .config
        .checkpoint
        .as_ref()
        .ok_or(ExportError::NoCheckpoint)?;
    let known = || {
        plan.tables
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen: Vec<usize> = match request.table {
        Some(name) => vec![
            plan.tables
                .iter()
                .position(|t| t.name == name)
                .ok_or_else(|| ExportError::UnknownTable {
                    name: name.into(),
                    known: known(),
                })?,
        ],
        None => (0..plan.tables.len()).collect(),
    };
    let single = match request.format {
        Format::Jsonl => None,
        Format::Csv => Some("csv"),
        Format::Parquet => Some("parquet"),
    };
    if let Some(format) = single
        && chosen.len() != 1
    {
        return Err(ExportError::NeedsTable {
            format,
            known: known(),
        });
    }
    let recovered = crate::checkpoint::read_state(&cp.dir, 1, &plan.tables, request.epoch)?;
    if recovered.epoch == 0 {
        return Err(ExportError::Empty(cp.dir.display().to_string()));
    }
    let state = &recovered.shards[0];
    let tables: Vec<TableRows> = chosen
        .iter()
        .map(|&i| table_rows(state, i, &plan.tables[i]))
        .collect();
    let rows: usize = tables.iter().map(|t| t.rows.len()).sum();
    match request.format {
        Format::Jsonl => write_jsonl(&tables, &mut out)?,
        Format::Csv => write_csv(&tables[0], &mut out)?,
        Format::Parquet => write_parquet(&tables[0], &mut out)?,
    }
    out.flush()?;
    let mut summary = format!(
        "epoch {}: {} table{}, {rows} rows",
        recovered.epoch,
        tables.len(),
        if tables.len() == 1 { "" } else { "s" }
    );
    for (epoch, why) in &recovered.skipped {
        summary.push_str(&format!("\nskipped newer epoch {epoch}: {why}"));
    }
    Ok(summary)
}

fn write_jsonl(tables: &[TableRows], out: &mut impl Write) -> Result<(), ExportError> {
    for t in tables {
        for row in &t.rows {
            let mut obj = Map::with_capacity(row.len() + 1);
            obj.insert("table".into(), Value::String(t.name.clone()));
            for (name, v) in t.names.iter().zip(row) {
                obj.insert(name.clone(), v.clone());
            }
            serde_json::to_writer(&mut *out, &Value::Object(obj))
                .map_err(|e| ExportError::Io(e.to_string()))?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// One CSV field, quoted when it holds a comma, quote, CR or LF (RFC 4180).
/// Written by hand: ten lines, against a new dependency for one writer.
fn csv_field(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    if text.contains([',', '"', '\r', '\n']) {
        out.write_all(b"\"")?;
        out.write_all(text.replace('"', "\"\"").as_bytes())?;
        out.write_all(b"\"")
    } else {
        out.write_all(text.as_bytes())
    }
}

fn write_csv(t: &TableRows, out: &mut impl Write) -> Result<(), ExportError> {
    for (i, name) in t.names.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        csv_field(out, name)?;
    }
    out.write_all(b"\r\n")?;
    for row in &t.rows {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            match v {
                Value::Null => {}
                Value::String(s) => csv_field(out, s)?,
                other => csv_field(out, &other.to_string())?,
            }
        }
        out.write_all(b"\r\n")?;
    }
    Ok(())
}

/// The table as one Arrow record batch.
fn record_batch(t: &TableRows) -> Result<RecordBatch, ExportError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(t.names.len());
    let mut fields = Vec::with_capacity(t.names.len());
    for (c, (name, ty)) in t.names.iter().zip(&t.types).enumerate() {
        let values = t.rows.iter().map(|r| &r[c]);
        if t.times[c] {
            let mut b = TimestampMillisecondBuilder::new().with_timezone("UTC");
            for v in values {
                b.append_option(v.as_i64());
            }
            let array = b.finish();
            fields.push(Field::new(name, array.data_type().clone(), c != 0));
            columns.push(Arc::new(array));
            continue;
        }
        let array: ArrayRef = match ty {
            // Vectors (never in keyed state today) as their JSON text.
            ColumnType::Utf8
            | ColumnType::Float64Array
            | ColumnType::Float32Array
            | ColumnType::Int64Array => {
                let mut b = StringBuilder::new();
                for v in values {
                    match v {
                        Value::Null => b.append_null(),
                        Value::String(s) => b.append_value(s),
                        other => b.append_value(other.to_string()),
                    }
                }
                Arc::new(b.finish())
            }
            ColumnType::Int64 => {
                let mut b = Int64Builder::new();
                for v in values {
                    b.append_option(v.as_i64());
                }
                Arc::new(b.finish())
            }
            ColumnType::Float64 => {
                let mut b = Float64Builder::new();
                for v in values {
                    b.append_option(v.as_f64());
                }
                Arc::new(b.finish())
            }
            ColumnType::Boolean => {
                let mut b = BooleanBuilder::new();
                for v in values {
                    b.append_option(v.as_bool());
                }
                Arc::new(b.finish())
            }
        };
        fields.push(Field::new(name, ty.to_arrow(), c != 0));
        columns.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| ExportError::Io(format!("building the record batch: {e}")))
}

fn write_parquet(t: &TableRows, out: &mut impl Write) -> Result<(), ExportError> {
    let batch = record_batch(t)?;
    // ArrowWriter needs `Write + Send`; buffer the file, then copy it out.
    let mut buf = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None)
        .map_err(|e| ExportError::Io(format!("parquet: {e}")))?;
    writer
        .write(&batch)
        .map_err(|e| ExportError::Io(format!("parquet: {e}")))?;
    writer
        .close()
        .map_err(|e| ExportError::Io(format!("parquet: {e}")))?;
    out.write_all(&buf)?;
    Ok(())
}
