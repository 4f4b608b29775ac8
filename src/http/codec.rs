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

use std::mem::MaybeUninit;

use super::{HttpError, Limits};

/// Capacity of the stack array httparse parses headers into; the effective
/// limit is `Limits::max_headers` capped at this.
pub const MAX_HEADERS: usize = 64;

/// Longest chunk-size line (size, extensions and CRLF) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Most bytes of chunk extensions accepted over one body. Extensions are
/// ignored, so without a cap a client could make us scan gigabytes of them
/// for a one-byte body (hyper caps them the same way).
const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;

/// Chunk framing (size lines, extensions, CRLFs) allowed beyond
/// `Limits::max_body_bytes`. Framing can be 20 times the data it frames
/// (`0000000000000001\r\nx\r\n`), so it is bounded too: real clients
/// send chunks of hundreds of bytes or more and stay far below this.
const CHUNK_FRAMING_SLACK: usize = 64 * 1024;

/// Most hex digits in a chunk size; 16 digits fill a `u64`.
const MAX_CHUNK_SIZE_DIGITS: usize = 16;

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
    /// The `X-Request-Id` header's value, trimmed; empty when there is none
    /// or it is not UTF-8 (the last one wins if it is repeated). Used by
    /// the access log.
    pub request_id: &'b str,
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
    /// The `X-Request-Id` value in `buf` (empty range: none).
    request_id: (usize, usize),
}

/// Position in a chunked body (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkPhase {
    /// At the start of a chunk-size line.
    Size,
    /// At the start of a chunk's data of this many bytes, followed by CRLF.
    Data(usize),
    /// After the last chunk, at the start of a trailer line or the final
    /// blank line.
    Trailers,
}

/// Progress through a chunked body. Every unit (size line, data + CRLF,
/// trailer line) is consumed only once complete, so a resumed call starts
/// at a unit boundary and never rescans what it has decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunked {
    /// Offset in `buf` of the next unit.
    pos: usize,
    phase: ChunkPhase,
    extension_bytes: usize,
    framing_bytes: usize,
    trailer_bytes: usize,
}

