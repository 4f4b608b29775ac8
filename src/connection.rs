//! One client connection: its reused buffers, the decode-answer-write loop,
//! forwards to owner shards, timeouts and the lingering close.
//!
//! Each accepted connection is a task with reused `Buffers`. It reads
//! whatever the socket has, decodes and answers *every* complete request in
//! the buffer (pipelining), appending the responses to one output buffer, and
//! writes them with one `write`: a pipelined burst costs one read and one
//! write. Latency is recorded per request from the moment it was complete in
//! the buffer to the moment its response was handed to the socket.
//!
//! Every response of a connection, whatever produced it (a route, a decode
//! error, a timeout, a forward's reply, a refused connection), is written by
//! one function, `Buffers::respond`: the head and body go into `out` and
//! the request's latency record into `pending`.
//!
//! # Timeouts without per-read timers
//!
//! A connection publishes its `Phase` (idle, reading a head, reading a
//! body, busy) and a deadline in its `ConnTimer`. The shard's sweep marks
//! an expired one and shuts its socket down for reading, which wakes the
//! parked read with end-of-file. The connection then answers 408 (head or
//! body timeout) or closes silently (idle).

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::access_log::{Asker, Record};
use crate::forward::{ForwardSlot, KeyedOp};
use crate::http::{
    ContentType, Decoded, Decoder, HttpDate, Method, Request, RequestId, ResponseOptions,
    write_response,
};
use crate::pipeline::{Match, Outcome, Router};
use crate::reply::write_error_json;
use crate::row::Row;
use crate::shard::Shard;
use crate::sys::{self, Half};

/// A connection's phase, as the timeout sweep sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Between requests, no byte of the next one yet.
    Idle,
    /// Part of a request head is buffered.
    Head,
    /// The head is complete, the body is arriving.
    Body,
    /// Answering: the connection is writing its responses.
    Busy,
}

/// What a connection shares with its shard's sweep and inboxes.
pub(crate) struct ConnTimer {
    fd: RawFd,
    pub(crate) phase: Cell<Phase>,
    pub(crate) deadline: Cell<Instant>,
    /// Set by the sweep (or drain) when the connection must stop; says which
    /// phase expired.
    expired: Cell<Option<Phase>>,
    /// Where the owner shard's reply to this connection's forward lands.
    pub(crate) forward: ForwardSlot,
}

impl ConnTimer {
    /// A fresh, idle connection's timer.
    pub(crate) fn new(stream: &TcpStream, idle_timeout: Duration) -> ConnTimer {
        ConnTimer {
            fd: stream.as_raw_fd(),
            phase: Cell::new(Phase::Idle),
            deadline: Cell::new(Instant::now() + idle_timeout),
            expired: Cell::new(None),
            forward: ForwardSlot::default(),
        }
    }

    /// Marks the connection expired in `phase` and shuts down `half` of its
    /// socket, which wakes a parked read.
    pub(crate) fn expire(&self, phase: Phase, half: Half) {
        if self.expired.get().is_none() {
            self.expired.set(Some(phase));
            // The peer may have gone already; nothing to do about an error.
            let _ = sys::shutdown(self.fd, half);
        }
    }
}

/// A response in `out`, waiting to be sent: what its latency record and
/// access-log line need.
struct Pending {
    route: usize,
    status: u16,
    /// When the request was complete in the read buffer.
    complete: Instant,
    /// Its access-log line, when the log selects it (latency filled on send).
    line: Option<Record>,
}

/// A connection's reusable buffers.
pub(crate) struct Buffers {
    /// Read buffer; `buf[start..end]` holds bytes not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Responses waiting to be written.
    out: Vec<u8>,
    /// One response body, before its head is written.
    body: Vec<u8>,
    /// The responses in `out`, recorded once `out` is handed to the socket.
    pending: Vec<Pending>,
    /// The access-log part of the request waiting for its owner shard
    /// (kept here, not in the forward, which stays small).
    asker: Option<Asker>,
    /// The row of the request waiting for its owner shard (taken from its
    /// route, so that other requests on this shard can use the route
    /// meanwhile); otherwise a spare the next forward swaps in.
    row: Row,
}

