//! `coreline-bench soak`: a bounded soak of one coreline process on loopback.
//!
//! Timeline (`--minutes` is the whole budget; 10 by default, CI runs 1):
//!
//! 1. **Quiet run**: coreline alone with the well-behaved load (open loop,
//!    Poisson, `--rate` requests/s of the stateless route over both shard
//!    ports). Its p99 is the reference.
//! 2. **Rounds**, each: start (or restart) coreline on the same checkpoint
//!    directory, verify what it restored, then for the round's length run at
//!    once the same well-behaved load (measured), keyed updates on both
//!    ports (acknowledgements recorded), malformed requests, slowloris
//!    connections, forced checkpoints (`POST /checkpoint` on the admin port)
//!    and a sampler of the process's RSS and open fds; then stop the clients
//!    and `kill -9` the process.
//!
//! Checks (each failure is listed and makes the command exit 1):
//!
//! - **No acknowledged update older than the last committed epoch is
//!   lost.** Before each forced checkpoint the soak copies, per user, the
//!   highest count (`n`) an update reply acknowledged; once the checkpoint
//!   answers `{"epoch":N}` that copy is the floor. After each restart the
//!   restored epoch must be ≥ N and every user's restored count must lie
//!   between its floor and the number of updates ever sent for it. The
//!   restored counts are then the new floors (they come from a committed
//!   epoch).
//! - **RSS and fds stay bounded**: each round's peak RSS within
//!   `max(2 × quiet RSS, quiet RSS + 64 MiB)`; peak fds within the fds open
//!   after the quiet run plus the soak's own connections plus 64; and once
//!   the round's clients are gone, fds back within 16 of the quiet figure.
//! - **Well-behaved p99 within `--p99-ratio` (2×) of the quiet run**, over all
//!   rounds pooled, and no errors on that load.
//! - Every malformed request is answered with the expected 4xx, every
//!   slowloris connection that is cut gets a 408 first, and every restart
//!   comes up.
//!
//! Everything runs from a fresh directory under `latency-tests/reports/`.

use crate::body::{BodySource, RequestPool, RequestSpec, Template};
use crate::framing::frame_response;
use crate::generator::{self, Balance, LoadConfig, Mode, RunStats};
use crate::scenario::ServerKind;
use crate::schedule::{Arrival, Rng};
use crate::server;
use anyhow::{Context, Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Options of `coreline-bench soak`.
#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Whole budget in minutes (quiet run, rounds, restarts).
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Well-behaved requests per second (open loop) in the quiet run and in
    /// every round.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Shard ports are base and base+1, the admin port base+90.
    #[arg(long, default_value_t = 37100)]
    base_port: u16,
    /// Concurrent slowloris connections during a round.
    #[arg(long, default_value_t = 100)]
    slowloris: usize,
    /// Distinct users of the keyed route.
    #[arg(long, default_value_t = 256)]
    users: usize,
    /// Largest allowed ratio of the rounds' p99 to the quiet run's p99.
    #[arg(long, default_value_t = 2.0)]
    p99_ratio: f64,
    /// Use this coreline binary instead of building one.
    #[arg(long)]
    coreline_bin: Option<PathBuf>,
}

const LOAD_CONNECTIONS: usize = 8;
const KEYED_THREADS: usize = 2;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("latency-tests lives in the workspace")
        .to_path_buf()
}

/// The soak's service: a stateless route, a keyed counter and its read
/// route, short header/body timeouts so that slowloris connections cycle.
fn config_text(base_port: u16, ckpt_dir: &Path) -> String {
    format!(
        r#"[service]
name = "soak"
host = "127.0.0.1"
base_port = {base_port}
shards = 2
admin_port = {admin}

[limits]
header_timeout = "2s"
body_timeout = "2s"
idle_timeout = "30s"

[checkpoint]
dir = "{dir}"
interval = "1s"
retain = 3
full_every = 5

[[route]]
method = "POST"
path = "/my_api"
request = {{ foo = "utf8", bar = "int64" }}

  [[route.step]]
  with_column = {{ name = "fooLength", expr = "length(foo)" }}

  [route.reply]
  columns = ["fooLength"]

[[route]]
method = "POST"
path = "/events"
request = {{ user = "utf8", amount = "int64" }}

  [[route.step]]
  aggregate = {{ name = "user_counts", key = "user", outputs = {{ n = "count()", total = "sum(amount)" }} }}

  [route.reply]
  columns = ["user", "n", "total"]

[[route]]
method = "GET"
path = "/counts"
read = "user_counts"
"#,
        admin = admin_port(base_port),
        dir = ckpt_dir.display(),
    )
}

