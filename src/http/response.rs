//! Writing HTTP/1.1 responses into a connection's output buffer.
//!
//! A response is appended to the caller's `Vec<u8>` from pre-built byte
//! fragments: a static status line per status code, a static
//! `Content-Type`/`Content-Length` prefix per content type, the length via
//! `itoa`, the cached [`HttpDate`], and the body. Several pipelined responses
//! can be appended to one buffer and written with one syscall.
//!
//! Invariants: nothing is allocated except growth of `out` (reserved once
//! per response); every response is complete and self-delimiting (it always
//! carries `Content-Length`, except 1xx, 204 and 304, which have no body).

use super::codec::Method;
use super::{HttpDate, HttpError, Request, Version};
use crate::reply::{json_string_len, write_error_json};

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The media type of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// `application/json`
    Json,
    /// `text/plain; charset=utf-8`
    Text,
    /// `text/plain; version=0.0.4; charset=utf-8`, the Prometheus text
    /// exposition format.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0; charset=utf-8`.
    OpenMetrics,
}

impl ContentType {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Text => "text/plain; charset=utf-8",
            ContentType::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            ContentType::OpenMetrics => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
        }
    }

    /// `Content-Type` and the name of `Content-Length`, ready to be followed
    /// by the length.
    fn fields(self) -> &'static [u8] {
        match self {
            ContentType::Json => b"Content-Type: application/json\r\nContent-Length: ",
            ContentType::Text => b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: ",
            ContentType::Prometheus => {
                b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: "
            }
            ContentType::OpenMetrics => {
                b"Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: "
            }
        }
    }
}

/// An `X-Request-Id` value, held inline (no allocation): the client's when
/// it sent a valid one, otherwise one made by the shard.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    bytes: [u8; RequestId::MAX],
    len: u8,
}

impl RequestId {
    /// The longest client id kept; a longer one is replaced.
    pub const MAX: usize = 64;

    /// The client's id, if valid: 1 to 64 characters from `A-Z a-z 0-9` and
    /// `- _ . : + / =` (UUIDs, ULIDs, base64 and trace ids fit; anything that
    /// could smuggle a header or log line does not).
    pub fn from_client(value: &[u8]) -> Option<RequestId> {
        if value.is_empty()
            || value.len() > RequestId::MAX
            || !value
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
        {
            return None;
        }
        let mut bytes = [0u8; RequestId::MAX];
        bytes[..value.len()].copy_from_slice(value);
        Some(RequestId {
            bytes,
            len: value.len() as u8,
        })
    }

    /// A new id, `PPPPPPPP-SSSS-NNNNNNNNNNNNNNNN` in hex: a per-process
    /// `prefix` (random at start-up), the shard and the shard's sequence
    /// number, so ids are unique across shards and, with high probability,
    /// across restarts.
    pub fn generated(prefix: u32, shard: u16, seq: u64) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0u8; RequestId::MAX];
        let mut at = 0;
        for (value, digits) in [(u64::from(prefix), 8), (u64::from(shard), 4), (seq, 16)] {
            if at > 0 {
                bytes[at] = b'-';
                at += 1;
            }
            for i in (0..digits).rev() {
                bytes[at] = HEX[((value >> (4 * i)) & 0xf) as usize];
                at += 1;
            }
        }
        RequestId {
            bytes,
            len: at as u8,
        }
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (validated or hex).
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a response is framed for the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseOptions {
    /// Whether the connection stays open after this response; when false the
    /// response says `Connection: close`. Default: false.
    pub keep_alive: bool,
    /// The version of the request answered: an HTTP/1.0 request kept alive
    /// gets `Connection: keep-alive`, as 1.0 closes by default. Default:
    /// HTTP/1.1.
    pub version: Version,
    /// Answering `HEAD`: the body is left out but `Content-Length` is still
    /// the length it would have had. Default: false.
    pub head: bool,
    /// The `Allow` header value, for 405 answers (e.g. `"GET, HEAD"`).
    /// Default: none.
    pub allow: Option<&'static str>,
    /// The `X-Request-Id` the response carries. Default: none.
    pub request_id: Option<RequestId>,
}

impl Default for ResponseOptions {
    fn default() -> ResponseOptions {
        ResponseOptions::closing()
    }
}

impl ResponseOptions {
    /// Options answering `request`: its keep-alive, version and `HEAD`-ness.
    #[inline]
    pub fn for_request(request: &Request<'_>) -> ResponseOptions {
        ResponseOptions {
            keep_alive: request.keep_alive,
            version: request.version,
            head: request.method == Method::Head,
            allow: None,
            request_id: None,
        }
    }

