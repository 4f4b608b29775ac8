//! The admin thread's `poll(2)` loop and one connection's life: accept
//! (evicting the oldest slow client at [`ADMIN_MAX_CONNECTIONS`]), read
//! and decode one request, hand a mutation to its own thread and wait for
//! its answer without blocking the loop, write, and the head, body and
//! write timeouts.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::endpoints::{checkpoint_answer, error_body, reload_answer};
use super::{
    ADMIN_MAX_CONNECTIONS, Admin, BODY_TIMEOUT, HEAD_TIMEOUT, MODEL_BODY_TIMEOUT, MODEL_MAX_BYTES,
    WRITE_TIMEOUT,
};
use crate::http::{
    ContentType, Decoded, Decoder, HttpDate, Method, ResponseOptions, write_error, write_response,
};
use crate::reload::{ReloadError, Reloaded};

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

/// What a waiting connection's worker sent, once it has: its answer, or
/// `lost()` when it stopped without one; `None` while it is still working.
fn outcome<T>(rx: &crossbeam_channel::Receiver<T>, lost: impl FnOnce() -> T) -> Option<T> {
    match rx.try_recv() {
        Ok(answer) => Some(answer),
        Err(crossbeam_channel::TryRecvError::Empty) => None,
        Err(crossbeam_channel::TryRecvError::Disconnected) => Some(lost()),
    }
}

/// What [`Admin::read`] decided for a connection.
enum Step {
    /// Keep it.
    Keep,
    /// Close it now.
    Close,
}

impl Admin {
    pub(super) fn serve(self, listener: TcpListener, stop: &AtomicBool, draining: &AtomicBool) {
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
            Phase::Checkpoint(rx) => {
                if let Some(result) = outcome(rx, || Err(crate::checkpoint::CommitError::Stopped)) {
                    let (status, body) = checkpoint_answer(result);
                    c.respond(status, ContentType::Json, &body, false, None);
                }
                Step::Keep
            }
            Phase::Reload(rx) => {
                let lost = || {
                    Err(ReloadError::Shards(
                        "the reload thread stopped without an answer".to_string(),
                    ))
                };
                if let Some(result) = outcome(rx, lost) {
                    let (status, body) = reload_answer(result);
                    c.respond(status, ContentType::Json, &body, false, None);
                }
                Step::Keep
            }
            Phase::Model(rx) => {
                let lost = || {
                    (
                        500,
                        error_body("the model swap thread stopped without an answer"),
                    )
                };
                if let Some((status, body)) = outcome(rx, lost) {
                    c.respond(status, ContentType::Json, &body, false, None);
                }
                Step::Keep
            }
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
                                // Compiling runs in idle time, as a model swap does.
                                crate::sys::run_when_idle();
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
                            // Loading and checking a model takes ~20 ms of CPU
                            // (the tree fixtures); at the shards' priority it
                            // took that from a shard on the same core and moved
                            // serving p99 2.85x during swaps (latency suite,
                            // `model_swap`). SCHED_IDLE runs it in idle time.
                            crate::sys::run_when_idle();
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
}