fn admin_port(base_port: u16) -> u16 {
    base_port + 90
}

// ---------------------------------------------------------------- HTTP client

/// A keep-alive HTTP/1.1 client connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(port: u16, timeout: Duration) -> Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connecting to port {port}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `request` and reads one response: status, body, `Connection: close`.
    fn call(&mut self, request: &[u8]) -> Result<(u16, String, bool)> {
        self.stream.write_all(request)?;
        self.read_response()
    }

    fn read_response(&mut self) -> Result<(u16, String, bool)> {
        loop {
            if let Some(f) = frame_response(&self.buf).map_err(|e| anyhow::anyhow!("{e}"))? {
                let head_end = self
                    .buf
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(f.len, |p| p + 4);
                let body = String::from_utf8_lossy(&self.buf[head_end..f.len]).into_owned();
                self.buf.drain(..f.len);
                return Ok((f.status, body, f.close));
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed before a full response");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn post(path: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// One request on a fresh connection to the admin port.
fn admin(port: u16, request: &[u8], timeout: Duration) -> Result<(u16, String)> {
    let mut c = Conn::open(port, timeout)?;
    let (status, body, _) = c.call(request)?;
    Ok((status, body))
}

// ------------------------------------------------------------------ process

struct Server {
    child: Child,
    pid: u32,
}

/// Starts coreline and waits for `/health` on the admin port. A start that
/// exits at once (a shard port still held by the killed process's
/// asynchronous teardown) is retried; the retries are counted.
fn start(bin: &Path, config: &Path, log: &Path, base_port: u16) -> Result<(Server, u32)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut retries = 0;
    loop {
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = Command::new(bin)
            .arg("run")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(logfile.try_clone()?)
            .stderr(logfile)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        loop {
            if let Some(status) = child.try_wait()? {
                if Instant::now() > deadline {
                    bail!(
                        "coreline exited with {status} at start, {retries} retries; see {}",
                        log.display()
                    );
                }
                retries += 1;
                thread::sleep(Duration::from_millis(20));
                break;
            }
            if server::healthy(admin_port(base_port))
                && server::healthy(base_port)
                && server::healthy(base_port + 1)
            {
                return Ok((Server { child, pid }, retries));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "coreline did not become healthy in 20 s; see {}",
                    log.display()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Server {
    fn kill9(mut self) -> Result<()> {
        self.child.kill().context("kill -9")?;
        self.child.wait()?;
        Ok(())
    }
}

/// (RSS bytes, open fds) of `pid`.
fn usage(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss_kb * 1024, fds))
}

// ---------------------------------------------------------------- keyed model

/// What the soak knows about each user's count.
#[derive(Default)]
struct Ledger {
    /// Highest `n` an update reply acknowledged, per user (this process life).
    acked: Vec<u64>,
    /// Updates ever sent (acknowledged or not), per user: the upper bound.
    sent: Vec<u64>,
    /// Counts known to be in a committed epoch, per user.
    floor: Vec<u64>,
    /// Epoch of the last forced checkpoint that answered.
    floor_epoch: u64,
    /// Update replies that were not 200 or whose `n`/`total` disagreed.
    bad_replies: Vec<String>,
    acked_total: u64,
}

fn user(i: usize) -> String {
    format!("user-{i}")
}

fn keyed_worker(
    port: u16,
    seed: u64,
    users: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::new(seed);
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed) {
        let u = (rng.next_u64() % users as u64) as usize;
        if conn.is_none() {
            conn = Conn::open(port, Duration::from_secs(5)).ok();
            if conn.is_none() {
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        }
        let request = post(
            "/events",
            &format!(r#"{{"user":"{}","amount":1}}"#, user(u)),
            "",
        );
        ledger.lock().unwrap().sent[u] += 1;
        let reply = conn.as_mut().map(|c| c.call(&request));
        match reply {
            Some(Ok((200, body, close))) => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let mut l = ledger.lock().unwrap();
                match (v["n"].as_u64(), v["total"].as_i64()) {
                    (Some(n), Some(total)) if total == n as i64 && v["user"] == user(u) => {
                        l.acked[u] = l.acked[u].max(n);
                        l.acked_total += 1;
                    }
                    _ => l.bad_replies.push(format!("{}: {body}", user(u))),
                }
                if close {
                    conn = None;
                }
            }
            Some(Ok((status, body, _))) => {
                ledger
                    .lock()
                    .unwrap()
                    .bad_replies
                    .push(format!("{}: {status} {body}", user(u)));
                conn = None;
            }
            _ => conn = None,
        }
        thread::sleep(Duration::from_millis(4));
    }
}

/// Forces a checkpoint every `every`; records the floors it commits.
fn checkpointer(
    admin: u16,
    every: Duration,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    forced: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
) {
    while !sleep_unless(&stop, every) {
        // Acknowledged before the request is sent, hence before the barrier.
        let snapshot = ledger.lock().unwrap().acked.clone();
        let request = post("/checkpoint", "", "X-Coreline-Admin: soak\r\n");
        match admin_call(admin, &request) {
            Ok((200, body)) => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                match v["epoch"].as_u64() {
                    Some(epoch) => {
                        let mut l = ledger.lock().unwrap();
                        for (f, s) in l.floor.iter_mut().zip(&snapshot) {
                            *f = (*f).max(*s);
                        }
                        l.floor_epoch = l.floor_epoch.max(epoch);
                        forced.fetch_add(1, Ordering::Relaxed);
                    }
                    None => failed
                        .lock()
                        .unwrap()
                        .push(format!("POST /checkpoint: {body}")),
                }
            }
            Ok((status, body)) => failed
                .lock()
                .unwrap()
                .push(format!("POST /checkpoint answered {status}: {body}")),
            Err(e) => failed
                .lock()
                .unwrap()
                .push(format!("POST /checkpoint: {e:#}")),
        }
    }
}

fn admin_call(port: u16, request: &[u8]) -> Result<(u16, String)> {
    admin(port, request, Duration::from_secs(10))
}

/// Sleeps `d` in small steps; true if `stop` was set meanwhile.
fn sleep_unless(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    stop.load(Ordering::Relaxed)
}

// ------------------------------------------------------------------ hostile

/// Malformed requests and the status each must get.
fn malformed_cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let big_header = format!(
        "GET /my_api HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    vec![
        ("truncated JSON", post("/my_api", r#"{"foo":"#, ""), 400),
        ("JSON array", post("/my_api", "[1,2]", ""), 422),
        ("wrong type", post("/my_api", r#"{"foo":1,"bar":2}"#, ""), 422),
        ("missing field", post("/my_api", r#"{"foo":"x"}"#, ""), 422),
        ("keyed, wrong type", post("/events", r#"{"user":5,"amount":1}"#, ""), 422),
        (
            "bad Content-Length",
            b"POST /my_api HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 12a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "Content-Length and chunked",
            b"POST /my_api HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "bad chunk size",
            b"POST /my_api HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            400,
        ),
        (
            "body over the limit",
            b"POST /my_api HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000000\r\n\r\n".to_vec(),
            413,
        ),
        ("header over the limit", big_header.into_bytes(), 431),
        ("TLS handshake", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), 400),
        ("bare LF garbage", b"\x00\x01\x02 / HTTP/1.1\n\n".to_vec(), 400),
        ("unknown route", post("/nope", "{}", ""), 404),
        ("wrong method", get("/my_api"), 405),
        ("read without key", get("/counts"), 400),
    ]
}

#[derive(Default, Debug, Clone, Serialize)]
struct HostileCounts {
    malformed_sent: u64,
    malformed_ok: u64,
    malformed_wrong: Vec<String>,
    slowloris_opened: u64,
    slowloris_408: u64,
    slowloris_cut_without_408: u64,
}

fn malformed_worker(ports: [u16; 2], stop: Arc<AtomicBool>, counts: Arc<Mutex<HostileCounts>>) {
    let cases = malformed_cases();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let (name, request, want) = &cases[i % cases.len()];
        let port = ports[(i / cases.len()) % 2];
        i += 1;
        let got = Conn::open(port, Duration::from_secs(5)).and_then(|mut c| {
            c.stream.write_all(request)?;
            c.read_response()
        });
        let mut c = counts.lock().unwrap();
        c.malformed_sent += 1;
        match got {
            Ok((status, _, _)) if status == *want => c.malformed_ok += 1,
            Ok((status, body, _)) => {
                if c.malformed_wrong.len() < 20 {
                    c.malformed_wrong
                        .push(format!("{name}: {status} (expected {want}) {body}"))
                }
            }
            Err(e) => {
                if c.malformed_wrong.len() < 20 {
                    c.malformed_wrong
                        .push(format!("{name}: no response (expected {want}): {e:#}"))
                }
            }
        }
        drop(c);
        thread::sleep(Duration::from_millis(40));
    }
}

/// Keeps `n` connections each trickling a request head one byte at a time;
/// the server must cut each with a 408 (header timeout 2 s).
fn slowloris_worker(
    ports: [u16; 2],
    n: usize,
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<HostileCounts>>,
) {
    const HEAD: &[u8] = b"POST /my_api HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    let mut conns: Vec<(TcpStream, usize, Vec<u8>)> = Vec::new();
    let mut opened = 0u64;
    while !sleep_unless(&stop, Duration::from_millis(250)) {
        while conns.len() < n {
            let port = ports[conns.len() % 2];
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    let _ = s.set_nonblocking(true);
                    conns.push((s, 0, Vec::new()));
                    opened += 1;
                }
                Err(_) => break,
            }
        }
        let mut cut_408 = 0;
        let mut cut_other = 0;
        conns.retain_mut(|(s, sent, got)| {
            // Drain whatever the server said.
            let mut buf = [0u8; 512];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        if got.starts_with(b"HTTP/1.1 408") {
                            cut_408 += 1;
                        } else {
                            cut_other += 1;
                        }
                        return false;
                    }
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        if got.starts_with(b"HTTP/1.1 408") {
                            cut_408 += 1;
                        } else {
                            cut_other += 1;
                        }
                        return false;
                    }
                }
            }
            let byte = if *sent < HEAD.len() {
                HEAD[*sent]
            } else {
                b'x'
            };
            match s.write(&[byte]) {
                Ok(_) => *sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {}
            }
            true
        });
        let mut c = counts.lock().unwrap();
        c.slowloris_408 += cut_408;
        c.slowloris_cut_without_408 += cut_other;
        c.slowloris_opened = opened;
    }
}

// -------------------------------------------------------------------- soak

#[derive(Debug, Clone, Serialize)]
struct RoundReport {
    round: usize,
    start_retries: u32,
    restored_epoch: u64,
    required_epoch: u64,
    users_checked: usize,
    keyed_acked: u64,
    forced_checkpoints: u64,
    p99_us: f64,
    p999_us: f64,
    well_behaved_errors: u64,
    peak_rss_mib: f64,
    peak_fds: u64,
    fds_after_clients: u64,
    hostile: HostileCounts,
}

#[derive(Debug, Clone, Serialize)]
struct SoakReport {
    command: String,
    minutes_budget: f64,
    seconds_taken: f64,
    rate: f64,
    quiet_p99_us: f64,
    quiet_p999_us: f64,
    quiet_errors: u64,
    rounds_p99_us: f64,
    rounds_p999_us: f64,
    p99_ratio: f64,
    p99_ratio_max: f64,
    quiet_rss_mib: f64,
    rss_bound_mib: f64,
    quiet_fds: u64,
    fd_bound: u64,
    rounds: Vec<RoundReport>,
    failures: Vec<String>,
}

fn load_config(base_port: u16, rate: f64, seconds: f64, seed: u64) -> LoadConfig {
    LoadConfig {
        host: "127.0.0.1".into(),
        ports: vec![base_port, base_port + 1],
        connections: LOAD_CONNECTIONS,
        mode: Mode::Open {
            rate,
            arrival: Arrival::Poisson,
        },
        pipeline: 1,
        duration: Duration::from_secs_f64(seconds),
        warmup: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        balance: Balance::RoundRobin,
        seed,
        spin: false,
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Samples RSS and fds of `pid` every 200 ms until `stop`: (peak RSS, peak fds).
fn sampler(pid: u32, stop: Arc<AtomicBool>) -> thread::JoinHandle<(u64, u64)> {
    thread::spawn(move || {
        let (mut rss, mut fds) = (0, 0);
        loop {
            if let Some((r, f)) = usage(pid) {
                rss = rss.max(r);
                fds = fds.max(f);
            }
            if sleep_unless(&stop, Duration::from_millis(200)) {
                return (rss, fds);
            }
        }
    })
}

/// After a restart: the restored epoch, and every user's count against its
/// floor and the updates sent. Returns (restored epoch, users checked).
fn verify_restored(
    base_port: u16,
    ledger: &Mutex<Ledger>,
    failures: &mut Vec<String>,
    round: usize,
) -> Result<(u64, usize)> {
    let (status, stats) = admin(
        admin_port(base_port),
        &get("/stats"),
        Duration::from_secs(10),
    )?;
    if status != 200 {
        bail!("GET /stats answered {status}");
    }
    let v: serde_json::Value = serde_json::from_str(&stats).context("/stats is not JSON")?;
    let restored = v["checkpoint"]["restored_epoch"]
        .as_u64()
        .context("/stats has no checkpoint.restored_epoch")?;
    let mut l = ledger.lock().unwrap();
    if restored < l.floor_epoch {
        failures.push(format!(
            "round {round}: restored epoch {restored} is older than epoch {} committed by a forced checkpoint",
            l.floor_epoch
        ));
    }
    let mut conn = Conn::open(base_port, Duration::from_secs(5))?;
    let users = l.sent.len();
    let mut lost = 0;
    for u in 0..users {
        let (status, body, close) = conn.call(&get(&format!("/counts?key={}", user(u))))?;
        let n = match status {
            200 => serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["n"].as_u64())
                .with_context(|| format!("GET /counts?key={}: {body}", user(u)))?,
            404 => 0,
            s => bail!("GET /counts?key={} answered {s}: {body}", user(u)),
        };
        if n < l.floor[u] || n > l.sent[u] {
            lost += 1;
            if lost <= 5 {
                failures.push(format!(
                    "round {round}: {} restored n={n}, but {} were committed and {} sent",
                    user(u),
                    l.floor[u],
                    l.sent[u]
                ));
            }
        }
        // What was restored is committed; acknowledgements start over.
        l.floor[u] = n;
        l.acked[u] = n;
        if close {
            conn = Conn::open(base_port, Duration::from_secs(5))?;
        }
    }
    if lost > 5 {
        failures.push(format!("round {round}: {lost} users in all out of bounds"));
    }
    Ok((restored, users))
}

/// Runs the soak; `Err` when it could not run, `Ok(false)` when a check failed.
pub fn run(args: &SoakArgs, command: String) -> Result<bool> {
    let t0 = Instant::now();
    let budget = args.minutes * 60.0;
    if budget < 30.0 {
        bail!("--minutes {} is too short: at least 0.5", args.minutes);
    }
    let quiet_s = (budget * 0.1).clamp(6.0, 60.0);
    let rounds = ((budget / 60.0).round() as usize).clamp(3, 10);
    // Per round: up to ~3 s of restart and verification.
    let round_s = ((budget - quiet_s - 8.0) / rounds as f64 - 3.5).max(5.0);
    let workspace = workspace_root();
    let bins = server::build(
        &[ServerKind::Coreline],
        &workspace,
        args.coreline_bin.as_deref(),
    )?;
    let bin = bins.get(ServerKind::Coreline)?.to_path_buf();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let out = workspace
        .join("latency-tests/reports")
        .join(format!("soak-{unix}"));
    let ckpt_dir = out.join("checkpoints");
    std::fs::create_dir_all(&ckpt_dir)
        .with_context(|| format!("creating {}", ckpt_dir.display()))?;
    let config = out.join("soak.toml");
    std::fs::write(&config, config_text(args.base_port, &ckpt_dir))?;
    let log = out.join("coreline.log");
    let ports = [args.base_port, args.base_port + 1];
    let admin = admin_port(args.base_port);
    let pool = RequestPool::build(&RequestSpec {
        method: "POST".into(),
        path: "/my_api".into(),
        host: "127.0.0.1".into(),
        body: BodySource::Template(
            Template::parse(r#"{"foo":"{str:8..32}","bar":{int:0..1000}}"#)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        pool: 4096,
        key_field: None,
        seed: 1,
    })
    .map_err(anyhow::Error::msg)?;
    eprintln!(
        "soak: quiet {quiet_s:.0} s, then {rounds} rounds of {round_s:.0} s with kill -9 between; output {}",
        out.display()
    );

    let mut failures = Vec::new();
    // 1. Quiet run.
    let (srv, _) = start(&bin, &config, &log, args.base_port)?;
    let quiet = generator::run(&load_config(args.base_port, args.rate, quiet_s, 1), &pool)
        .map_err(|e| anyhow::anyhow!("{}", e.0))?;
    thread::sleep(Duration::from_millis(300));
    let (quiet_rss, quiet_fds) = usage(srv.pid).context("reading /proc of coreline")?;
    srv.kill9()?;
    let quiet_p99 = quiet.corrected.value_at_quantile(0.99);
    if quiet.counts.errors() > 0 {
        failures.push(format!(
            "quiet run: {} errors on the well-behaved load",
            quiet.counts.errors()
        ));
    }
    eprintln!(
        "quiet: p99 {:.1} us, RSS {:.1} MiB, {quiet_fds} fds",
        us(quiet_p99),
        mib(quiet_rss)
    );
    let rss_bound = (2 * quiet_rss).max(quiet_rss + 64 * 1024 * 1024);
    let own_conns = LOAD_CONNECTIONS + KEYED_THREADS + args.slowloris + 4;
    let fd_bound = quiet_fds + own_conns as u64 + 64;

    // 2. Rounds.
    let ledger = Arc::new(Mutex::new(Ledger {
        acked: vec![0; args.users],
        sent: vec![0; args.users],
        floor: vec![0; args.users],
        ..Ledger::default()
    }));
    let mut pooled: Histogram<u64> = generator::new_histogram();
    let mut reports = Vec::new();
    for round in 1..=rounds {
        let (srv, start_retries) = start(&bin, &config, &log, args.base_port)
            .with_context(|| format!("round {round}: restart after kill -9"))?;
        let required_epoch = ledger.lock().unwrap().floor_epoch;
        let (restored_epoch, users_checked) =
            verify_restored(args.base_port, &ledger, &mut failures, round)?;
        let acked_before = ledger.lock().unwrap().acked_total;

        let stop = Arc::new(AtomicBool::new(false));
        let hostile = Arc::new(Mutex::new(HostileCounts::default()));
        let forced = Arc::new(AtomicU64::new(0));
        let ckpt_failed = Arc::new(Mutex::new(Vec::new()));
        let sample = sampler(srv.pid, stop.clone());
        let mut workers = Vec::new();
        for (i, &port) in ports.iter().enumerate().take(KEYED_THREADS) {
            let (l, s) = (ledger.clone(), stop.clone());
            let users = args.users;
            let seed = (round * 10 + i) as u64;
            workers.push(thread::spawn(move || keyed_worker(port, seed, users, l, s)));
        }
        {
            let (l, s, f, e) = (
                ledger.clone(),
                stop.clone(),
                forced.clone(),
                ckpt_failed.clone(),
            );
            workers.push(thread::spawn(move || {
                checkpointer(admin, Duration::from_millis(1500), l, s, f, e)
            }));
        }
        {
            let (s, c) = (stop.clone(), hostile.clone());
            workers.push(thread::spawn(move || malformed_worker(ports, s, c)));
        }
        {
            let (s, c, n) = (stop.clone(), hostile.clone(), args.slowloris);
            workers.push(thread::spawn(move || slowloris_worker(ports, n, s, c)));
        }
        let stats: RunStats = generator::run(
            &load_config(args.base_port, args.rate, round_s, 1 + round as u64),
            &pool,
        )
        .map_err(|e| anyhow::anyhow!("{}", e.0))?;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let _ = w.join();
        }
        let (peak_rss, peak_fds) = sample.join().unwrap_or((0, 0));
        // Clients are gone: the server must let go of their fds.
        let mut fds_after = u64::MAX;
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(3) {
            if let Some((_, f)) = usage(srv.pid) {
                fds_after = f;
                if f <= quiet_fds + 16 {
                    break;
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        srv.kill9()?;
        pooled.add(&stats.corrected).ok();

        let hostile = hostile.lock().unwrap().clone();
        let l = ledger.lock().unwrap();
        let keyed_acked = l.acked_total - acked_before;
        for bad in l.bad_replies.iter().take(5) {
            failures.push(format!("round {round}: keyed update answered {bad}"));
        }
        drop(l);
        ledger.lock().unwrap().bad_replies.clear();
        for e in ckpt_failed.lock().unwrap().iter().take(5) {
            failures.push(format!("round {round}: {e}"));
        }
        if stats.counts.errors() > 0 {
            failures.push(format!(
                "round {round}: {} errors on the well-behaved load ({:?})",
                stats.counts.errors(),
                stats.counts.statuses
            ));
        }
        if keyed_acked == 0 {
            failures.push(format!("round {round}: no keyed update was acknowledged"));
        }
        if forced.load(Ordering::Relaxed) == 0 {
            failures.push(format!("round {round}: no forced checkpoint succeeded"));
        }
        for w in &hostile.malformed_wrong {
            failures.push(format!("round {round}: malformed request {w}"));
        }
        if hostile.slowloris_cut_without_408 > 0 {
            failures.push(format!(
                "round {round}: {} slowloris connections were cut without a 408",
                hostile.slowloris_cut_without_408
            ));
        }
        if round_s > 4.0 && hostile.slowloris_408 == 0 && args.slowloris > 0 {
            failures.push(format!(
                "round {round}: no slowloris connection was cut with 408"
            ));
        }
        if peak_rss > rss_bound {
            failures.push(format!(
                "round {round}: peak RSS {:.1} MiB over the bound {:.1} MiB",
                mib(peak_rss),
                mib(rss_bound)
            ));
        }
        if peak_fds > fd_bound {
            failures.push(format!(
                "round {round}: peak {peak_fds} fds over the bound {fd_bound}"
            ));
        }
        if fds_after > quiet_fds + 16 {
            failures.push(format!(
                "round {round}: {fds_after} fds open 3 s after the clients left (quiet run: {quiet_fds})"
            ));
        }
        let r = RoundReport {
            round,
            start_retries,
            restored_epoch,
            required_epoch,
            users_checked,
            keyed_acked,
            forced_checkpoints: forced.load(Ordering::Relaxed),
            p99_us: us(stats.corrected.value_at_quantile(0.99)),
            p999_us: us(stats.corrected.value_at_quantile(0.999)),
            well_behaved_errors: stats.counts.errors(),
            peak_rss_mib: mib(peak_rss),
            peak_fds,
            fds_after_clients: fds_after,
            hostile,
        };
        eprintln!(
            "round {round}: restored epoch {} (≥ {} required), {} users checked, start retries {}; p99 {:.1} us; keyed acks {}, forced checkpoints {}; malformed {}/{} as expected; slowloris {} opened, {} cut with 408; peak RSS {:.1} MiB, peak fds {}, fds after {}",
            r.restored_epoch,
            r.required_epoch,
            r.users_checked,
            r.start_retries,
            r.p99_us,
            r.keyed_acked,
            r.forced_checkpoints,
            r.hostile.malformed_ok,
            r.hostile.malformed_sent,
            r.hostile.slowloris_opened,
            r.hostile.slowloris_408,
            r.peak_rss_mib,
            r.peak_fds,
            r.fds_after_clients
        );
        reports.push(r);
    }
    // A last restart: the final round's acknowledged, committed updates.
    let (srv, _) = start(&bin, &config, &log, args.base_port)?;
    verify_restored(args.base_port, &ledger, &mut failures, rounds + 1)?;
    srv.kill9()?;

    let rounds_p99 = pooled.value_at_quantile(0.99);
    let ratio = rounds_p99 as f64 / quiet_p99.max(1) as f64;
    if ratio > args.p99_ratio {
        failures.push(format!(
            "well-behaved p99 {:.1} us under the soak is {ratio:.2}× the quiet run's {:.1} us (limit {}×)",
            us(rounds_p99),
            us(quiet_p99),
            args.p99_ratio
        ));
    }
    let report = SoakReport {
        command,
        minutes_budget: args.minutes,
        seconds_taken: t0.elapsed().as_secs_f64(),
        rate: args.rate,
        quiet_p99_us: us(quiet_p99),
        quiet_p999_us: us(quiet.corrected.value_at_quantile(0.999)),
        quiet_errors: quiet.counts.errors(),
        rounds_p99_us: us(rounds_p99),
        rounds_p999_us: us(pooled.value_at_quantile(0.999)),
        p99_ratio: ratio,
        p99_ratio_max: args.p99_ratio,
        quiet_rss_mib: mib(quiet_rss),
        rss_bound_mib: mib(rss_bound),
        quiet_fds,
        fd_bound,
        rounds: reports,
        failures: failures.clone(),
    };
    let json = out.join("soak.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    println!(
        "soak: {:.0} s, {} rounds with kill -9; well-behaved p99 quiet {:.1} us, under soak {:.1} us ({ratio:.2}×, limit {}×); p99.9 {:.1} → {:.1} us",
        report.seconds_taken,
        rounds,
        report.quiet_p99_us,
        report.rounds_p99_us,
        args.p99_ratio,
        report.quiet_p999_us,
        report.rounds_p999_us
    );
    println!(
        "RSS quiet {:.1} MiB, peak {:.1} MiB (bound {:.1}); fds quiet {}, peak {} (bound {}); keyed acks {}, forced checkpoints {}, malformed {} (all as expected: {}), slowloris 408s {}",
        report.quiet_rss_mib,
        report
            .rounds
            .iter()
            .map(|r| r.peak_rss_mib)
            .fold(0.0, f64::max),
        report.rss_bound_mib,
        quiet_fds,
        report.rounds.iter().map(|r| r.peak_fds).max().unwrap_or(0),
        fd_bound,
        report.rounds.iter().map(|r| r.keyed_acked).sum::<u64>(),
        report
            .rounds
            .iter()
            .map(|r| r.forced_checkpoints)
            .sum::<u64>(),
        report
            .rounds
            .iter()
            .map(|r| r.hostile.malformed_sent)
            .sum::<u64>(),
        report
            .rounds
            .iter()
            .all(|r| r.hostile.malformed_wrong.is_empty()),
        report
            .rounds
            .iter()
            .map(|r| r.hostile.slowloris_408)
            .sum::<u64>(),
    );
    println!("report: {}", json.display());
    for f in &failures {
        println!("FAILED: {f}");
    }
    Ok(failures.is_empty())
}
