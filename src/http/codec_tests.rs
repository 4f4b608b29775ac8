//! Tests of the request decoder: a set of valid requests fed whole, split at
//! every byte and pipelined; every limit; malformed input; and a
//! deterministic fuzz run.

use super::chunked::CHUNK_FRAMING_SLACK;
use super::head::{eq_lower, has_head_end};
use super::*;

/// A decoded request, owned, for comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    method: Method,
    path: String,
    query: String,
    version: Version,
    keep_alive: bool,
    body: Vec<u8>,
    consumed: usize,
}

/// What one `decode` call returned, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Incomplete { send_continue: bool, in_body: bool },
    Request(Owned),
    Error(HttpError),
}

fn outcome(decoder: &mut Decoder, buf: &[u8], limits: &Limits) -> Outcome {
    match decoder.decode(buf, limits) {
        Ok(Decoded::Incomplete {
            send_continue,
            in_body,
        }) => {
            assert!(
                buf.len() < max_request_bytes(limits),
                "incomplete with {} bytes buffered",
                buf.len()
            );
            Outcome::Incomplete {
                send_continue,
                in_body,
            }
        }
        Ok(Decoded::Request { request, consumed }) => {
            assert!(consumed > 0, "consumed nothing");
            assert!(
                consumed <= buf.len(),
                "consumed {consumed} of {}",
                buf.len()
            );
            Outcome::Request(Owned {
                method: request.method,
                path: request.path.to_owned(),
                query: request.query.to_owned(),
                version: request.version,
                keep_alive: request.keep_alive,
                body: request.body.to_vec(),
                consumed,
            })
        }
        Err(e) => Outcome::Error(e),
    }
}

fn decode_one(buf: &[u8]) -> Outcome {
    outcome(&mut Decoder::new(), buf, &Limits::default())
}

fn request(buf: &[u8]) -> Owned {
    match decode_one(buf) {
        Outcome::Request(r) => r,
        other => panic!("expected a request from {:?}, got {other:?}", show(buf)),
    }
}

fn error(buf: &[u8]) -> HttpError {
    error_with(buf, &Limits::default())
}

fn error_with(buf: &[u8], limits: &Limits) -> HttpError {
    match outcome(&mut Decoder::new(), buf, limits) {
        Outcome::Error(e) => e,
        other => panic!("expected an error from {:?}, got {other:?}", show(buf)),
    }
}

fn show(buf: &[u8]) -> String {
    String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned()
}

const INCOMPLETE_HEAD: Outcome = Outcome::Incomplete {
    send_continue: false,
    in_body: false,
};
const INCOMPLETE_BODY: Outcome = Outcome::Incomplete {
    send_continue: false,
    in_body: true,
};

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    want: Owned,
}

#[allow(clippy::too_many_arguments)]
fn case(
    name: &'static str,
    bytes: &[u8],
    method: Method,
    path: &str,
    query: &str,
    version: Version,
    keep_alive: bool,
    body: &[u8],
) -> Case {
    Case {
        name,
        bytes: bytes.to_vec(),
        want: Owned {
            method,
            path: path.into(),
            query: query.into(),
            version,
            keep_alive,
            body: body.to_vec(),
            consumed: bytes.len(),
        },
    }
}

/// The valid requests every framing test runs over.
fn cases() -> Vec<Case> {
    use Method::*;
    use Version::*;
    let json = br#"{"foo":"hello world","bar":1}"#;
    let mut post = format!(
        "POST /my_api HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        json.len()
    )
    .into_bytes();
    post.extend_from_slice(json);
    vec![
        case(
            "simple get",
            b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
            Get,
            "/",
            "",
            Http11,
            true,
            b"",
        ),
        case(
            "get with query and headers",
            b"GET /orders/42?expand=items&x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: test/1.0\r\nAccept: */*\r\n\r\n",
            Get,
            "/orders/42",
            "expand=items&x=1",
            Http11,
            true,
            b"",
        ),
        case("post json", &post, Post, "/my_api", "", Http11, true, json),
        case(
            "http/1.0 closes by default",
            b"GET /health HTTP/1.0\r\n\r\n",
            Get,
            "/health",
            "",
            Http10,
            false,
            b"",
        ),
        case(
            "http/1.0 keep-alive",
            b"GET /health HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            Get,
            "/health",
            "",
            Http10,
            true,
            b"",
        ),
        case(
            "http/1.1 close in a list",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n",
            Get,
            "/",
            "",
            Http11,
            false,
            b"",
        ),
        case(
            "http/1.1 close in a second field",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nCONNECTION:close\r\n\r\n",
            Get,
            "/",
            "",
            Http11,
            false,
            b"",
        ),
        case(
            "chunked with extensions and trailers",
            b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n6 ; x\r\n world\r\nA\r\n0123456789\r\n\
              0\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n",
            Post,
            "/up",
            "",
            Http11,
            true,
            b"hello world0123456789",
        ),
        case(
            "chunked, upper-case hex and coding name",
            b"PUT /up?v=2 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n\
              1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0000\r\n\r\n",
            Put,
            "/up",
            "v=2",
            Http11,
            true,
            b"abcdefghijklmnopqrstuvwxyz",
        ),
        case(
            "chunked, empty list elements",
            b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked ,\r\n\r\n0\r\n\r\n",
            Post,
            "/up",
            "",
            Http11,
            true,
            b"",
        ),
        case(
            "expect 100-continue",
            b"POST /slow HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n12345",
            Post,
            "/slow",
            "",
            Http11,
            true,
            b"12345",
        ),
        case(
            "absolute-form",
            b"GET http://example.com:8080/a/b?c=d HTTP/1.1\r\nHost: example.com\r\n\r\n",
            Get,
            "/a/b",
            "c=d",
            Http11,
            true,
            b"",
        ),
        case(
            "absolute-form without a path",
            b"GET HTTPS://example.com?x HTTP/1.1\r\nHost: h\r\n\r\n",
            Get,
            "/",
            "x",
            Http11,
            true,
            b"",
        ),
        case(
            "leading blank line",
            b"\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n",
            Get,
            "/x",
            "",
            Http11,
            true,
            b"",
        ),
        case(
            "bare LF line ends in the head",
            b"GET /lf HTTP/1.1\nHost: a\n\n",
            Get,
            "/lf",
            "",
            Http11,
            true,
            b"",
        ),
        case(
            "head",
            b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n",
            Head,
            "/h",
            "",
            Http11,
            true,
            b"",
        ),
        case(
            "options asterisk",
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            Options,
            "*",
            "",
            Http11,
            true,
            b"",
        ),
        case(
            "delete with zero length",
            b"DELETE /k/1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            Delete,
            "/k/1",
            "",
            Http11,
            true,
            b"",
        ),
        case(
            "repeated equal content-length",
            b"PATCH /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\ncontent-length: 3, 3\r\n\r\nabc",
            Patch,
            "/p",
            "",
            Http11,
            true,
            b"abc",
        ),
        case(
            "other method",
            b"PROPFIND /dav HTTP/1.1\r\nHost: h\r\n\r\n",
            Other,
            "/dav",
            "",
            Http11,
            true,
            b"",
        ),
        case(
            "connect authority-form",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n",
            Other,
            "example.com:443",
            "",
            Http11,
            true,
            b"",
        ),
        case(
            "get with a body",
            b"GET /g HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi",
            Get,
            "/g",
            "",
            Http11,
            true,
            b"hi",
        ),
        case(
            "empty query",
            b"GET /p? HTTP/1.1\r\nHost: h\r\n\r\n",
            Get,
            "/p",
            "",
            Http11,
            true,
            b"",
        ),
        case(
            "utf-8 path",
            "GET /caf\u{e9}?q=\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n".as_bytes(),
            Get,
            "/caf\u{e9}",
            "q=\u{e9}",
            Http11,
            true,
            b"",
        ),
        case(
            "binary body",
            b"POST /bin HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n\r\n\0\xff\r\n",
            Post,
            "/bin",
            "",
            Http11,
            true,
            b"\r\n\0\xff\r\n",
        ),
    ]
}

