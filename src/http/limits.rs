//! Per-connection and per-shard HTTP limits, all on by default.

use std::time::Duration;

/// Limits applied to every connection of a shard. Every field documents its
/// default; all are configurable in the `[limits]` table of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line + headers) in bytes; beyond it the
    /// request is answered 431. Default 16 KiB.
    pub max_header_bytes: usize,
    /// Largest request body in bytes (declared or, for chunked bodies,
    /// decoded); beyond it the request is answered 413. Default 1 MiB.
    pub max_body_bytes: usize,
    /// Most headers in one request; beyond it the request is answered 431.
    /// Default 64.
    pub max_headers: usize,
    /// Time from a request's first byte until its head is complete; beyond it
    /// the connection is answered 408 and closed. Default 10 s.
    pub header_timeout: Duration,
    /// Time from a complete head until the body is complete; beyond it the
    /// connection is answered 408 and closed. Default 30 s.
    pub body_timeout: Duration,
    /// Time a keep-alive connection may sit idle between requests before it
    /// is closed silently. Default 60 s.
    pub idle_timeout: Duration,
    /// Open connections per shard; a connection beyond it is answered 503
    /// and closed. Default 10 000.
    pub max_connections: usize,
    /// On shutdown, how long in-flight requests may take to finish before
    /// their connections are closed. Default 10 s.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            max_headers: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(10),
        }
    }
}
