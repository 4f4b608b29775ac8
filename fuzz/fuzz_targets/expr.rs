//! SQL expressions (`coreline::expr::compile`, then `Expr::eval`) from
//! arbitrary text, against a fixed set of columns of every type.
//!
//! Input: bytes 0..4 pick the row values (nulls, extremes, NaN, empty and
//! non-ASCII text), the rest is the SQL text. Checked: compiling never
//! panics and an error's offset lies within the text; a compiled
//! expression evaluates without panicking on each row to a value of its
//! declared type, `NULL` only if it is declared nullable, and evaluating
//! the same row twice gives the same value (scratch buffers are reused).
#![no_main]

use coreline::expr::compile;
use coreline::row::{Column, ColumnType, Columns, Row, Val};
use libfuzzer_sys::fuzz_target;

const INTS: [i64; 8] = [0, 1, -1, 42, i64::MIN, i64::MAX, -7, 1 << 53];
const FLOATS: [f64; 8] = [
    0.0,
    -0.0,
    1.5,
    -2.25,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e300,
];
const STRS: [&str; 8] = [
    "",
    "a",
    "héllo wörld",
    "%_\\x",
    "123",
    " -1.5e3 ",
    "true",
    "ǅ\u{0}ß",
];

fn columns() -> Columns {
    let mut columns = Columns::new();
    for (name, ty, nullable) in [
        ("s", ColumnType::Utf8, false),
        ("i", ColumnType::Int64, false),
        ("f", ColumnType::Float64, false),
        ("b", ColumnType::Boolean, false),
        ("ns", ColumnType::Utf8, true),
        ("ni", ColumnType::Int64, true),
        ("nf", ColumnType::Float64, true),
        ("nb", ColumnType::Boolean, true),
    ] {
        columns.push(Column {
            name: name.into(),
            ty,
            nullable,
        });
    }
    columns
}

fn row(columns: &Columns, seed: u32) -> Row {
    let mut row = Row::with_width(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let pick = (seed >> ((i * 4) % 32)) as usize & 0xf;
        let value = if c.nullable && pick >= 12 {
            Val::Null
        } else {
            match c.ty {
                ColumnType::Utf8 => Val::Str(STRS[pick % 8]),
                ColumnType::Int64 => Val::Int(INTS[pick % 8]),
                ColumnType::Float64 => Val::Float(FLOATS[pick % 8]),
                ColumnType::Boolean => Val::Bool(pick % 2 == 1),
                // The harness declares scalar columns only.
                ColumnType::Float64Array | ColumnType::Float32Array | ColumnType::Int64Array => {
                    Val::Null
                }
            }
        };
        row.slot_mut(i).set(value);
    }
    row
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let seed = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let Ok(sql) = std::str::from_utf8(&data[4..]) else {
        return;
    };
    let columns = columns();
    let mut expr = match compile(sql, &columns) {
        Ok(expr) => expr,
        Err(e) => {
            assert!(
                e.offset <= sql.len(),
                "offset {} past {} bytes",
                e.offset,
                sql.len()
            );
            let _ = e.render(sql);
            return;
        }
    };
    let (ty, nullable) = (expr.ty(), expr.nullable());
    for k in 0..3u32 {
        let row = row(&columns, seed.rotate_left(k * 11) ^ k);
        let first = format!("{:?}", expr.eval(&row));
        let v = expr.eval(&row);
        let fits = match v {
            Val::Null => nullable,
            Val::Str(_) => ty == ColumnType::Utf8,
            Val::Int(_) => ty == ColumnType::Int64,
            Val::Float(_) => ty == ColumnType::Float64,
            Val::Bool(_) => ty == ColumnType::Boolean,
            Val::Array(a) => ty == a.ty(),
        };
        assert!(
            fits,
            "{sql:?} declared {ty} (nullable {nullable}) gave {v:?}"
        );
        let again = format!("{v:?}");
        assert_eq!(first, again, "{sql:?} evaluated twice on one row");
    }
});
