//! `coreline state`: a real process takes checkpoints, then the export reads
//! them back (full snapshot plus deltas) as JSON lines, CSV and Parquet; the
//! Parquet file is read with the parquet crate.

mod common;

use std::process::Command;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use common::{Client, Proc, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_coreline");

const CONFIG: &str = r#"
[service]
name = "export"
host = "127.0.0.1"
base_port = 0
shards = 2
admin_port = 0

[checkpoint]
dir = "state"
interval = "1h"
retain = 5
full_every = 3

[[route]]
method = "POST"
path = "/events"
request = { user = "utf8", amount = "int64" }

  [[route.step]]
  aggregate = { name = "user_counts", key = "user", outputs = { n = "count()", total = "sum(amount)", mean = "avg(amount)", since = "first_seen()" } }

  [[route.step]]
  changed = { name = "big", key = "user", value = "amount >= 100", output = "big_changed" }
"#;

fn state(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("state")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn exports_jsonl_csv_and_parquet_from_full_plus_deltas() {
    let dir = TempDir::new("state-export");
    let config = dir.write("export.toml", CONFIG);
    let start_ms = unix_ms();
    let p = Proc::spawn(&config);
    let mut c = Client::connect(p.shards[0]);
    // Epoch 1: a full snapshot; epochs 2 and 3: deltas on it.
    let users = ["ann", "bob, \"the\" builder", "cy"];
    let mut expected = std::collections::BTreeMap::new();
    for (round, amounts) in [[10, 20, 30], [1, 200, 3], [5, 5, 5]].iter().enumerate() {
        for (u, a) in users.iter().zip(amounts) {
            let body = serde_json::json!({"user": u, "amount": a}).to_string();
            assert_eq!(c.post("/events", &body).status, 200);
            let e = expected.entry(u.to_string()).or_insert((0i64, 0i64));
            e.0 += 1;
            e.1 += a;
        }
        assert_eq!(p.checkpoint(), round as u64 + 1);
    }
    p.stop();
    let end_ms = unix_ms();

    let out = state(&config, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The clean stop committed a final epoch after ours.
    assert!(stderr.starts_with("epoch "), "{stderr}");
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 6, "{rows:?}");
    for r in rows.iter().filter(|r| r["table"] == "user_counts") {
        let (n, total) = expected[r["key"].as_str().unwrap()];
        assert_eq!(r["n"], n, "{r}");
        assert_eq!(r["total"], total, "{r}");
        // `first_seen()`: unix milliseconds in JSON lines.
        let since = r["since"].as_i64().unwrap();
        assert!((start_ms..=end_ms).contains(&since), "{r}");
    }
    let big: Vec<_> = rows.iter().filter(|r| r["table"] == "big").collect();
    assert_eq!(big.len(), 3);
    assert!(big.iter().all(|r| r["value"] == false), "{big:?}");

    // An older epoch on request: the first one (a full snapshot).
    let out = state(&config, &["--epoch", "1", "--table", "user_counts"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(first.iter().all(|r| r["n"] == 1), "{first:?}");

    let csv_path = dir.join("counts.csv");
    let out = state(
        &config,
        &[
            "--format",
            "csv",
            "--table",
            "user_counts",
            "--out",
            csv_path.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("key,n,total,mean,since"));
    let line = lines.next().unwrap();
    assert!(line.starts_with("ann,3,16,5.333333333333333,"), "{line}");
    let line = lines.next().unwrap();
    assert!(
        line.starts_with("\"bob, \"\"the\"\" builder\",3,225,75.0,"),
        "{line}"
    );

    let pq = dir.join("counts.parquet");
    let out = state(
        &config,
        &[
            "--format",
            "parquet",
            "--table",
            "user_counts",
            "--out",
            pq.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::File::open(&pq).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let batch = &batches[0];
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["key", "n", "total", "mean", "since"]);
    // `first_seen()` is a Parquet/Arrow timestamp (ms, UTC).
    assert_eq!(
        schema.field(4).data_type(),
        &arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, Some("UTC".into()))
    );
    let keys = batch.column(0).as_string::<i32>();
    let totals = batch.column(2).as_primitive::<Int64Type>();
    let since = batch.column(4).as_primitive::<TimestampMillisecondType>();
    for i in 0..batch.num_rows() {
        assert_eq!(totals.value(i), expected[keys.value(i)].1);
        assert!((start_ms..=end_ms).contains(&since.value(i)), "{i}");
    }
    assert_eq!(batch.num_rows(), 3);

    // Mistakes are named: several tables without --table, an unknown table.
    let out = state(&config, &["--format", "parquet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user_counts, big"));
    let out = state(&config, &["--table", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let out = state(&config, &["--epoch", "999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("epoch 999"));
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
