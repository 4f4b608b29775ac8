//! The checkpoint reader (`coreline::checkpoint::recover`): a `MANIFEST`
//! and Arrow IPC shard files, on arbitrary bytes.
//!
//! Input: the manifest's JSON text, a NUL byte, then the bytes of the
//! shard file (the same file is written for every shard the manifest
//! lists). So that mutations of the Arrow bytes get past the checksum, a
//! manifest that parses as JSON has each file entry's `bytes` and `crc32`
//! set to the file's true size and CRC-32 (the checks themselves are plain
//! comparisons, covered by the integration tests). The files go to
//! `epoch-<N>/` where N is the manifest's `epoch` (1 if it has none usable)
//! in a scratch directory, and `recover` runs with the tables of
//! `fuzz/seeds/checkpoint.toml`, which wrote the seed corpus.
//!
//! Checked: no panic; the result restores epoch 0 or N; its key count
//! adds up; every restored key sits on its owner shard.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use coreline::checkpoint::recover;
use coreline::row::ColumnType;
use coreline::state::{AggOutput, Table, TableSpec, owner_shard};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SHARDS: usize = 2;

fn tables() -> Vec<TableSpec> {
    let int = |_: &str| Some(ColumnType::Int64);
    let float = |_: &str| Some(ColumnType::Float64);
    let out = |name: &str, spec: &str, ty: &dyn Fn(&str) -> Option<ColumnType>| {
        AggOutput::parse(name, spec, ty).expect("valid output")
    };
    vec![
        TableSpec::aggregate(
            "user_counts",
            vec![
                out("n", "count()", &int),
                out("total", "sum(amount)", &int),
                out("mean", "avg(amount)", &int),
                out("hi", "max(amount)", &int),
                out("lo", "min(amount)", &int),
                out("smooth", "ewma(amount, 0.1)", &int),
                out("latest", "last(amount)", &int),
                out("since", "first_seen()", &int),
            ],
        ),
        TableSpec::changed("heater", ColumnType::Boolean),
        TableSpec::aggregate(
            "sensor_temps",
            vec![
                out("readings", "count()", &float),
                out("temp_avg", "ewma(temp, 0.2)", &float),
                out("temp_max", "max(temp)", &float),
            ],
        ),
        TableSpec::aggregate(
            "by_id",
            vec![out("total", "sum(v)", &float), out("lo", "min(v)", &float)],
        ),
    ]
}

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        base.join(format!("coreline-fuzz-checkpoint-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    static TABLES: OnceLock<Vec<TableSpec>> = OnceLock::new();
    let tables = TABLES.get_or_init(tables);
    let (manifest, file) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let mut manifest = manifest.to_vec();
    let mut epoch = 1u64;
    let mut files = 1usize;
    if let Ok(mut m) = serde_json::from_slice::<Value>(&manifest) {
        if let Some(e) = m
            .get("epoch")
            .and_then(Value::as_u64)
            .filter(|&e| e <= 1 << 20)
        {
            epoch = e;
        }
        if let Some(entries) = m.get_mut("files").and_then(Value::as_array_mut) {
            files = entries.len().min(8);
            for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
                entry.insert("bytes".into(), file.len().into());
                entry.insert("crc32".into(), crc32fast::hash(file).into());
            }
        }
        manifest = serde_json::to_vec(&m).expect("a Value serializes");
    }

    let dir = scratch();
    let _ = std::fs::remove_dir_all(dir);
    let edir = dir.join(format!("epoch-{epoch}"));
    std::fs::create_dir_all(&edir).expect("scratch directory");
    std::fs::write(edir.join("MANIFEST"), &manifest).expect("write MANIFEST");
    for shard in 0..files {
        std::fs::write(edir.join(format!("shard-{shard}.arrow")), file).expect("write shard file");
    }

    let Ok(recovered) = recover(dir, SHARDS, tables) else {
        return;
    };
    assert!(
        recovered.epoch == 0 || recovered.epoch == epoch,
        "restored epoch {}",
        recovered.epoch
    );
    assert_eq!(recovered.shards.len(), SHARDS);
    let keys: usize = recovered.shards.iter().map(|s| s.keys()).sum();
    assert_eq!(keys, recovered.keys);
    for (shard, state) in recovered.shards.iter().enumerate() {
        for table in state.tables() {
            match table {
                Table::Aggregate(t) => {
                    for (key, _) in t.iter() {
                        assert_eq!(
                            owner_shard(key, SHARDS),
                            shard,
                            "{key:?} restored on shard {shard}"
                        );
                    }
                }
                Table::Changed(t) => {
                    for (key, _) in t.iter() {
                        assert_eq!(
                            owner_shard(key, SHARDS),
                            shard,
                            "{key:?} restored on shard {shard}"
                        );
                    }
                }
            }
        }
    }
});
