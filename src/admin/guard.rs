//! Who may call a mutating admin endpoint (`POST /checkpoint`,
//! `POST /reload`, `PUT /models/<step>`): the [`Guard`] chosen from the
//! configuration and the bound address, the [`AdminToken`] compared in
//! constant time, and the two headers it reads (`Authorization: Bearer`,
//! `X-Coreline-Admin`).

use super::{ADMIN_HEADER, Admin};

/// The admin bearer token (`[service] admin_token_file`). Its `Debug`
/// never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token (already read and checked by the configuration).
    pub fn new(token: String) -> AdminToken {
        AdminToken(token)
    }

    /// Constant-time comparison with a presented token.
    fn matches(&self, presented: &[u8]) -> bool {
        let want = self.0.as_bytes();
        let mut diff = want.len() ^ presented.len();
        for (i, &b) in want.iter().enumerate() {
            diff |= usize::from(b ^ presented.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Who may call mutating admin endpoints.
#[derive(Debug, Clone)]
pub(super) enum Guard {
    /// `Authorization: Bearer <token>`.
    Token(AdminToken),
    /// `X-Coreline-Admin` on a loopback admin address.
    Loopback,
    /// Nobody: the admin address is not loopback and no token is set.
    Closed(std::net::IpAddr),
}

impl Guard {
    /// `Ok` when the request head may mutate; else the status and why.
    pub(super) fn check(&self, head: &[u8]) -> Result<(), (u16, String)> {
        match self {
            Guard::Token(token) => {
                if bearer(head).is_some_and(|t| token.matches(t)) {
                    Ok(())
                } else {
                    Err((
                        401,
                        "mutating admin requests need `Authorization: Bearer <token>` with the token of [service] admin_token_file".into(),
                    ))
                }
            }
            Guard::Loopback if admin_header(head) => Ok(()),
            Guard::Loopback => Err((
                403,
                format!(
                    "mutating admin requests (POST /checkpoint, POST /reload, PUT /models) need the header `{ADMIN_HEADER}: 1` (they must not be possible from a web page)"
                ),
            )),
            Guard::Closed(ip) => Err((
                403,
                format!(
                    "mutating admin requests are refused: the admin port binds {ip}, not a loopback address, and no [service] admin_token_file is set"
                ),
            )),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, if any.
fn bearer(head: &[u8]) -> Option<&[u8]> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?;
    let value = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))?
        .value;
    let rest = value.trim_ascii();
    if rest.len() > 7 && rest[..7].eq_ignore_ascii_case(b"bearer ") {
        Some(rest[7..].trim_ascii())
    } else {
        None
    }
}

impl Admin {
    /// Who may mutate, given the configuration being served (a reload that
    /// changes `admin_token_file` rotates the token) and the bound address.
    pub(super) fn guard(&self) -> Guard {
        match (&self.plan().config.service.admin_token, self.addr) {
            (Some(t), _) => Guard::Token(t.clone()),
            (None, Some(a)) if !a.ip().is_loopback() => Guard::Closed(a.ip()),
            (None, _) => Guard::Loopback,
        }
    }
}

/// Whether a request head carries `X-Coreline-Admin` (any non-empty value;
/// its presence is what a cross-origin page cannot forge).
fn admin_header(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(head).is_err() {
        return false;
    }
    req.headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case(ADMIN_HEADER) && !h.value.trim_ascii().is_empty())
}
