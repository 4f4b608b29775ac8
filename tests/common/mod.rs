//! Helpers for the integration tests: start a service from TOML text on
//! OS-assigned ports, and a minimal raw HTTP/1.1 client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use coreline::config::{Source, parse};
use coreline::pipeline::plan;
use coreline::runtime::Service;

/// Starts a service from TOML text; `base_port`/`admin_port` 0 pick free ports.
pub fn start(toml: &str) -> Service {
    let config = parse(Source {
        path: "test.toml".into(),
        text: toml.to_string(),
    })
    .unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let plan = plan(config).unwrap_or_else(|e| panic!("test plan invalid: {e}"));
    Service::start(plan).unwrap_or_else(|e| panic!("service did not start: {e}"))
}

/// The hello service with `shards` shards and an admin port.
pub fn hello(shards: usize) -> Service {
    start(&hello_toml(shards, ""))
}

/// hello's TOML with extra text appended to the `[service]` table's file
/// (use it for a `[limits]` table).
pub fn hello_toml(shards: usize, extra: &str) -> String {
    format!(
        r#"
[service]
name = "hello"
base_port = 0
shards = {shards}
admin_port = 0
{extra}

[[route]]
path = "/my_api"
request = {{ foo = "utf8", bar = "int64" }}
  [[route.step]]
  with_column = {{ name = "fooLength", expr = "length(foo)" }}
  [route.reply]
  columns = ["fooLength"]
"#
    )
}