/// Initial read buffer size; grows up to the head + body limits for large
/// requests and shrinks back once the connection is idle.
const READ_BUFFER: usize = 8 * 1024;

impl Buffers {
    pub(crate) fn new() -> Buffers {
        Buffers {
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            out: Vec::with_capacity(READ_BUFFER),
            body: Vec::with_capacity(1024),
            pending: Vec::with_capacity(32),
            asker: None,
            row: Row::default(),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.out.clear();
        self.pending.clear();
        self.asker = None;
        if self.buf.len() > 4 * READ_BUFFER {
            self.buf.truncate(READ_BUFFER);
            self.buf.shrink_to_fit();
        }
    }

    /// Makes room to read more: compacts consumed bytes away, or grows.
    fn make_room(&mut self, limit: usize) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end < self.buf.len() {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return Ok(());
        }
        if self.buf.len() >= limit {
            // The decoder enforces the real limits; this only guards memory.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request larger than the configured limits",
            ));
        }
        let grown = (self.buf.len() * 2).min(limit);
        self.buf.resize(grown, 0);
        Ok(())
    }

    /// The one place a response is written: `body` as a JSON response with
    /// `status` appended to `out`, and its latency record (route index and
    /// the moment the request was complete) queued for when `out` is sent.
    fn respond(
        &mut self,
        date: &HttpDate,
        route: usize,
        status: u16,
        opts: ResponseOptions,
        complete: Instant,
        line: Option<Record>,
    ) {
        write_response(
            &mut self.out,
            date,
            status,
            ContentType::Json,
            &self.body,
            opts,
        );
        if status >= 500 {
            // The error log line a client's X-Request-Id leads to.
            let request_id = opts.request_id.as_ref().map_or("", RequestId::as_str);
            tracing::error!(
                request_id,
                route,
                status,
                body = %String::from_utf8_lossy(&self.body),
                "answered with a server error"
            );
        }
        self.pending.push(Pending {
            route,
            status,
            complete,
            line,
        });
    }

    /// A JSON error response that closes the connection.
    fn respond_error(
        &mut self,
        date: &HttpDate,
        route: usize,
        status: u16,
        message: &str,
        id: RequestId,
        line: Option<Record>,
    ) {
        self.body.clear();
        write_error_json(&mut self.body, message, None);
        self.respond(
            date,
            route,
            status,
            ResponseOptions::closing().with_request_id(id),
            Instant::now(),
            line,
        );
    }
}

/// Serves an accepted connection until it closes, then gives its buffers
/// back to the shard and frees its slot.
pub(crate) async fn run(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    timer: Rc<ConnTimer>,
    slot: usize,
) {
    let buffers = shard
        .buffers
        .borrow_mut()
        .pop()
        .unwrap_or_else(Buffers::new);
    let mut conn = Connection {
        shard: &shard,
        timer: &timer,
        slot,
        bufs: buffers,
        decoder: Decoder::new(),
        in_body: false,
    };
    let outcome = conn.serve(&mut stream).await;
    if let Ok(true) = outcome {
        conn.linger(&mut stream).await;
    }
    let _ = stream.close().await;
    let mut bufs = conn.bufs;
    bufs.reset();
    shard.give_back(bufs);
    shard.conns.borrow_mut()[slot] = None;
    shard.metrics.borrow_mut().open_connections -= 1;
}

/// Answers 503 to a connection beyond `max_connections` and closes it.
pub(crate) async fn reject(shard: Rc<Shard>, mut stream: TcpStream) {
    let mut bufs = shard
        .buffers
        .borrow_mut()
        .pop()
        .unwrap_or_else(Buffers::new);
    let unmatched = shard.metrics.borrow().unmatched();
    bufs.respond_error(
        &shard.date.borrow(),
        unmatched,
        503,
        "too many connections on this shard; retry later",
        shard.next_request_id(),
        // Counted by coreline_rejected_connections_total, not logged: a
        // flood of connections must not turn into a flood of lines.
        None,
    );
    let _ = stream.write_all(&bufs.out).await;
    let _ = stream.close().await;
    bufs.reset();
    shard.give_back(bufs);
}

