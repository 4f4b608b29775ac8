//! Hot reload of a real `coreline run` process over real sockets.
//!
//! - Under steady load on persistent connections (two per shard, keyed
//!   requests whose owner is often the other shard, so some reloads land
//!   while a request waits for its owner), ten reloads (`POST /reload` and
//!   `SIGHUP`, alternately) cause zero errors and zero resets, every
//!   connection stays the same socket, the answers switch to each new
//!   pipeline, and the keyed state carries over (a per-client count never
//!   skips or repeats).
//! - A file that fails `check`, a restart-only change and a key type change
//!   are refused with 400 and their errors, and the old plan keeps serving.
//!
//! The pause each shard took to swap is printed, not asserted.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Client, Proc, TempDir, parse_response};

/// The service; `version` is the value the reply's `version` column takes,
/// `key` the key type of the keyed table, `extra` lines for `[service]`.
fn config(version: &str, key: &str, extra: &str) -> String {
    format!(
        r#"
[service]
name = "reloaded"
base_port = 0
shards = 2
admin_port = 0
{extra}

[[route]]
path = "/count"
request = {{ user = "{key}", amount = "float64" }}
  [[route.step]]
  with_column = {{ name = "version", expr = "'{version}'" }}
  [[route.step]]
  aggregate = {{ name = "per_user", key = "user", outputs = {{ n = "count()" }} }}
  [route.reply]
  columns = ["version", "n"]
"#
    )
}

fn post_admin(admin: SocketAddr, path: &str, header: bool) -> common::Response {
    let mut c = Client::connect(admin);
    let extra = if header {
        "X-Coreline-Admin: 1\r\n"
    } else {
        ""
    };
    c.send(
        format!("POST {path} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: 0\r\n\r\n").as_bytes(),
    );
    c.response()
}

fn sighup(p: &Proc) {
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP failed");
}

/// What one load client saw.
#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    errors: AtomicU64,
    /// The version number (`v<N>`) of the last answer.
    version: AtomicU64,
}

/// One persistent connection sending keyed requests until `stop`: every
/// answer must be 200 with `n` one more than the last (the key's state
/// carries over every reload); anything else, including a closed or reset
/// connection, is an error.
fn client(addr: SocketAddr, user: String, stop: Arc<AtomicBool>, seen: Arc<Seen>) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let local = stream.local_addr().unwrap();
    let body = format!(r#"{{"user":"{user}","amount":1.0}}"#);
    let request = format!(
        "POST /count HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut buf = Vec::new();
    let mut expected_n = 0u64;
    let mut problems = String::new();
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = stream.write_all(request.as_bytes()) {
            seen.errors.fetch_add(1, Ordering::Relaxed);
            problems += &format!("write: {e}\n");
            break;
        }
        let response = loop {
            if let Some((r, used)) = parse_response(&buf) {
                buf.drain(..used);
                break Some(r);
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => break None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    problems += &format!("read: {e}\n");
                    break None;
                }
            }
        };
        let Some(response) = response else {
            seen.errors.fetch_add(1, Ordering::Relaxed);
            problems += "connection closed\n";
            break;
        };
        expected_n += 1;
        let json = response.json();
        let n = json["n"].as_u64().unwrap_or(0);
        if response.status != 200 || n != expected_n {
            seen.errors.fetch_add(1, Ordering::Relaxed);
            problems += &format!(
                "status {} body {} (expected n = {expected_n})\n",
                response.status,
                response.text()
            );
            expected_n = n;
        }
        if let Some(v) = json["version"].as_str().and_then(|v| v.strip_prefix('v')) {
            seen.version.store(v.parse().unwrap(), Ordering::Relaxed);
        }
        seen.requests.fetch_add(1, Ordering::Relaxed);
    }
    assert_eq!(stream.local_addr().unwrap(), local);
    problems
}

