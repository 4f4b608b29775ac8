//! HTTP/1.1 over httparse: the request codec, responses and limits.
//!
//! Everything here is sans-IO: the shard's connection loop reads into a
//! reused buffer, hands the unconsumed bytes to a per-connection
//! [`Decoder`], answers each [`Request`] by appending to one output buffer
//! with [`write_response`], and writes that buffer once per read.
//!
//! - [`codec`]: [`Decoder`], [`Decoded`], [`Request`], [`Method`],
//!   [`Version`]; message framing per RFC 9112.
//! - [`error`]: [`HttpError`], each variant with its status code.
//! - [`response`]: status lines, headers and bodies; [`CONTINUE`].
//! - [`date`]: the per-shard cached `Date:` value.
//! - [`limits`]: [`Limits`], the per-connection bounds.
//!
//! Invariant: after an [`HttpError`] the connection is answered with
//! [`write_error`] (which says `Connection: close`) and closed; framing
//! cannot be trusted past a malformed request.
//!
//! One read's worth of the connection loop:
//!
//! ```
//! use coreline::http::{
//!     CONTINUE, ContentType, Decoded, Decoder, HttpDate, Limits, ResponseOptions, write_error,
//!     write_response,
//! };
//!
//! let limits = Limits::default();
//! let date = HttpDate::default();
//! let mut decoder = Decoder::new();
//! // Two pipelined requests, the second not complete yet.
//! let read: &[u8] = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\n";
//! let mut out = Vec::new();
//! let mut start = 0;
//! loop {
//!     match decoder.decode(&read[start..], &limits) {
//!         Ok(Decoded::Request { request, consumed }) => {
//!             let opts = ResponseOptions::for_request(&request);
//!             write_response(&mut out, &date, 200, ContentType::Json, b"{}", opts);
//!             start += consumed;
//!         }
//!         Ok(Decoded::Incomplete { send_continue, .. }) => {
//!             if send_continue {
//!                 out.extend_from_slice(CONTINUE);
//!             }
//!             break; // write `out`, read more, call again on `read[start..]`
//!         }
//!         Err(error) => {
//!             write_error(&mut out, &date, error);
//!             break; // write `out`, then close
//!         }
//!     }
//! }
//! assert_eq!(start, 33);
//! assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
//! ```

pub mod codec;
pub mod date;
pub mod error;
pub mod limits;
pub mod response;

pub use codec::{
    Decoded, Decoder, HeaderLines, MAX_HEADERS, Method, Request, Version, header_name_is,
    max_request_bytes,
};
pub use date::HttpDate;
pub use error::HttpError;
pub use limits::Limits;
pub use response::{
    CONTINUE, ContentType, RequestId, ResponseOptions, write_error, write_head, write_response,
};
