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

pub mod codec;
pub mod date;
pub mod error;
pub mod limits;
pub mod response;

pub use codec::{Decoded, Decoder, MAX_HEADERS, Method, Request, Version, max_request_bytes};
pub use date::HttpDate;
pub use error::HttpError;
pub use limits::Limits;
pub use response::{
    CONTINUE, ContentType, ResponseOptions, write_error, write_head, write_response,
};
