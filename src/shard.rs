//! One shard: a glommio executor pinned to one core, with its own listener,
//! connections, compiled routes and metrics.
//!
//! Nothing on a shard is shared with another thread. The coordinator talks to
//! a shard only through [`ShardCommand`] messages on a crossbeam channel,
//! which the shard's housekeeping task polls between requests; shard state
//! lives in `Rc`/`RefCell` and is only borrowed inside synchronous code, never
//! across an `.await`.
//!
//! # A connection
//!
//! Each accepted connection is a task with two reused buffers. It reads
//! whatever the socket has, decodes and answers *every* complete request in
//! the buffer (pipelining), appending the responses to one output buffer, and
//! writes them with one `write` — so a pipelined burst costs one read and one
//! write. Latency is recorded per request from the moment it was complete in
//! the buffer to the moment its response was handed to the socket.
//!
//! # Timeouts without per-read timers
//!
//! A connection publishes its phase (idle, reading a head, reading a body,
//! busy) and a deadline in two `Cell`s. A housekeeping task sweeps the
//! shard's connections a few times per shortest timeout; an expired one is
//! marked and its socket shut down for reading, which wakes the parked read
//! with end-of-file. The connection then answers 408 (head or body timeout)
//! or closes silently (idle). This keeps timers out of the request path: a
//! per-read timer would cost a timer-tree insert and removal per request.
//!
//! # Shutdown
//!
//! On [`ShardCommand::Shutdown`] the shard stops accepting, closes idle
//! connections, lets connections with a request in flight finish it (their
//! responses carry `Connection: close`), and after `drain_timeout` shuts down
//! whatever is left.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use std::task::{Poll, Waker};

use crossbeam_channel::{Receiver, Sender};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::shared_channel::{
    ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use glommio::net::{TcpListener, TcpStream};
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};

use crate::checkpoint::ShardCheckpoint;
use crate::forward::{KeyedOp, KeyedReply, ShardMessage};
use crate::operator::{Ctx, run_on_owner};
use crate::pipeline::Outcome;
use crate::row::Row;
use crate::state::ShardState;

use crate::http::{
    ContentType, Decoded, Decoder, HttpDate, Limits, Request, ResponseOptions, write_error,
    write_response,
};
use crate::metrics::{ShardMetrics, ShardSnapshot};
use crate::pipeline::{Match, Router};
use crate::reply::write_error_json;
use crate::sys::{self, Half};

/// Messages from the coordinator to a shard.
#[derive(Debug)]
pub enum ShardCommand {
    /// Send a copy of the shard's metrics to this channel.
    Snapshot(Sender<ShardSnapshot>),
    /// Answer with the shard's index (a liveness check for `/ready`).
    Ping(Sender<usize>),
    /// Stop accepting and drain; report on `drained` when done, then keep
    /// serving forwarded operations and checkpoint barriers until `Exit`.
    Shutdown,
    /// Leave: the final checkpoint (if any) is committed.
    Exit,
}

/// The shard's ends of the channels to every other shard: `senders[j]` goes
/// to shard `j`, `receivers` come from every other shard (`None` at the
/// shard's own index).
pub struct Peers {
    /// Senders to shard j.
    pub senders: Vec<Option<SharedSender<ShardMessage>>>,
    /// Receivers from every other shard.
    pub receivers: Vec<SharedReceiver<ShardMessage>>,
}

impl Peers {
    /// The full mesh of channels for `shards` shards. Each channel holds
    /// `capacity` messages; a connection has at most one forward in flight,
    /// so `capacity` ≥ connections per shard makes a full channel, and so a
    /// cycle of shards blocked on each other, impossible.
    pub fn mesh(shards: usize, capacity: usize) -> Vec<Peers> {
        let mut peers: Vec<Peers> = (0..shards)
            .map(|_| Peers {
                senders: (0..shards).map(|_| None).collect(),
                receivers: Vec::new(),
            })
            .collect();
        for from in 0..shards {
            for to in 0..shards {
                if from != to {
                    let (tx, rx) = glommio::channels::shared_channel::new_bounded(capacity);
                    peers[from].senders[to] = Some(tx);
                    peers[to].receivers.push(rx);
                }
            }
        }
        peers
    }
}