impl Chunked {
    const fn at(pos: usize) -> Chunked {
        Chunked {
            pos,
            phase: ChunkPhase::Size,
            extension_bytes: 0,
            framing_bytes: 0,
            trailer_bytes: 0,
        }
    }
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

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked::at(0)
    }
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
        let request_id = buf
            .get(head.request_id.0..head.request_id.1)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("");
        Ok(Decoded::Request {
            request: Request {
                method: head.method,
                path,
                query,
                version: head.version,
                keep_alive: head.keep_alive,
                body,
                request_id,
            },
            consumed,
        })
    }

    /// Parses the head of a new request, or returns `None` if it is not all
    /// in `buf` yet.
    fn parse_head<'b>(
        &mut self,
        buf: &'b [u8],
        limits: &Limits,
    ) -> Result<Option<(Head, &'b str)>, HttpError> {
        // httparse never sees more than the limit: a head that is not
        // complete within it is too large, however much more was read.
        let window = &buf[..buf.len().min(limits.max_header_bytes)];
        let over_limit = buf.len() >= limits.max_header_bytes;

        // A head ends with an empty line. httparse is run on the first look
        // (to reject garbage such as a TLS handshake at once) and then only
        // once the empty line has arrived, so a head trickling in byte by
        // byte costs a scan of the new bytes per read, not a full re-parse.
        if self.head_scanned > 0 && !has_head_end(window, self.head_scanned) {
            if over_limit {
                return Err(HttpError::HeaderTooLarge);
            }
            self.head_scanned = window.len();
            return Ok(None);
        }

        let mut slots = [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; MAX_HEADERS];
        let slots = &mut slots[..limits.max_headers.min(MAX_HEADERS)];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(window, slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if over_limit {
                    return Err(HttpError::HeaderTooLarge);
                }
                self.head_scanned = window.len();
                return Ok(None);
            }
            Err(e) => return Err(parse_error(e, window)),
        };
        let (Some(method_token), Some(target), Some(minor)) = (req.method, req.path, req.version)
        else {
            return Err(HttpError::Malformed("incomplete request line"));
        };
        let method = Method::from_token(method_token);
        let version = if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        };

        let mut content_length: Option<u64> = None;
        let mut codings = Codings::default();
        let mut close = false;
        let mut keep_alive = false;
        let mut expect_continue = false;
        let mut hosts = 0u32;
        let mut request_id = (0, 0);
        for header in req.headers.iter() {
            let name = header.name.as_bytes();
            // Match by length first: most headers are rejected on one compare.
            match name.len() {
                4 if eq_lower(name, b"host") => {
                    // RFC 9112 §3.2: more than one Host, or an invalid one,
                    // is a 400 whatever the version.
                    hosts += 1;
                    if hosts > 1 {
                        return Err(HttpError::Malformed("more than one Host header"));
                    }
                    if !valid_host(trim(header.value)) {
                        return Err(HttpError::Malformed("invalid Host header"));
                    }
                }
                6 if eq_lower(name, b"expect") => {
                    expect_continue |= eq_lower(trim(header.value), b"100-continue");
                }
                10 if eq_lower(name, b"connection") => {
                    for option in list(header.value) {
                        close |= eq_lower(option, b"close");
                        keep_alive |= eq_lower(option, b"keep-alive");
                    }
                }
                14 if eq_lower(name, b"content-length") => {
                    let n = parse_content_length(header.value)?;
                    if content_length.is_some_and(|m| m != n) {
                        return Err(HttpError::Malformed(
                            "multiple differing Content-Length values",
                        ));
                    }
                    content_length = Some(n);
                }
                17 if eq_lower(name, b"transfer-encoding") => {
                    codings.add(header.value);
                }
                12 if eq_lower(name, b"x-request-id") => {
                    // A range rather than a borrow: the head outlives this
                    // call while the body arrives (like `target`).
                    let v = trim(header.value);
                    let start = (v.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
                    request_id = (start, start + v.len());
                }
                _ => {}
            }
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400.
        if hosts == 0 && version == Version::Http11 {
            return Err(HttpError::Malformed("missing Host header"));
        }

        // Message body length of a request, RFC 9112 §6.3 (items 1 and 2
        // concern responses only):
        let framing = if codings.present {
            // §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty
            // framing, even with a Content-Length.
            if version == Version::Http10 {
                return Err(HttpError::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            // 3. Transfer-Encoding and Content-Length together might be an
            //    attempt at request smuggling and ought to be an error.
            if content_length.is_some() {
                return Err(HttpError::Malformed(
                    "both Transfer-Encoding and Content-Length present",
                ));
            }
            // 4. A request whose final transfer coding is not chunked has no
            //    reliable length: 400, then close. (§7.1: chunked must not be
            //    applied twice.)
            if !codings.last_is_chunked || codings.chunked > 1 {
                return Err(HttpError::Malformed(
                    "Transfer-Encoding must end in a single chunked",
                ));
            }
            // §7: chunked is defined without parameters; one with them is
            // not the coding we understand, and guessing invites smuggling.
            if codings.chunked_with_params {
                return Err(HttpError::Malformed("chunked takes no parameters"));
            }
            // §6.1: a transfer coding the server does not understand
            // (anything before the final chunked) is answered 501.
            if codings.other {
                return Err(HttpError::UnsupportedTransferEncoding);
            }
            Framing::Chunked
        } else if let Some(n) = content_length {
            // 5. An invalid Content-Length, or a list whose values differ,
            //    was rejected above with 400; a list of equal values counts
            //    as that single value.
            // 6. A valid Content-Length is the body length in octets.
            if n > limits.max_body_bytes as u64 {
                return Err(HttpError::BodyTooLarge);
            }
            match n {
                0 => Framing::Empty,
                n => Framing::Length(n as usize),
            }
        } else {
            // 7. A request with neither has no body.
            Framing::Empty
        };

        if framing == Framing::Chunked {
            if self.body.capacity() > BODY_KEEP {
                self.body = Vec::new();
            } else {
                self.body.clear();
            }
            self.chunked = Chunked::at(len);
        }
        let (path, query) = split_target(method, method_token, target)?;
        let target_start = (target.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        let head = Head {
            method,
            version,
            // RFC 9112 §9.3: close wins; otherwise 1.1 persists and 1.0
            // persists only on request.
            keep_alive: !close && (version == Version::Http11 || keep_alive),
            // RFC 9110 §10.1.1: ignore 100-continue in an HTTP/1.0 request,
            // and there is nothing to wait for without a body.
            expect_continue: expect_continue
                && version == Version::Http11
                && framing != Framing::Empty,
            framing,
            len,
            target: (target_start, target_start + target.len()),
            path,
            query,
            request_id,
        };
        Ok(Some((head, target)))
    }

    /// Decodes as many chunked units as `buf` holds into `self.body`;
    /// returns the end of the message once the final blank line is read.
    fn decode_chunks(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, HttpError> {
        let state = &mut self.chunked;
        loop {
            let rest = buf.get(state.pos..).unwrap_or(&[]);
            match state.phase {
                ChunkPhase::Size => {
                    // chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
                    let too_long = HttpError::Malformed("chunk size line too long");
                    let Some(line) = line(rest, MAX_CHUNK_LINE, too_long)? else {
                        return Ok(None);
                    };
                    let (size, extension) = parse_chunk_size(line)?;
                    state.extension_bytes += extension;
                    if state.extension_bytes > MAX_CHUNK_EXTENSIONS {
                        return Err(HttpError::Malformed("chunk extensions too long"));
                    }
                    state.pos += line.len() + 2;
                    state.framing_bytes += line.len() + 2;
                    if state.framing_bytes > framing_limit(limits) {
                        return Err(HttpError::BodyTooLarge);
                    }
                    if size == 0 {
                        state.phase = ChunkPhase::Trailers;
                    } else {
                        // Check the limit as the body grows, before reading
                        // (or waiting for) the chunk.
                        let limit = limits.max_body_bytes as u64;
                        if size > limit - (self.body.len() as u64).min(limit) {
                            return Err(HttpError::BodyTooLarge);
                        }
                        state.phase = ChunkPhase::Data(size as usize);
                    }
                }
                ChunkPhase::Data(size) => {
                    // Reject a missing CRLF as soon as its bytes are here.
                    match rest.get(size..size + 2) {
                        Some(b"\r\n") => {}
                        Some(_) => {
                            return Err(HttpError::Malformed("chunk data not followed by CRLF"));
                        }
                        None => {
                            if rest.get(size).is_some_and(|&b| b != b'\r') {
                                return Err(HttpError::Malformed(
                                    "chunk data not followed by CRLF",
                                ));
                            }
                            return Ok(None);
                        }
                    }
                    self.body.extend_from_slice(&rest[..size]);
                    state.pos += size + 2;
                    state.framing_bytes += 2;
                    state.phase = ChunkPhase::Size;
                }
                ChunkPhase::Trailers => {
                    // last-chunk [ trailer-section ] CRLF; trailers are
                    // ignored but count against the header limit.
                    let room = limits.max_header_bytes.saturating_sub(state.trailer_bytes);
                    let Some(line) = line(rest, room.saturating_add(2), HttpError::HeaderTooLarge)?
                    else {
                        return Ok(None);
                    };
                    state.pos += line.len() + 2;
                    if line.is_empty() {
                        return Ok(Some(state.pos));
                    }
                    state.trailer_bytes += line.len() + 2;
                    if state.trailer_bytes > limits.max_header_bytes {
                        return Err(HttpError::HeaderTooLarge);
                    }
                    check_trailer(line)?;
                }
            }
        }
    }
}

/// Most bytes of chunk framing allowed in one body.
fn framing_limit(limits: &Limits) -> usize {
    limits.max_body_bytes.saturating_add(CHUNK_FRAMING_SLACK)
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

/// Whether `window` contains the empty line that ends a head, searching
/// from where an earlier search of `scanned` bytes stopped. httparse accepts
/// CRLF or a bare LF as a line end, so the head ends at LF LF or LF CR LF.
fn has_head_end(window: &[u8], scanned: usize) -> bool {
    // A terminator is three bytes at most: one starting in the last two
    // bytes already searched may have been cut off.
    let from = scanned.saturating_sub(2);
    let tail = window.get(from..).unwrap_or(&[]);
    tail.iter().enumerate().any(|(i, &b)| {
        b == b'\n'
            && match tail.get(i + 1) {
                Some(b'\n') => true,
                Some(b'\r') => tail.get(i + 2) == Some(&b'\n'),
                _ => false,
            }
    })
}

/// Maps an httparse error to ours. A well-formed version other than 1.0 or
/// 1.1 (`HTTP/2.0`, `HTTP/1.2`) is 505; any other bad version is 400.
fn parse_error(e: httparse::Error, window: &[u8]) -> HttpError {
    match e {
        httparse::Error::TooManyHeaders => HttpError::HeaderTooLarge,
        httparse::Error::Version if names_other_version(window) => HttpError::UnsupportedVersion,
        httparse::Error::Version => HttpError::Malformed("invalid HTTP version"),
        httparse::Error::HeaderName => HttpError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HttpError::Malformed("invalid header value"),
        httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
        httparse::Error::Token | httparse::Error::Status => {
            HttpError::Malformed("invalid request line")
        }
    }
}

/// Whether the request line is `method SP target SP HTTP/<digit>.<digit>`
/// with a version other than 1.0 and 1.1.
fn names_other_version(window: &[u8]) -> bool {
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    let rest = &window[start..];
    let line = rest.split(|&b| b == b'\n').next().unwrap_or(rest);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_method), Some(_target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit()
            && !(*major == b'1' && matches!(minor, b'0' | b'1')))
}

/// Splits a request-target (RFC 9112 §3.2) into path and query offsets
/// relative to the target.
fn split_target(
    method: Method,
    method_token: &str,
    target: &str,
) -> Result<(PathAt, (usize, usize)), HttpError> {
    let bytes = target.as_bytes();
    let split_at = |path_start: usize| match bytes[path_start..].iter().position(|&b| b == b'?') {
        Some(q) => (
            PathAt::Range(path_start, path_start + q),
            (path_start + q + 1, bytes.len()),
        ),
        None => (PathAt::Range(path_start, bytes.len()), (0, 0)),
    };
    // origin-form: absolute-path [ "?" query ]
    if bytes.first() == Some(&b'/') {
        return Ok(split_at(0));
    }
    // absolute-form (a server must accept it): scheme "://" authority path.
    let scheme = if starts_with_ignore_case(bytes, b"http://") {
        7
    } else if starts_with_ignore_case(bytes, b"https://") {
        8
    } else {
        0
    };
    if scheme > 0 {
        let authority_end = bytes[scheme..]
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .map_or(bytes.len(), |i| scheme + i);
        if authority_end == scheme {
            return Err(HttpError::Malformed(
                "request target has an empty authority",
            ));
        }
        return Ok(match bytes.get(authority_end) {
            Some(b'/') => split_at(authority_end),
            Some(b'?') => (PathAt::Fixed("/"), (authority_end + 1, bytes.len())),
            _ => (PathAt::Fixed("/"), (0, 0)),
        });
    }
    // asterisk-form, for OPTIONS only.
    if bytes == b"*" && method == Method::Options {
        return Ok((PathAt::Fixed("*"), (0, 0)));
    }
    // authority-form, for CONNECT only.
    if method_token == "CONNECT" {
        return Ok((PathAt::Range(0, bytes.len()), (0, 0)));
    }
    Err(HttpError::Malformed("invalid request target"))
}

/// The transfer codings named by all `Transfer-Encoding` fields, in order.
#[derive(Debug, Default)]
struct Codings {
    present: bool,
    chunked: u32,
    last_is_chunked: bool,
    chunked_with_params: bool,
    other: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list(value) {
            // transfer-coding = token *( OWS ";" OWS transfer-parameter )
            let mut parts = coding.split(|&b| b == b';');
            let name = trim(parts.next().unwrap_or(coding));
            let chunked = eq_lower(name, b"chunked");
            self.chunked_with_params |= chunked && parts.next().is_some();
            self.chunked += u32::from(chunked);
            self.other |= !chunked;
            self.last_is_chunked = chunked;
        }
    }
}

/// `Host = uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2): an
/// IP-literal in brackets or a reg-name (unreserved, pct-encoded and
/// sub-delims characters), then optionally `:` and digits. An empty value
/// is valid (a target without an authority).
fn valid_host(value: &[u8]) -> bool {
    let (host, rest) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &value[1..end];
        let ip_literal = !inner.is_empty()
            && inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        // IPvFuture (`v1.x`) is allowed by the grammar but nobody sends it.
        if !ip_literal {
            return false;
        }
        (&[][..], &value[end + 1..])
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, &[][..]),
        }
    };
    let reg_name = host.iter().all(|&b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    });
    let port = match rest {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    reg_name && port
}

