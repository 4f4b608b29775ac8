//! The `coreline` binary: check, errors and exit codes, port clashes,
//! graceful shutdown under load.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Client, hello_toml};

const BIN: &str = env!("CARGO_BIN_EXE_coreline");

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("coreline-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_prints_the_plan() {
    let out = Command::new(BIN)
        .args([
            "check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/configs/hello.toml"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("shard 0: core"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:8888"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:8889"), "{stdout}");
    assert!(stdout.contains("route POST /my_api"), "{stdout}");
    assert!(stdout.contains("foo: utf8"), "{stdout}");
    assert!(stdout.contains("fooLength: int64"), "{stdout}");
}

#[test]
fn bad_configs_exit_2_with_file_line_and_column() {
    let cases = [
        (
            "unknown_key.toml",
            "[service]\nname = \"x\"\nbase_port = 1\nshards = 1\nbogus = 3\n[[route]]\npath = \"/a\"\nrequest = { a = \"utf8\" }\n",
            ":5:",
        ),
        (
            "bad_expr.toml",
            "[service]\nname = \"x\"\nbase_port = 1\nshards = 1\n[[route]]\npath = \"/a\"\nrequest = { a = \"utf8\", bar = \"int64\" }\n  [[route.step]]\n  with_column = { name = \"n\", expr = \"length(bar)\" }\n",
            ":9:",
        ),
        (
            "unknown_column.toml",
            "[service]\nname = \"x\"\nbase_port = 1\nshards = 1\n[[route]]\npath = \"/a\"\nrequest = { a = \"utf8\" }\n  [route.reply]\n  columns = [\"zzz\"]\n",
            ":9:",
        ),
    ];
    for (name, text, line) in cases {
        let path = write_config(name, text);
        let out = Command::new(BIN).arg("check").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}{line}")),
            "{name}: {stderr}"
        );
    }
    let out = Command::new(BIN)
        .args(["check", "/no/such/file.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("SIGTERM"));
}

/// A running `coreline run` process and its shard addresses.
struct Running {
    child: Child,
    shards: Vec<SocketAddr>,
}

fn spawn_run(config: &std::path::Path) -> Running {
    let mut child = Command::new(BIN)
        .arg("run")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut shards = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("listening shard=") {
            let addr = rest.split("addr=").nth(1).unwrap();
            shards.push(addr.parse().unwrap());
        }
        if line.starts_with("ready ") {
            break;
        }
    }
    assert!(!shards.is_empty(), "no listening lines");
    Running { child, shards }
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_taken_port_is_refused_with_its_number() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = hello_toml(1, "").replace("base_port = 0", &format!("base_port = {port}"));
    let path = write_config("clash.toml", &text);
    let out = Command::new(BIN).arg("run").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("port {port}")), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests_under_load() {
    let path = write_config(
        "graceful.toml",
        &hello_toml(2, "[limits]\ndrain_timeout = \"3s\"\n"),
    );
    let mut run = spawn_run(&path);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for i in 0..4 {
        let addr = run.shards[i % run.shards.len()];
        let (stop, answered) = (stop.clone(), answered.clone());
        load.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            while !stop.load(Ordering::Relaxed) {
                c.send(b"POST /my_api HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n{\"foo\":\"hello world\",\"bar\":42}");
                match c.try_response() {
                    Some(r) => {
                        assert_eq!(r.status, 200);
                        assert_eq!(r.body, br#"{"fooLength":11}"#);
                        answered.fetch_add(1, Ordering::Relaxed);
                        if r.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("connection") && v == "close") {
                            return;
                        }
                    }
                    None => return,
                }
            }
        }));
    }
    // A request whose body is still arriving when the signal comes.
    let mut slow = Client::connect(run.shards[0]);
    slow.send(b"POST /my_api HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n{\"foo\":\"hello");
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&run.child);
    std::thread::sleep(Duration::from_millis(200));
    slow.send(b" world\",\"bar\":42}");
    let r = slow.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, br#"{"fooLength":11}"#);
    assert_eq!(r.header("connection"), Some("close"));
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 100);
    assert_eq!(wait_exit(&mut run.child, Duration::from_secs(10)), Some(0));
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(run.shards[0]).is_err());
    let _ = std::io::stdout().flush();
}