/// Everything a shard needs, prepared on the main thread.
pub struct ShardSetup {
    /// Shard index (0-based); the shard listens on `base_port + index`.
    pub index: usize,
    /// The core the shard pins itself to.
    pub core: usize,
    /// The bound, listening socket (bound without `SO_REUSEPORT`, so another
    /// process cannot silently share the port).
    pub listener: std::net::TcpListener,
    /// This shard's own compiled routes.
    pub router: Router,
    /// HTTP limits.
    pub limits: Limits,
    /// Bytes of io_uring registered memory for the executor.
    pub io_memory: usize,
    /// Busy-poll this long before sleeping when idle (0: never).
    pub spin_before_park: Duration,
    /// Commands from the coordinator.
    pub commands: Receiver<ShardCommand>,
    /// Number of shards (for owner hashing).
    pub shards: usize,
    /// This shard's keyed state (restored from a checkpoint, or empty).
    pub state: ShardState,
    /// The shard's checkpoint endpoint, when checkpoints are configured.
    pub checkpoint: Option<ShardCheckpoint>,
    /// Channels to the other shards.
    pub peers: Peers,
    /// Told this shard's index once it has drained after `Shutdown`.
    pub drained: Sender<usize>,
}

/// How often the housekeeping task runs: commands are picked up within this
/// delay. Timeout sweeps run at their own, coarser interval.
const TICK: Duration = Duration::from_millis(2);

/// Runs a shard on the current thread until it is told to shut down: pins
/// the thread, builds the executor, serves. `ready` receives `Ok(())` once
/// the shard accepts connections, or the reason it could not start.
pub fn run(setup: ShardSetup, ready: Sender<Result<(), String>>) {
    let index = setup.index;
    if !core_affinity::set_for_current(core_affinity::CoreId { id: setup.core }) {
        let _ = ready.send(Err(format!(
            "shard {index}: could not pin the thread to core {}",
            setup.core
        )));
        return;
    }
    let mut builder = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("shard-{index}"))
        .io_memory(setup.io_memory);
    if !setup.spin_before_park.is_zero() {
        builder = builder.spin_before_park(setup.spin_before_park);
    }
    let executor = match builder.make() {
        Ok(ex) => ex,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "shard {index}: cannot start its io_uring executor: {e}. coreline needs io_uring \
                 (Linux 5.8+, not blocked by seccomp) and RLIMIT_MEMLOCK of at least {} KiB per shard \
                 (raise it with `ulimit -l` or LimitMEMLOCK=)",
                setup.io_memory / 1024 + 64
            )));
            return;
        }
    };
    executor.run(serve(setup, ready));
}

/// The reply slot of a connection with a forward in flight.
#[derive(Default)]
struct ForwardSlot {
    /// The generation of the forward in flight: unique on the shard, so a
    /// late reply can never be taken for a newer forward of a connection
    /// that reused the slot.
    generation: Cell<u64>,
    reply: RefCell<Option<KeyedReply>>,
    waker: RefCell<Option<Waker>>,
}

/// A connection's phase, as the timeout sweep sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests, no byte of the next one yet.
    Idle,
    /// Part of a request head is buffered.
    Head,
    /// The head is complete, the body is arriving.
    Body,
    /// Answering: the connection is writing its responses.
    Busy,
}

/// What a connection shares with its shard's sweep.
struct ConnTimer {
    fd: RawFd,
    phase: Cell<Phase>,
    deadline: Cell<Instant>,
    /// Set by the sweep (or drain) when the connection must stop; says which
    /// phase expired.
    expired: Cell<Option<Phase>>,
    /// Where the owner shard's reply to this connection's forward lands.
    forward: ForwardSlot,
}

impl ConnTimer {
    fn expire(&self, phase: Phase, half: Half) {
        if self.expired.get().is_none() {
            self.expired.set(Some(phase));
            // The peer may have gone already; nothing to do about an error.
            let _ = sys::shutdown(self.fd, half);
        }
    }
}

/// The shard-wide state every task of the shard borrows.
struct Shard {
    index: usize,
    core: usize,
    port: u16,
    limits: Limits,
    router: RefCell<Router>,
    metrics: RefCell<ShardMetrics>,
    date: RefCell<HttpDate>,
    /// Live connections, for the sweep. A slot is reused after close.
    conns: RefCell<Vec<Option<Rc<ConnTimer>>>>,
    /// Buffers of closed connections, reused by new ones.
    buffers: RefCell<Vec<Buffers>>,
    draining: Cell<bool>,
    shards: usize,
    state: RefCell<ShardState>,
    checkpoint: Option<ShardCheckpoint>,
    /// Senders to the other shards (`None` at our own index).
    peers: Vec<Option<ConnectedSender<ShardMessage>>>,
    /// Forwards sent so far: the source of forward generations.
    forwards: Cell<u64>,
}