    /// Options for a response after which the connection is closed (errors,
    /// shutdown).
    pub const fn closing() -> ResponseOptions {
        ResponseOptions {
            keep_alive: false,
            version: Version::Http11,
            head: false,
            allow: None,
            request_id: None,
        }
    }

    /// The same options with an `X-Request-Id` header.
    pub const fn with_request_id(self, id: RequestId) -> ResponseOptions {
        ResponseOptions {
            request_id: Some(id),
            ..self
        }
    }

    /// The same options with an `Allow` header.
    pub const fn with_allow(self, allow: &'static str) -> ResponseOptions {
        ResponseOptions {
            allow: Some(allow),
            ..self
        }
    }
}

/// Appends a complete response to `out`.
///
/// 1xx, 204 and 304 responses get neither body nor `Content-Type` nor
/// `Content-Length` (RFC 9110 §8.6, §15.3.5, §15.4.5); a `HEAD` answer gets
/// the headers the body would have had, without the body.
pub fn write_response(
    out: &mut Vec<u8>,
    date: &HttpDate,
    status: u16,
    content_type: ContentType,
    body: &[u8],
    opts: ResponseOptions,
) {
    let bodiless = is_bodiless(status);
    let send_body = !bodiless && !opts.head;
    out.reserve(HEAD_RESERVE + if send_body { body.len() } else { 0 });
    let length = (!bodiless).then_some((content_type, body.len()));
    write_head(out, date, status, length, opts);
    if send_body {
        out.extend_from_slice(body);
    }
}

/// Appends the response to a decoding error: its status, a JSON body
/// `{"error":"<message>"}` and `Connection: close`.
pub fn write_error(out: &mut Vec<u8>, date: &HttpDate, error: HttpError) {
    const PREFIX: &[u8] = b"{\"error\":";
    const SUFFIX: &[u8] = b"}";
    let message = error.message();
    let len = PREFIX.len() + json_string_len(message) + SUFFIX.len();
    out.reserve(HEAD_RESERVE + len);
    write_head(
        out,
        date,
        error.status(),
        Some((ContentType::Json, len)),
        ResponseOptions::closing(),
    );
    write_error_json(out, message, None);
}