/// `Content-Length = 1*DIGIT`, or a list of equal such values (RFC 9112
/// §6.3 item 5).
fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    const INVALID: HttpError = HttpError::Malformed("invalid Content-Length");
    let mut found: Option<u64> = None;
    for element in value.split(|&b| b == b',') {
        let digits = trim(element);
        if digits.is_empty() || digits.len() > 19 {
            // 19 digits always fit in a u64; more is garbage or an absurd size.
            return Err(INVALID);
        }
        let mut n: u64 = 0;
        for &d in digits {
            if !d.is_ascii_digit() {
                return Err(INVALID);
            }
            n = n * 10 + u64::from(d - b'0');
        }
        if found.is_some_and(|m| m != n) {
            return Err(HttpError::Malformed(
                "multiple differing Content-Length values",
            ));
        }
        found = Some(n);
    }
    found.ok_or(INVALID)
}

/// Parses a chunk-size line without its CRLF: the size and the number of
/// extension bytes. `chunk-size [ BWS ";" ext... ]`; extensions are ignored.
fn parse_chunk_size(line: &[u8]) -> Result<(u64, usize), HttpError> {
    const INVALID: HttpError = HttpError::Malformed("invalid chunk size");
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(INVALID);
    }
    if digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(HttpError::Malformed("chunk size too large"));
    }
    let size = line[..digits].iter().fold(0u64, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        (n << 4) | u64::from(v)
    });
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    if ext.is_empty() && rest.is_empty() {
        return Ok((size, 0));
    }
    // BWS before ";" is allowed; whitespace alone is not a chunk-ext.
    if ext.first() != Some(&b';') || ext.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(INVALID);
    }
    Ok((size, rest.len()))
}