/// Length of the head: up to the blank line after the request line.
fn head_len(bytes: &[u8]) -> usize {
    let start = bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap();
    (start..bytes.len())
        .find_map(|i| {
            if bytes[i] != b'\n' {
                None
            } else if bytes.get(i + 1) == Some(&b'\n') {
                Some(i + 2)
            } else if bytes[i + 1..].starts_with(b"\r\n") {
                Some(i + 3)
            } else {
                None
            }
        })
        .unwrap()
}

#[test]
fn decodes_every_case_whole() {
    for c in cases() {
        assert_eq!(decode_one(&c.bytes), Outcome::Request(c.want), "{}", c.name);
    }
}

#[test]
fn every_case_split_at_every_byte() {
    let limits = Limits::default();
    for c in cases() {
        let head = head_len(&c.bytes);
        for i in 0..c.bytes.len() {
            let mut d = Decoder::new();
            match outcome(&mut d, &c.bytes[..i], &limits) {
                Outcome::Incomplete { in_body, .. } => {
                    assert_eq!(in_body, i >= head, "{} split at {i}", c.name);
                }
                other => panic!("{} split at {i}: {other:?}", c.name),
            }
            assert_eq!(
                outcome(&mut d, &c.bytes, &limits),
                Outcome::Request(c.want.clone()),
                "{} split at {i}",
                c.name
            );
        }
    }
}

#[test]
fn every_case_grown_one_byte_at_a_time() {
    let limits = Limits::default();
    for c in cases() {
        let head = head_len(&c.bytes);
        let mut d = Decoder::new();
        let mut continues = 0;
        for i in 0..c.bytes.len() {
            match outcome(&mut d, &c.bytes[..i], &limits) {
                Outcome::Incomplete {
                    send_continue,
                    in_body,
                } => {
                    assert_eq!(in_body, i >= head, "{} at {i}", c.name);
                    continues += usize::from(send_continue);
                }
                other => panic!("{} at {i}: {other:?}", c.name),
            }
        }
        let got = outcome(&mut d, &c.bytes, &limits);
        assert_eq!(got, Outcome::Request(c.want), "{}", c.name);
        let expects = c.name == "expect 100-continue";
        assert_eq!(continues, usize::from(expects), "{}", c.name);
    }
}

/// Runs the caller's loop over a whole buffer: decode, skip `consumed`,
/// repeat until incomplete.
fn drain(d: &mut Decoder, buf: &[u8], limits: &Limits) -> (Vec<Owned>, usize, Outcome) {
    let mut start = 0;
    let mut got = Vec::new();
    loop {
        match outcome(d, &buf[start..], limits) {
            Outcome::Request(r) => {
                start += r.consumed;
                got.push(r);
            }
            other => return (got, start, other),
        }
    }
}

#[test]
fn three_pipelined_requests() {
    let buf = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
                POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\
                POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n";
    let mut d = Decoder::new();
    let limits = Limits::default();
    let (got, start, rest) = drain(&mut d, buf, &limits);
    assert_eq!(rest, INCOMPLETE_HEAD);
    assert_eq!(start, buf.len());
    let summary: Vec<_> = got
        .iter()
        .map(|r| (r.path.as_str(), r.body.as_slice(), r.consumed))
        .collect();
    assert_eq!(
        summary,
        [
            ("/a", b"".as_slice(), 28),
            ("/b", b"abc".as_slice(), 51),
            ("/c", b"de".as_slice(), buf.len() - 79),
        ]
    );
}