struct Connection<'s> {
    shard: &'s Shard,
    timer: &'s ConnTimer,
    /// This connection's index in the shard's connection table, where
    /// forwarded replies find it.
    slot: usize,
    bufs: Buffers,
    decoder: Decoder,
    /// The last decode stopped inside a body (for the timeout phase).
    in_body: bool,
}

/// A request waiting for its keyed step to run on the owner shard.
struct Forward {
    /// The routes the request started on: it finishes on them even if a
    /// reload swaps the shard's routes meanwhile.
    router: Rc<RefCell<Router>>,
    /// The plan generation of `router`.
    generation: u64,
    route: usize,
    step: usize,
    owner: usize,
    op: KeyedOp,
    opts: ResponseOptions,
    complete: Instant,
}

/// What the decode loop decided about the connection.
// Lives on the stack for one turn of the read loop; boxing the forward
// would allocate once per forwarded request.
#[allow(clippy::large_enum_variant)]
enum After {
    /// Keep reading.
    Continue,
    /// Write what is pending, then close.
    Close,
    /// Write what is pending, run a forward, then go on decoding.
    Forward(Forward),
}

/// What answering one request came to.
enum Answer {
    /// The body is in `body`: respond with it.
    Done {
        route: usize,
        status: u16,
        opts: ResponseOptions,
    },
    /// The request waits for its owner shard.
    Forward(Forward),
}