impl Shard {
    fn ctx<'a>(&self, state: &'a mut ShardState) -> Ctx<'a> {
        Ctx::new(state, self.index, self.shards)
    }
}

async fn serve(setup: ShardSetup, ready: Sender<Result<(), String>>) {
    let ShardSetup {
        index,
        core,
        listener,
        router,
        limits,
        commands,
        shards,
        state,
        checkpoint,
        peers,
        drained,
        ..
    } = setup;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let listener = sys::glommio_listener(listener);

    // Receivers connect in their own tasks so that every shard's senders
    // can connect meanwhile, whatever order the shards start in.
    let (inbox_tx, inbox_rx) = glommio::channels::local_channel::new_unbounded();
    let inbox_tx = Rc::new(inbox_tx);
    for rx in peers.receivers {
        let inbox_tx = inbox_tx.clone();
        glommio::spawn_local(async move {
            let _ = inbox_tx.try_send(rx.connect().await);
        })
        .detach();
    }
    drop(inbox_tx);
    let mut connected = Vec::with_capacity(shards);
    for tx in peers.senders {
        connected.push(match tx {
            Some(tx) => Some(tx.connect().await),
            None => None,
        });
    }
    let route_names: Vec<String> = router.route_names();
    let date = HttpDate::new(SystemTime::now());
    let shard = Rc::new(Shard {
        index,
        core,
        port,
        limits,
        router: RefCell::new(router),
        metrics: RefCell::new(ShardMetrics::new(route_names.iter().map(String::as_str))),
        date: RefCell::new(date),
        conns: RefCell::new(Vec::new()),
        buffers: RefCell::new(Vec::new()),
        draining: Cell::new(false),
        shards,
        state: RefCell::new(state),
        checkpoint,
        peers: connected,
        forwards: Cell::new(0),
    });

    let ex = glommio::executor();
    // Connections get a latency-sensitive queue; housekeeping a small share.
    let conn_queue =
        ex.create_task_queue(Shares::Static(1000), Latency::NotImportant, "connections");
    let housekeeping_queue =
        ex.create_task_queue(Shares::Static(50), Latency::NotImportant, "housekeeping");

    let mut inboxes = Vec::new();
    for _ in 1..shards {
        if let Some(rx) = inbox_rx.recv().await {
            inboxes.push(
                glommio::spawn_local_into(inbox(shard.clone(), rx), conn_queue)
                    .expect("task queue exists"),
            );
        }
    }

    let (stop_tx, stop_rx) = glommio::channels::local_channel::new_bounded::<()>(1);
    let (exit_tx, exit_rx) = glommio::channels::local_channel::new_bounded::<()>(1);
    let keeper = glommio::spawn_local_into(
        housekeeping(shard.clone(), commands, stop_tx, exit_tx),
        housekeeping_queue,
    )
    .expect("task queue exists");
    let _ = ready.send(Ok(()));

    accept_loop(&shard, &listener, stop_rx, conn_queue).await;
    drop(listener);
    drain(&shard).await;
    let _ = drained.send(index);
    // Other shards may still forward to us, and the final checkpoint needs
    // our state: serve both until told to exit.
    exit_rx.recv().await;
    keeper.cancel().await;
    for task in inboxes {
        task.cancel().await;
    }
}

/// Runs operations other shards forward to this one and delivers the
/// replies to our own forwarded requests.
async fn inbox(shard: Rc<Shard>, rx: ConnectedReceiver<ShardMessage>) {
    while let Some(message) = rx.recv().await {
        match message {
            ShardMessage::Request {
                from,
                slot,
                generation,
                op,
            } => {
                let reply = run_on_owner(&mut shard.state.borrow_mut(), &op);
                let Some(Some(tx)) = shard.peers.get(from) else {
                    continue;
                };
                let message = ShardMessage::Reply {
                    slot,
                    generation,
                    reply,
                };
                // Channels hold as many messages as a shard has connections,
                // so this only waits if the origin shard is not reading.
                let _ = tx.send(message).await;
            }
            ShardMessage::Reply {
                slot,
                generation,
                reply,
            } => {
                let conns = shard.conns.borrow();
                let Some(Some(conn)) = conns.get(slot) else {
                    continue;
                };
                let f = &conn.forward;
                if f.generation.get() == generation {
                    *f.reply.borrow_mut() = Some(reply);
                    if let Some(w) = f.waker.borrow_mut().take() {
                        w.wake();
                    }
                }
            }
        }
    }
}

