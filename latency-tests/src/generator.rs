//! The open-loop load generator: one thread, raw non-blocking TCP, epoll.
//!
//! ## How load is offered
//! A [`Schedule`] fixes every request's *intended* send time before the run.
//! Request `i` is assigned to a connection when its time comes, either
//! round-robin over all connections or, with a key field, to a connection of
//! the port the key hashes to (as a hashing load balancer would). Connections
//! are spread over the target ports round-robin.
//!
//! ## A connection whose previous response is outstanding
//! By default a connection has at most one request in flight (`pipeline = 1`),
//! like a browser or a load balancer's upstream connection: a request that
//! comes due while its connection is busy waits in that connection's backlog
//! and is sent the moment the response arrives. With `pipeline = k` up to `k`
//! requests are written back-to-back without waiting (HTTP/1.1 pipelining).
//! Either way latency is measured from the intended send time, so any delay
//! the server causes (a backlog, a full socket) is charged to the server; the
//! plain service time (actual send → response) is recorded alongside.
//!
//! ## What is recorded
//! For requests whose intended time falls after the warm-up: the corrected
//! latency (response − intended) and the service time (response − sent) of
//! every 2xx response, in nanoseconds; the dispatch lag (when the loop got to
//! the request − intended), which shows whether the generator kept up; and
//! counts of non-2xx statuses, timeouts, connection failures, I/O and framing
//! errors. A request that never completes (timed out, or still queued when the
//! run gives up) is counted as an error *and* recorded in the corrected
//! histogram with the age it had reached, a lower bound of its latency, so an
//! overloaded server cannot look fast by dropping work.
//!
//! ## Closed loop
//! In closed-loop mode each connection keeps `depth` requests in flight and
//! sends the next as soon as one completes, like `wrk`; it measures throughput
//! (and service time), not latency under a given load.

use crate::body::RequestPool;
use crate::framing::{Framed, frame_response};
use crate::schedule::{Arrival, Schedule};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Requests at `rate` per second, whatever the server does.
    Open {
        /// Requests per second.
        rate: f64,
        /// Constant or Poisson gaps.
        arrival: Arrival,
    },
    /// Each connection keeps `depth` requests in flight.
    Closed {
        /// Requests in flight per connection.
        depth: usize,
    },
}

/// How requests are spread over connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Request `i` goes to connection `i mod N`.
    RoundRobin,
    /// The request's key hash picks the port; round-robin among its connections.
    KeyHash,
    /// The port after the one `KeyHash` picks (a coreline shard that does not
    /// own the key, which forwards it).
    KeyOther,
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Target host (IPv4 literal or name).
    pub host: String,
    /// Target ports; connections are spread over them round-robin.
    pub ports: Vec<u16>,
    /// Number of connections.
    pub connections: usize,
    /// Open or closed loop.
    pub mode: Mode,
    /// Max requests in flight per connection in open-loop mode (1 = wait).
    pub pipeline: usize,
    /// Measured duration (after warm-up).
    pub duration: Duration,
    /// Warm-up at the same load, not recorded.
    pub warmup: Duration,
    /// A request outstanding this long is a timeout; also the drain limit.
    pub timeout: Duration,
    /// Request → connection assignment.
    pub balance: Balance,
    /// Seed of the arrival process.
    pub seed: u64,
    /// Busy-poll instead of sleeping in `epoll_wait` between sends: the most
    /// precise timestamps, at the price of one fully used core.
    pub spin: bool,
}

/// Histogram bounds: 1 ns .. 100 s, 3 significant digits; never resizes.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("static histogram bounds")
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct RunStats {
    /// Response − intended send time, ns (coordinated-omission corrected).
    pub corrected: Histogram<u64>,
    /// Response − actual send time, ns.
    pub service: Histogram<u64>,
    /// When the loop dispatched a request − its intended time, ns.
    pub dispatch_lag: Histogram<u64>,
    /// Counters.
    pub counts: Counts,
    /// Measured seconds (the duration setting).
    pub seconds: f64,
    /// Requests per second offered in the measured window.
    pub offered_rate: f64,
    /// Responses per second received for measured requests.
    pub achieved_rate: f64,
    /// Share of the run the generator was not handling responses or writing
    /// requests (it was polling, or sleeping), percent: high means the
    /// server, not the generator, set the pace.
    pub idle_pct: f64,
}