/// One parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf8 body")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// A keep-alive connection that reads responses one by one.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads exactly one response (Content-Length framed). Panics on EOF
    /// before a full response.
    pub fn response(&mut self) -> Response {
        self.try_response()
            .expect("connection closed before a response")
    }

    /// Reads one response, or `None` on a clean EOF (or reset) before any byte.
    pub fn try_response(&mut self) -> Option<Response> {
        loop {
            if let Some((resp, used)) = parse_response(&self.buf) {
                self.buf.drain(..used);
                return Some(resp);
            }
            let mut chunk = [0u8; 65536];
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("read failed: {e}"),
            };
            if n == 0 {
                assert!(
                    self.buf.is_empty(),
                    "EOF inside a response: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the server closed the connection (EOF or reset) within the
    /// read timeout, with no further bytes.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
            || matches!(self.stream.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }

    pub fn post(&mut self, path: &str, body: &str) -> Response {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(req.as_bytes());
        self.response()
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.response()
    }
}

/// Parses one response from the front of `buf`: `(response, bytes used)`.
pub fn parse_response(buf: &[u8]) -> Option<(Response, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(buf).expect("server sent a malformed response") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let status = r.code.unwrap();
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect();
    if status == 100 {
        return Some((
            Response {
                status,
                headers,
                body: Vec::new(),
            },
            head,
        ));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().expect("numeric content-length"))
        .expect("every response has a Content-Length");
    if buf.len() < head + len {
        return None;
    }
    Some((
        Response {
            status,
            headers,
            body: buf[head..head + len].to_vec(),
        },
        head + len,
    ))
}

/// Sends raw bytes on a new connection and reads one response.
pub fn roundtrip(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.response()
}

/// Fetches an admin path with a fresh connection.
pub fn admin_get(service: &Service, path: &str) -> Response {
    let mut c = Client::connect(service.admin_addr().expect("admin configured"));
    c.get(path)
}

// ---------------------------------------------------------------------------
// Real `coreline run` processes (tests/checkpoint.rs, tests/routing.rs).
// ---------------------------------------------------------------------------

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_coreline");

/// A fresh directory under the system temp dir, removed on drop unless the
/// test panicked (then its path is printed so the files can be inspected).
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "coreline-{tag}-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn join(&self, p: impl AsRef<std::path::Path>) -> std::path::PathBuf {
        self.path.join(p)
    }

    /// Writes `text` to `name` in this directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A running `coreline run CONFIG` process: its shard and admin addresses
/// (from the `listening …` lines) and a log file holding its stderr.
pub struct Proc {
    pub child: std::process::Child,
    pub shards: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub log: std::path::PathBuf,
}

impl Proc {
    /// Starts `coreline run config` and waits for its `ready` line. Panics
    /// with the process's log if it exits first.
    pub fn spawn(config: &std::path::Path) -> Proc {
        Proc::try_spawn(config).unwrap_or_else(|log| panic!("coreline run failed to start:\n{log}"))
    }

    /// Like [`Proc::spawn`], but returns the process's log when it exits
    /// before `ready`.
    pub fn try_spawn(config: &std::path::Path) -> Result<Proc, String> {
        use std::io::BufRead;
        use std::sync::atomic::{AtomicU64, Ordering};
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let log = config.with_extension(format!("run{}.log", RUNS.fetch_add(1, Ordering::Relaxed)));
        let mut child = std::process::Command::new(BIN)
            .arg("run")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn coreline");
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut shards = Vec::new();
        let mut admin = None;
        let mut ready = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("listening admin addr=") {
                admin = Some(addr.trim().parse().unwrap());
            } else if let Some(rest) = line.strip_prefix("listening shard=") {
                let (i, addr) = rest.split_once(" addr=").expect("listening line");
                assert_eq!(i.parse::<usize>().unwrap(), shards.len(), "{line}");
                shards.push(addr.trim().parse().unwrap());
            } else if line.starts_with("ready ") {
                ready = true;
                break;
            }
        }
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::fs::read_to_string(&log).unwrap_or_default());
        }
        // Keep draining stdout so that a later println! in the server never
        // meets a closed pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Proc {
            child,
            shards,
            admin,
            log,
        })
    }

    /// The process's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (`kill -9`) and reap: no drain, no final checkpoint.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM (graceful stop) without waiting.
    pub fn sigterm(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit; panics (after killing it) if it does
    /// not within `within`. Returns the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "coreline did not exit within {within:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits (10 s) for exit code 0.
    pub fn stop(mut self) {
        self.sigterm();
        let code = self.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(0), "graceful stop; log:\n{}", self.log_text());
    }

    fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("the config has an admin_port")
    }

    /// `GET path` on the admin port.
    pub fn admin_get(&self, path: &str) -> Response {
        Client::connect(self.admin_addr()).get(path)
    }

    /// `POST path` (empty body) on the admin port.
    pub fn admin_post(&self, path: &str) -> Response {
        Client::connect(self.admin_addr()).post(path, "")
    }

    /// `GET /stats` as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let r = self.admin_get("/stats");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// `POST /checkpoint`: the committed epoch. Panics unless 200.
    pub fn checkpoint(&self) -> u64 {
        let r = self.admin_post("/checkpoint");
        assert_eq!(
            r.status,
            200,
            "POST /checkpoint: {}\nlog:\n{}",
            r.text(),
            self.log_text()
        );
        r.json()["epoch"]
            .as_u64()
            .unwrap_or_else(|| panic!("POST /checkpoint answered {}", r.text()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a
/// query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Rewrites an example config for a test: every line whose key (before `=`)
/// is in `set` gets the new value, e.g. `("base_port", "0")`; `dir` lines
/// are matched the same way. Panics if a key is not found.
pub fn rewrite_config(text: &str, set: &[(&str, &str)]) -> String {
    let mut found = vec![false; set.len()];
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match set.iter().position(|(k, _)| *k == key) {
            Some(i) if !line.trim_start().starts_with('#') => {
                found[i] = true;
                out.push_str(&format!("{key} = {}\n", set[i].1));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (k, _)) in set.iter().enumerate() {
        assert!(found[i], "no `{k} = ...` line to rewrite");
    }
    out
}

impl Client {
    /// Like [`Client::connect`], but `None` when nothing listens (yet).
    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        TcpStream::connect(addr).ok().map(|stream| {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream.set_nodelay(true).unwrap();
            Client {
                stream,
                buf: Vec::new(),
            }
        })
    }
}
