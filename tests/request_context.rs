//! Request context: typed header columns, `X-Request-Id` on every response,
//! the request id in error logs. Over real sockets.

mod common;

use std::time::Duration;

use common::{Proc, TempDir, roundtrip, start};

const CONTEXT: &str = r#"
[service]
name = "ctx"
base_port = 0
shards = 1
admin_port = 0

[[route]]
path = "/whoami"
request = { n = "int64" }
headers = { x_user = "utf8", x_count = { type = "int64", nullable = true }, x_vip = { type = "bool", nullable = true } }
  [[route.step]]
  with_column = { name = "greeting", expr = "concat('hi ', x_user)" }
  [[route.step]]
  with_column = { name = "total", expr = "n + coalesce(x_count, 0)" }
  [route.reply]
  columns = ["greeting", "total", "x_vip"]

[[route]]
path = "/fail"
request = { n = "int64" }
  [[route.step]]
  with_column = { name = "code", expr = "500 + n" }
  [route.reply]
  columns = ["code"]
  status = "code"
"#;

fn post(addr: std::net::SocketAddr, path: &str, headers: &str, body: &str) -> common::Response {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    roundtrip(addr, req.as_bytes())
}

#[test]
fn header_columns_are_typed_and_required() {
    let svc = start(CONTEXT);
    let addr = svc.shard_addrs()[0];
    let r = post(
        addr,
        "/whoami",
        "X-User: ada\r\nx-count: 5\r\nX-VIP: true\r\n",
        r#"{"n":1}"#,
    );
    assert_eq!(
        (r.status, r.text()),
        (200, r#"{"greeting":"hi ada","total":6,"x_vip":true}"#)
    );
    // Nullable headers may be absent.
    let r = post(addr, "/whoami", "X-User: bob\r\n", r#"{"n":1}"#);
    assert_eq!(
        (r.status, r.text()),
        (200, r#"{"greeting":"hi bob","total":1,"x_vip":null}"#)
    );
    // A missing non-nullable header is a 400 naming it.
    let r = post(addr, "/whoami", "X-Count: 5\r\n", r#"{"n":1}"#);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "missing header X-User", "field": "x_user"})
    );
    // A value that is not of the column's type is a 400 naming it.
    let r = post(
        addr,
        "/whoami",
        "X-User: a\r\nX-Count: five\r\n",
        r#"{"n":1}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "header X-Count is not a valid int64", "field": "x_count"})
    );
    let r = post(addr, "/whoami", "X-User: a\r\nX-Vip: yes\r\n", r#"{"n":1}"#);
    assert_eq!(r.json()["field"], "x_vip");
}

#[test]
fn header_columns_are_checked_with_the_config() {
    let bad = CONTEXT.replace("x_user = \"utf8\"", "\"x-user\" = \"utf8\"");
    let err = coreline::config::parse(coreline::config::Source {
        path: "ctx.toml".into(),
        text: bad,
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("route[0].headers.x-user: \"x-user\" cannot name a header"),
        "{err}"
    );
    let clash = CONTEXT.replace("x_user = \"utf8\"", "n = \"utf8\"");
    let err = coreline::config::parse(coreline::config::Source {
        path: "ctx.toml".into(),
        text: clash,
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("column \"n\" is also a request field"),
        "{err}"
    );
}

fn is_generated_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 3
        && [8, 4, 16].iter().zip(&parts).all(|(n, p)| p.len() == *n)
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn every_response_carries_a_request_id() {
    let svc = start(CONTEXT);
    let addr = svc.shard_addrs()[0];
    // The client's, when valid.
    for id in [
        "abc-123",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "trace:01HZX/a+b==",
    ] {
        let r = post(
            addr,
            "/whoami",
            &format!("X-User: a\r\nX-Request-Id: {id}\r\n"),
            r#"{"n":1}"#,
        );
        assert_eq!(r.header("x-request-id"), Some(id));
    }
    // A new one otherwise: invalid characters, too long, empty, absent.
    let long = "a".repeat(65);
    let mut seen = std::collections::HashSet::new();
    for header in [
        "X-Request-Id: a b\r\n".to_string(),
        format!("X-Request-Id: {long}\r\n"),
        "X-Request-Id:\r\n".into(),
        String::new(),
    ] {
        let r = post(
            addr,
            "/whoami",
            &format!("X-User: a\r\n{header}"),
            r#"{"n":1}"#,
        );
        let id = r
            .header("x-request-id")
            .expect("an X-Request-Id")
            .to_string();
        assert!(is_generated_id(&id), "{header:?} -> {id}");
        assert!(seen.insert(id), "ids repeat");
    }
    // On every kind of answer: 404, 405, 422, 400 (header), /health, and a
    // request the decoder rejects.
    let mut kinds = vec![
        post(addr, "/nope", "", "{}"),
        roundtrip(addr, b"GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n"),
        post(addr, "/whoami", "X-User: a\r\n", r#"{"n":"x"}"#),
        post(addr, "/whoami", "", r#"{"n":1}"#),
        roundtrip(
            addr,
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: hc-1\r\n\r\n",
        ),
        roundtrip(addr, b"GET / HTTP/1.1\r\n\r\n"),
    ];
    let statuses: Vec<u16> = kinds.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [404, 405, 422, 400, 200, 400]);
    let health = kinds.remove(4);
    assert_eq!(health.header("x-request-id"), Some("hc-1"));
    for r in kinds {
        assert!(
            is_generated_id(r.header("x-request-id").unwrap()),
            "{:?}",
            r.headers
        );
    }
}

#[test]
fn the_request_id_is_in_the_error_log() {
    let tmp = TempDir::new("ctx-log");
    let cfg = tmp.write("ctx.toml", CONTEXT);
    let p = Proc::spawn(&cfg);
    let r = post(
        p.shards[0],
        "/fail",
        "X-Request-Id: req-4242\r\n",
        r#"{"n":3}"#,
    );
    assert_eq!(
        (r.status, r.header("x-request-id")),
        (503, Some("req-4242"))
    );
    let r = post(p.shards[0], "/fail", "", r#"{"n":0}"#);
    assert_eq!(r.status, 500);
    let generated = r.header("x-request-id").unwrap().to_string();
    std::thread::sleep(Duration::from_millis(100));
    let log = p.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("req-4242"))
        .unwrap_or_else(|| panic!("no error line names the request id:\n{log}"));
    assert!(line.contains("ERROR") && line.contains("503"), "{line}");
    assert!(
        log.lines()
            .any(|l| l.contains(&generated) && l.contains("500")),
        "{log}"
    );
    p.stop();
}