/// Counters of one run. Requests, responses and statuses count the measured
/// window only; lost requests (timeouts, unsent, I/O) count from the warm-up
/// too, so a server that hangs early never yields an error-free run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Requests due in the measured window.
    pub scheduled: u64,
    /// Requests written to a socket.
    pub sent: u64,
    /// Responses received (any status).
    pub completed: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Responses with another status.
    pub non_2xx: u64,
    /// Count per status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests outstanding longer than the timeout.
    pub timeouts: u64,
    /// Requests never sent (still queued at the end).
    pub unsent: u64,
    /// Connects that failed (refused, reset).
    pub connect_failures: u64,
    /// Requests lost to a read/write error or a server close.
    pub io_errors: u64,
    /// Responses that could not be framed.
    pub frame_errors: u64,
}

impl Counts {
    /// Everything that is not a 2xx response in time.
    pub fn errors(&self) -> u64 {
        self.non_2xx
            + self.timeouts
            + self.unsent
            + self.connect_failures
            + self.io_errors
            + self.frame_errors
    }
}

/// A request written and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    intended: u64,
    sent: u64,
    measured: bool,
}

/// A request due but not yet written.
#[derive(Debug, Clone, Copy)]
struct Pending {
    intended: u64,
    request: usize,
    measured: bool,
}

struct Conn {
    port: u16,
    stream: Option<TcpStream>,
    input: Vec<u8>,
    filled: usize,
    output: Vec<u8>,
    written: usize,
    want_write: bool,
    inflight: VecDeque<Inflight>,
    backlog: VecDeque<Pending>,
    retry_at: u64,
}

const READ_CHUNK: usize = 64 * 1024;

/// Thin epoll wrapper.
struct Epoll {
    fd: i32,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall without pointer arguments.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        })
    }

    fn ctl(&self, op: i32, fd: i32, write: bool, token: usize) -> std::io::Result<()> {
        let events = if write {
            (libc::EPOLLIN | libc::EPOLLOUT) as u32
        } else {
            libc::EPOLLIN as u32
        };
        let mut ev = libc::epoll_event {
            events,
            u64: token as u64,
        };
        // SAFETY: `ev` outlives the call; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` (0 = poll); returns the number of events.
    fn wait(&mut self, timeout_ms: i32) -> usize {
        // SAFETY: `events` is a valid buffer of `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                timeout_ms,
            )
        };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this fd and close it exactly once.
        unsafe { libc::close(self.fd) };
    }
}

/// Why a run could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

struct Engine<'a> {
    cfg: &'a LoadConfig,
    pool: &'a RequestPool,
    epoll: Epoll,
    conns: Vec<Conn>,
    by_port: Vec<Vec<usize>>,
    port_rr: Vec<usize>,
    dirty: Vec<usize>,
    start: Instant,
    warmup_end: u64,
    end: u64,
    pipeline: usize,
    closed_depth: usize,
    next_request: usize,
    /// Time spent handling events and writing requests (not polling).
    busy_ns: u64,
    stats: RunStats,
}

