//! Response framing: where one HTTP/1.1 response ends in a byte stream, so that
//! pipelined and keep-alive responses are counted exactly.
//!
//! Message length follows RFC 9112 §6.3, in its order:
//! 1. 1xx, 204 and 304 responses have no body;
//! 2. `Transfer-Encoding: chunked` is decoded chunk by chunk;
//! 3. otherwise `Content-Length` gives the body length;
//! 4. a keep-alive response with neither cannot be framed and is an error
//!    (reading to close would stall the connection it is measured on).
//!
//! An incomplete response is `Ok(None)`, not an error.

use std::fmt;

/// One complete response at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed {
    /// Status code.
    pub status: u16,
    /// Bytes the response occupies (head + body).
    pub len: usize,
    /// The server said `Connection: close`.
    pub close: bool,
}

/// Why a response could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The status line or headers are not valid HTTP/1.1.
    Head(httparse::Error),
    /// `Content-Length` is not a decimal number.
    ContentLength,
    /// A chunk-size line is not hexadecimal, or a chunk lacks its CRLF.
    Chunk,
    /// Neither `Content-Length` nor chunked encoding on a body-bearing status.
    NoLength,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Head(e) => write!(f, "malformed response head: {e}"),
            FrameError::ContentLength => write!(f, "Content-Length is not a decimal number"),
            FrameError::Chunk => write!(f, "malformed chunked body"),
            FrameError::NoLength => write!(f, "response has neither Content-Length nor chunked"),
        }
    }
}

/// Index just past the next `\r\n` at or after `from`.
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p + 2)
}

/// Length of the chunked body starting at `buf[0]`, if complete.
fn chunked_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let mut pos = 0;
    loop {
        let Some(end) = line_end(buf, pos) else {
            return Ok(None);
        };
        let line = &buf[pos..end - 2];
        let digits = line.split(|&b| b == b';').next().unwrap_or(line);
        let digits = std::str::from_utf8(digits).map_err(|_| FrameError::Chunk)?;
        let size = usize::from_str_radix(digits.trim(), 16).map_err(|_| FrameError::Chunk)?;
        pos = end;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(end) = line_end(buf, pos) else {
                    return Ok(None);
                };
                let empty = end - pos == 2;
                pos = end;
                if empty {
                    return Ok(Some(pos));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(FrameError::Chunk);
        }
        pos += size + 2;
    }
}

/// Frames the response at the start of `buf`: `Ok(None)` if it is incomplete.
pub fn frame_response(buf: &[u8]) -> Result<Option<Framed>, FrameError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf).map_err(FrameError::Head)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.unwrap_or(0);
    let mut close = false;
    let mut chunked = false;
    let mut content_length = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let s = std::str::from_utf8(h.value).map_err(|_| FrameError::ContentLength)?;
            content_length = Some(
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| FrameError::ContentLength)?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.trim_ascii().eq_ignore_ascii_case(b"close");
        }
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        0
    } else if chunked {
        match chunked_len(&buf[head..])? {
            Some(n) => n,
            None => return Ok(None),
        }
    } else if let Some(n) = content_length {
        n
    } else {
        return Err(FrameError::NoLength);
    };
    if buf.len() < head + body {
        return Ok(None);
    }
    Ok(Some(Framed {
        status,
        len: head + body,
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 16\r\n\r\n{\"fooLength\":11}";

    #[test]
    fn content_length_responses_are_framed_back_to_back() {
        let mut two = OK.to_vec();
        two.extend_from_slice(
            b"HTTP/1.1 422 Unprocessable Entity\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let first = frame_response(&two).unwrap().unwrap();
        assert_eq!(
            first,
            Framed {
                status: 200,
                len: OK.len(),
                close: false
            }
        );
        let second = frame_response(&two[first.len..]).unwrap().unwrap();
        assert_eq!(second.status, 422);
        assert!(second.close);
        assert_eq!(first.len + second.len, two.len());
    }

    #[test]
    fn incomplete_is_not_an_error() {
        for cut in 0..OK.len() {
            assert_eq!(frame_response(&OK[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=1\r\nabcd\r\n2\r\nef\r\n0\r\nT: v\r\n\r\nNEXT";
        let f = frame_response(r).unwrap().unwrap();
        assert_eq!(f.len, r.len() - 4);
        for cut in 0..r.len() - 4 {
            assert_eq!(frame_response(&r[..cut]), Ok(None), "cut at {cut}");
        }
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(frame_response(bad), Err(FrameError::Chunk));
    }

    #[test]
    fn bodiless_statuses_and_errors() {
        let r = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(frame_response(r).unwrap().unwrap().len, r.len());
        let r = b"HTTP/1.1 200 OK\r\n\r\nbody";
        assert_eq!(frame_response(r), Err(FrameError::NoLength));
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n";
        assert_eq!(frame_response(r), Err(FrameError::ContentLength));
        assert!(matches!(
            frame_response(b"SMTP nonsense\r\n\r\n"),
            Err(FrameError::Head(_))
        ));
    }
}