/// Appends a response head announcing a body of `length` bytes of
/// `content_type` (`None`: no body fields, for 1xx, 204 and 304); the caller
/// appends exactly that many body bytes next (none for `HEAD`).
pub fn write_head(
    out: &mut Vec<u8>,
    date: &HttpDate,
    status: u16,
    length: Option<(ContentType, usize)>,
    opts: ResponseOptions,
) {
    write_status_line(out, status);
    if let Some((content_type, len)) = length {
        out.extend_from_slice(content_type.fields());
        out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !opts.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if opts.version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    if let Some(allow) = opts.allow {
        out.extend_from_slice(b"Allow: ");
        out.extend_from_slice(allow.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(id) = &opts.request_id {
        out.extend_from_slice(b"X-Request-Id: ");
        out.extend_from_slice(id.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(date.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Room for the longest head without `Allow` (status line, Prometheus
/// content type, 20-digit length, `Connection`, `X-Request-Id`, `Date`), so
/// that one reservation covers a whole response.
const HEAD_RESERVE: usize = 256 + 16 + RequestId::MAX;

/// Whether a status never carries content.
fn is_bodiless(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// Appends `HTTP/1.1 <code> <reason>\r\n`.
fn write_status_line(out: &mut Vec<u8>, status: u16) {
    if let Some(line) = status_line(status) {
        out.extend_from_slice(line);
        return;
    }
    // Not in the table: the reason phrase is optional for clients (RFC 9112
    // §4), so name the class. A status outside 100..=999 is a caller bug;
    // answer 500 rather than send an invalid status line.
    debug_assert!((100..=999).contains(&status), "invalid status {status}");
    let status = if (100..=999).contains(&status) {
        status
    } else {
        500
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.extend_from_slice(match status / 100 {
        1 => b" Informational\r\n".as_slice(),
        2 => b" Success\r\n",
        3 => b" Redirection\r\n",
        4 => b" Client Error\r\n",
        _ => b" Server Error\r\n",
    });
}

/// The full status line of a common status code.
fn status_line(status: u16) -> Option<&'static [u8]> {
    Some(match status {
        100 => b"HTTP/1.1 100 Continue\r\n",
        101 => b"HTTP/1.1 101 Switching Protocols\r\n",
        200 => b"HTTP/1.1 200 OK\r\n",
        201 => b"HTTP/1.1 201 Created\r\n",
        202 => b"HTTP/1.1 202 Accepted\r\n",
        204 => b"HTTP/1.1 204 No Content\r\n",
        206 => b"HTTP/1.1 206 Partial Content\r\n",
        301 => b"HTTP/1.1 301 Moved Permanently\r\n",
        302 => b"HTTP/1.1 302 Found\r\n",
        303 => b"HTTP/1.1 303 See Other\r\n",
        304 => b"HTTP/1.1 304 Not Modified\r\n",
        307 => b"HTTP/1.1 307 Temporary Redirect\r\n",
        308 => b"HTTP/1.1 308 Permanent Redirect\r\n",
        400 => b"HTTP/1.1 400 Bad Request\r\n",
        401 => b"HTTP/1.1 401 Unauthorized\r\n",
        403 => b"HTTP/1.1 403 Forbidden\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        405 => b"HTTP/1.1 405 Method Not Allowed\r\n",
        406 => b"HTTP/1.1 406 Not Acceptable\r\n",
        408 => b"HTTP/1.1 408 Request Timeout\r\n",
        409 => b"HTTP/1.1 409 Conflict\r\n",
        410 => b"HTTP/1.1 410 Gone\r\n",
        411 => b"HTTP/1.1 411 Length Required\r\n",
        412 => b"HTTP/1.1 412 Precondition Failed\r\n",
        413 => b"HTTP/1.1 413 Content Too Large\r\n",
        414 => b"HTTP/1.1 414 URI Too Long\r\n",
        415 => b"HTTP/1.1 415 Unsupported Media Type\r\n",
        417 => b"HTTP/1.1 417 Expectation Failed\r\n",
        422 => b"HTTP/1.1 422 Unprocessable Content\r\n",
        426 => b"HTTP/1.1 426 Upgrade Required\r\n",
        429 => b"HTTP/1.1 429 Too Many Requests\r\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        500 => b"HTTP/1.1 500 Internal Server Error\r\n",
        501 => b"HTTP/1.1 501 Not Implemented\r\n",
        502 => b"HTTP/1.1 502 Bad Gateway\r\n",
        503 => b"HTTP/1.1 503 Service Unavailable\r\n",
        504 => b"HTTP/1.1 504 Gateway Timeout\r\n",
        505 => b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn date() -> HttpDate {
        HttpDate::new(UNIX_EPOCH + Duration::from_secs(784_111_777))
    }

    fn keep_alive() -> ResponseOptions {
        ResponseOptions {
            keep_alive: true,
            ..ResponseOptions::closing()
        }
    }

    fn respond(status: u16, ct: ContentType, body: &[u8], opts: ResponseOptions) -> String {
        let mut out = Vec::new();
        write_response(&mut out, &date(), status, ct, body, opts);
        String::from_utf8(out).unwrap()
    }

    const DATE: &str = "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n";

    #[test]
    fn ok_json_keep_alive() {
        assert_eq!(
            respond(200, ContentType::Json, br#"{"fooLength":11}"#, keep_alive()),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\
                 {DATE}\r\n{{\"fooLength\":11}}"
            )
        );
    }

    #[test]
    fn closing_and_http10_keep_alive() {
        assert_eq!(
            respond(
                404,
                ContentType::Text,
                b"not found",
                ResponseOptions::closing()
            ),
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: 9\r\nConnection: close\r\n{DATE}\r\nnot found"
            )
        );
        let http10 = ResponseOptions {
            version: Version::Http10,
            ..keep_alive()
        };
        assert_eq!(
            respond(201, ContentType::Json, b"{}", http10),
            format!(
                "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
                 Connection: keep-alive\r\n{DATE}\r\n{{}}"
            )
        );
        let http10_close = ResponseOptions {
            version: Version::Http10,
            ..ResponseOptions::closing()
        };
        assert!(
            respond(200, ContentType::Json, b"{}", http10_close).contains("Connection: close\r\n")
        );
    }

    #[test]
    fn head_keeps_length_but_not_body() {
        let opts = ResponseOptions {
            head: true,
            ..keep_alive()
        };
        assert_eq!(
            respond(200, ContentType::Json, b"{\"a\":1}", opts),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\
                 {DATE}\r\n"
            )
        );
    }

    #[test]
    fn method_not_allowed_with_allow() {
        assert_eq!(
            respond(
                405,
                ContentType::Text,
                b"method not allowed",
                keep_alive().with_allow("GET, HEAD")
            ),
            format!(
                "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: 18\r\nAllow: GET, HEAD\r\n{DATE}\r\nmethod not allowed"
            )
        );
    }

    #[test]
    fn prometheus_content_type() {
        assert_eq!(
            respond(200, ContentType::Prometheus, b"up 1\n", keep_alive()),
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: 5\r\n{DATE}\r\nup 1\n"
            )
        );
        for ct in [
            ContentType::Json,
            ContentType::Text,
            ContentType::Prometheus,
        ] {
            let fields = std::str::from_utf8(ct.fields()).unwrap();
            assert_eq!(
                fields,
                format!("Content-Type: {}\r\nContent-Length: ", ct.as_str())
            );
        }
    }

    #[test]
    fn bodiless_statuses() {
        assert_eq!(
            respond(204, ContentType::Json, b"ignored", keep_alive()),
            format!("HTTP/1.1 204 No Content\r\n{DATE}\r\n")
        );
        assert_eq!(
            respond(
                304,
                ContentType::Json,
                b"ignored",
                ResponseOptions::closing()
            ),
            format!("HTTP/1.1 304 Not Modified\r\nConnection: close\r\n{DATE}\r\n")
        );
    }

    #[test]
    fn status_lines() {
        for status in [
            200, 201, 204, 400, 404, 405, 408, 413, 422, 431, 500, 501, 503, 505,
        ] {
            let line = status_line(status).expect("in the table");
            let line = std::str::from_utf8(line).unwrap();
            assert!(line.starts_with(&format!("HTTP/1.1 {status} ")), "{line}");
            assert!(line.ends_with("\r\n") && line.len() > 15, "{line}");
        }
        let line = |status| {
            let mut out = Vec::new();
            write_status_line(&mut out, status);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(line(413), "HTTP/1.1 413 Content Too Large\r\n");
        assert_eq!(line(418), "HTTP/1.1 418 Client Error\r\n");
        assert_eq!(line(299), "HTTP/1.1 299 Success\r\n");
        assert_eq!(line(599), "HTTP/1.1 599 Server Error\r\n");
        assert_eq!(line(199), "HTTP/1.1 199 Informational\r\n");
        assert_eq!(line(399), "HTTP/1.1 399 Redirection\r\n");
    }

    #[test]
    fn errors_are_json_and_close() {
        for error in [
            HttpError::Malformed("invalid Content-Length"),
            HttpError::HeaderTooLarge,
            HttpError::BodyTooLarge,
            HttpError::UnsupportedTransferEncoding,
            HttpError::UnsupportedVersion,
        ] {
            let mut out = Vec::new();
            write_error(&mut out, &date(), error);
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut res = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head) = res.parse(&out).unwrap() else {
                panic!("incomplete head");
            };
            assert_eq!(res.code, Some(error.status()));
            let field = |name: &str| {
                res.headers
                    .iter()
                    .find(|h| h.name == name)
                    .map(|h| std::str::from_utf8(h.value).unwrap())
            };
            assert_eq!(field("Connection"), Some("close"));
            assert_eq!(field("Content-Type"), Some("application/json"));
            let body = &out[head..];
            assert_eq!(
                field("Content-Length"),
                Some(body.len().to_string().as_str())
            );
            let json: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(json["error"], error.message());
        }
        let mut out = Vec::new();
        write_error(&mut out, &date(), HttpError::Malformed("bad"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\
                 Content-Length: 15\r\nConnection: close\r\n{DATE}\r\n{{\"error\":\"bad\"}}"
            )
        );
    }

    #[test]
    fn pipelined_responses_share_one_buffer_without_reallocating() {
        let mut out = Vec::with_capacity(4096);
        let ptr = out.as_ptr();
        let d = date();
        for _ in 0..5 {
            write_response(&mut out, &d, 200, ContentType::Json, b"{}", keep_alive());
        }
        assert_eq!(out.as_ptr(), ptr);
        let one = respond(200, ContentType::Json, b"{}", keep_alive());
        assert_eq!(out, one.repeat(5).into_bytes());
    }

    #[test]
    fn options_follow_the_request() {
        let req = Request {
            method: Method::Head,
            path: "/",
            query: "",
            version: Version::Http10,
            keep_alive: true,
            body: b"",
            request_id: b"",
            head: b"",
        };
        assert_eq!(
            ResponseOptions::for_request(&req),
            ResponseOptions {
                keep_alive: true,
                version: Version::Http10,
                head: true,
                allow: None,
                request_id: None,
            }
        );
        assert_eq!(ResponseOptions::default(), ResponseOptions::closing());
        assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn head_reserve_covers_the_longest_head() {
        let mut out = Vec::new();
        let opts = ResponseOptions {
            version: Version::Http10,
            ..keep_alive()
        };
        write_head(
            &mut out,
            &date(),
            431,
            Some((ContentType::Prometheus, usize::MAX)),
            opts,
        );
        assert!(out.len() <= HEAD_RESERVE, "{}", out.len());
    }
}
