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
