//! The request head: httparse into a stack array, then the framing rules
//! of RFC 9112 §6 (`Content-Length`, `Transfer-Encoding`), the target
//! split into path and query, `Host`, `Connection`, `Expect` and
//! `X-Request-Id`. Part of [`Decoder`]; see the parent module for the
//! calling contract.

use std::mem::MaybeUninit;

use super::chunked::Chunked;
use super::{
    BODY_KEEP, Decoder, Framing, Head, HttpError, Limits, MAX_HEADERS, Method, PathAt, Version,
};

impl Decoder {
    /// Parses the head of a new request, or returns `None` if it is not all
    /// in `buf` yet.
    pub(super) fn parse_head<'b>(
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
                12 if request_id.1 == 0 && eq_lower(name, b"x-request-id") => {
                    let value = trim(header.value);
                    // httparse's values borrow `window`, a prefix of `buf`
                    // (an empty value's pointer may not: skip it).
                    let start = (value.as_ptr() as usize).wrapping_sub(window.as_ptr() as usize);
                    if !value.is_empty() && start + value.len() <= window.len() {
                        request_id = (start, start + value.len());
                    }
                }
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
}

/// Whether `window` contains the empty line that ends a head, searching
/// from where an earlier search of `scanned` bytes stopped. httparse accepts
/// CRLF or a bare LF as a line end, so the head ends at LF LF or LF CR LF.
pub(super) fn has_head_end(window: &[u8], scanned: usize) -> bool {
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
pub(super) fn eq_lower(bytes: &[u8], lower: &[u8]) -> bool {
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
