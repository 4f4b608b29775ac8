//! HTTP/1.1 over httparse: the request codec, responses and limits.

pub mod limits;

pub use limits::Limits;
