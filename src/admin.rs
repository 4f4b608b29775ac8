//! The admin endpoint: `/metrics`, `/stats`, `/health`, `/ready`,
//! `/openapi.json`, `POST /checkpoint`, `GET /models`, `PUT /models/<step>`.
//!
//! It runs on its own plain thread, off every shard's core budget: one
//! `poll(2)` loop over non-blocking sockets, so that no client can hold up
//! another (a balancer's health check must not wait behind an idle or slow
//! connection). Each connection carries one request (`Connection: close`);
//! its head must arrive within [`HEAD_TIMEOUT`] of the accept and its body
//! within [`BODY_TIMEOUT`] of the head, or it is answered 408 and closed. At
//! most [`ADMIN_MAX_CONNECTIONS`] are open; accepting one more closes the
//! oldest connection still sending its request, so a flood of slow clients
//! cannot lock out a health check. `POST /checkpoint` waits for its epoch
//! without blocking the loop.
//!
//! Mutating endpoints (`POST /checkpoint`, `POST /reload`, `PUT /models/<step>`) are protected two ways:
//!
//! - with `[service] admin_token_file`, they need `Authorization: Bearer
//!   <token>` (compared in constant time); the `X-Coreline-Admin` header is
//!   then not enough;
//! - without a token, they need the header `X-Coreline-Admin` (any
//!   non-empty value, e.g. `1`: a browser cannot add a custom header to a
//!   cross-origin request without a CORS preflight, which this endpoint
//!   never grants, so a web page cannot trigger them), and they are open
//!   only when the admin port binds a loopback address; on any other
//!   address they are refused (403) until a token is configured.
//!
//! The start-up log says which of the three applies.
//!
//! `PUT /models/<step>` hands its body to a thread of its own
//! ([`crate::model_control`]) and waits for its answer without blocking the
//! loop, like `POST /checkpoint`; its body may be up to [`MODEL_MAX_BYTES`]
//! and take up to [`MODEL_BODY_TIMEOUT`] to arrive.
//!
//! It never touches shard data directly; each request that needs metrics
//! asks every shard for a [`ShardSnapshot`](crate::metrics::ShardSnapshot)
//! over its command channel and merges the copies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;

use crate::checkpoint::CoordinatorHandle;
use crate::command::{ShardCommand, collect_snapshots, ping_shards};
use crate::http::{
    ContentType, Decoded, Decoder, HttpDate, Method, ResponseOptions, write_error, write_response,
};
use crate::metrics::{ProcessStats, Scrape, render_prometheus, render_stats};
use crate::model_control::ModelControl;
use crate::pipeline::Plan;
use crate::reload::{ReloadError, Reloaded, Reloader};
use crate::reply::write_error_json;

/// How long the admin endpoint waits for shards to answer a snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// Time from accept until the request head is complete.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(1);

/// Time from a complete head until the body is complete.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(1);

