//! The sans-IO HTTP/1.1 request decoder.
//!
//! A connection owns one [`Decoder`] and one read buffer. After every read it
//! calls [`Decoder::decode`] on the unconsumed bytes until it gets
//! [`Decoded::Incomplete`], answering each [`Decoded::Request`] and skipping
//! its `consumed` bytes. The decoder does no I/O and, once warm, no
//! allocation: headers are parsed by httparse into a stack array, the
//! request borrows its path, query and `Content-Length` body from the read
//! buffer, and a chunked body is decoded into one `Vec` the decoder keeps.
//!
//! Invariants:
//! - Between a call that returned `Incomplete` and the next one, `buf` must
//!   start at the same byte (the same request), possibly extended at the
//!   end: the decoder remembers how far it got as offsets from the start of
//!   `buf`. A `buf` shorter than at the last call restarts the request.
//! - After a [`Decoded::Request`] the decoder expects the next request to
//!   begin at `buf[consumed..]`.
//! - After an [`HttpError`] the connection must be closed; the decoder's
//!   state is unspecified until [`Decoder::reset`].
//! - `consumed` is never more than `buf.len()` and never zero.
//!
//! Layout: this file holds the types and [`Decoder::decode`], the state
//! machine over one request; `head.rs` parses the head and its framing
//! headers, `chunked.rs` decodes a chunked body.

mod chunked;
mod head;

use super::{HttpError, Limits};
use chunked::{Chunked, MAX_CHUNK_LINE, framing_limit};

/// Capacity of the stack array httparse parses headers into; the effective
/// limit is `Limits::max_headers` capped at this.
pub const MAX_HEADERS: usize = 64;

/// A chunked-body buffer larger than this is dropped when the next chunked
/// request starts rather than reused, so one large upload does not pin a
/// large buffer for the life of the connection.
const BODY_KEEP: usize = 64 * 1024;

/// The request method. Methods the routes do not use are [`Method::Other`];
/// methods are case-sensitive (RFC 9110 §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`: answered like `GET` without the body.
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// Any other method token (`CONNECT`, `TRACE`, extensions).
    Other,
}

impl Method {
    /// The method of a request-line token.
    #[inline]
    pub fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }

    /// The method token; `None` for [`Method::Other`].
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => return None,
        })
    }
}

/// The protocol version of a request (httparse accepts only these two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `HTTP/1.0`: connections close after each response unless the client
    /// asked for `Connection: keep-alive`.
    Http10,
    /// `HTTP/1.1`: connections stay open unless `Connection: close`.
    Http11,
}

/// One complete request, borrowing from the read buffer (path, query,
/// `Content-Length` body) or from the decoder (chunked body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'b> {
    /// The method.
    pub method: Method,
    /// The path, without the query: `/orders/1` for `/orders/1?x=2` and for
    /// `http://host/orders/1?x=2`; `/` for `http://host`; `*` for
    /// `OPTIONS *`; the authority for `CONNECT`. Not percent-decoded.
    pub path: &'b str,
    /// What follows the first `?` of the target, empty if none. Not
    /// percent-decoded.
    pub query: &'b str,
    /// The protocol version.
    pub version: Version,
    /// Whether the connection stays open after the response (RFC 9112 §9.3):
    /// HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// The body, de-chunked; empty when the request has none.
    pub body: &'b [u8],
    /// The `X-Request-Id` header's value, trimmed; empty when absent (the
    /// first one if repeated). Not validated: see `http::RequestId`.
    pub request_id: &'b [u8],
    /// The raw head (request line, header lines, blank line), for
    /// [`Request::header`].
    pub head: &'b [u8],
}

