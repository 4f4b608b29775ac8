//! Memory goes back after a connection peak: RSS before, at and after a
//! burst of 3,000 connections on a real `coreline run` process.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Proc, TempDir};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

const BODY: &str = r#"{"foo":"hello world","bar":42}"#;

fn open_connections(p: &Proc) -> u64 {
    p.stats()["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["open_connections"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn rss_returns_after_a_3000_connection_burst() {
    let tmp = TempDir::new("memory");
    let cfg = tmp.write(
        "memory.toml",
        r#"
[service]
name = "memory"
base_port = 0
shards = 2
admin_port = 0

[limits]
max_connections = 4000

[[route]]
path = "/my_api"
request = { foo = "utf8", bar = "int64" }
  [[route.step]]
  with_column = { name = "fooLength", expr = "length(foo)" }
  [route.reply]
  columns = ["fooLength"]
"#,
    );
    let p = Proc::spawn(&cfg);
    let pid = p.child.id();
    let request = format!(
        "POST /my_api HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let roundtrip = |s: &mut TcpStream| {
        s.write_all(request.as_bytes()).unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    };
    // Warm up: a few connections per shard, then settle.
    for _ in 0..3 {
        for &a in &p.shards {
            roundtrip(&mut TcpStream::connect(a).unwrap());
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(3000);
    for i in 0..3000 {
        let mut s = TcpStream::connect(p.shards[i % 2]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        roundtrip(&mut s);
        conns.push(s);
    }
    let at = rss_kib(pid);
    drop(conns);
    let t = Instant::now();
    while open_connections(&p) > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "connections did not close"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Housekeeping returns memory within a second of the peak passing.
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss_kib(pid);
    eprintln!(
        "RSS before {before} KiB, at 3000 connections {at} KiB, after {after} KiB (after/before {:.2})",
        after as f64 / before as f64
    );
    assert!(
        after as f64 <= 1.5 * before as f64,
        "RSS stayed high after the burst: before {before} KiB, at {at} KiB, after {after} KiB"
    );
    p.kill9();
}