#[test]
fn ten_reloads_under_load_drop_nothing_and_switch_the_pipeline() {
    let tmp = TempDir::new("reload");
    let path = tmp.write("service.toml", &config("v0", "utf8", ""));
    let p = Proc::spawn(&path);
    let admin = p.admin.expect("admin port");

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    let mut seen = Vec::new();
    for i in 0..4 {
        let s = Arc::new(Seen::default());
        seen.push(s.clone());
        let (addr, stop) = (p.shards[i % 2], stop.clone());
        // Clients 0 and 1 send keys their shard owns, 2 and 3 keys the
        // other shard owns: half the requests wait for their owner shard,
        // and some reloads land while they wait.
        let want_owner = if i < 2 { i % 2 } else { 1 - i % 2 };
        let user = (0..)
            .map(|n| format!("user-{i}-{n}"))
            .find(|u| coreline::state::owner_shard(coreline::row::Val::Str(u), 2) == want_owner)
            .unwrap();
        clients.push(std::thread::spawn(move || client(addr, user, stop, s)));
    }
    let wait_for = |version: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen
            .iter()
            .any(|s| s.version.load(Ordering::Relaxed) != version)
        {
            assert!(
                Instant::now() < deadline,
                "clients did not see v{version}; log:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let t0 = Instant::now();
    wait_for(0);

    let mut pauses_us: Vec<f64> = Vec::new();
    let mut compile_ms: Vec<f64> = Vec::new();
    for version in 1..=10u64 {
        // Let every client run a while on the current plan.
        std::thread::sleep(Duration::from_millis(150));
        let phase = Instant::now();
        std::fs::write(&path, config(&format!("v{version}"), "utf8", "")).unwrap();
        let written = phase.elapsed();
        if version % 2 == 1 {
            let r = post_admin(admin, "/reload", true);
            assert_eq!(r.status, 200, "POST /reload: {}", r.text());
            let json = r.json();
            assert_eq!(json["generation"].as_u64(), Some(version));
            for v in json["pause_us"].as_array().unwrap() {
                pauses_us.push(v.as_f64().unwrap());
            }
            compile_ms.push(json["compile_ms"].as_f64().unwrap());
        } else {
            sighup(&p);
        }
        let triggered = phase.elapsed();
        wait_for(version);
        eprintln!(
            "v{version}: file written after {written:?}, reload asked after {triggered:?}, seen after {:?}",
            phase.elapsed()
        );
        eprintln!("v{version} seen by every client at {:?}", t0.elapsed());
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    let problems: String = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let requests: u64 = seen
        .iter()
        .map(|s| s.requests.load(Ordering::Relaxed))
        .sum();
    let errors: u64 = seen.iter().map(|s| s.errors.load(Ordering::Relaxed)).sum();
    assert_eq!(errors, 0, "errors across 10 reloads:\n{problems}");
    assert!(
        seen.iter().all(|s| s.requests.load(Ordering::Relaxed) > 50),
        "every client kept being served"
    );
    let log = p.log_text();
    assert_eq!(
        log.matches("configuration reloaded").count(),
        10,
        "one log line per reload:\n{log}"
    );
    eprintln!("clients joined at {:?}", t0.elapsed());
    let forwarded: u64 = p.stats()["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["forwarded_requests"].as_u64().unwrap())
        .sum();
    assert!(
        forwarded > 100,
        "half the requests wait for their owner shard"
    );
    pauses_us.sort_by(f64::total_cmp);
    compile_ms.sort_by(f64::total_cmp);
    println!(
        "reload: {requests} requests on 4 persistent connections, 0 errors, 10 reloads; \
         {forwarded} forwarded; shard pause per swap (us, 5 POST reloads x 2 shards): \
         min {:.1} median {:.1} max {:.1}; compile (ms): min {:.2} max {:.2}",
        pauses_us[0],
        pauses_us[pauses_us.len() / 2],
        pauses_us[pauses_us.len() - 1],
        compile_ms[0],
        compile_ms[compile_ms.len() - 1],
    );
    p.stop();
}

#[test]
fn a_bad_reload_is_refused_and_the_old_plan_keeps_serving() {
    let tmp = TempDir::new("reload-bad");
    let path = tmp.write("service.toml", &config("v0", "utf8", ""));
    let p = Proc::spawn(&path);
    let admin = p.admin.expect("admin port");
    let mut c = Client::connect(p.shards[0]);
    let answer = |c: &mut Client| {
        let r = c.post("/count", r#"{"user":"a","amount":1}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["version"].as_str().unwrap().to_string()
    };
    assert_eq!(answer(&mut c), "v0");

    // Without the admin header: 403, nothing read.
    std::fs::write(&path, config("v1", "utf8", "")).unwrap();
    let r = post_admin(admin, "/reload", false);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(answer(&mut c), "v0");

    // A file that fails `check`: the same file:line:column error.
    let bad = config("v1", "utf8", "")
        .replace("length", "x")
        .replace("expr = \"'v1'\"", "expr = \"nosuch + 1\"");
    std::fs::write(&path, &bad).unwrap();
    let r = post_admin(admin, "/reload", true);
    assert_eq!(r.status, 400, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap().to_string();
    let check = std::process::Command::new(common::BIN)
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let check_error = String::from_utf8_lossy(&check.stderr);
    let first_line = check_error
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("error: ");
    assert!(
        error.contains(first_line) && first_line.contains("service.toml:"),
        "reload error {error:?} is check's {first_line:?}"
    );
    assert!(error.contains("nosuch"), "{error}");
    assert_eq!(answer(&mut c), "v0", "the old plan keeps serving");

    // Changes that need a restart are named.
    std::fs::write(
        &path,
        config("v1", "utf8", "").replace("shards = 2", "shards = 1"),
    )
    .unwrap();
    let r = post_admin(admin, "/reload", true);
    assert_eq!(r.status, 400, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("[service] shards (2 → 1)"), "{error}");
    std::fs::write(
        &path,
        config("v1", "utf8", "[limits]\nidle_timeout = \"5s\""),
    )
    .unwrap();
    let r = post_admin(admin, "/reload", true);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("[limits] idle_timeout (60s → 5s)"),
        "{}",
        r.text()
    );

    // A keyed table whose key type changed.
    std::fs::write(&path, config("v1", "int64", "")).unwrap();
    let r = post_admin(admin, "/reload", true);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("keyed table `per_user`: its key type changed from utf8 to int64"),
        "{}",
        r.text()
    );
    assert_eq!(answer(&mut c), "v0", "the old plan keeps serving");

    // A SIGHUP with a bad file logs the error and changes nothing.
    std::fs::write(&path, &bad).unwrap();
    sighup(&p);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !p.log_text().contains("reload refused") {
        assert!(Instant::now() < deadline, "no log line:\n{}", p.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(answer(&mut c), "v0");

    // And a good one is taken, on the same connection.
    std::fs::write(&path, config("v1", "utf8", "")).unwrap();
    let r = post_admin(admin, "/reload", true);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(answer(&mut c), "v1");
    let openapi = p.admin_get("/openapi.json");
    assert_eq!(openapi.status, 200);
    p.stop();
}