/// A trailer line must look like a field line: a non-empty token, then ':'.
fn check_trailer(line: &[u8]) -> Result<(), HttpError> {
    let name_len = line.iter().position(|&b| b == b':').unwrap_or(0);
    let name_ok = name_len > 0
        && line[..name_len]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !name_ok || line.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(HttpError::Malformed("invalid trailer field"));
    }
    Ok(())
}

/// The next CRLF-terminated line of `rest`, without its CRLF, looking no
/// further than `max` bytes (CRLF included); `None` if it is not complete
/// yet, `too_long` if it cannot end within `max`. Chunked framing requires
/// CRLF: a bare LF is rejected, as lenient line endings inside a body are a
/// known request smuggling vector.
fn line(rest: &[u8], max: usize, too_long: HttpError) -> Result<Option<&[u8]>, HttpError> {
    let window = &rest[..rest.len().min(max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) if lf > 0 && window[lf - 1] == b'\r' => Ok(Some(&window[..lf - 1])),
        Some(_) => Err(HttpError::Malformed(
            "chunked framing line not ended by CRLF",
        )),
        None if rest.len() >= max => Err(too_long),
        None => Ok(None),
    }
}

/// The non-empty elements of a comma-separated header list (RFC 9110
/// §5.6.1), trimmed of optional whitespace.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|e| !e.is_empty())
}

/// Trims optional whitespace (SP, HTAB).
fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t');
    let Some(start) = start else { return &[] };
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// ASCII case-insensitive equality of header bytes with `lower`, a
/// lower-case literal of letters, digits and `-`.
///
/// Setting bit 0x20 lower-cases a letter and leaves digits and `-` alone;
/// the only other bytes it maps onto those are control bytes (0x0D to `-`,
/// 0x10..=0x19 to digits), which httparse never lets into a header name or
/// value. Unlike `eq_ignore_ascii_case` the loop has no branch per byte
/// and vectorizes: it cut the decoder's own work on a 6-header POST from
/// about 560 to 460 instructions (callgrind; httparse itself takes 1 400).
#[inline]
fn eq_lower(bytes: &[u8], lower: &[u8]) -> bool {
    debug_assert!(
        lower
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    );
    bytes.len() == lower.len()
        && bytes
            .iter()
            .zip(lower)
            .fold(0u8, |diff, (&b, &l)| diff | ((b | 0x20) ^ l))
            == 0
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