impl<'b> Request<'b> {
    /// The value of the first header named `name` (see
    /// [`header_name_is`]), trimmed of blanks; `None` if absent. Scans the
    /// head: meant for a header looked up alone; a route's header columns
    /// are all found in one pass with [`Request::header_lines`].
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.header_lines()
            .find(|(sent, _)| header_name_is(sent, name))
            .map(|(_, value)| &self.head[value.0..value.1])
    }

    /// The header lines of the head in order, in one pass and without
    /// allocating: each line's name as sent and the range of its value,
    /// trimmed of blanks, in [`Request::head`]. Lines without a colon are
    /// skipped. Framing headers are included, though the decoder has
    /// already read them.
    pub fn header_lines(&self) -> HeaderLines<'b> {
        let head = self.head;
        // The first line is the request line.
        let at = head
            .iter()
            .position(|&b| b == b'\n')
            .map_or(head.len(), |i| i + 1);
        HeaderLines { head, at }
    }
}

/// Whether a header named `sent` on the wire is the header `name` asks for:
/// ASCII case-insensitive, with `_` in `name` matching `-` (so column
/// `x_user` reads header `X-User`).
pub fn header_name_is(sent: &[u8], name: &str) -> bool {
    let name = name.as_bytes();
    sent.len() == name.len()
        && sent
            .iter()
            .zip(name)
            .all(|(&a, &b)| a.eq_ignore_ascii_case(&b) || (a == b'-' && b == b'_'))
}

/// The header lines of a request head: see [`Request::header_lines`].
#[derive(Debug, Clone)]
pub struct HeaderLines<'b> {
    head: &'b [u8],
    /// Where the next line starts.
    at: usize,
}

impl<'b> Iterator for HeaderLines<'b> {
    /// The name as sent, and the value's `(start, end)` in the head.
    type Item = (&'b [u8], (usize, usize));

    fn next(&mut self) -> Option<Self::Item> {
        let head = self.head;
        while self.at < head.len() {
            let start = self.at;
            let end = head[start..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(head.len(), |i| start + i);
            self.at = end + 1;
            let line_end = if end > start && head[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            let Some(colon) = head[start..line_end].iter().position(|&b| b == b':') else {
                continue;
            };
            let blank = |b: u8| b == b' ' || b == b'\t';
            let (mut from, mut to) = (start + colon + 1, line_end);
            while from < to && blank(head[from]) {
                from += 1;
            }
            while to > from && blank(head[to - 1]) {
                to -= 1;
            }
            return Some((&head[start..start + colon], (from, to)));
        }
        None
    }
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'b> {
    /// The next request is not complete; read more and call again with the
    /// same bytes extended.
    Incomplete {
        /// True exactly once per request: its head is complete, it asked for
        /// `Expect: 100-continue` (HTTP/1.1 only) and its body is not all
        /// here. Write [`super::CONTINUE`] before reading on.
        send_continue: bool,
        /// True once the head is complete and only body bytes are missing
        /// (pick the body timeout rather than the header timeout).
        in_body: bool,
    },
    /// A complete request.
    Request {
        /// The request.
        request: Request<'b>,
        /// How many bytes of `buf` it took: head, body and any chunked
        /// framing and trailers. The next request starts there.
        consumed: usize,
    },
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes after the head.
    Length(usize),
    /// Chunked transfer coding.
    Chunked,
}

/// Where the path is, relative to the start of the request-target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathAt {
    Range(usize, usize),
    /// A path the target implies but does not spell (`/` for
    /// `http://host`).
    Fixed(&'static str),
}

/// A parsed request head, kept as offsets into the buffer so that it is not
/// parsed again while its body arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    method: Method,
    version: Version,
    keep_alive: bool,
    expect_continue: bool,
    framing: Framing,
    /// Length of the head, including leading blank lines and the blank line
    /// that ends it.
    len: usize,
    /// The request-target in `buf`.
    target: (usize, usize),
    path: PathAt,
    /// The query, relative to the start of the target.
    query: (usize, usize),
    /// The first `X-Request-Id` value in `buf` (trimmed); empty if none.
    request_id: (usize, usize),
}

/// Per-connection request decoder; see the module docs for the calling
/// contract.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The head of the current request once complete, while its body is not.
    head: Option<Head>,
    /// Whether `Incomplete { send_continue: true }` was returned for `head`.
    continue_sent: bool,
    /// How many bytes of an incomplete head were already searched for the
    /// blank line that ends it; zero before the first look.
    head_scanned: usize,
    /// `buf.len()` at the last `Incomplete`.
    seen: usize,
    chunked: Chunked,
    /// The decoded chunked body, reused from request to request.
    body: Vec<u8>,
}

impl Decoder {
    /// A decoder at the start of a connection.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Forgets any partly read request (keeps the body buffer).
    pub fn reset(&mut self) {
        self.head = None;
        self.continue_sent = false;
        self.head_scanned = 0;
        self.seen = 0;
        self.chunked = Chunked::default();
    }