impl Connection<'_> {
    /// Serves requests until the connection closes. `Ok(true)` asks for a
    /// lingering close: the response was an error or a `Connection: close`
    /// answer and the peer may still be sending.
    async fn serve(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        let limits = self.shard.limits;
        // Head, body and chunk framing; the decoder reports the precise error
        // long before this guard matters.
        let buffer_limit = crate::http::max_request_bytes(&limits);
        loop {
            self.bufs.make_room(buffer_limit)?;
            let end = self.bufs.end;
            let n = stream.read(&mut self.bufs.buf[end..]).await?;
            if n == 0 {
                self.on_eof(stream).await?;
                return Ok(false);
            }
            self.bufs.end += n;
            let mut after = self.decode_all();
            while let After::Forward(forward) = after {
                // Earlier responses go out now rather than wait for the owner.
                self.flush(stream).await?;
                after = self.run_forward(forward).await;
                if matches!(after, After::Continue) {
                    after = self.decode_all();
                }
            }
            self.flush(stream).await?;
            if matches!(after, After::Close) {
                return Ok(true);
            }
            self.set_read_phase();
        }
    }

    /// Writes pending responses and records their latency.
    async fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        if self.bufs.out.is_empty() {
            return Ok(());
        }
        self.timer.phase.set(Phase::Busy);
        // The responses in `out` were answered on this generation's routes.
        let generation = self.shard.generation.get();
        stream.write_all(&self.bufs.out).await?;
        self.bufs.out.clear();
        self.record(Instant::now(), generation);
        Ok(())
    }

    /// Sends a keyed step to its owner, waits for the reply, and finishes the
    /// request (which may forward again, for a later keyed step).
    async fn run_forward(&mut self, mut forward: Forward) -> After {
        let shard = self.shard;
        // The request's row waits with us; other requests on this shard
        // use the route meanwhile.
        forward
            .router
            .borrow_mut()
            .take_row(forward.route, &mut self.bufs.row);
        loop {
            shard.metrics.borrow_mut().forwarded_requests += 1;
            let sent = Instant::now();
            let reply = shard
                .mesh
                .round_trip(self.slot, &self.timer.forward, forward.owner, forward.op)
                .await;
            forward
                .router
                .borrow_mut()
                .record_step(forward.route, forward.step, sent.elapsed());
            let outcome = {
                let mut state = shard.state.borrow_mut();
                let mut ctx = shard.ctx(&mut state);
                self.bufs.body.clear();
                forward.router.borrow_mut().resume(
                    forward.route,
                    &mut self.bufs.row,
                    forward.step,
                    reply,
                    &mut ctx,
                    &mut self.bufs.body,
                )
            };
            match outcome {
                Outcome::Done(status) => {
                    let line = shard
                        .access_log
                        .line(shard.index, status, self.bufs.asker.take());
                    // The metrics index now: a reload may have come while
                    // the request waited for its owner.
                    let route = shard
                        .metrics_route(forward.route, forward.generation)
                        .unwrap_or_else(|| shard.metrics.borrow().unmatched());
                    self.bufs.respond(
                        &shard.date.borrow(),
                        route,
                        status,
                        forward.opts,
                        forward.complete,
                        line,
                    );
                    return if forward.opts.keep_alive {
                        After::Continue
                    } else {
                        After::Close
                    };
                }
                Outcome::Forward { step, owner, op } => {
                    forward
                        .router
                        .borrow_mut()
                        .take_row(forward.route, &mut self.bufs.row);
                    forward.step = step;
                    forward.owner = owner;
                    forward.op = op;
                }
            }
        }
    }

    /// Records latency of every response just written, answered on plan
    /// `generation`.
    fn record(&mut self, done: Instant, generation: u64) {
        if self.bufs.pending.is_empty() {
            return;
        }
        let mut metrics = self.shard.metrics.borrow_mut();
        for p in &self.bufs.pending {
            let latency = done.duration_since(p.complete);
            let route = self
                .shard
                .metrics_route(p.route, generation)
                .unwrap_or_else(|| metrics.unmatched());
            metrics.routes[route].record(p.status, latency);
            if let Some(mut line) = p.line {
                line.latency = latency;
                if !self.shard.access_log.offer(line) {
                    metrics.access_log_dropped += 1;
                }
            }
        }
        self.bufs.pending.clear();
    }

    /// Publishes the phase the connection is about to wait in.
    fn set_read_phase(&self) {
        let limits = &self.shard.limits;
        let (phase, timeout) = if self.bufs.start == self.bufs.end {
            (Phase::Idle, limits.idle_timeout)
        } else if self.in_body {
            (Phase::Body, limits.body_timeout)
        } else {
            (Phase::Head, limits.header_timeout)
        };
        // A deadline runs from the start of the phase: a slow client that
        // trickles a head byte by byte still hits header_timeout.
        if phase != self.timer.phase.get() {
            self.timer.phase.set(phase);
            self.timer.deadline.set(Instant::now() + timeout);
        }
    }

    /// Closes our sending half, then reads and discards what the peer still
    /// sends for a short while. Closing a socket with unread input makes the
    /// kernel send a reset, which can destroy the error response we just
    /// wrote before the client reads it (RFC 9112 §9.6).
    async fn linger(&mut self, stream: &mut TcpStream) {
        const LINGER: Duration = Duration::from_secs(1);
        const LINGER_BYTES: usize = 256 * 1024;
        if stream.close().await.is_err() {
            return;
        }
        self.timer.phase.set(Phase::Busy);
        self.timer.deadline.set(Instant::now() + LINGER);
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            match stream.read(&mut self.bufs.buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    }

    /// The peer closed, or the sweep shut the socket: say why if it helps.
    async fn on_eof(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        match self.timer.expired.get() {
            Some(Phase::Head) | Some(Phase::Body) => {
                let unmatched = self.shard.metrics.borrow().unmatched();
                let line =
                    self.shard
                        .access_log
                        .line_for(self.shard.index, 408, Method::Other, "", "");
                self.bufs.respond_error(
                    &self.shard.date.borrow(),
                    unmatched,
                    408,
                    "request timed out",
                    self.shard.next_request_id(),
                    line,
                );
                let generation = self.shard.generation.get();
                stream.write_all(&self.bufs.out).await?;
                self.bufs.out.clear();
                self.record(Instant::now(), generation);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Answers every complete request in the buffer, until one needs its
    /// owner shard.
    fn decode_all(&mut self) -> After {
        let shard = self.shard;
        loop {
            let window = &self.bufs.buf[self.bufs.start..self.bufs.end];
            if window.is_empty() {
                return After::Continue;
            }
            match self.decoder.decode(window, &shard.limits) {
                Ok(Decoded::Incomplete {
                    send_continue,
                    in_body,
                }) => {
                    self.in_body = in_body;
                    if send_continue {
                        self.bufs.out.extend_from_slice(crate::http::CONTINUE);
                    }
                    return After::Continue;
                }
                Ok(Decoded::Request { request, consumed }) => {
                    self.in_body = false;
                    let complete = Instant::now();
                    let close =
                        !request.keep_alive || shard.draining.get() || shard.lame_duck.get();
                    let answer = answer(shard, &request, close, complete, &mut self.bufs.body);
                    // Copied now, while the request is in the buffer; only
                    // for answers the access log selects.
                    let line = match &answer {
                        Answer::Done { status, opts, .. } => shard.access_log.line_for(
                            shard.index,
                            *status,
                            request.method,
                            request.path,
                            opts.request_id.as_ref().map_or("", RequestId::as_str),
                        ),
                        Answer::Forward(_) => {
                            self.bufs.asker = shard.access_log.asker(
                                request.method,
                                request.path,
                                std::str::from_utf8(request.request_id).unwrap_or(""),
                            );
                            None
                        }
                    };
                    self.bufs.start += consumed;
                    match answer {
                        Answer::Done {
                            route,
                            status,
                            opts,
                        } => {
                            self.bufs.respond(
                                &shard.date.borrow(),
                                route,
                                status,
                                opts,
                                complete,
                                line,
                            );
                            if close {
                                return After::Close;
                            }
                        }
                        Answer::Forward(forward) => return After::Forward(forward),
                    }
                }
                Err(e) => {
                    let unmatched = shard.metrics.borrow().unmatched();
                    let line =
                        shard
                            .access_log
                            .line_for(shard.index, e.status(), Method::Other, "", "");
                    self.bufs.respond_error(
                        &shard.date.borrow(),
                        unmatched,
                        e.status(),
                        e.message(),
                        shard.next_request_id(),
                        line,
                    );
                    return After::Close;
                }
            }
        }
    }
}

/// Routes and answers one request into `body`. Runs to completion: no
/// await, so it sees a consistent shard; a keyed step owned elsewhere stops
/// it with a forward.
fn answer(
    shard: &Shard,
    request: &Request<'_>,
    close: bool,
    complete: Instant,
    body: &mut Vec<u8>,
) -> Answer {
    let routes = shard.router.borrow();
    let mut router = routes.borrow_mut();
    let unmatched = router.len();
    body.clear();
    let mut opts = ResponseOptions::for_request(request);
    opts.keep_alive = !close;
    opts.request_id =
        Some(RequestId::from_client(request.request_id).unwrap_or_else(|| shard.next_request_id()));
    let (route, status) = match router.find(request.method, request.path) {
        Match::Health => {
            let (status, text): (u16, &[u8]) = if shard.draining.get() || shard.lame_duck.get() {
                (503, br#"{"status":"draining"}"#)
            } else {
                (200, br#"{"status":"ok"}"#)
            };
            body.extend_from_slice(text);
            // Health checks are counted apart: metrics put them right
            // after the unmatched pseudo-route.
            (unmatched + 1, status)
        }
        Match::Route(i) => {
            let mut state = shard.state.borrow_mut();
            let mut ctx = shard.ctx(&mut state);
            match router.handle(i, request, &mut ctx, body) {
                Outcome::Done(status) => (i, status),
                Outcome::Forward { step, owner, op } => {
                    return Answer::Forward(Forward {
                        router: Rc::clone(&routes),
                        generation: shard.generation.get(),
                        route: i,
                        step,
                        owner,
                        op,
                        opts,
                        complete,
                    });
                }
            }
        }
        Match::MethodNotAllowed(path) => {
            write_error_json(body, "method not allowed for this path", None);
            opts = opts.with_allow(router.allow(path));
            (unmatched, 405)
        }
        Match::NotFound => {
            write_error_json(body, "no route for this path", None);
            (unmatched, 404)
        }
    };
    Answer::Done {
        route,
        status,
        opts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_compact_then_grow_then_refuse() {
        let mut b = Buffers::new();
        b.end = b.buf.len();
        b.start = 10;
        b.make_room(1 << 20).unwrap();
        assert_eq!((b.start, b.end), (0, READ_BUFFER - 10));
        b.end = b.buf.len();
        b.make_room(1 << 20).unwrap();
        assert_eq!(b.buf.len(), 2 * READ_BUFFER);
        b.end = b.buf.len();
        assert!(b.make_room(2 * READ_BUFFER).is_err());
        b.reset();
        assert_eq!((b.start, b.end), (0, 0));
    }
}
