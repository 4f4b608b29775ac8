//! HTTP/1.1 behaviour of a shard, over real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, hello, hello_toml, parse_response, roundtrip, start};

const HELLO: &[u8] =
    b"POST /my_api HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n{\"foo\":\"hello world\",\"bar\":42}";

#[test]
fn hello_answers_with_length_and_headers() {
    let svc = hello(1);
    let r = roundtrip(svc.shard_addrs()[0], HELLO);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"fooLength":11}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-length"), Some("16"));
    assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")));
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let svc = hello(1);
    let mut c = Client::connect(svc.shard_addrs()[0]);
    for i in 0..100 {
        let body = format!(r#"{{"foo":"{}","bar":{i}}}"#, "x".repeat(i));
        let r = c.post("/my_api", &body);
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["fooLength"], i);
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let svc = hello(1);
    let mut c = Client::connect(svc.shard_addrs()[0]);
    let mut burst = Vec::new();
    for i in 0..20 {
        let body = format!(r#"{{"foo":"{}","bar":1}}"#, "y".repeat(i));
        burst.extend_from_slice(
            format!(
                "POST /my_api HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    // An error in the middle of the burst is answered in its place.
    burst.extend_from_slice(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    burst.extend_from_slice(HELLO);
    c.send(&burst);
    for i in 0..20 {
        let r = c.response();
        assert_eq!(r.json()["fooLength"], i);
    }
    assert_eq!(c.response().status, 404);
    assert_eq!(c.response().text(), r#"{"fooLength":11}"#);
}

#[test]
fn request_split_at_every_byte_boundary() {
    let svc = hello(1);
    let addr = svc.shard_addrs()[0];
    for split in 1..HELLO.len() {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&HELLO[..split]).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_micros(300));
        s.write_all(&HELLO[split..]).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let resp = loop {
            let n = match s.read(&mut chunk) {
                // The test process gets signals (see tests/common): read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r.unwrap(),
            };
            assert!(n > 0, "closed at split {split}");
            buf.extend_from_slice(&chunk[..n]);
            if let Some((r, _)) = parse_response(&buf) {
                break r;
            }
        };
        assert_eq!(resp.status, 200, "split {split}");
        assert_eq!(resp.text(), r#"{"fooLength":11}"#, "split {split}");
    }
}

#[test]
fn byte_by_byte_client_is_served() {
    let svc = hello(1);
    let mut c = Client::connect(svc.shard_addrs()[0]);
    for b in HELLO {
        c.send(&[*b]);
    }
    assert_eq!(c.response().text(), r#"{"fooLength":11}"#);
}

#[test]
fn chunked_request_body() {
    let svc = hello(1);
    let r = roundtrip(
        svc.shard_addrs()[0],
        b"POST /my_api HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"foo\r\n19;ext=1\r\n\":\"hello world\",\"bar\":42}\r\n0\r\nX-Trailer: 1\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"fooLength":11}"#);
}

#[test]
fn expect_100_continue() {
    let svc = hello(1);
    let mut c = Client::connect(svc.shard_addrs()[0]);
    c.send(
        b"POST /my_api HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 30\r\n\r\n",
    );
    let interim = c.response();
    assert_eq!(interim.status, 100);
    c.send(br#"{"foo":"hello world","bar":42}"#);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"fooLength":11}"#);
}

#[test]
fn http10_closes_unless_keep_alive() {
    let svc = hello(1);
    let addr = svc.shard_addrs()[0];
    let mut c = Client::connect(addr);
    c.send(
        b"POST /my_api HTTP/1.0\r\nContent-Length: 30\r\n\r\n{\"foo\":\"hello world\",\"bar\":42}",
    );
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(c.is_closed());

    let mut c = Client::connect(addr);
    for _ in 0..3 {
        c.send(b"POST /my_api HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 30\r\n\r\n{\"foo\":\"hello world\",\"bar\":42}");
        let r = c.response();
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
}

#[test]
fn connection_close_is_honoured() {
    let svc = hello(1);
    let mut c = Client::connect(svc.shard_addrs()[0]);
    c.send(b"POST /my_api HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 30\r\n\r\n{\"foo\":\"hello world\",\"bar\":42}");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
}

#[test]
fn routing_errors_404_405_and_head() {
    let svc = hello(1);
    let addr = svc.shard_addrs()[0];
    let mut c = Client::connect(addr);
    let r = c.get("/missing");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    let r = c.get("/my_api");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    // Shard ports answer load-balancer health checks.
    let r = c.get("/health");
    assert_eq!(r.status, 200);
    c.send(b"HEAD /health HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut buf = [0u8; 512];
    std::thread::sleep(Duration::from_millis(50));
    let n = c.stream.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "HEAD has no body: {text:?}");
    assert!(
        text.to_ascii_lowercase().contains("content-length: 15"),
        "{text}"
    );
}

#[test]
fn malformed_request_gets_400_and_close() {
    let svc = hello(1);
    let mut c = Client::connect(svc.shard_addrs()[0]);
    c.send(b"POST /my_api HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.json()["error"].is_string());
    assert!(c.is_closed());

    let r = roundtrip(svc.shard_addrs()[0], b"GARBAGE\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = roundtrip(
        svc.shard_addrs()[0],
        b"POST /my_api HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400, "CL + TE is refused");
}

#[test]
fn header_and_body_limits() {
    let svc = start(&hello_toml(
        1,
        "[limits]\nmax_header_bytes = 1024\nmax_body_bytes = 100\n",
    ));
    let addr = svc.shard_addrs()[0];
    let big = format!(
        "POST /my_api HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\n{{}}",
        "a".repeat(2000)
    );
    let r = roundtrip(addr, big.as_bytes());
    assert_eq!(r.status, 431);
    assert_eq!(r.header("connection"), Some("close"));

    // 413 is answered before the body is read, and the lingering close lets
    // the client read it even though it keeps sending.
    let mut c = Client::connect(addr);
    c.send(b"POST /my_api HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n");
    c.send(&[b'x'; 3000]);
    let r = c.response();
    assert_eq!(r.status, 413);

    let mut chunked =
        b"POST /my_api HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(b"20\r\n");
        chunked.extend_from_slice(&[b'z'; 32]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(roundtrip(addr, &chunked).status, 413);
}

#[test]
fn slow_head_and_slow_body_get_408() {
    let svc = start(&hello_toml(
        1,
        "[limits]\nheader_timeout = \"300ms\"\nbody_timeout = \"300ms\"\nidle_timeout = \"400ms\"\n",
    ));
    let addr = svc.shard_addrs()[0];

    let mut c = Client::connect(addr);
    c.send(b"POST /my_api HTTP/1.1\r\nHost: t\r\nContent-");
    let started = Instant::now();
    let r = c.response();
    assert_eq!(r.status, 408);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(c.is_closed());

    let mut c = Client::connect(addr);
    c.send(b"POST /my_api HTTP/1.1\r\nHost: t\r\nContent-Length: 30\r\n\r\n{\"foo\"");
    let r = c.response();
    assert_eq!(r.status, 408);

    // A client that trickles its head byte by byte still hits the deadline.
    let mut c = Client::connect(addr);
    let started = Instant::now();
    let mut got = None;
    for b in
        b"POST /my_api HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
    {
        if c.stream.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        if started.elapsed() > Duration::from_millis(600) {
            break;
        }
    }
    if let Some(r) = c.try_response() {
        got = Some(r.status);
    }
    assert_eq!(got, Some(408));
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let svc = start(&hello_toml(1, "[limits]\nidle_timeout = \"200ms\"\n"));
    let mut c = Client::connect(svc.shard_addrs()[0]);
    assert_eq!(c.post("/my_api", r#"{"foo":"a","bar":1}"#).status, 200);
    let started = Instant::now();
    assert!(c.is_closed());
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[test]
fn connections_beyond_the_limit_get_503() {
    let svc = start(&hello_toml(1, "[limits]\nmax_connections = 2\n"));
    let addr = svc.shard_addrs()[0];
    let mut a = Client::connect(addr);
    let mut b = Client::connect(addr);
    assert_eq!(a.post("/my_api", r#"{"foo":"a","bar":1}"#).status, 200);
    assert_eq!(b.post("/my_api", r#"{"foo":"a","bar":1}"#).status, 200);
    let mut c = Client::connect(addr);
    let r = c.response();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    drop(a);
    // Once a slot frees up, new connections are served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = Client::connect(addr);
        d.send(HELLO);
        let r = d.response();
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request needs exactly one valid `Host`.
#[test]
fn host_missing_duplicated_or_invalid_is_400() {
    let svc = hello(1);
    let body = r#"{"foo":"hello world","bar":42}"#;
    for (what, head) in [
        ("missing", "POST /my_api HTTP/1.1\r\n".to_string()),
        (
            "duplicated",
            "POST /my_api HTTP/1.1\r\nHost: a\r\nHost: a\r\n".to_string(),
        ),
        (
            "invalid",
            "POST /my_api HTTP/1.1\r\nHost: a b/c\r\n".to_string(),
        ),
        (
            "bad port",
            "POST /my_api HTTP/1.1\r\nHost: a:8x\r\n".to_string(),
        ),
    ] {
        let req = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
        let r = roundtrip(svc.shard_addrs()[0], req.as_bytes());
        assert_eq!(r.status, 400, "{what} Host: {}", r.text());
        assert!(r.text().contains("Host"), "{what}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"));
    }
    // HTTP/1.0 without Host is still served.
    let req = format!(
        "POST /my_api HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(roundtrip(svc.shard_addrs()[0], req.as_bytes()).status, 200);
}

/// RFC 9112 §7: `chunked` takes no parameters.
#[test]
fn chunked_with_parameters_is_400() {
    let svc = hello(1);
    let r = roundtrip(
        svc.shard_addrs()[0],
        b"POST /my_api HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked;q=1\r\n\r\n1e\r\n{\"foo\":\"hello world\",\"bar\":42}\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("chunked takes no parameters"),
        "{}",
        r.text()
    );
}
