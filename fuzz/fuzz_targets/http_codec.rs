//! The HTTP/1.1 request decoder (`coreline::http::Decoder`) on arbitrary
//! bytes: pipelined requests, `Content-Length` and chunked bodies, limits.
//!
//! Input: byte 0 picks the limits and byte 1 the read sizes; the rest is
//! the connection's byte stream. The stream is decoded twice, as one read
//! and as a sequence of small reads the way a shard's connection loop does
//! (unconsumed bytes kept, decoder resumed). Checked:
//!
//! - no panic, `consumed` in `1..=buf.len()`, bodies within the limit, a
//!   `Content-Length` body is the bytes after the head;
//! - both ways decode the same requests (method, path, query, version,
//!   keep-alive, body) in the same order: how a stream is split into reads
//!   must never change how it is framed (request smuggling). At the end of
//!   the stream one way may still wait for bytes where the other already
//!   failed (the head is re-parsed only once its blank line arrives), but
//!   never decode a request the other refused.
#![no_main]

use coreline::http::{Decoded, Decoder, Limits, Method, Version};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    version: Version,
    keep_alive: bool,
    body: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Waiting for more bytes (or nothing left).
    Incomplete,
    /// An error: its status code.
    Error(u16),
}

fn limits(pick: u8) -> Limits {
    let mut limits = Limits::default();
    if pick & 1 != 0 {
        limits.max_header_bytes = 64 + usize::from(pick >> 2) * 4;
    }
    if pick & 2 != 0 {
        limits.max_body_bytes = usize::from(pick >> 3);
        limits.max_headers = 1 + usize::from(pick >> 5);
    }
    limits
}

/// Decodes `stream` as a sequence of reads of the given sizes (cycled).
fn run(stream: &[u8], reads: &[usize], limits: &Limits) -> (Vec<Seen>, End) {
    let mut decoder = Decoder::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut seen = Vec::new();
    let mut step = 0;
    loop {
        match decoder.decode(&buf, limits) {
            Ok(Decoded::Request { request, consumed }) => {
                assert!(
                    consumed > 0 && consumed <= buf.len(),
                    "consumed {consumed} of {}",
                    buf.len()
                );
                assert!(
                    request.body.len() <= limits.max_body_bytes,
                    "body of {} bytes over the {} limit",
                    request.body.len(),
                    limits.max_body_bytes
                );
                seen.push(Seen {
                    method: request.method,
                    path: request.path.to_owned(),
                    query: request.query.to_owned(),
                    version: request.version,
                    keep_alive: request.keep_alive,
                    body: request.body.to_vec(),
                });
                buf.drain(..consumed);
            }
            Ok(Decoded::Incomplete { .. }) => {
                if fed == stream.len() {
                    return (seen, End::Incomplete);
                }
                let n = reads[step % reads.len()].clamp(1, stream.len() - fed);
                step += 1;
                buf.extend_from_slice(&stream[fed..fed + n]);
                fed += n;
            }
            Err(error) => return (seen, End::Error(error.status())),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let limits = limits(data[0]);
    let reads: Vec<usize> = match data[1] {
        0 => vec![1],
        r => vec![usize::from(r & 0x0f) + 1, usize::from(r >> 4) * 7 + 1, 3],
    };
    let stream = &data[2..];
    let whole = run(stream, &[usize::MAX], &limits);
    let pieces = run(stream, &reads, &limits);
    assert_eq!(
        whole.0, pieces.0,
        "the same stream framed differently by read size"
    );
    if whole.1 != pieces.1 {
        // Only "still waiting" against "refused" is allowed at the end.
        assert!(
            whole.1 == End::Incomplete || pieces.1 == End::Incomplete,
            "ends differ: {:?} vs {:?}",
            whole.1,
            pieces.1
        );
    }
});