/// Time from a complete head until the body of a `PUT /models` is
/// complete (a model file may be megabytes).
pub const MODEL_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest model file `PUT /models` accepts (the admin port's body
/// limit; the service's `max_body_bytes` applies if larger).
pub const MODEL_MAX_BYTES: usize = 256 << 20;

/// Time to write a response before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Admin connections open at once; one more closes the oldest that is
/// still sending its request.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The header a mutating admin request must carry (any non-empty value,
/// e.g. `1`).
pub const ADMIN_HEADER: &str = "X-Coreline-Admin";

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
enum Guard {
    /// `Authorization: Bearer <token>`.
    Token(AdminToken),
    /// `X-Coreline-Admin` on a loopback admin address.
    Loopback,
    /// Nobody: the admin address is not loopback and no token is set.
    Closed(std::net::IpAddr),
}

impl Guard {
    /// `Ok` when the request head may mutate; else the status and why.
    fn check(&self, head: &[u8]) -> Result<(), (u16, String)> {
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

/// Where one admin connection is.
enum Phase {
    /// Reading the request.
    Reading,
    /// `POST /checkpoint` waiting for its epoch (HEAD or not).
    Checkpoint(crossbeam_channel::Receiver<Result<u64, crate::checkpoint::CommitError>>),
    /// `POST /reload` waiting for its reload (run on its own thread).
    Reload(crossbeam_channel::Receiver<Result<Reloaded, ReloadError>>),
    /// `PUT /models/<step>` waiting for its swap thread.
    Model(crossbeam_channel::Receiver<(u16, Vec<u8>)>),
    /// Writing `out[written..]`, then closing.
    Writing,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    len: usize,
    decoder: Decoder,
    accepted: Instant,
    /// When the head was complete (a body is being read).
    head_done: Option<Instant>,
    out: Vec<u8>,
    written: usize,
    phase: Phase,
    /// When writing started.
    writing_since: Option<Instant>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: vec![0; 4096],
            len: 0,
            decoder: Decoder::new(),
            accepted: Instant::now(),
            head_done: None,
            out: Vec::new(),
            written: 0,
            phase: Phase::Reading,
            writing_since: None,
        }
    }

    fn respond(
        &mut self,
        status: u16,
        ct: ContentType,
        body: &[u8],
        head: bool,
        allow: Option<&'static str>,
    ) {
        let mut opts = ResponseOptions::closing();
        opts.head = head;
        opts.allow = allow;
        self.out.clear();
        write_response(
            &mut self.out,
            &HttpDate::new(SystemTime::now()),
            status,
            ct,
            body,
            opts,
        );
        self.start_writing();
    }

    fn start_writing(&mut self) {
        self.written = 0;
        self.phase = Phase::Writing;
        self.writing_since = Some(Instant::now());
    }
}

/// What [`Admin::read`] decided for a connection.
enum Step {
    /// Keep it.
    Keep,
    /// Close it now.
    Close,
}

/// The admin endpoint, before it runs.
pub struct Admin {
    plan: Arc<Plan>,
    shards: Vec<Sender<ShardCommand>>,
    coordinator: Option<CoordinatorHandle>,
    /// Hot reload; when present, `plan` is read from it (it changes).
    reloader: Option<Arc<Reloader>>,
    /// Live model swaps (`PUT /models`, `GET /models`).
    models: Option<Arc<ModelControl>>,
    started: Instant,
    /// Wall-clock time of `started`, for `process_start_time_seconds`.
    started_at: SystemTime,
    /// The bound address, once spawned.
    addr: Option<SocketAddr>,
}

/// A running admin endpoint.
pub struct AdminHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// An admin endpoint for a plan's shards.
    pub fn new(
        plan: Arc<Plan>,
        shards: Vec<Sender<ShardCommand>>,
        coordinator: Option<CoordinatorHandle>,
    ) -> Admin {
        Admin {
            plan,
            shards,
            coordinator,
            reloader: None,
            models: None,
            started: Instant::now(),
            started_at: SystemTime::now(),
            addr: None,
        }
    }

    /// Serves `POST /reload` with `reloader`, and the plan it serves.
    pub fn with_reloader(mut self, reloader: Arc<Reloader>) -> Admin {
        self.reloader = Some(reloader);
        self
    }

    /// The plan being served (the reloaded one after a reload).
    fn plan(&self) -> Arc<Plan> {
        match &self.reloader {
            Some(r) => r.plan(),
            None => self.plan.clone(),
        }
    }

    /// Serves `GET /models` and `PUT /models/<step>` with `models`.
    pub fn with_models(mut self, models: Arc<ModelControl>) -> Admin {
        self.models = Some(models);
        self
    }

    fn checkpoint_json(&self) -> serde_json::Value {
        match &self.coordinator {
            None => serde_json::Value::Null,
            Some(c) => {
                let s = c.stats();
                serde_json::json!({
                    "restored_epoch": s.restored_epoch,
                    "last_committed_epoch": s.last_committed_epoch,
                    "last_kind": s.last_kind.map(|k| format!("{k:?}").to_lowercase()),
                    "last_commit_unix_ms": s.last_commit_unix_ms,
                    "last_duration_ms": s.last_duration.as_secs_f64() * 1000.0,
                    "last_bytes": s.last_bytes,
                    "last_rows": s.last_rows,
                    "committed": s.committed,
                    "failures": s.failures,
                    "last_error": s.last_error,
                    "last_error_unix_ms": s.last_error_unix_ms,
                    "last_success_unix_ms": s.last_commit_unix_ms,
                    "unchanged": s.unchanged,
                    "verified_epoch": s.verified_epoch,
                    "set_aside": s.set_aside,
                    "in_flight": s.in_flight,
                })
            }
        }
    }

    /// Who may mutate, given the configuration and the bound address.
    fn guard(&self) -> Guard {
        match (&self.plan.config.service.admin_token, self.addr) {
            (Some(t), _) => Guard::Token(t.clone()),
            (None, Some(a)) if !a.ip().is_loopback() => Guard::Closed(a.ip()),
            (None, _) => Guard::Loopback,
        }
    }

    /// Serves on `listener` from a new thread.
    pub fn spawn(mut self, listener: TcpListener) -> AdminHandle {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        self.addr = Some(addr);
        match self.guard() {
            Guard::Token(_) => tracing::info!(
                %addr,
                "admin: mutating endpoints need the bearer token of admin_token_file"
            ),
            Guard::Loopback => tracing::info!(
                %addr,
                "admin: mutating endpoints are open without a token (loopback address; header {ADMIN_HEADER} required)"
            ),
            Guard::Closed(ip) => tracing::warn!(
                %addr,
                "admin: mutating endpoints are refused: {ip} is not loopback and no admin_token_file is set"
            ),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let draining = Arc::new(AtomicBool::new(false));
        let (s, d) = (stop.clone(), draining.clone());
        let thread = std::thread::Builder::new()
            .name("coreline-admin".into())
            .spawn(move || self.serve(listener, &s, &d))
            .expect("spawning the admin thread");
        AdminHandle {
            addr,
            stop,
            draining,
            thread: Some(thread),
        }
    }

    fn serve(self, listener: TcpListener, stop: &AtomicBool, draining: &AtomicBool) {
        use nix::poll::{PollFd, PollFlags, poll};
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        let mut conns: Vec<Conn> = Vec::new();
        let mut accept_paused_until: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            // Wait for any socket, at most 20 ms (so stop is prompt and
            // waits for checkpoints and timeouts are checked).
            let ready: Vec<bool> = {
                let accepting = accept_paused_until.is_none_or(|t| Instant::now() >= t);
                let mut fds = Vec::with_capacity(conns.len() + 1);
                fds.push(PollFd::new(
                    &listener,
                    if accepting {
                        PollFlags::POLLIN
                    } else {
                        PollFlags::empty()
                    },
                ));
                for c in &conns {
                    let events = match c.phase {
                        Phase::Reading => PollFlags::POLLIN,
                        Phase::Checkpoint(_) | Phase::Reload(_) | Phase::Model(_) => {
                            PollFlags::empty()
                        }
                        Phase::Writing => PollFlags::POLLOUT,
                    };
                    fds.push(PollFd::new(&c.stream, events));
                }
                match poll(&mut fds, 20) {
                    Ok(_) => fds
                        .iter()
                        .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                        .collect(),
                    Err(_) => vec![false; fds.len()],
                }
            };
            let draining = draining.load(Ordering::Relaxed);
            // Serve the open connections first, then accept: a health check
            // already accepted never waits behind the accept of a flood.
            // Backwards, so that `swap_remove` only moves a connection
            // already handled this round.
            for i in (0..conns.len()).rev() {
                let was_ready = ready.get(i + 1).copied().unwrap_or(false);
                if let Step::Close = self.advance(&mut conns[i], was_ready, draining) {
                    conns.swap_remove(i);
                }
            }
            if ready.first().copied().unwrap_or(false) {
                loop {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if stream.set_nonblocking(true).is_err() {
                                continue;
                            }
                            let _ = stream.set_nodelay(true);
                            if conns.len() >= ADMIN_MAX_CONNECTIONS {
                                // Evict the oldest connection still sending
                                // its request (a slow or idle client).
                                let victim = conns
                                    .iter()
                                    .enumerate()
                                    .filter(|(_, c)| matches!(c.phase, Phase::Reading))
                                    .min_by_key(|(_, c)| c.accepted)
                                    .map(|(i, _)| i);
                                match victim {
                                    Some(v) => {
                                        conns.swap_remove(v);
                                    }
                                    None => continue, // all busy: drop the new one
                                }
                            }
                            conns.push(Conn::new(stream));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // Out of descriptors, typically: pause accepting
                            // (the open connections are still served).
                            tracing::debug!(error = %e, "admin accept failed");
                            accept_paused_until = Some(Instant::now() + Duration::from_millis(50));
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Moves one connection on: reads, answers, writes, times out.
    fn advance(&self, c: &mut Conn, ready: bool, draining: bool) -> Step {
        let now = Instant::now();
        match &c.phase {
            Phase::Reading => {
                let deadline = match c.head_done {
                    None => c.accepted + HEAD_TIMEOUT,
                    Some(t) if c.buf.starts_with(b"PUT /models/") => t + MODEL_BODY_TIMEOUT,
                    Some(t) => t + BODY_TIMEOUT,
                };
                if ready && let Some(step) = self.read(c, draining) {
                    return step;
                }
                if matches!(c.phase, Phase::Reading) && now >= deadline {
                    let message = if c.head_done.is_none() {
                        "request head not received in time"
                    } else {
                        "request body not received in time"
                    };
                    c.respond(408, ContentType::Json, &error_body(message), false, None);
                }
                Step::Keep
            }
            Phase::Checkpoint(rx) => match rx.try_recv() {
                Ok(result) => {
                    let (status, body) = checkpoint_answer(result);
                    c.respond(status, ContentType::Json, &body, false, None);
                    Step::Keep
                }
                Err(crossbeam_channel::TryRecvError::Empty) => Step::Keep,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    let (status, body) =
                        checkpoint_answer(Err(crate::checkpoint::CommitError::Stopped));
                    c.respond(status, ContentType::Json, &body, false, None);
                    Step::Keep
                }
            },
            Phase::Reload(rx) => match rx.try_recv() {
                Ok(result) => {
                    let (status, body) = reload_answer(result);
                    c.respond(status, ContentType::Json, &body, false, None);
                    Step::Keep
                }
                Err(crossbeam_channel::TryRecvError::Empty) => Step::Keep,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    let (status, body) = reload_answer(Err(ReloadError::Shards(
                        "the reload thread stopped without an answer".to_string(),
                    )));
                    c.respond(status, ContentType::Json, &body, false, None);
                    Step::Keep
                }
            },
            Phase::Model(rx) => match rx.try_recv() {
                Ok((status, body)) => {
                    c.respond(status, ContentType::Json, &body, false, None);
                    Step::Keep
                }
                Err(crossbeam_channel::TryRecvError::Empty) => Step::Keep,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    c.respond(
                        500,
                        ContentType::Json,
                        &error_body("the model swap thread stopped without an answer"),
                        false,
                        None,
                    );
                    Step::Keep
                }
            },
            Phase::Writing => {
                if c.writing_since.is_some_and(|t| now >= t + WRITE_TIMEOUT) {
                    return Step::Close;
                }
                if !ready {
                    return Step::Keep;
                }
                loop {
                    match c.stream.write(&c.out[c.written..]) {
                        Ok(0) => return Step::Close,
                        Ok(n) => {
                            c.written += n;
                            if c.written == c.out.len() {
                                let _ = c.stream.shutdown(std::net::Shutdown::Write);
                                return Step::Close;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Keep,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return Step::Close,
                    }
                }
            }
        }
    }

    /// Reads what is there and decodes; answers a complete request. `None`
    /// keeps the connection in its phase.
    fn read(&self, c: &mut Conn, draining: bool) -> Option<Step> {
        let mut limits = self.plan().config.limits;
        limits.max_body_bytes = limits.max_body_bytes.max(MODEL_MAX_BYTES);
        // A client may half-close right after its request: answer it.
        let mut eof = false;
        loop {
            if c.len == c.buf.len() {
                if c.buf.len() >= limits.max_header_bytes + limits.max_body_bytes + 4096 {
                    return Some(Step::Close);
                }
                c.buf.resize(c.buf.len() * 2, 0);
            }
            match c.stream.read(&mut c.buf[c.len..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => c.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Some(Step::Close),
            }
        }
        let date = HttpDate::new(SystemTime::now());
        match c.decoder.decode(&c.buf[..c.len], &limits) {
            Ok(Decoded::Incomplete { .. }) if eof => Some(Step::Close),
            Ok(Decoded::Incomplete {
                send_continue,
                in_body,
            }) => {
                if in_body && c.head_done.is_none() {
                    c.head_done = Some(Instant::now());
                }
                if send_continue {
                    // Best effort: a client that cannot take 25 bytes now
                    // sends its body anyway after its own timeout.
                    let _ = c.stream.write(crate::http::CONTINUE);
                }
                None
            }
            Ok(Decoded::Request { request, consumed }) => {
                let (method, head) = (request.method, request.method == Method::Head);
                if method == Method::Post && request.path == "/reload" {
                    if let Err((status, why)) = self.guard().check(&c.buf[..consumed]) {
                        c.respond(status, ContentType::Json, &error_body(&why), false, None);
                        return Some(Step::Keep);
                    }
                    if let Some(reloader) = &self.reloader {
                        // Compiling may take a while (models): off this loop,
                        // so health checks and scrapes are not held up.
                        let (tx, rx) = crossbeam_channel::bounded(1);
                        let reloader = reloader.clone();
                        let spawned = std::thread::Builder::new()
                            .name("coreline-reload".into())
                            .spawn(move || {
                                let result = reloader.reload();
                                crate::runtime::log_reload("POST /reload", result.clone());
                                let _ = tx.send(result);
                            });
                        if spawned.is_ok() {
                            c.phase = Phase::Reload(rx);
                            return Some(Step::Keep);
                        }
                    }
                }
                if method == Method::Post && request.path == "/checkpoint" {
                    let verdict = self.guard().check(&c.buf[..consumed]);
                    let authorised = verdict.is_ok();
                    let rx = match (&self.coordinator, authorised) {
                        (Some(coordinator), true) => Some(coordinator.request_checkpoint()),
                        _ => None,
                    };
                    if let Some(rx) = rx {
                        c.phase = Phase::Checkpoint(rx);
                        return Some(Step::Keep);
                    }
                    if let Err((status, why)) = verdict {
                        c.respond(status, ContentType::Json, &error_body(&why), false, None);
                        return Some(Step::Keep);
                    }
                }
                if let Some(step) = request.path.strip_prefix("/models/") {
                    if method != Method::Put {
                        c.respond(
                            405,
                            ContentType::Json,
                            &error_body("use PUT with the model file as the body"),
                            head,
                            Some("PUT"),
                        );
                        return Some(Step::Keep);
                    }
                    if let Err((status, why)) = self.guard().check(&c.buf[..consumed]) {
                        c.respond(status, ContentType::Json, &error_body(&why), false, None);
                        return Some(Step::Keep);
                    }
                    let Some(models) = self.models.clone() else {
                        c.respond(
                            501,
                            ContentType::Json,
                            &error_body("model swaps are not available in this service"),
                            false,
                            None,
                        );
                        return Some(Step::Keep);
                    };
                    let step = percent_encoding::percent_decode_str(step)
                        .decode_utf8_lossy()
                        .into_owned();
                    let format = request
                        .query
                        .split('&')
                        .find_map(|p| p.strip_prefix("format="))
                        .map(str::to_owned);
                    let content_type = request
                        .header("content-type")
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(str::to_owned);
                    let body = request.body.to_vec();
                    let (tx, rx) = crossbeam_channel::bounded(1);
                    let spawned = std::thread::Builder::new()
                        .name("coreline-model-swap".into())
                        .spawn(move || {
                            let answer = models.put(
                                &step,
                                format.as_deref(),
                                content_type.as_deref(),
                                &body,
                            );
                            let _ = tx.send(answer);
                        });
                    if spawned.is_err() {
                        c.respond(
                            500,
                            ContentType::Json,
                            &error_body("cannot start the model swap thread"),
                            false,
                            None,
                        );
                        return Some(Step::Keep);
                    }
                    c.phase = Phase::Model(rx);
                    return Some(Step::Keep);
                }
                let path = request.path.to_owned();
                let query = request.query.to_owned();
                let (status, ct, body, allow) = self.route(method, &path, &query, draining);
                c.respond(status, ct, &body, head, allow);
                Some(Step::Keep)
            }
            Err(e) => {
                c.out.clear();
                write_error(&mut c.out, &date, e);
                c.start_writing();
                Some(Step::Keep)
            }
        }
    }

    fn route(
        &self,
        method: Method,
        path: &str,
        query: &str,
        draining: bool,
    ) -> (u16, ContentType, Vec<u8>, Option<&'static str>) {
        let get = matches!(method, Method::Get | Method::Head);
        let plan = self.plan();
        let name = &plan.config.service.name;
        match path {
            "/metrics" | "/stats" | "/health" | "/ready" | "/openapi.json" | "/models" if !get => (
                405,
                ContentType::Json,
                error_body("use GET"),
                Some("GET, HEAD"),
            ),
            "/metrics" => {
                let openmetrics = query.split('&').any(|p| p == "format=openmetrics");
                let scrape = Scrape {
                    service: name.clone(),
                    shards_total: self.shards.len(),
                    snapshots: collect_snapshots(&self.shards, SNAPSHOT_WAIT),
                    checkpoint: self.coordinator.as_ref().map(CoordinatorHandle::stats),
                    process: ProcessStats::read(self.started_at),
                };
                let text = render_prometheus(scrape, openmetrics);
                let ct = if openmetrics {
                    ContentType::OpenMetrics
                } else {
                    ContentType::Prometheus
                };
                (200, ct, text.into_bytes(), None)
            }
            "/stats" => {
                let snaps = collect_snapshots(&self.shards, SNAPSHOT_WAIT);
                let extra = serde_json::json!({
                    "uptime_seconds": self.started.elapsed().as_secs_f64(),
                    "shards_reporting": snaps.len(),
                    "shards_total": self.shards.len(),
                    "checkpoint": self.checkpoint_json(),
                });
                let text = render_stats(name, &snaps, extra);
                (200, ContentType::Json, text.into_bytes(), None)
            }
            "/health" => (200, ContentType::Json, br#"{"status":"ok"}"#.to_vec(), None),
            "/models" => match &self.models {
                Some(m) => (200, ContentType::Json, m.list(), None),
                None => (200, ContentType::Json, br#"{"models":[]}"#.to_vec(), None),
            },
            "/openapi.json" => (
                200,
                ContentType::Json,
                crate::openapi::document_text(&plan).into_bytes(),
                None,
            ),
            "/ready" => {
                if draining {
                    (
                        503,
                        ContentType::Json,
                        br#"{"ready":false,"reason":"draining"}"#.to_vec(),
                        None,
                    )
                } else {
                    let answered = ping_shards(&self.shards, SNAPSHOT_WAIT);
                    if answered == self.shards.len() {
                        (200, ContentType::Json, br#"{"ready":true}"#.to_vec(), None)
                    } else {
                        (
                            503,
                            ContentType::Json,
                            format!(
                                "{{\"ready\":false,\"reason\":\"{} of {} shards answered\"}}",
                                answered,
                                self.shards.len()
                            )
                            .into_bytes(),
                            None,
                        )
                    }
                }
            }
            "/reload" if method != Method::Post => {
                (405, ContentType::Json, error_body("use POST"), Some("POST"))
            }
            "/reload" => (
                500,
                ContentType::Json,
                error_body("hot reload is not available in this process"),
                None,
            ),
            "/checkpoint" if method != Method::Post => {
                (405, ContentType::Json, error_body("use POST"), Some("POST"))
            }
            "/checkpoint" => match &self.coordinator {
                None => (
                    501,
                    ContentType::Json,
                    error_body("checkpoints are not configured: add a [checkpoint] table"),
                    None,
                ),
                Some(c) => {
                    let (status, body) = checkpoint_answer(c.checkpoint_now());
                    (status, ContentType::Json, body, None)
                }
            },
            _ => (
                404,
                ContentType::Json,
                error_body(
                    "unknown admin path; try /metrics, /stats, /health, /ready, /openapi.json or /models",
                ),
                None,
            ),
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

/// The answer to `POST /reload`: 200 with the generation and the measured
/// pauses, or the reason it was refused (400 with the configuration's
/// errors, file:line:column) while the old plan keeps serving.
fn reload_answer(result: Result<Reloaded, ReloadError>) -> (u16, Vec<u8>) {
    match result {
        Ok(r) => (200, r.to_json().to_string().into_bytes()),
        Err(e) => (e.status(), error_body(&format!("reload refused: {e}"))),
    }
}

/// The answer to `POST /checkpoint`.
fn checkpoint_answer(result: Result<u64, crate::checkpoint::CommitError>) -> (u16, Vec<u8>) {
    match result {
        Ok(epoch) => (200, format!("{{\"epoch\":{epoch}}}").into_bytes()),
        Err(e) => (500, error_body(&format!("checkpoint failed: {e}"))),
    }
}

fn error_body(message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    write_error_json(&mut body, message, None);
    body
}

impl AdminHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on `/ready` answers 503.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Stops the admin thread and waits for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
