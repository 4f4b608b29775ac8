//! Errors of the request decoder, each with the status it is answered with.
//!
//! Invariant: after any [`HttpError`] the connection's framing can no longer
//! be trusted, so the caller answers [`HttpError::status`] with
//! `Connection: close` and closes the connection.

/// Why a request could not be decoded. Small and `Copy`: it is returned on
/// the hot path and carries only static text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request violates HTTP/1.1 syntax or framing (400). The text says
    /// what was wrong and is safe to show to the client.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The request head exceeds `Limits::max_header_bytes` or carries more
    /// than `Limits::max_headers` headers; or the chunked trailers exceed
    /// `Limits::max_header_bytes` (431).
    #[error(
        "request header fields too large: the head exceeds the header byte or header count limit"
    )]
    HeaderTooLarge,
    /// The declared `Content-Length` or the decoded chunked body exceeds
    /// `Limits::max_body_bytes` (413).
    #[error("request body too large: it exceeds the body byte limit")]
    BodyTooLarge,
    /// The request uses a transfer coding other than `chunked` before its
    /// final `chunked` (501).
    #[error("unsupported transfer coding: only `chunked` is supported")]
    UnsupportedTransferEncoding,
    /// The request line names an HTTP version other than 1.0 or 1.1 (505).
    #[error("unsupported HTTP version: expected HTTP/1.0 or HTTP/1.1")]
    UnsupportedVersion,
}

impl HttpError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::HeaderTooLarge => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::UnsupportedTransferEncoding => 501,
            HttpError::UnsupportedVersion => 505,
        }
    }

    /// A short explanation for the response body, without quotes or
    /// backslashes (it is embedded in JSON as is).
    pub fn message(self) -> &'static str {
        match self {
            HttpError::Malformed(what) => what,
            HttpError::HeaderTooLarge => "request header fields too large",
            HttpError::BodyTooLarge => "request body too large",
            HttpError::UnsupportedTransferEncoding => {
                "unsupported transfer coding, only chunked is supported"
            }
            HttpError::UnsupportedVersion => {
                "unsupported HTTP version, expected HTTP/1.0 or HTTP/1.1"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_messages() {
        assert_eq!(HttpError::Malformed("bad").status(), 400);
        assert_eq!(HttpError::Malformed("bad").message(), "bad");
        assert_eq!(HttpError::HeaderTooLarge.status(), 431);
        assert_eq!(HttpError::BodyTooLarge.status(), 413);
        assert_eq!(HttpError::UnsupportedTransferEncoding.status(), 501);
        assert_eq!(HttpError::UnsupportedVersion.status(), 505);
        assert_eq!(
            HttpError::Malformed("invalid Content-Length").to_string(),
            "malformed request: invalid Content-Length"
        );
    }
}
