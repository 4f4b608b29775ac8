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

#[test]
fn version_names_the_commit_and_features() {
    let out = Command::new(BIN).arg("version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("coreline {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let commit = text
        .lines()
        .find_map(|l| l.strip_prefix("commit: "))
        .expect("a commit line");
    assert!(!commit.is_empty(), "{text}");
    assert!(text.contains("\nfeatures: "), "{text}");
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _coreline"),
        ("zsh", "#compdef coreline"),
        ("fish", "complete -c coreline"),
    ] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(marker), "{shell}: {text}");
        assert!(text.contains("openapi"), "{shell}");
    }
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_invalid_log_filter_is_an_error_at_start() {
    let path = write_config("logfilter.toml", &hello_toml(1, ""));
    let out = Command::new(BIN)
        .args(["run", "--log", "coreline=loud"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid --log filter \"coreline=loud\""),
        "{stderr}"
    );
    let out = Command::new(BIN)
        .arg("run")
        .arg(&path)
        .env("RUST_LOG", "[[[")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid RUST_LOG filter"), "{stderr}");
}

#[test]
fn check_applies_and_shows_environment_overrides() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/hello.toml");
    let out = Command::new(BIN)
        .args(["check", config])
        .env("CORELINE_HOST", "0.0.0.0")
        .env("CORELINE_BASE_PORT", "35500")
        .env("CORELINE_ADMIN_PORT", "35590")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("0.0.0.0:35500"), "{stdout}");
    assert!(
        stdout.contains("override: [service] base_port = 35500 (from CORELINE_BASE_PORT)"),
        "{stdout}"
    );
    assert!(stdout.contains("override: [service] host = 0.0.0.0 (from CORELINE_HOST)"));
    assert!(stdout.contains("override: [service] admin_port = 35590"));
    let out = Command::new(BIN)
        .args(["check", config])
        .env("CORELINE_ADMIN_PORT", "8888")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("CORELINE_ADMIN_PORT=\"8888\""), "{stderr}");
    assert!(stderr.contains("also a shard port"), "{stderr}");
}

#[test]
fn the_duration_error_lists_microseconds() {
    let path = write_config(
        "badduration.toml",
        &hello_toml(1, "[limits]\nidle_timeout = \"5 parsecs\"\n"),
    );
    let out = Command::new(BIN).arg("check").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("\"50us\", \"250ms\""), "{stderr}");
}

#[test]
fn openapi_describes_every_route() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/counters.toml");
    let out = Command::new(BIN)
        .args(["openapi", config])
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let post = &doc["paths"]["/events"]["post"];
    let schema = &post["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(schema["properties"]["amount"]["type"], "integer");
    assert_eq!(
        post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Error"
    );
    let get = &doc["paths"]["/counts"]["get"];
    assert_eq!(get["parameters"][0]["name"], "key");
    assert!(get["responses"]["404"].is_object());
}

/// `run` with `--log-format json` (or `[service] log_format`): every stderr
/// line is a JSON object, no colour codes, the routes and a working curl
/// line on stdout, and the stop names its signal.
#[test]
fn run_prints_routes_and_logs_json() {
    for (name, extra, flag) in [
        ("jsonflag.toml", "", Some("json")),
        ("jsonconf.toml", "log_format = \"json\"", None),
        ("text.toml", "", None),
    ] {
        let path = write_config(name, &hello_toml(1, extra));
        let log = path.with_extension("log");
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg(&path);
        if let Some(f) = flag {
            cmd.args(["--log-format", f]);
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let ready = line.starts_with("ready ");
            lines.push(line);
            if ready {
                break;
            }
        }
        assert!(lines.iter().any(|l| l == "route POST /my_api"), "{lines:?}");
        let curl = lines
            .iter()
            .find_map(|l| l.strip_prefix("try: curl -s -X POST 'http://"))
            .unwrap_or_else(|| panic!("no curl line: {lines:?}"));
        // Do what the curl line says, with our own client.
        let (addr, rest) = curl.split_once('/').unwrap();
        let body = rest.split(" -d '").nth(1).unwrap().trim_end_matches('\'');
        let mut c = Client::connect(addr.parse().unwrap());
        let r = c.post("/my_api", body);
        assert_eq!(r.status, 200, "{}", r.text());
        drop(c);
        sigterm(&child);
        assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains('\u{1b}'), "colour codes in a file: {text}");
        if name == "text.toml" {
            assert!(text.contains("signal=\"SIGTERM\""), "{text}");
            continue;
        }
        let mut stop = None;
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutting down"))
            {
                stop = Some(v);
            }
        }
        let stop = stop.unwrap_or_else(|| panic!("no shutdown line: {text}"));
        assert_eq!(stop["fields"]["signal"], "SIGTERM", "{stop}");
        assert_eq!(stop["level"], "INFO");
    }
}

/// The access log over real sockets: `errors` logs 4xx/5xx only, `all`
/// every answer, `off` none; each line has method, path, status, latency
/// and shard, written as JSON with the other logs.
#[test]
fn access_log_modes() {
    for (mode, expect) in [
        (
            "errors",
            vec![(422, "POST", "/my_api"), (404, "GET", "/nope")],
        ),
        (
            "all",
            vec![
                (200, "POST", "/my_api"),
                (422, "POST", "/my_api"),
                (404, "GET", "/nope"),
                (200, "GET", "/health"),
            ],
        ),
        ("off", vec![]),
    ] {
        let name = format!("access_{mode}.toml");
        let extra = format!("access_log = \"{mode}\"\nlog_format = \"json\"");
        let path = write_config(&name, &hello_toml(1, &extra));
        let log = path.with_extension("log");
        let mut child = Command::new(BIN)
            .arg("run")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut shard: Option<SocketAddr> = None;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("listening shard=0 addr=") {
                shard = Some(rest.parse().unwrap());
            }
            if line.starts_with("ready ") {
                break;
            }
        }
        let mut c = Client::connect(shard.unwrap());
        assert_eq!(c.post("/my_api", r#"{"foo":"a","bar":1}"#).status, 200);
        c.send(b"POST /my_api HTTP/1.1\r\nHost: x\r\nX-Request-Id:  abc-123 \r\nContent-Length: 11\r\n\r\n{\"foo\":\"a\"}");
        assert_eq!(c.response().status, 422);
        assert_eq!(c.get("/nope").status, 404);
        assert_eq!(c.get("/health").status, 200);
        drop(c);
        sigterm(&child);
        assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["target"] == "coreline::access")
            .collect();
        let got: Vec<(u64, &str, &str)> = lines
            .iter()
            .map(|v| {
                let f = &v["fields"];
                assert!(f["latency_us"].as_f64().unwrap() > 0.0, "{v}");
                assert_eq!(f["shard"], 0, "{v}");
                // The id the response carried: the client's, or a new one.
                let id = f["request_id"].as_str().unwrap_or("");
                if f["status"] == 422 {
                    assert_eq!(id, "abc-123", "{v}");
                } else {
                    assert!(!id.is_empty(), "a generated request id: {v}");
                }
                (
                    f["status"].as_u64().unwrap(),
                    f["method"].as_str().unwrap(),
                    f["path"].as_str().unwrap(),
                )
            })
            .collect();
        let want: Vec<(u64, &str, &str)> = expect
            .iter()
            .map(|&(s, m, p)| (u64::from(s as u16), m, p))
            .collect();
        assert_eq!(got, want, "mode {mode}: {text}");
    }
}