async fn accept_loop(
    shard: &Rc<Shard>,
    listener: &TcpListener,
    stop: glommio::channels::local_channel::LocalReceiver<()>,
    queue: glommio::TaskQueueHandle,
) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop.recv().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(shard = shard.index, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let open = shard.metrics.borrow().open_connections as usize;
        if open >= shard.limits.max_connections {
            shard.metrics.borrow_mut().rejected_connections += 1;
            let body_shard = shard.clone();
            glommio::spawn_local_into(reject(body_shard, stream), queue)
                .expect("task queue exists")
                .detach();
            continue;
        }
        let timer = Rc::new(ConnTimer {
            fd: stream.as_raw_fd(),
            phase: Cell::new(Phase::Idle),
            deadline: Cell::new(Instant::now() + shard.limits.idle_timeout),
            expired: Cell::new(None),
            forward: ForwardSlot::default(),
        });
        let slot = register(shard, timer.clone());
        {
            let mut m = shard.metrics.borrow_mut();
            m.open_connections += 1;
            m.accepted_connections += 1;
        }
        let conn_shard = shard.clone();
        glommio::spawn_local_into(
            async move {
                let buffers = conn_shard
                    .buffers
                    .borrow_mut()
                    .pop()
                    .unwrap_or_else(Buffers::new);
                let mut conn = Connection {
                    shard: &conn_shard,
                    timer: &timer,
                    slot,
                    bufs: buffers,
                    decoder: Decoder::new(),
                    in_body: false,
                };
                let mut stream = stream;
                let outcome = conn.serve(&mut stream).await;
                if let Ok(true) = outcome {
                    conn.linger(&mut stream).await;
                }
                let _ = stream.close().await;
                let mut bufs = conn.bufs;
                bufs.reset();
                conn_shard.buffers.borrow_mut().push(bufs);
                conn_shard.conns.borrow_mut()[slot] = None;
                conn_shard.metrics.borrow_mut().open_connections -= 1;
            },
            queue,
        )
        .expect("task queue exists")
        .detach();
    }
}

fn register(shard: &Shard, timer: Rc<ConnTimer>) -> usize {
    let mut conns = shard.conns.borrow_mut();
    if let Some(i) = conns.iter().position(Option::is_none) {
        conns[i] = Some(timer);
        i
    } else {
        conns.push(Some(timer));
        conns.len() - 1
    }
}