/// All cases back to back, as one connection's byte stream.
fn stream() -> (Vec<u8>, Vec<Owned>) {
    let mut bytes = Vec::new();
    let mut want = Vec::new();
    for c in cases() {
        bytes.extend_from_slice(&c.bytes);
        want.push(c.want);
    }
    (bytes, want)
}

#[test]
fn all_cases_pipelined_in_one_buffer() {
    let (bytes, want) = stream();
    let (got, start, rest) = drain(&mut Decoder::new(), &bytes, &Limits::default());
    assert_eq!(rest, INCOMPLETE_HEAD);
    assert_eq!(start, bytes.len());
    assert_eq!(got, want);
}

/// Feeds `bytes` in reads of the given sizes the way a connection does:
/// append to a read buffer, decode everything complete, compact the buffer
/// now and then.
fn connection(bytes: &[u8], mut read_size: impl FnMut() -> usize, limits: &Limits) -> Vec<Owned> {
    let mut d = Decoder::new();
    let mut buf = Vec::new();
    let mut start = 0;
    let mut fed = 0;
    let mut got = Vec::new();
    let mut continues = 0;
    while fed < bytes.len() {
        let n = read_size().clamp(1, bytes.len() - fed);
        buf.extend_from_slice(&bytes[fed..fed + n]);
        fed += n;
        loop {
            match outcome(&mut d, &buf[start..], limits) {
                Outcome::Request(r) => {
                    start += r.consumed;
                    got.push(r);
                }
                Outcome::Incomplete { send_continue, .. } => {
                    continues += usize::from(send_continue);
                    break;
                }
                Outcome::Error(e) => panic!("error {e:?} after {fed} bytes"),
            }
        }
        if start > 64 {
            buf.drain(..start);
            start = 0;
        }
    }
    assert_eq!(start, buf.len(), "bytes left over");
    assert!(continues <= 1);
    got
}

#[test]
fn all_cases_pipelined_one_byte_per_read() {
    let (bytes, want) = stream();
    assert_eq!(connection(&bytes, || 1, &Limits::default()), want);
}

#[test]
fn all_cases_pipelined_in_random_reads() {
    let (bytes, want) = stream();
    for seed in 1..=40u64 {
        let mut rng = XorShift(seed);
        let max = [2, 7, 30, 200][seed as usize % 4];
        let got = connection(&bytes, || rng.below(max) + 1, &Limits::default());
        assert_eq!(got, want, "seed {seed}");
    }
}