fn connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect((host, port))?;
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl<'a> Engine<'a> {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Queues request `p` on connection `c`; it is written by `flush_dirty`.
    fn dispatch(&mut self, c: usize, p: Pending) {
        let conn = &mut self.conns[c];
        conn.backlog.push_back(p);
        if conn.backlog.len() == 1 {
            self.dirty.push(c);
        }
    }

    /// Moves backlog into the output buffer while the pipeline allows, then
    /// writes. One `write` carries every request that became sendable.
    fn pump(&mut self, c: usize, now: u64) {
        let conn = &mut self.conns[c];
        if conn.stream.is_none() {
            return;
        }
        while conn.inflight.len() < self.pipeline {
            let Some(p) = conn.backlog.pop_front() else {
                break;
            };
            conn.output.extend_from_slice(self.pool.request(p.request));
            conn.inflight.push_back(Inflight {
                intended: p.intended,
                sent: now,
                measured: p.measured,
            });
            if p.measured {
                self.stats.counts.sent += 1;
            }
        }
        self.write(c, now);
    }

    fn write(&mut self, c: usize, now: u64) {
        let conn = &mut self.conns[c];
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        while conn.written < conn.output.len() {
            match stream.write(&conn.output[conn.written..]) {
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.fail(c, now, false);
                    return;
                }
            }
        }
        if conn.written == conn.output.len() {
            conn.output.clear();
            conn.written = 0;
        }
        let want_write = conn.written < conn.output.len();
        if want_write != conn.want_write {
            conn.want_write = want_write;
            let fd = conn.stream.as_ref().map(|s| s.as_raw_fd()).unwrap_or(-1);
            if self
                .epoll
                .ctl(libc::EPOLL_CTL_MOD, fd, want_write, c)
                .is_err()
            {
                self.fail(c, now, false);
            }
        }
    }

    /// Closes connection `c`. Requests in flight are lost: timeouts if
    /// `timed_out`, I/O errors otherwise, each recorded at the age it reached.
    /// The backlog stays and is sent after the reconnect, still charged from
    /// its intended times.
    fn fail(&mut self, c: usize, now: u64, timed_out: bool) {
        let conn = &mut self.conns[c];
        conn.stream = None; // closing the fd also removes it from epoll
        conn.filled = 0;
        conn.output.clear();
        conn.written = 0;
        conn.want_write = false;
        conn.retry_at = now + 10_000_000;
        for f in conn.inflight.drain(..) {
            // Lost requests count even from the warm-up: a server that hangs
            // early must not produce an error-free run.
            if timed_out {
                self.stats.counts.timeouts += 1;
            } else {
                self.stats.counts.io_errors += 1;
            }
            if f.measured {
                self.stats
                    .corrected
                    .saturating_record(now.saturating_sub(f.intended).max(1));
            }
        }
    }

    fn reconnect(&mut self, c: usize, now: u64) {
        let conn = &mut self.conns[c];
        if conn.stream.is_some() || now < conn.retry_at {
            return;
        }
        match connect(&self.cfg.host, conn.port) {
            Ok(stream) => {
                let fd = stream.as_raw_fd();
                conn.stream = Some(stream);
                if self.epoll.ctl(libc::EPOLL_CTL_ADD, fd, false, c).is_err() {
                    self.fail(c, now, false);
                    return;
                }
                if self.closed_depth > 0 {
                    self.top_up(c, now);
                }
                self.pump(c, now);
            }
            Err(_) => {
                self.stats.counts.connect_failures += 1;
                conn.retry_at = now + 10_000_000;
            }
        }
    }

    /// Closed loop: refill connection `c` to `depth` requests in flight.
    fn top_up(&mut self, c: usize, now: u64) {
        if now >= self.end {
            return;
        }
        let conn = &self.conns[c];
        let want = self
            .closed_depth
            .saturating_sub(conn.inflight.len() + conn.backlog.len());
        for _ in 0..want {
            let request = self.next_request;
            self.next_request += 1;
            let measured = now >= self.warmup_end;
            if measured {
                self.stats.counts.scheduled += 1;
            }
            self.conns[c].backlog.push_back(Pending {
                intended: now,
                request,
                measured,
            });
        }
    }

    /// Reads what is available on `c` and completes every framed response.
    fn read(&mut self, c: usize, now: u64) {
        let mut close_after = false;
        {
            let conn = &mut self.conns[c];
            let Some(stream) = conn.stream.as_mut() else {
                return;
            };
            if conn.filled == conn.input.len() {
                let len = conn.input.len();
                conn.input.resize(len * 2, 0);
            }
            match stream.read(&mut conn.input[conn.filled..]) {
                Ok(0) => close_after = true,
                Ok(n) => conn.filled += n,
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
                {
                    return;
                }
                Err(_) => {
                    self.fail(c, now, false);
                    return;
                }
            }
        }
        let mut consumed = 0;
        loop {
            let conn = &mut self.conns[c];
            let framed = frame_response(&conn.input[consumed..conn.filled]);
            match framed {
                Ok(Some(Framed { status, len, close })) => {
                    consumed += len;
                    let Some(f) = conn.inflight.pop_front() else {
                        // A response nobody asked for: the stream is out of sync.
                        self.stats.counts.frame_errors += 1;
                        self.fail(c, now, false);
                        return;
                    };
                    if f.measured {
                        let counts = &mut self.stats.counts;
                        counts.completed += 1;
                        *counts.statuses.entry(status).or_insert(0) += 1;
                        if (200..300).contains(&status) {
                            counts.ok += 1;
                            self.stats
                                .corrected
                                .saturating_record(now.saturating_sub(f.intended).max(1));
                            self.stats
                                .service
                                .saturating_record(now.saturating_sub(f.sent).max(1));
                        } else {
                            counts.non_2xx += 1;
                        }
                    }
                    if close {
                        close_after = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    self.stats.counts.frame_errors += 1;
                    self.fail(c, now, false);
                    return;
                }
            }
        }
        let conn = &mut self.conns[c];
        conn.input.copy_within(consumed..conn.filled, 0);
        conn.filled -= consumed;
        if close_after {
            // A clean close by the server: reconnect right away.
            self.fail(c, now, false);
            self.conns[c].retry_at = now;
            self.reconnect(c, now);
            return;
        }
        if self.closed_depth > 0 {
            self.top_up(c, now);
        }
        self.pump(c, now);
    }

    fn pick_connection(&mut self, request: usize) -> usize {
        match self.cfg.balance {
            Balance::RoundRobin => request % self.conns.len(),
            Balance::KeyHash | Balance::KeyOther => {
                let n = self.by_port.len();
                let owner = (self.pool.key_hash(request) % n as u64) as usize;
                let port = if self.cfg.balance == Balance::KeyOther {
                    (owner + 1) % n
                } else {
                    owner
                };
                let list = &self.by_port[port];
                let rr = &mut self.port_rr[port];
                *rr = (*rr + 1) % list.len();
                list[*rr]
            }
        }
    }

    fn flush_dirty(&mut self, now: u64) {
        if self.dirty.is_empty() {
            return;
        }
        while let Some(c) = self.dirty.pop() {
            self.pump(c, now);
        }
        self.busy_ns += self.now() - now;
    }

    fn check_timeouts(&mut self, now: u64) {
        let timeout = self.cfg.timeout.as_nanos() as u64;
        for c in 0..self.conns.len() {
            if self.conns[c].stream.is_none() {
                self.reconnect(c, now);
                continue;
            }
            if let Some(f) = self.conns[c].inflight.front()
                && now.saturating_sub(f.sent) > timeout
            {
                self.fail(c, now, true);
                self.reconnect(c, now);
            }
        }
    }

    fn busy(&self) -> bool {
        self.conns
            .iter()
            .any(|c| !c.inflight.is_empty() || !c.backlog.is_empty())
    }

    /// Handles ready connections; returns how many events there were.
    fn poll(&mut self, timeout_ms: i32) -> usize {
        let n = self.epoll.wait(timeout_ms);
        if n == 0 {
            return 0;
        }
        // One timestamp per wake-up: responses that arrived together are
        // stamped together, and the loop's own work is not charged to them.
        let now = self.now();
        for i in 0..n {
            let ev = self.epoll.events[i];
            let (c, flags) = (ev.u64 as usize, ev.events);
            if flags & libc::EPOLLOUT as u32 != 0 {
                self.write(c, now);
            }
            if flags & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                self.read(c, now);
            }
        }
        self.busy_ns += self.now() - now;
        n
    }

    /// Ends the run: whatever is still unanswered or unsent is an error,
    /// recorded at the age it reached.
    fn give_up(&mut self, now: u64) {
        for c in 0..self.conns.len() {
            let conn = &mut self.conns[c];
            for f in conn.inflight.drain(..) {
                self.stats.counts.timeouts += 1;
                if f.measured {
                    self.stats
                        .corrected
                        .saturating_record(now.saturating_sub(f.intended).max(1));
                }
            }
            for p in conn.backlog.drain(..) {
                self.stats.counts.unsent += 1;
                if p.measured {
                    self.stats
                        .corrected
                        .saturating_record(now.saturating_sub(p.intended).max(1));
                }
            }
        }
    }
}