/// Answers 503 to a connection beyond `max_connections` and closes it.
async fn reject(shard: Rc<Shard>, mut stream: TcpStream) {
    let mut out = Vec::with_capacity(256);
    let mut body = Vec::with_capacity(96);
    write_error_json(
        &mut body,
        "too many connections on this shard; retry later",
        None,
    );
    write_response(
        &mut out,
        &shard.date.borrow(),
        503,
        ContentType::Json,
        &body,
        ResponseOptions::closing(),
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}

/// Polls commands, refreshes the date, sweeps timeouts.
async fn housekeeping(
    shard: Rc<Shard>,
    commands: Receiver<ShardCommand>,
    stop: glommio::channels::local_channel::LocalSender<()>,
    exit: glommio::channels::local_channel::LocalSender<()>,
) {
    let limits = shard.limits;
    let shortest = limits
        .header_timeout
        .min(limits.body_timeout)
        .min(limits.idle_timeout);
    let sweep_every = (shortest / 10).clamp(Duration::from_millis(5), Duration::from_millis(500));
    let mut last_sweep = Instant::now();
    let mut last_second = 0u64;
    loop {
        while let Ok(cmd) = commands.try_recv() {
            match cmd {
                ShardCommand::Snapshot(reply) => {
                    let _ = reply.send(ShardSnapshot {
                        shard: shard.index,
                        core: shard.core,
                        port: shard.port,
                        metrics: {
                            let mut m = shard.metrics.borrow().clone();
                            m.steps = shard.router.borrow().step_metrics();
                            m
                        },
                    });
                }
                ShardCommand::Ping(reply) => {
                    let _ = reply.send(shard.index);
                }
                ShardCommand::Shutdown => {
                    if !shard.draining.replace(true) {
                        let _ = stop.try_send(());
                    }
                }
                ShardCommand::Exit => {
                    let _ = exit.try_send(());
                }
            }
        }
        if let Some(ep) = &shard.checkpoint {
            // Between two requests: this task never runs inside one, so the
            // state is a consistent cut. Capturing swaps the delta logs out.
            let _ = ep.poll(&mut shard.state.borrow_mut());
        }
        let wall = SystemTime::now();
        let second = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if second != last_second {
            last_second = second;
            shard.date.borrow_mut().refresh(wall);
        }
        let now = Instant::now();
        if now.duration_since(last_sweep) >= sweep_every || shard.draining.get() {
            last_sweep = now;
            sweep(&shard, now);
        }
        glommio::timer::sleep(TICK).await;
    }
}

fn sweep(shard: &Shard, now: Instant) {
    let draining = shard.draining.get();
    for timer in shard.conns.borrow().iter().flatten() {
        let phase = timer.phase.get();
        if draining && phase == Phase::Idle {
            timer.expire(Phase::Idle, Half::Read);
        } else if now >= timer.deadline.get() {
            let half = if phase == Phase::Busy {
                Half::Both
            } else {
                Half::Read
            };
            timer.expire(phase, half);
        }
    }
}

async fn drain(shard: &Rc<Shard>) {
    let deadline = Instant::now() + shard.limits.drain_timeout;
    while shard.metrics.borrow().open_connections > 0 {
        if Instant::now() >= deadline {
            let left = shard.metrics.borrow().open_connections;
            tracing::warn!(
                shard = shard.index,
                connections = left,
                "drain timeout reached; closing connections with requests in flight"
            );
            for timer in shard.conns.borrow().iter().flatten() {
                timer.expire(Phase::Busy, Half::Both);
            }
            // Give the woken tasks a moment to clean up.
            glommio::timer::sleep(Duration::from_millis(20)).await;
            return;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// A connection's reusable buffers.
struct Buffers {
    /// Read buffer; `buf[start..end]` holds bytes not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Responses waiting to be written.
    out: Vec<u8>,
    /// One response body, before its head is written.
    body: Vec<u8>,
    /// `(route, status, complete-at)` of the responses in `out`, recorded
    /// once `out` is handed to the socket.
    pending: Vec<(usize, u16, Instant)>,
    /// A route's row, saved while the request waits for its owner shard.
    saved: Row,
}

/// Initial read buffer size; grows up to the head + body limits for large
/// requests and shrinks back once the connection is idle.
const READ_BUFFER: usize = 8 * 1024;

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            buf: vec![0; READ_BUFFER],
            start: 0,
            end: 0,
            out: Vec::with_capacity(READ_BUFFER),
            body: Vec::with_capacity(1024),
            pending: Vec::with_capacity(32),
            saved: Row::default(),
        }
    }

    fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.out.clear();
        self.pending.clear();
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
    route: usize,
    step: usize,
    owner: usize,
    op: KeyedOp,
    opts: ResponseOptions,
    complete: Instant,
}

/// What the decode loop decided about the connection.
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
    /// The response is in `out`.
    Done { route: usize, status: u16 },
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
        stream.write_all(&self.bufs.out).await?;
        self.bufs.out.clear();
        self.record(Instant::now());
        Ok(())
    }

    /// Sends a keyed step to its owner, waits for the reply, and finishes the
    /// request (which may forward again, for a later keyed step).
    async fn run_forward(&mut self, mut forward: Forward) -> After {
        let shard = self.shard;
        // Other requests on this shard reuse the route's row while we wait.
        self.bufs
            .saved
            .clone_from(shard.router.borrow().row(forward.route));
        loop {
            shard.metrics.borrow_mut().forwarded_requests += 1;
            let sent = Instant::now();
            let reply = self.forward(forward.owner, forward.op).await;
            shard
                .router
                .borrow_mut()
                .record_step(forward.route, forward.step, sent.elapsed());
            let outcome = {
                let mut state = shard.state.borrow_mut();
                let mut ctx = shard.ctx(&mut state);
                self.bufs.body.clear();
                shard.router.borrow_mut().resume(
                    forward.route,
                    &self.bufs.saved,
                    forward.step,
                    reply,
                    &mut ctx,
                    &mut self.bufs.body,
                )
            };
            match outcome {
                Outcome::Done(status) => {
                    write_response(
                        &mut self.bufs.out,
                        &shard.date.borrow(),
                        status,
                        ContentType::Json,
                        &self.bufs.body,
                        forward.opts,
                    );
                    self.bufs
                        .pending
                        .push((forward.route, status, forward.complete));
                    return if forward.opts.keep_alive {
                        After::Continue
                    } else {
                        After::Close
                    };
                }
                Outcome::Forward { step, owner, op } => {
                    self.bufs
                        .saved
                        .clone_from(shard.router.borrow().row(forward.route));
                    forward.step = step;
                    forward.owner = owner;
                    forward.op = op;
                }
            }
        }
    }

    /// One round trip to the owner shard.
    async fn forward(&mut self, owner: usize, op: KeyedOp) -> KeyedReply {
        let shard = self.shard;
        let slot = &self.timer.forward;
        let generation = shard.forwards.get() + 1;
        shard.forwards.set(generation);
        slot.generation.set(generation);
        slot.reply.borrow_mut().take();
        let Some(Some(tx)) = shard.peers.get(owner) else {
            return KeyedReply::Failed(503, format!("shard {owner} is not reachable"));
        };
        let message = ShardMessage::Request {
            from: shard.index,
            slot: self.slot,
            generation,
            op,
        };
        if tx.send(message).await.is_err() {
            return KeyedReply::Failed(503, format!("shard {owner} has stopped"));
        }
        std::future::poll_fn(|cx| match slot.reply.borrow_mut().take() {
            Some(reply) => Poll::Ready(reply),
            None => {
                *slot.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Records latency of every response just written.
    fn record(&mut self, done: Instant) {
        if self.bufs.pending.is_empty() {
            return;
        }
        let mut metrics = self.shard.metrics.borrow_mut();
        for &(route, status, complete) in &self.bufs.pending {
            metrics.routes[route].record(status, done.duration_since(complete));
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
                self.error_response(408, "request timed out");
                stream.write_all(&self.bufs.out).await?;
                self.bufs.out.clear();
                self.record(Instant::now());
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
                    let close = !request.keep_alive || shard.draining.get();
                    let answer = answer(
                        shard,
                        &request,
                        close,
                        complete,
                        &mut self.bufs.out,
                        &mut self.bufs.body,
                    );
                    self.bufs.start += consumed;
                    match answer {
                        Answer::Done { route, status } => {
                            self.bufs.pending.push((route, status, complete));
                            if close {
                                return After::Close;
                            }
                        }
                        Answer::Forward(forward) => return After::Forward(forward),
                    }
                }
                Err(e) => {
                    write_error(&mut self.bufs.out, &shard.date.borrow(), e);
                    let unmatched = shard.metrics.borrow().unmatched();
                    self.bufs
                        .pending
                        .push((unmatched, e.status(), Instant::now()));
                    return After::Close;
                }
            }
        }
    }

    /// Appends an error response that closes the connection.
    fn error_response(&mut self, status: u16, message: &str) {
        let shard = self.shard;
        self.bufs.body.clear();
        write_error_json(&mut self.bufs.body, message, None);
        write_response(
            &mut self.bufs.out,
            &shard.date.borrow(),
            status,
            ContentType::Json,
            &self.bufs.body,
            ResponseOptions::closing(),
        );
        let unmatched = shard.metrics.borrow().unmatched();
        self.bufs.pending.push((unmatched, status, Instant::now()));
    }
}

/// Routes and answers one request. Runs to completion: no await, so it sees
/// a consistent shard; a keyed step owned elsewhere stops it with a forward.
fn answer(
    shard: &Shard,
    request: &Request<'_>,
    close: bool,
    complete: Instant,
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> Answer {
    let mut router = shard.router.borrow_mut();
    let unmatched = router.len();
    body.clear();
    let mut opts = ResponseOptions::for_request(request);
    opts.keep_alive = !close;
    let (route, status) = match router.find(request.method, request.path) {
        Match::Health => {
            let (status, text): (u16, &[u8]) = if shard.draining.get() {
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
    write_response(
        out,
        &shard.date.borrow(),
        status,
        ContentType::Json,
        body,
        opts,
    );
    Answer::Done { route, status }
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