#[test]
fn keep_alive_rules() {
    let ka = |req: &[u8]| request(req).keep_alive;
    assert!(ka(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert!(ka(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n"
    ));
    assert!(!ka(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    ));
    assert!(!ka(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection:   CLOSE  \r\n\r\n"
    ));
    assert!(!ka(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade,close\r\n\r\n"
    ));
    assert!(ka(
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"
    ));
    assert!(ka(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-Connection: close\r\n\r\n"
    ));
    assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(ka(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    assert!(ka(b"GET / HTTP/1.0\r\nconnection: TE, Keep-Alive\r\n\r\n"));
    assert!(!ka(
        b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
    ));
    assert!(!ka(b"GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n"));
}

#[test]
fn expect_continue_is_signalled_once() {
    let limits = Limits::default();
    let head: &[u8] =
        b"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n";
    let mut full = head.to_vec();
    full.extend_from_slice(b"hello");
    let mut d = Decoder::new();
    assert_eq!(
        outcome(&mut d, &head[..10], &limits),
        INCOMPLETE_HEAD,
        "not before the head is complete"
    );
    assert_eq!(
        outcome(&mut d, head, &limits),
        Outcome::Incomplete {
            send_continue: true,
            in_body: true
        }
    );
    assert_eq!(outcome(&mut d, head, &limits), INCOMPLETE_BODY);
    assert_eq!(
        outcome(&mut d, &full[..head.len() + 2], &limits),
        INCOMPLETE_BODY
    );
    let Outcome::Request(r) = outcome(&mut d, &full, &limits) else {
        panic!("no request");
    };
    assert_eq!(r.body, b"hello");

    // The next request on the connection gets its own continue.
    assert_eq!(
        outcome(&mut d, head, &limits),
        Outcome::Incomplete {
            send_continue: true,
            in_body: true
        }
    );

    // Not when the body is already here, not for HTTP/1.0, not without a body.
    assert!(matches!(decode_one(&full), Outcome::Request(_)));
    let mut d = Decoder::new();
    assert_eq!(
        outcome(
            &mut d,
            b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            &limits
        ),
        INCOMPLETE_BODY
    );
    assert!(matches!(
        decode_one(
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n"
        ),
        Outcome::Request(_)
    ));
    assert_eq!(
        decode_one(
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: something-else\r\nContent-Length: 1\r\n\r\n"
        ),
        INCOMPLETE_BODY
    );

    // Chunked bodies too, once, however the chunks trickle in.
    let chunked: &[u8] =
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let mut d = Decoder::new();
    let mut continues = 0;
    for i in 0..chunked.len() {
        if let Outcome::Incomplete { send_continue, .. } = outcome(&mut d, &chunked[..i], &limits) {
            continues += usize::from(send_continue);
        }
    }
    assert_eq!(continues, 1);
    assert!(matches!(
        outcome(&mut d, chunked, &limits),
        Outcome::Request(_)
    ));

    // A body that is too large is refused before the client sends it.
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 9999999999\r\n\r\n"),
        HttpError::BodyTooLarge
    );
}

/// A GET whose head is exactly `len` bytes, padded with one header.
fn head_of_len(len: usize) -> Vec<u8> {
    let fixed = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: \r\n\r\n".len();
    let mut v = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
    v.resize(len - 4, b'p');
    v.extend_from_slice(b"\r\n\r\n");
    assert!(len >= fixed);
    assert_eq!(v.len(), len);
    v
}

#[test]
fn header_byte_limit() {
    let limits = Limits::default();
    assert_eq!(limits.max_header_bytes, 16 * 1024);
    let at_limit = head_of_len(16 * 1024);
    assert_eq!(request(&at_limit).consumed, 16 * 1024);
    assert_eq!(
        error(&head_of_len(16 * 1024 + 1)),
        HttpError::HeaderTooLarge
    );

    // No blank line within the limit: 431 once the limit is reached.
    let open = &at_limit[..at_limit.len() - 4];
    let mut long = open.to_vec();
    long.resize(16 * 1024, b'p');
    assert_eq!(decode_one(&long[..16 * 1024 - 1]), INCOMPLETE_HEAD);
    assert_eq!(error(&long), HttpError::HeaderTooLarge);
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(error(&long), HttpError::HeaderTooLarge);

    // The same when it arrives in reads (the decoder then only scans).
    let mut d = Decoder::new();
    assert_eq!(outcome(&mut d, &long[..1000], &limits), INCOMPLETE_HEAD);
    assert_eq!(
        outcome(&mut d, &long[..16 * 1024 - 1], &limits),
        INCOMPLETE_HEAD
    );
    assert_eq!(
        outcome(&mut d, &long[..16 * 1024], &limits),
        Outcome::Error(HttpError::HeaderTooLarge)
    );

    // A body after a head at the limit is not counted against it.
    let mut with_body = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nX-Pad: ".to_vec();
    with_body.resize(16 * 1024 - 4, b'p');
    with_body.extend_from_slice(b"\r\n\r\nbody");
    assert_eq!(request(&with_body).body, b"body");

    let small = Limits {
        max_header_bytes: 40,
        ..Limits::default()
    };
    assert_eq!(
        error_with(
            b"GET /a-long-path-to-exceed-forty HTTP/1.1\r\nHost: h\r\n\r\n",
            &small
        ),
        HttpError::HeaderTooLarge
    );
}

/// A request with `n` header fields, `Host` among them.
fn with_headers(n: usize) -> Vec<u8> {
    let mut v = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 1..n {
        v.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    v.extend_from_slice(b"\r\n");
    v
}

#[test]
fn header_count_limit() {
    assert!(matches!(decode_one(&with_headers(64)), Outcome::Request(_)));
    assert_eq!(error(&with_headers(65)), HttpError::HeaderTooLarge);
    let three = Limits {
        max_headers: 3,
        ..Limits::default()
    };
    let mut d = Decoder::new();
    assert!(matches!(
        outcome(&mut d, &with_headers(3), &three),
        Outcome::Request(_)
    ));
    assert_eq!(
        error_with(&with_headers(4), &three),
        HttpError::HeaderTooLarge
    );
    // A limit above the stack array is capped at it.
    let many = Limits {
        max_headers: 1000,
        ..Limits::default()
    };
    assert_eq!(
        error_with(&with_headers(MAX_HEADERS + 1), &many),
        HttpError::HeaderTooLarge
    );
}

#[test]
fn body_limit_by_content_length() {
    let limits = Limits::default();
    let max = limits.max_body_bytes;
    let at = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {max}\r\n\r\n");
    assert_eq!(decode_one(at.as_bytes()), INCOMPLETE_BODY);
    let over = format!(
        "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        max + 1
    );
    assert_eq!(error(over.as_bytes()), HttpError::BodyTooLarge);
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9999999999999999999\r\n\r\n"),
        HttpError::BodyTooLarge
    );
}

#[test]
fn body_limit_by_chunked_size() {
    let ten = Limits {
        max_body_bytes: 10,
        ..Limits::default()
    };
    let head: &[u8] = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = |chunks: &[u8]| [head, chunks].concat();
    let mut d = Decoder::new();
    let Outcome::Request(r) = outcome(
        &mut d,
        &body(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"),
        &ten,
    ) else {
        panic!("ten bytes fit")
    };
    assert_eq!(r.body, b"helloworld");
    // Refused at the size line, before its data arrives.
    assert_eq!(
        error_with(&body(b"5\r\nhello\r\n6\r\n"), &ten),
        HttpError::BodyTooLarge
    );
    assert_eq!(error_with(&body(b"b\r\n"), &ten), HttpError::BodyTooLarge);
    assert_eq!(
        error(&body(b"FFFFFFFFFFFFFFFF\r\n")),
        HttpError::BodyTooLarge
    );
}

#[test]
fn chunk_framing_is_bounded() {
    let limits = Limits::default();
    let head: &[u8] = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    // A 1 MiB body in 100-byte chunks is fine.
    let mut ok = head.to_vec();
    for _ in 0..limits.max_body_bytes / 100 {
        ok.extend_from_slice(b"64\r\n");
        ok.extend_from_slice(&[b'z'; 100]);
        ok.extend_from_slice(b"\r\n");
    }
    ok.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(request(&ok).body.len(), limits.max_body_bytes / 100 * 100);

    // Twenty framing bytes per body byte: refused once the framing passes
    // the body limit plus slack, although the body itself is small.
    let unit: &[u8] = b"0000000000000001\r\nx\r\n";
    let mut padded = head.to_vec();
    let units = (limits.max_body_bytes + CHUNK_FRAMING_SLACK) / 20 + 1;
    for _ in 0..units {
        padded.extend_from_slice(unit);
    }
    assert_eq!(error(&padded), HttpError::BodyTooLarge);
    // Fed in reads, it never sits incomplete past `max_request_bytes`
    // (asserted by `outcome`).
    let mut d = Decoder::new();
    let mut end = 0;
    let result = loop {
        end = (end + 65_536).min(padded.len());
        match outcome(&mut d, &padded[..end], &limits) {
            Outcome::Incomplete { .. } => assert!(end < padded.len()),
            other => break other,
        }
    };
    assert_eq!(result, Outcome::Error(HttpError::BodyTooLarge));
}

#[test]
fn max_request_bytes_covers_the_largest_valid_request() {
    // Head and trailers at the header limit, a body at the body limit in
    // chunks whose framing is at its limit.
    let limits = Limits {
        max_header_bytes: 256,
        max_body_bytes: 1000,
        ..Limits::default()
    };
    let mut req = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Pad: ".to_vec();
    req.resize(256 - 4, b'p');
    req.extend_from_slice(b"\r\n\r\n");
    let mut framing = 0;
    let mut data = 0;
    while data < limits.max_body_bytes {
        req.extend_from_slice(b"0000000000000001\r\nq\r\n");
        framing += 20;
        data += 1;
        if framing + 20 + 3 > limits.max_body_bytes + CHUNK_FRAMING_SLACK {
            break;
        }
    }
    req.extend_from_slice(b"0\r\n");
    let trailer_start = req.len();
    req.extend_from_slice(b"X: ");
    req.resize(trailer_start + 256 - 2, b't');
    req.extend_from_slice(b"\r\n\r\n");
    assert!(req.len() <= max_request_bytes(&limits));
    let mut d = Decoder::new();
    assert_eq!(
        request_with(&mut d, &req, &limits).consumed,
        req.len(),
        "valid at every limit"
    );
}

#[test]
fn trailer_and_extension_limits() {
    let small = Limits {
        max_header_bytes: 64,
        ..Limits::default()
    };
    let head: &[u8] = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut ok = head.to_vec();
    ok.extend_from_slice(b"0\r\nX: 12345678901234567890\r\n\r\n");
    assert!(matches!(
        outcome(&mut Decoder::new(), &ok, &small),
        Outcome::Request(_)
    ));
    let mut big = head.to_vec();
    big.extend_from_slice(b"0\r\n");
    for _ in 0..4 {
        big.extend_from_slice(b"X: 12345678901234567890\r\n");
    }
    big.extend_from_slice(b"\r\n");
    assert_eq!(error_with(&big, &small), HttpError::HeaderTooLarge);
    // One endless trailer line.
    let mut endless = head.to_vec();
    endless.extend_from_slice(b"0\r\nX: ");
    endless.resize(endless.len() + 100, b'x');
    assert_eq!(error_with(&endless, &small), HttpError::HeaderTooLarge);

    // Extensions: at most 16 KiB over the whole body.
    let mut ext = head.to_vec();
    let long_ext = format!("1;{}\r\nx\r\n", "e".repeat(3000));
    for _ in 0..6 {
        ext.extend_from_slice(long_ext.as_bytes());
    }
    assert_eq!(
        error(&ext),
        HttpError::Malformed("chunk extensions too long")
    );
    let mut line = head.to_vec();
    line.extend_from_slice(b"1;");
    line.resize(line.len() + MAX_CHUNK_LINE, b'e');
    assert_eq!(
        error(&line),
        HttpError::Malformed("chunk size line too long")
    );
}

#[test]
fn malformed_request_lines() {
    let bad_line = HttpError::Malformed("invalid request line");
    assert_eq!(error(b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n"), bad_line);
    assert_eq!(error(b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), bad_line);
    assert_eq!(error(b" GET / HTTP/1.1\r\nHost: h\r\n\r\n"), bad_line);
    assert_eq!(
        error(b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"),
        HttpError::Malformed("invalid HTTP version")
    );
    assert_eq!(
        error(b"GET /a HTTP/2.0 HTTP/2.0\r\n\r\n"),
        HttpError::Malformed("invalid HTTP version")
    );
    assert_eq!(error(b"GET / HTTP/1.1 x\r\n\r\n").status(), 400);
    assert_eq!(
        error(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
        bad_line
    );
    assert_eq!(
        error(b"GET / HTTX/1.1\r\n\r\n"),
        HttpError::Malformed("invalid HTTP version")
    );
    assert_eq!(
        error(b"GET / HTTP/1\r\n\r\n"),
        HttpError::Malformed("invalid HTTP version")
    );
    assert_eq!(
        error(b"GET / HTTP/2.0\r\n\r\n"),
        HttpError::UnsupportedVersion
    );
    assert_eq!(
        error(b"GET / HTTP/1.2\r\n\r\n"),
        HttpError::UnsupportedVersion
    );
    assert_eq!(
        error(b"GET / HTTP/0.9\r\n\r\n"),
        HttpError::UnsupportedVersion
    );
    let bad_target = HttpError::Malformed("invalid request target");
    assert_eq!(error(b"GET x HTTP/1.1\r\nHost: h\r\n\r\n"), bad_target);
    assert_eq!(error(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n"), bad_target);
    assert_eq!(
        error(b"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n"),
        bad_target
    );
    assert_eq!(
        error(b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"),
        HttpError::Malformed("request target has an empty authority")
    );
    // Methods are case-sensitive tokens: lower case is another method.
    assert_eq!(
        request(b"get / HTTP/1.1\r\nHost: h\r\n\r\n").method,
        Method::Other
    );
}

#[test]
fn malformed_headers() {
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n"),
        HttpError::Malformed("invalid header name")
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n"),
        HttpError::Malformed("invalid header name")
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n"),
        HttpError::Malformed("invalid header value")
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n").status(),
        400
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: h\r\n folded: x\r\n\r\n").status(),
        400
    );
}

#[test]
fn content_length_rules() {
    let invalid = HttpError::Malformed("invalid Content-Length");
    let differing = HttpError::Malformed("multiple differing Content-Length values");
    for value in [
        "abc", "-1", "+5", "", " ", "5 5", "0x10", "1.0", "5,", ",5", "1e3", "5;q=1",
    ] {
        let req = format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {value}\r\n\r\n");
        assert_eq!(error(req.as_bytes()), invalid, "{value:?}");
    }
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        invalid
    );
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\n"),
        differing
    );
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        differing
    );
    assert_eq!(
        request(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:  007 \r\n\r\n1234567").body,
        b"1234567"
    );
}

#[test]
fn transfer_encoding_rules() {
    let both = HttpError::Malformed("both Transfer-Encoding and Content-Length present");
    let not_final = HttpError::Malformed("Transfer-Encoding must end in a single chunked");
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        both
    );
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
        both
    );
    for te in [
        "gzip",
        "chunked, gzip",
        "chunked, chunked",
        "",
        "chunkedx",
        "identity",
    ] {
        let req = format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert_eq!(error(req.as_bytes()), not_final, "{te:?}");
    }
    assert_eq!(
        error(
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        not_final
    );
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        HttpError::UnsupportedTransferEncoding
    );
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"),
        HttpError::UnsupportedTransferEncoding
    );
    assert_eq!(
        error(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        HttpError::Malformed("Transfer-Encoding in an HTTP/1.0 request")
    );
}

#[test]
fn malformed_chunked_framing() {
    let head: &[u8] = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let err = |chunks: &[u8]| error(&[head, chunks].concat());
    let size = HttpError::Malformed("invalid chunk size");
    let crlf = HttpError::Malformed("chunked framing line not ended by CRLF");
    let data = HttpError::Malformed("chunk data not followed by CRLF");
    assert_eq!(err(b"zz\r\n"), size);
    assert_eq!(err(b"\r\n"), size);
    assert_eq!(err(b"-5\r\n"), size);
    assert_eq!(err(b"0x5\r\n"), size);
    assert_eq!(err(b"5 \r\n"), size);
    assert_eq!(err(b"5 x\r\n"), size);
    assert_eq!(err(b"5;a\rb\r\n"), size);
    assert_eq!(
        err(b"00000000000000001\r\n"),
        HttpError::Malformed("chunk size too large")
    );
    assert_eq!(err(b"5\nhello\r\n"), crlf);
    assert_eq!(err(b"5\r\nhello\r\n0\n\r\n"), crlf);
    assert_eq!(err(b"0\r\n\n"), crlf);
    assert_eq!(err(b"0\r\nX: y\n\r\n"), crlf);
    assert_eq!(err(b"5\r\nhelloX0\r\n\r\n"), data);
    assert_eq!(err(b"5\r\nhello\rX"), data);
    assert_eq!(err(b"5\r\nhello\n\r\n"), data);
    // Detected as soon as the byte after the data is here.
    assert_eq!(err(b"5\r\nhelloX"), data);
    assert_eq!(err(b"5\r\nhelloworld\r\n"), data);
    assert_eq!(
        err(b"0\r\nbad trailer\r\n\r\n"),
        HttpError::Malformed("invalid trailer field")
    );
    assert_eq!(
        err(b"0\r\n: no name\r\n\r\n"),
        HttpError::Malformed("invalid trailer field")
    );
    // A complete message is not an error, whatever follows it.
    let mut ok = head.to_vec();
    ok.extend_from_slice(b"1\r\nx\r\n0\r\n\r\nGARBAGE");
    assert_eq!(request(&ok).consumed, ok.len() - 7);
}

#[test]
fn incomplete_states() {
    assert_eq!(decode_one(b""), INCOMPLETE_HEAD);
    assert_eq!(decode_one(b"\r\n"), INCOMPLETE_HEAD);
    assert_eq!(decode_one(b"\r\n\r\n"), INCOMPLETE_HEAD);
    assert_eq!(
        decode_one(b"GET / HTTP/1.1\r\nHost: a\r\n"),
        INCOMPLETE_HEAD
    );
    assert_eq!(
        decode_one(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nab"),
        INCOMPLETE_BODY
    );
    assert_eq!(
        decode_one(
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
        ),
        INCOMPLETE_BODY
    );
}

#[test]
fn a_shorter_buffer_restarts_the_request() {
    let limits = Limits::default();
    let mut d = Decoder::new();
    let partial = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n12345";
    assert_eq!(outcome(&mut d, partial, &limits), INCOMPLETE_BODY);
    // A caller bug (or a reset connection) hands a different, shorter buffer.
    assert_eq!(
        request_with(&mut d, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n", &limits).path,
        "/b"
    );
    assert_eq!(outcome(&mut d, partial, &limits), INCOMPLETE_BODY);
    d.reset();
    assert_eq!(
        request_with(&mut d, b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n", &limits).path,
        "/c"
    );
}

fn request_with(d: &mut Decoder, buf: &[u8], limits: &Limits) -> Owned {
    match outcome(d, buf, limits) {
        Outcome::Request(r) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn warm_decoder_reuses_its_body_buffer() {
    let limits = Limits::default();
    let req = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
                400\r\n"
        .to_vec();
    let mut req = req;
    req.extend_from_slice(&[b'x'; 0x400]);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let mut d = Decoder::new();
    request_with(&mut d, &req, &limits);
    let (ptr, cap) = (d.body.as_ptr(), d.body.capacity());
    for _ in 0..10 {
        assert_eq!(request_with(&mut d, &req, &limits).body.len(), 0x400);
        assert_eq!((d.body.as_ptr(), d.body.capacity()), (ptr, cap));
    }

    // A large body's buffer is not kept for the next one.
    let mut big =
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n20000\r\n".to_vec();
    big.extend_from_slice(&[b'y'; 0x20000]);
    big.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_eq!(request_with(&mut d, &big, &limits).body.len(), 0x20000);
    request_with(&mut d, &req, &limits);
    assert!(d.body.capacity() <= BODY_KEEP);
}

#[test]
fn head_end_scan_finds_terminators_across_reads() {
    let cases: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\nA: b\n\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nA: b\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nA: b\r\n\n",
    ];
    for bytes in cases {
        for scanned in 1..bytes.len() {
            assert!(
                has_head_end(bytes, scanned),
                "{:?} from {scanned}",
                show(bytes)
            );
            assert!(!has_head_end(&bytes[..bytes.len() - 1], scanned));
        }
    }
}

/// A xorshift64 generator: deterministic, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Mutates a request: replaces, inserts or deletes bytes, splices in
/// header lines, duplicates or truncates.
fn mutate(rng: &mut XorShift, bytes: &mut Vec<u8>) {
    const ALPHABET: &[u8] = b"\r\n :;,0123456789abcdefABCDEF-\t\0\x7f\xff?/chunkedHTTP";
    const LINES: [&[u8]; 10] = [
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: 0\r\n",
        b"Content-Length: 99999999\r\n",
        b"Expect: 100-continue\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        b"0\r\n\r\n",
        b"5\r\nhello\r\n",
        b"Transfer-Encoding: gzip\r\n",
    ];
    for _ in 0..=rng.below(4) {
        let len = bytes.len();
        let at = if len == 0 { 0 } else { rng.below(len + 1) };
        match rng.below(6) {
            0 if at < len => bytes[at] = ALPHABET[rng.below(ALPHABET.len())],
            1 => bytes.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            2 if at < len => {
                bytes.remove(at);
            }
            3 => {
                let line = LINES[rng.below(LINES.len())];
                bytes.splice(at..at, line.iter().copied());
            }
            4 if at < len => {
                let end = (at + rng.below(16)).min(len);
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => bytes.truncate(at),
        }
    }
}

/// The first request decoded from `buf` by feeding it one byte at a time to
/// one decoder, as a connection would, stopping at the first non-incomplete
/// answer.
fn grown(buf: &[u8], limits: &Limits) -> Outcome {
    let mut d = Decoder::new();
    for i in 0..buf.len() {
        let o = outcome(&mut d, &buf[..i], limits);
        if !matches!(o, Outcome::Incomplete { .. }) {
            return o;
        }
    }
    outcome(&mut d, buf, limits)
}

/// Whether a head terminator follows the start of the request line within
/// the header limit; only then must decoding be independent of how the
/// bytes arrived (before it, errors are found lazily).
fn terminated_within(buf: &[u8], limits: &Limits) -> bool {
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    has_head_end(&window[start..], 0)
}

fn without_continue(o: Outcome) -> Outcome {
    match o {
        Outcome::Incomplete { in_body, .. } => Outcome::Incomplete {
            send_continue: false,
            in_body,
        },
        o => o,
    }
}

#[test]
fn fuzz_mutated_requests() {
    let seeds: Vec<Vec<u8>> = cases().into_iter().map(|c| c.bytes).collect();
    let tight = Limits {
        max_header_bytes: 96,
        max_body_bytes: 24,
        max_headers: 4,
        ..Limits::default()
    };
    let limit_sets = [Limits::default(), tight];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut requests = 0;
    for round in 0..6000 {
        let mut buf = seeds[rng.below(seeds.len())].clone();
        if rng.below(3) == 0 {
            buf.extend_from_slice(&seeds[rng.below(seeds.len())]);
        }
        mutate(&mut rng, &mut buf);
        let limits = &limit_sets[round % 2];

        // The caller's loop over the whole buffer never panics, never
        // consumes nothing and never consumes past the end (checked in
        // `outcome`).
        let mut d = Decoder::new();
        let mut start = 0;
        let mut first = None;
        for _ in 0..buf.len() + 1 {
            let o = outcome(&mut d, &buf[start..], limits);
            first.get_or_insert_with(|| o.clone());
            match o {
                Outcome::Request(r) => {
                    requests += 1;
                    start += r.consumed;
                }
                _ => break,
            }
        }
        assert!(start <= buf.len());

        // Feeding the same bytes one at a time gives the same first answer,
        // unless the head has no terminator (errors there are lazy).
        if round % 4 == 0 {
            let whole = without_continue(first.unwrap());
            let inc = without_continue(grown(&buf, limits));
            if whole != inc {
                assert!(
                    !matches!(whole, Outcome::Request(_)) && !matches!(inc, Outcome::Request(_)),
                    "round {round}: {whole:?} vs {inc:?} for {:?}",
                    show(&buf)
                );
                assert!(
                    !terminated_within(&buf, limits),
                    "round {round}: {whole:?} vs {inc:?} for {:?}",
                    show(&buf)
                );
            }
        }
    }
    // The mutations leave many requests valid: the run exercises both paths.
    assert!(requests > 1000, "only {requests} requests decoded");
}

#[test]
fn fuzz_random_bytes() {
    let mut rng = XorShift(42);
    let limits = Limits::default();
    for _ in 0..2000 {
        let len = rng.below(64);
        let mut buf = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        if rng.below(2) == 0 {
            buf.clear();
        }
        for _ in 0..len {
            buf.push(b"0123456789abcdef\r\n;: xX"[rng.below(23)]);
        }
        let mut d = Decoder::new();
        for i in 0..=buf.len() {
            if !matches!(
                outcome(&mut d, &buf[..i], &limits),
                Outcome::Incomplete { .. }
            ) {
                break;
            }
        }
    }
}

#[test]
fn eq_lower_matches_eq_ignore_ascii_case_on_header_bytes() {
    // Every byte httparse lets into a header name or value, against every
    // byte a literal passed to `eq_lower` may hold.
    let header_bytes =
        (0u8..=255).filter(|&b| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80);
    let literal_bytes: Vec<u8> = (b'a'..=b'z').chain(b'0'..=b'9').chain([b'-']).collect();
    for b in header_bytes {
        for &l in &literal_bytes {
            assert_eq!(
                eq_lower(&[b], &[l]),
                [b].eq_ignore_ascii_case(&[l]),
                "{b:#x} vs {}",
                l as char
            );
        }
    }
    assert!(eq_lower(b"Content-LENGTH", b"content-length"));
    assert!(!eq_lower(b"Content-Lengths", b"content-length"));
    assert!(!eq_lower(b"Content_Length", b"content-length"));
}

#[test]
fn host_must_appear_once_and_be_valid() {
    // RFC 9112 §3.2.
    assert_eq!(
        error(b"GET / HTTP/1.1\r\n\r\n"),
        HttpError::Malformed("missing Host header")
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
        HttpError::Malformed("more than one Host header")
    );
    assert_eq!(
        error(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
        HttpError::Malformed("more than one Host header")
    );
    for bad in [
        &b"a b"[..],
        b"a/b",
        b"a@b",
        b"a:80x",
        b"a:b:c",
        b"[zz]",
        b"[::1",
        b"[::1]x",
        b"a?b",
    ] {
        let mut req = b"GET / HTTP/1.1\r\nHost: ".to_vec();
        req.extend_from_slice(bad);
        req.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            error(&req),
            HttpError::Malformed("invalid Host header"),
            "{}",
            show(bad)
        );
    }
    for good in [
        &b""[..],
        b"example.com",
        b"example.com:8080",
        b"EXAMPLE.com:",
        b"127.0.0.1:1",
        b"[::1]:8888",
        b"[2001:db8::1]",
        b"a-b_c~d%20!$&'()*+,;=",
    ] {
        let mut req = b"GET / HTTP/1.1\r\nHost: ".to_vec();
        req.extend_from_slice(good);
        req.extend_from_slice(b"\r\n\r\n");
        assert!(
            matches!(decode_one(&req), Outcome::Request(_)),
            "{}",
            show(good)
        );
    }
    // HTTP/1.0 may omit it.
    assert!(matches!(
        decode_one(b"GET / HTTP/1.0\r\n\r\n"),
        Outcome::Request(_)
    ));
}

#[test]
fn chunked_takes_no_parameters() {
    for te in [&b"chunked;q=1"[..], b"chunked ; x", b"gzip, chunked;a=b"] {
        let mut req = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ".to_vec();
        req.extend_from_slice(te);
        req.extend_from_slice(b"\r\n\r\n0\r\n\r\n");
        assert_eq!(
            error(&req),
            HttpError::Malformed("chunked takes no parameters"),
            "{}",
            show(te)
        );
    }
}

#[test]
fn request_id_is_the_trimmed_first_x_request_id() {
    let limits = Limits::default();
    let mut d = Decoder::new();
    let buf =
        b"GET /a HTTP/1.1\r\nHost: x\r\nx-REQUEST-id:  first\r\nX-Request-Id: \t abc-123 \r\n\r\n";
    match d.decode(buf, &limits) {
        Ok(Decoded::Request { request, .. }) => assert_eq!(request.request_id, b"first"),
        other => panic!("{other:?}"),
    }
    let mut d = Decoder::new();
    match d.decode(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", &limits) {
        Ok(Decoded::Request { request, .. }) => assert_eq!(request.request_id, b""),
        other => panic!("{other:?}"),
    }
    // A body that arrives later: the id still comes from the head.
    let mut d = Decoder::new();
    let head = b"POST /a HTTP/1.1\r\nHost: x\r\nX-Request-Id: r-9\r\nContent-Length: 2\r\n\r\n";
    assert!(matches!(
        d.decode(head, &limits),
        Ok(Decoded::Incomplete { .. })
    ));
    let mut whole = head.to_vec();
    whole.extend_from_slice(b"{}");
    match d.decode(&whole, &limits) {
        Ok(Decoded::Request { request, .. }) => assert_eq!(request.request_id, b"r-9"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn header_lines_in_one_pass() {
    let buf = b"\r\nGET /r HTTP/1.1\r\nHost: h\r\nX-User:  ann \t\r\nx-count:7\nX-User: bob\r\nX-Empty: \r\n\r\n";
    let mut d = Decoder::new();
    let Ok(Decoded::Request { request, .. }) = d.decode(buf, &Limits::default()) else {
        panic!("not a request");
    };
    let lines: Vec<(&[u8], &[u8])> = request
        .header_lines()
        .map(|(name, (from, to))| (name, &request.head[from..to]))
        .collect();
    assert_eq!(
        lines,
        [
            (&b"Host"[..], &b"h"[..]),
            (b"X-User", b"ann"),
            (b"x-count", b"7"),
            (b"X-User", b"bob"),
            (b"X-Empty", b""),
        ]
    );
    // The first line of a name counts; `_` in the asked name matches `-`.
    assert_eq!(request.header("x_user"), Some(&b"ann"[..]));
    assert_eq!(request.header("X-COUNT"), Some(&b"7"[..]));
    assert_eq!(request.header("x_empty"), Some(&b""[..]));
    assert_eq!(request.header("x_missing"), None);
    assert!(header_name_is(b"X-User", "x_user"));
    assert!(!header_name_is(b"X_User", "x-user"));
    assert!(!header_name_is(b"X-Users", "x_user"));
}