/// Runs one load test on the current thread.
pub fn run(cfg: &LoadConfig, pool: &RequestPool) -> Result<RunStats, StartError> {
    if cfg.ports.is_empty() || cfg.connections == 0 {
        return Err(StartError(
            "need at least one port and one connection".into(),
        ));
    }
    let epoll = Epoll::new().map_err(|e| StartError(format!("epoll_create1: {e}")))?;
    let mut conns = Vec::with_capacity(cfg.connections);
    let mut by_port = vec![Vec::new(); cfg.ports.len()];
    for i in 0..cfg.connections {
        let port = cfg.ports[i % cfg.ports.len()];
        let stream = connect(&cfg.host, port).map_err(|e| {
            StartError(format!("connect {}:{port} (connection {i}): {e}", cfg.host))
        })?;
        epoll
            .ctl(libc::EPOLL_CTL_ADD, stream.as_raw_fd(), false, i)
            .map_err(|e| StartError(format!("epoll_ctl: {e}")))?;
        by_port[i % cfg.ports.len()].push(i);
        conns.push(Conn {
            port,
            stream: Some(stream),
            input: vec![0; READ_CHUNK],
            filled: 0,
            output: Vec::with_capacity(16 * 1024),
            written: 0,
            want_write: false,
            inflight: VecDeque::with_capacity(cfg.pipeline.max(1) + 64),
            backlog: VecDeque::with_capacity(64),
            retry_at: 0,
        });
    }
    let warmup_end = cfg.warmup.as_nanos() as u64;
    let end = warmup_end + cfg.duration.as_nanos() as u64;
    let (pipeline, closed_depth) = match cfg.mode {
        Mode::Open { .. } => (cfg.pipeline.max(1), 0),
        Mode::Closed { depth } => (depth.max(1), depth.max(1)),
    };
    let mut engine = Engine {
        cfg,
        pool,
        epoll,
        by_port,
        port_rr: vec![0; cfg.ports.len()],
        dirty: Vec::with_capacity(cfg.connections),
        start: Instant::now(),
        warmup_end,
        end,
        pipeline,
        closed_depth,
        next_request: 0,
        busy_ns: 0,
        stats: RunStats {
            corrected: new_histogram(),
            service: new_histogram(),
            dispatch_lag: new_histogram(),
            counts: Counts::default(),
            seconds: cfg.duration.as_secs_f64(),
            offered_rate: 0.0,
            achieved_rate: 0.0,
            idle_pct: 0.0,
        },
        conns,
    };
    let timeout_ns = cfg.timeout.as_nanos() as u64;
    let check_every = 10_000_000u64;
    let mut next_check = check_every;

    match cfg.mode {
        Mode::Open { rate, arrival } => {
            let mut schedule = Schedule::new(arrival, rate, cfg.seed);
            let mut next_t = schedule.next_ns();
            loop {
                let now = engine.now();
                while next_t <= now && next_t < end {
                    let request = engine.next_request;
                    engine.next_request += 1;
                    let measured = next_t >= warmup_end;
                    if measured {
                        engine.stats.counts.scheduled += 1;
                        engine
                            .stats
                            .dispatch_lag
                            .saturating_record(now - next_t + 1);
                    }
                    let c = engine.pick_connection(request);
                    engine.dispatch(
                        c,
                        Pending {
                            intended: next_t,
                            request,
                            measured,
                        },
                    );
                    next_t = schedule.next_ns();
                }
                engine.flush_dirty(now);
                if now >= next_check {
                    next_check = now + check_every;
                    engine.check_timeouts(now);
                }
                if next_t >= end && (!engine.busy() || now > end + timeout_ns) {
                    engine.give_up(now);
                    break;
                }
                let until_next = next_t.saturating_sub(now);
                let timeout_ms = if cfg.spin || next_t >= end {
                    if next_t >= end { 1 } else { 0 }
                } else if until_next > 2_000_000 {
                    // Sleep, but wake ≥ 1 ms early and spin the rest.
                    ((until_next - 1_000_000) / 1_000_000).min(10) as i32
                } else {
                    0
                };
                engine.poll(timeout_ms);
            }
        }
        Mode::Closed { .. } => {
            for c in 0..engine.conns.len() {
                engine.top_up(c, 0);
                engine.pump(c, 0);
            }
            loop {
                let now = engine.now();
                if now >= next_check {
                    next_check = now + check_every;
                    engine.check_timeouts(now);
                }
                if now >= end && (!engine.busy() || now > end + timeout_ns.min(1_000_000_000)) {
                    engine.give_up(now);
                    break;
                }
                engine.poll(if cfg.spin { 0 } else { 1 });
            }
        }
    }
    let stats = &mut engine.stats;
    stats.offered_rate = stats.counts.scheduled as f64 / stats.seconds;
    stats.achieved_rate = stats.counts.completed as f64 / stats.seconds;
    let total = engine.start.elapsed().as_nanos().max(1) as f64;
    stats.idle_pct = 100.0 * (1.0 - engine.busy_ns as f64 / total).max(0.0);
    Ok(engine.stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{BodySource, RequestSpec, Template};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[derive(Clone, Copy)]
    enum Behaviour {
        Answer,
        /// Sleep this many ms before answering request number `.1` (counted per connection).
        StallOnce(u64, usize),
        Silent,
    }

    /// A blocking test server on an OS-assigned port, one thread per connection.
    fn server(behaviour: Behaviour) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let mut answered = 0;
                    loop {
                        let n = match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        // Requests from the pool: head + Content-Length body.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                            let body: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            if buf.len() < end + 4 + body {
                                break;
                            }
                            buf.drain(..end + 4 + body);
                            match behaviour {
                                Behaviour::Silent => continue,
                                Behaviour::StallOnce(ms, at) if answered == at => {
                                    std::thread::sleep(Duration::from_millis(ms))
                                }
                                _ => {}
                            }
                            answered += 1;
                            if stream.write_all(REPLY).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        port
    }

    fn pool() -> RequestPool {
        RequestPool::build(&RequestSpec {
            method: "POST".into(),
            path: "/my_api".into(),
            host: "127.0.0.1".into(),
            body: BodySource::Template(Template::parse(r#"{"foo":"{str:1..9}"}"#).unwrap()),
            pool: 64,
            key_field: None,
            seed: 1,
        })
        .unwrap()
    }

    fn config(port: u16, mode: Mode, connections: usize) -> LoadConfig {
        LoadConfig {
            host: "127.0.0.1".into(),
            ports: vec![port],
            connections,
            mode,
            pipeline: 1,
            duration: Duration::from_millis(600),
            warmup: Duration::from_millis(100),
            timeout: Duration::from_millis(1500),
            balance: Balance::RoundRobin,
            seed: 7,
            spin: false,
        }
    }

    #[test]
    fn open_loop_answers_every_scheduled_request() {
        let port = server(Behaviour::Answer);
        let mode = Mode::Open {
            rate: 2000.0,
            arrival: Arrival::Poisson,
        };
        let s = run(&config(port, mode, 4), &pool()).unwrap();
        let c = &s.counts;
        assert!(c.scheduled > 900 && c.scheduled < 1500, "{c:?}");
        assert_eq!(
            (c.sent, c.completed, c.ok),
            (c.scheduled, c.scheduled, c.scheduled)
        );
        assert_eq!(c.errors(), 0, "{c:?}");
        assert_eq!(c.statuses.get(&200), Some(&c.ok));
        assert_eq!(s.corrected.len(), c.ok);
        assert_eq!(s.service.len(), c.ok);
    }

    #[test]
    fn a_stall_is_charged_to_every_request_it_delayed() {
        // One connection at 1000/s; the 200th request (in the measured
        // window) is held 300 ms, so ~300 requests queue behind it. Their
        // service times are short, their latency from intended send is not.
        let port = server(Behaviour::StallOnce(300, 200));
        let mode = Mode::Open {
            rate: 1000.0,
            arrival: Arrival::Constant,
        };
        let s = run(&config(port, mode, 1), &pool()).unwrap();
        assert_eq!(s.counts.errors(), 0, "{:?}", s.counts);
        let over_100ms =
            |h: &Histogram<u64>| h.count_between(100_000_000, h.max().max(100_000_000));
        assert!(
            over_100ms(&s.corrected) >= 100,
            "corrected: {}",
            over_100ms(&s.corrected)
        );
        assert!(
            over_100ms(&s.service) <= 2,
            "service: {}",
            over_100ms(&s.service)
        );
        assert!(s.corrected.max() >= 300_000_000);
    }

    #[test]
    fn a_silent_server_yields_timeouts_not_a_clean_run() {
        let port = server(Behaviour::Silent);
        let mode = Mode::Open {
            rate: 500.0,
            arrival: Arrival::Constant,
        };
        let mut cfg = config(port, mode, 2);
        cfg.timeout = Duration::from_millis(200);
        let s = run(&cfg, &pool()).unwrap();
        let c = &s.counts;
        assert_eq!(c.completed, 0);
        assert!(c.timeouts > 0, "{c:?}");
        // Every scheduled request is either lost in flight or never sent.
        assert!(c.errors() >= c.scheduled, "{c:?}");
        // ...and each measured one is in the histogram at the age it reached.
        assert!(!s.corrected.is_empty());
    }

    #[test]
    fn closed_loop_keeps_connections_busy_and_counts_throughput() {
        let port = server(Behaviour::Answer);
        let s = run(&config(port, Mode::Closed { depth: 2 }, 3), &pool()).unwrap();
        let c = &s.counts;
        assert!(c.completed > 100, "{c:?}");
        assert_eq!(c.errors(), 0, "{c:?}");
        assert!((s.achieved_rate - c.completed as f64 / 0.6).abs() < 1e-6);
    }

    #[test]
    fn refused_connections_fail_the_start_clearly() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mode = Mode::Closed { depth: 1 };
        let err = run(&config(port, mode, 1), &pool()).unwrap_err();
        assert!(
            err.0.contains(&format!("connect 127.0.0.1:{port}")),
            "{err}"
        );
    }
}
