//! Operating limits of a real `coreline run` process: restarting at once
//! after `kill -9` (ports still being torn down), a port held by another
//! listener, and file-descriptor limits (`prlimit`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, Proc, TempDir};

fn free_port_pair() -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX - 1
            && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 2)).is_ok()
        {
            return port;
        }
    }
}

/// Two shards on `base`, `base + 1`, admin on `base + 2`.
fn config(base: u16, extra_limits: &str) -> String {
    format!(
        r#"
[service]
name = "limits"
base_port = {base}
shards = 2
admin_port = {}

[limits]
drain_timeout = "1s"
{extra_limits}

[[route]]
path = "/my_api"
request = {{ foo = "utf8", bar = "int64" }}
  [[route.step]]
  with_column = {{ name = "fooLength", expr = "length(foo)" }}
  [route.reply]
  columns = ["fooLength"]
"#,
        base + 2
    )
}

const BODY: &str = r#"{"foo":"hello world","bar":42}"#;

/// 50 rounds of `kill -9` and an immediate restart on the same ports, each
/// with open connections at the moment of the kill. Before the bind retry a
/// restart failed with "already in use by another process" because the
/// dead process's io_uring and sockets are torn down asynchronously.
#[test]
fn fifty_kill9_then_immediate_restart_cycles_all_start() {
    let tmp = TempDir::new("restart50");
    let base = free_port_pair();
    let cfg = tmp.write("limits.toml", &config(base, ""));
    let mut slowest = Duration::ZERO;
    for round in 0..50 {
        let t = Instant::now();
        let p = Proc::try_spawn(&cfg)
            .unwrap_or_else(|log| panic!("round {round}: restart failed:\n{log}"));
        slowest = slowest.max(t.elapsed());
        assert_eq!(p.shards[0].port(), base, "round {round}");
        let mut clients: Vec<Client> = p.shards.iter().map(|a| Client::connect(*a)).collect();
        for c in &mut clients {
            assert_eq!(c.post("/my_api", BODY).status, 200, "round {round}");
        }
        p.kill9();
        drop(clients);
    }
    eprintln!("50 kill -9 / restart cycles: slowest start {slowest:?}");
}

/// A port held by a live listener is refused after the retry, naming the
/// holder; the message no longer blames "another process" when nothing
/// listens.
#[test]
fn a_port_held_by_a_live_listener_is_named() {
    let tmp = TempDir::new("port-held");
    let base = free_port_pair();
    let holder = std::net::TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let cfg = tmp.write("limits.toml", &config(base, ""));
    let t = Instant::now();
    let log = match Proc::try_spawn(&cfg) {
        Ok(_) => panic!("started although port {} is held", base + 1),
        Err(log) => log,
    };
    let waited = t.elapsed();
    assert!(
        log.contains(&format!("port {} (shard 1)", base + 1)),
        "{log}"
    );
    assert!(
        log.contains(&format!("pid {}", std::process::id())),
        "the holder is named: {log}"
    );
    assert!(
        waited >= Duration::from_secs(2),
        "retried for 2 s: {waited:?}"
    );
    drop(holder);
}

fn prlimit_available() -> bool {
    std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn fd_limits_are_raised_checked_and_survived() {
    assert!(prlimit_available(), "prlimit (util-linux) is needed");
    let tmp = TempDir::new("fdlimit");
    let base = free_port_pair();

    // 1. The soft limit is raised to the hard one.
    let cfg = tmp.write("raise.toml", &config(base, "max_connections = 20"));
    let p = Proc::try_spawn_wrapped(&cfg, &["prlimit", "--nofile=100:4096", "--"], &[])
        .unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(soft_nofile(p.child.id()), 4096);
    p.kill9();

    // 2. An explicit max_connections that cannot fit is refused, with numbers.
    let cfg = tmp.write("refuse.toml", &config(base, "max_connections = 200"));
    let log = match Proc::try_spawn_wrapped(&cfg, &["prlimit", "--nofile=128:128", "--"], &[]) {
        Ok(_) => panic!("2 × 200 connections started under 128 descriptors"),
        Err(log) => log,
    };
    assert!(log.contains("RLIMIT_NOFILE is 128"), "{log}");
    assert!(log.contains("max_connections 200"), "{log}");

    // 3. A default max_connections is lowered to fit instead.
    let cfg = tmp.write("default.toml", &config(base, ""));
    let p = Proc::try_spawn_wrapped(&cfg, &["prlimit", "--nofile=256:256", "--"], &[])
        .unwrap_or_else(|log| panic!("{log}"));
    assert!(
        p.log_text().contains("lowered to fit RLIMIT_NOFILE"),
        "{}",
        p.log_text()
    );
    p.kill9();

    // 4. Out of descriptors: existing connections keep working, accepting
    //    pauses (counted, logged a few times at most), and new connections
    //    are served once descriptors free up. The check above keeps shard
    //    connections within the limit, so the descriptors run out the way
    //    they can still run out: the admin endpoint's connections (up to 64,
    //    beyond its reserve of 16) take them, until its 1 s head timeout
    //    closes them.
    let cfg = tmp.write(
        "emfile.toml",
        &config(base, "max_connections = 70").replace("shards = 2", "shards = 1"),
    );
    let p = Proc::try_spawn_wrapped(&cfg, &["prlimit", "--nofile=128:128", "--"], &[])
        .unwrap_or_else(|log| panic!("{log}"));
    let shard = p.shards[0];
    let mut existing: Vec<Client> = (0..10).map(|_| Client::connect(shard)).collect();
    for c in &mut existing {
        assert_eq!(c.post("/my_api", BODY).status, 200);
    }
    let pid = p.child.id();
    let open_fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = open_fds();
    let admin: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(p.admin.unwrap()).unwrap())
        .collect();
    // Until the admin endpoint has accepted them (they time out 1 s later).
    let t = Instant::now();
    while open_fds() < before + 60 && t.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let request = format!(
        "POST /my_api HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut newcomers: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut s = TcpStream::connect(shard).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // The open connections are served as before...
    for c in &mut existing {
        assert_eq!(c.post("/my_api", BODY).status, 200);
    }
    // ...while some newcomers wait in the backlog for a descriptor.
    let mut waiting = 0;
    for s in &mut newcomers {
        s.set_nonblocking(true).unwrap();
        let mut probe = [0u8; 1];
        if matches!(s.peek(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            waiting += 1;
        }
        s.set_nonblocking(false).unwrap();
    }
    assert!(
        waiting > 0,
        "every newcomer was answered: the descriptors never ran out"
    );
    // The admin connections time out and free their descriptors: every
    // newcomer is answered.
    for s in &mut newcomers {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    drop(admin);
    for c in &mut existing {
        assert_eq!(c.post("/my_api", BODY).status, 200);
    }
    let metrics = p.admin_get("/metrics");
    let exhausted: f64 = metrics
        .text()
        .lines()
        .filter(|l| l.starts_with("coreline_accept_fd_exhausted_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(exhausted >= 1.0, "{}", metrics.text());
    let log = p.log_text();
    let lines = log.matches("accept failed").count();
    assert!(
        (1..=4).contains(&lines),
        "the accept failure is logged, rate-limited: {lines} lines\n{log}"
    );
    eprintln!(
        "fd exhaustion: {waiting} of 60 newcomers waited, {exhausted} failed accepts counted, {lines} log line(s); all answered once descriptors freed up"
    );
    p.kill9();
}