    /// Decodes the next request from `buf`, the connection's unconsumed
    /// bytes, or says what is missing.
    pub fn decode<'b>(
        &'b mut self,
        buf: &'b [u8],
        limits: &Limits,
    ) -> Result<Decoded<'b>, HttpError> {
        if buf.len() < self.seen {
            // The caller did not keep the bytes we counted on; start over
            // rather than index past the end.
            self.reset();
        }
        let (head, target) = match self.head {
            Some(head) => {
                let target = std::str::from_utf8(&buf[head.target.0..head.target.1])
                    .map_err(|_| HttpError::Malformed("request target is not UTF-8"))?;
                (head, target)
            }
            None => match self.parse_head(buf, limits)? {
                Some(parsed) => parsed,
                None => {
                    self.seen = buf.len();
                    return Ok(Decoded::Incomplete {
                        send_continue: false,
                        in_body: false,
                    });
                }
            },
        };

        let consumed = match head.framing {
            Framing::Empty => Some(head.len),
            Framing::Length(n) => Some(head.len + n).filter(|&end| end <= buf.len()),
            Framing::Chunked => self.decode_chunks(buf, limits)?,
        };
        let Some(consumed) = consumed else {
            // Only body bytes are missing: keep the head so that it is not
            // parsed again when they arrive.
            let send_continue = head.expect_continue && !self.continue_sent;
            self.continue_sent |= send_continue;
            self.head = Some(head);
            self.seen = buf.len();
            return Ok(Decoded::Incomplete {
                send_continue,
                in_body: true,
            });
        };

        self.reset();
        let body: &'b [u8] = match head.framing {
            Framing::Empty => &[],
            Framing::Length(_) => &buf[head.len..consumed],
            Framing::Chunked => &self.body,
        };
        let path = match head.path {
            PathAt::Range(start, end) => target.get(start..end).unwrap_or("/"),
            PathAt::Fixed(path) => path,
        };
        let query = target.get(head.query.0..head.query.1).unwrap_or("");
        Ok(Decoded::Request {
            request: Request {
                method: head.method,
                path,
                query,
                version: head.version,
                keep_alive: head.keep_alive,
                body,
                request_id: &buf[head.request_id.0..head.request_id.1],
                head: &buf[..head.len],
            },
            consumed,
        })
    }
}

/// The most unconsumed bytes a connection ever needs to buffer: with this
/// many or more in `buf`, [`Decoder::decode`] never answers `Incomplete`; it
/// has either found a complete request or a limit error. A connection can
/// therefore cap its read buffer here.
///
/// It covers a head (`max_header_bytes`), a body (`max_body_bytes`), its
/// chunk framing (`max_body_bytes` + 64 KiB), trailers (`max_header_bytes`)
/// and one unit not yet complete (a chunk-size line of at most 4 KiB).
pub fn max_request_bytes(limits: &Limits) -> usize {
    limits
        .max_header_bytes
        .saturating_mul(2)
        .saturating_add(2)
        .saturating_add(limits.max_body_bytes)
        .saturating_add(framing_limit(limits))
        .saturating_add(MAX_CHUNK_LINE)
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
