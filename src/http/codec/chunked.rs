//! Chunked transfer coding (RFC 9112 §7.1): the decoder's progress through
//! a chunked body, resumable at unit boundaries, and the limits on its
//! framing. Part of [`Decoder`]; see the parent module for the calling
//! contract.

use super::{Decoder, HttpError, Limits};

/// Longest chunk-size line (size, extensions and CRLF) accepted.
pub(super) const MAX_CHUNK_LINE: usize = 4096;

/// Most bytes of chunk extensions accepted over one body. Extensions are
/// ignored, so without a cap a client could make us scan gigabytes of them
/// for a one-byte body (hyper caps them the same way).
const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;

/// Chunk framing (size lines, extensions, CRLFs) allowed beyond
/// `Limits::max_body_bytes`. Framing can be 20 times the data it frames
/// (`0000000000000001\r\nx\r\n`), so it is bounded too: real clients
/// send chunks of hundreds of bytes or more and stay far below this.
pub(super) const CHUNK_FRAMING_SLACK: usize = 64 * 1024;

/// Most hex digits in a chunk size; 16 digits fill a `u64`.
const MAX_CHUNK_SIZE_DIGITS: usize = 16;

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
pub(super) struct Chunked {
    /// Offset in `buf` of the next unit.
    pos: usize,
    phase: ChunkPhase,
    extension_bytes: usize,
    framing_bytes: usize,
    trailer_bytes: usize,
}

impl Chunked {
    pub(super) const fn at(pos: usize) -> Chunked {
        Chunked {
            pos,
            phase: ChunkPhase::Size,
            extension_bytes: 0,
            framing_bytes: 0,
            trailer_bytes: 0,
        }
    }
}

impl Default for Chunked {
    fn default() -> Chunked {
        Chunked::at(0)
    }
}

impl Decoder {
    /// Decodes as many chunked units as `buf` holds into `self.body`;
    /// returns the end of the message once the final blank line is read.
    pub(super) fn decode_chunks(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<usize>, HttpError> {
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
pub(super) fn framing_limit(limits: &Limits) -> usize {
    limits.max_body_bytes.saturating_add(CHUNK_FRAMING_SLACK)
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
