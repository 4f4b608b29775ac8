//! One shard: a glommio executor pinned to one core, with its own listener,
//! connections, compiled routes and metrics.
//!
//! Nothing on a shard is shared with another thread. The coordinator talks to
//! a shard only through [`ShardCommand`] messages on a crossbeam channel,
//! which the shard's housekeeping task polls between requests; shard state
//! lives in `Rc`/`RefCell` and is only borrowed inside synchronous code, never
//! across an `.await`.
//!
//! # Its life
//!
//! [`run`] pins the thread and builds the executor; `serve` connects the
//! peer mesh, starts the housekeeping task and the inboxes, and runs the
//! accept loop; each accepted connection is a task of
//! `crate::connection`. Two housekeeping tasks run between requests: `control`
//! sleeps on the shard's wake-up line ([`crate::sys::Wake`]) and takes
//! commands and checkpoint barriers as soon as they are sent; `housekeeping`
//! refreshes the `Date` header once a second and sweeps connection timeouts
//! a few times per shortest timeout, which keeps timers out of the request
//! path (a per-read timer would cost a timer-tree insert and removal per
//! request). An idle shard wakes at most ten times a second (30 voluntary
//! context switches in 3 s, against 1,457 when it polled its commands every
//! 2 ms; `tests/shards_admin.rs::an_idle_shard_sleeps_until_a_command_wakes_it`).
//!
//! # Shutdown
//!
//! On [`ShardCommand::LameDuck`] (the `lame_duck` period before a shutdown)
//! `/health` answers 503 so that balancers move traffic away, while requests
//! are still accepted and served, each response closing its connection so
//! that no idle keep-alive connection is left to race the drain.
//!
//! On [`ShardCommand::Shutdown`] the shard stops accepting, closes idle
//! connections, lets connections with a request in flight finish it (their
//! responses carry `Connection: close`), and after `drain_timeout` shuts down
//! whatever is left.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use futures_lite::AsyncReadExt;
use glommio::net::TcpListener;
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};

use crate::access_log::AccessLog;
use crate::checkpoint::ShardCheckpoint;
use crate::command::ShardCommand;
use crate::connection::{self, Buffers, ConnTimer, Phase};
use crate::forward::{self, KeyedReply, Mesh, Peers};
use crate::http::{HttpDate, Limits};
use crate::metrics::{ShardMetrics, ShardSnapshot};
use crate::operator::Ctx;
use crate::pipeline::Router;
use crate::state::ShardState;
use crate::sys::{self, Half};

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
    /// The shard's end of its wake-up line: a byte arrives after every
    /// command and checkpoint barrier sent to it.
    pub wake: crate::sys::WakeReceiver,
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
    /// This shard's end of the access log.
    pub access_log: AccessLog,
    /// This instance's place in its fleet, if it is one of several.
    pub fleet: Option<crate::fleet::Place>,
}

/// How often timeouts are swept while the shard drains (otherwise every
/// tenth of the shortest timeout, 5 to 500 ms).
///
/// Housekeeping used to poll the command channel on a 2 ms timer: an idle
/// shard woke 500 times a second, each a reactor pass with a timer re-armed
/// (about 15k instructions, callgrind), and under valgrind that idle work
/// swamped `latency-tests/callgrind/instructions.sh` (one binary measured 4k
/// and 47k instructions per request in two runs). Commands and barriers now
/// wake the shard ([`crate::sys::Wake`]).
const DRAIN_TICK: Duration = Duration::from_millis(10);

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

/// The shard-wide state every task of the shard borrows.
pub(crate) struct Shard {
    pub(crate) index: usize,
    core: usize,
    port: u16,
    pub(crate) limits: Limits,
    /// The routes of the plan being served. A request borrows them for its
    /// synchronous run; a request that waits for its owner shard keeps its
    /// own `Rc`, so that it finishes on the plan it started on even if a
    /// reload swaps in another one meanwhile.
    pub(crate) router: RefCell<Rc<RefCell<Router>>>,
    /// The plan generation served (0 until the first reload).
    pub(crate) generation: Cell<u64>,
    /// Where the metrics index of each route of the previous generation
    /// went at the last reload ([`ShardMetrics::reroute`]).
    route_remap: RefCell<Vec<usize>>,
    pub(crate) metrics: RefCell<ShardMetrics>,
    pub(crate) date: RefCell<HttpDate>,
    /// Live connections, for the sweep and for forward replies. A slot is
    /// reused after close.
    pub(crate) conns: RefCell<Vec<Option<Rc<ConnTimer>>>>,
    /// Buffers of closed connections, reused by new ones; at most
    /// [`BUFFER_POOL`] (see [`Shard::give_back`]).
    pub(crate) buffers: RefCell<Vec<Buffers>>,
    pub(crate) draining: Cell<bool>,
    /// Lame duck ([`ShardCommand::LameDuck`]): `/health` fails, requests
    /// are served and their connections closed after the response.
    pub(crate) lame_duck: Cell<bool>,
    /// Requests given a new `X-Request-Id` so far, and this process's
    /// random prefix for them.
    request_ids: Cell<u64>,
    id_prefix: u32,
    shards: usize,
    pub(crate) state: RefCell<ShardState>,
    checkpoint: Option<ShardCheckpoint>,
    /// This shard's ends of the channels to the other shards.
    pub(crate) mesh: Mesh,
    /// This shard's end of the access log.
    pub(crate) access_log: AccessLog,
    /// This instance's place in its fleet, if it is one of several.
    fleet: Option<crate::fleet::Place>,
}

/// Spare connection buffers a shard keeps (about 16 KiB each). Beyond it,
/// buffers of closed connections are freed, so that the memory of a
/// connection peak goes back (with [`sys::release_free_memory`]) instead of
/// staying in the pool: unbounded, the pool held 3,000 × 16 KiB after a
/// 3,000-connection burst (tests/memory.rs).
pub(crate) const BUFFER_POOL: usize = 128;

impl Shard {
    /// Returns a closed connection's buffers to the pool, or frees them
    /// when the pool is full.
    pub(crate) fn give_back(&self, bufs: Buffers) {
        let mut pool = self.buffers.borrow_mut();
        if pool.len() < BUFFER_POOL {
            pool.push(bufs);
        }
    }

    /// The context keyed steps run in on this shard.
    pub(crate) fn ctx<'a>(&'a self, state: &'a mut ShardState) -> Ctx<'a> {
        Ctx::new(state, self.index, self.shards).with_fleet(self.fleet.as_ref())
    }

    /// Hands a forward's reply to the connection in `slot`, if it still
    /// waits for it.
    fn deliver(&self, slot: usize, generation: u64, reply: KeyedReply) {
        if let Some(Some(conn)) = self.conns.borrow().get(slot) {
            conn.forward.deliver(generation, reply);
        }
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
        wake,
        shards,
        state,
        checkpoint,
        peers,
        drained,
        access_log,
        fleet,
        ..
    } = setup;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let listener = sys::glommio_listener(listener);

    let (mesh, incoming) = Mesh::connect(index, peers).await;
    let route_names: Vec<String> = router.route_names();
    let date = HttpDate::new(SystemTime::now());
    let shard = Rc::new(Shard {
        index,
        core,
        port,
        limits,
        router: RefCell::new(Rc::new(RefCell::new(router))),
        generation: Cell::new(0),
        route_remap: RefCell::new(Vec::new()),
        metrics: RefCell::new(ShardMetrics::new(route_names.iter().map(String::as_str))),
        date: RefCell::new(date),
        conns: RefCell::new(Vec::new()),
        buffers: RefCell::new(Vec::new()),
        draining: Cell::new(false),
        lame_duck: Cell::new(false),
        request_ids: Cell::new(0),
        id_prefix: process_id_prefix(),
        shards,
        state: RefCell::new(state),
        checkpoint,
        mesh,
        access_log,
        fleet,
    });

    let ex = glommio::executor();
    // Connections run in a NotImportant queue: a latency-sensitive one
    // (`Latency::Matters`) made glommio arm and cancel a preemption timer on
    // every scheduler pass, 15.1k instructions per hello request against
    // 9.5k without it (-37%, valgrind callgrind over 2,000 requests on one
    // connection set; commit bb18e11). Housekeeping gets a small share.
    let conn_queue =
        ex.create_task_queue(Shares::Static(1000), Latency::NotImportant, "connections");
    let housekeeping_queue =
        ex.create_task_queue(Shares::Static(50), Latency::NotImportant, "housekeeping");

    let mut inboxes = Vec::new();
    for _ in 1..shards {
        if let Some(rx) = incoming.recv().await {
            let shard = shard.clone();
            let task = async move {
                let deliver = |slot, generation, reply| shard.deliver(slot, generation, reply);
                forward::inbox(rx, &shard.mesh, &shard.state, deliver).await;
            };
            inboxes.push(glommio::spawn_local_into(task, conn_queue).expect("task queue exists"));
        }
    }

    if shard.index == forward::SEQUENCER {
        let shard = shard.clone();
        let task = async move {
            let deliver = |slot, generation, reply| shard.deliver(slot, generation, reply);
            forward::sequencer(&shard.mesh, &shard.state, deliver).await;
        };
        inboxes.push(glommio::spawn_local_into(task, conn_queue).expect("task queue exists"));
    }

    let (stop_tx, stop_rx) = glommio::channels::local_channel::new_bounded::<()>(1);
    let (exit_tx, exit_rx) = glommio::channels::local_channel::new_bounded::<()>(1);
    let orders = Rc::new(Orders {
        commands,
        stop: stop_tx,
        exit: exit_tx,
    });
    let keeper = glommio::spawn_local_into(
        housekeeping(shard.clone(), orders.clone()),
        housekeeping_queue,
    )
    .expect("task queue exists");
    let control = glommio::spawn_local_into(
        control(shard.clone(), orders, wake.into_glommio()),
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
    control.cancel().await;
    for task in inboxes {
        task.cancel().await;
    }
}

async fn accept_loop(
    shard: &Rc<Shard>,
    listener: &TcpListener,
    stop: glommio::channels::local_channel::LocalReceiver<()>,
    queue: glommio::TaskQueueHandle,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            stop.recv().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => {
                backoff.succeeded(shard.index);
                s
            }
            Some(Err(e)) => {
                // Out of descriptors (EMFILE/ENFILE) or another accept error:
                // stop accepting for a while, doubling up to a bound, while
                // the connections already open are served (they run in
                // their own tasks). The pending clients wait in the
                // backlog and are accepted once descriptors free up.
                let fd_exhausted = e
                    .raw_os_error()
                    .is_some_and(|c| c == libc::EMFILE || c == libc::ENFILE)
                    || e.to_string().contains("Too many open files");
                if fd_exhausted {
                    shard.metrics.borrow_mut().accept_fd_exhausted += 1;
                }
                let pause = backoff.failed(shard.index, &e);
                glommio::timer::sleep(pause).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let open = shard.metrics.borrow().open_connections as usize;
        if open >= shard.limits.max_connections {
            shard.metrics.borrow_mut().rejected_connections += 1;
            glommio::spawn_local_into(connection::reject(shard.clone(), stream), queue)
                .expect("task queue exists")
                .detach();
            continue;
        }
        let timer = Rc::new(ConnTimer::new(&stream, shard.limits.idle_timeout));
        let slot = register(shard, timer.clone());
        {
            let mut m = shard.metrics.borrow_mut();
            m.open_connections += 1;
            m.accepted_connections += 1;
        }
        glommio::spawn_local_into(connection::run(shard.clone(), stream, timer, slot), queue)
            .expect("task queue exists")
            .detach();
    }
}

impl Shard {
    /// Serves a reloaded plan from the next request on. Runs between two
    /// requests (housekeeping never runs inside one): connections stay open,
    /// and a request waiting for its owner shard finishes on the routes it
    /// holds.
    fn swap_plan(&self, swap: crate::command::PlanSwap) {
        let started = Instant::now();
        let old = self.router.replace(Rc::new(RefCell::new(swap.router)));
        let remap = self
            .metrics
            .borrow_mut()
            .reroute(swap.route_names.iter().map(String::as_str));
        *self.route_remap.borrow_mut() = remap;
        self.generation.set(swap.generation);
        // Frees the old routes unless a forwarded request still holds them.
        drop(old);
        let pause = started.elapsed();
        tracing::debug!(
            shard = self.index,
            generation = swap.generation,
            ?pause,
            "plan swapped"
        );
        let _ = swap.done.send(crate::command::SwapDone {
            shard: self.index,
            pause,
        });
    }

    /// The metrics index, now, of a response answered on route `route` of
    /// plan generation `generation` (a reload may have come between the
    /// answer and its recording).
    /// `None`: two reloads came in between; count it as unmatched.
    pub(crate) fn metrics_route(&self, route: usize, generation: u64) -> Option<usize> {
        let current = self.generation.get();
        if generation == current {
            return Some(route);
        }
        let remap = self.route_remap.borrow();
        remap
            .get(route)
            .copied()
            .filter(|_| generation + 1 == current)
    }

    /// A new `X-Request-Id`, unique on this shard: no allocation.
    pub(crate) fn next_request_id(&self) -> crate::http::RequestId {
        let seq = self.request_ids.get().wrapping_add(1);
        self.request_ids.set(seq);
        crate::http::RequestId::generated(self.id_prefix, self.index as u16, seq)
    }
}

/// 32 bits that differ between runs (start time and process id, mixed), so
/// that request ids of a restarted process do not repeat the last run's.
fn process_id_prefix() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = nanos ^ (u64::from(std::process::id()) << 32);
    // MurmurHash3's fmix64: every input bit moves every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}

/// Backoff of a failing accept loop, and a log line at most every few
/// seconds (a stall used to log thousands of lines a second).
#[derive(Debug, Default)]
struct AcceptBackoff {
    pause: Duration,
    failures: u64,
    logged: Option<std::time::Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_millis(500);
    const LOG_EVERY: Duration = Duration::from_secs(5);

    /// Records a failure; returns how long to stop accepting.
    fn failed(&mut self, shard: usize, error: &dyn std::fmt::Display) -> Duration {
        self.failures += 1;
        self.pause = (self.pause * 2).clamp(Self::FIRST, Self::MAX);
        if self.logged.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) {
            tracing::warn!(
                shard,
                error = %error,
                failures = self.failures,
                pause_ms = self.pause.as_millis() as u64,
                "accept failed; pausing accepts (existing connections are still served)"
            );
            self.logged = Some(std::time::Instant::now());
            self.failures = 0;
        }
        self.pause
    }

    /// An accept succeeded: the next failure starts from the first pause.
    fn succeeded(&mut self, shard: usize) {
        if !self.pause.is_zero() {
            tracing::debug!(shard, "accepting again");
            self.pause = Duration::ZERO;
            self.logged = None;
        }
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

/// What the main thread tells a shard, and where the shard passes it on.
struct Orders {
    commands: Receiver<ShardCommand>,
    /// Tells the accept loop to stop (drain).
    stop: glommio::channels::local_channel::LocalSender<()>,
    /// Tells `serve` to leave.
    exit: glommio::channels::local_channel::LocalSender<()>,
}

/// Takes every pending command and checkpoint barrier. Runs between two
/// requests (housekeeping never runs inside one), so a capture is a
/// consistent cut and a swapped plan or model serves from the next request.
fn take_orders(shard: &Shard, orders: &Orders) {
    while let Ok(cmd) = orders.commands.try_recv() {
        match cmd {
            ShardCommand::Snapshot(reply) => {
                let _ = reply.send(ShardSnapshot {
                    shard: shard.index,
                    core: shard.core,
                    port: shard.port,
                    metrics: {
                        let mut m = shard.metrics.borrow().clone();
                        m.steps = shard.router.borrow().borrow().step_metrics();
                        m
                    },
                });
            }
            ShardCommand::Ping(reply) => {
                let _ = reply.send(shard.index);
            }
            ShardCommand::LameDuck => shard.lame_duck.set(true),
            ShardCommand::Shutdown => {
                if !shard.draining.replace(true) {
                    let _ = orders.stop.try_send(());
                    sweep(shard, Instant::now());
                }
            }
            ShardCommand::Exit => {
                let _ = orders.exit.try_send(());
            }
            ShardCommand::Reload(swap) => shard.swap_plan(*swap),
            ShardCommand::InstallModel(swap, reply) => {
                let (step, version) = (swap.step.clone(), swap.version.clone());
                let found = shard.router.borrow().borrow_mut().install_model(*swap);
                tracing::debug!(shard = shard.index, step, version, found, "model installed");
                let _ = reply.send((shard.index, found));
            }
        }
    }
    if let Some(ep) = &shard.checkpoint {
        // Capturing swaps the delta logs out: O(tables).
        let _ = ep.poll(&mut shard.state.borrow_mut());
    }
}

/// Sleeps on the wake-up line and takes orders whenever a byte arrives.
/// If the line fails, `housekeeping`'s timer still takes them.
async fn control(shard: Rc<Shard>, orders: Rc<Orders>, mut wake: glommio::net::UnixStream) {
    let mut bytes = [0u8; 64];
    loop {
        take_orders(&shard, &orders);
        match wake.read(&mut bytes).await {
            Ok(n) if n > 0 => {}
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(shard = shard.index, error = %e, "wake-up line failed; commands are polled");
                return;
            }
        }
    }
}

/// Refreshes the date each second, sweeps timeouts, notices connection
/// peaks, and takes orders too (a safety net; `control` takes them first).
async fn housekeeping(shard: Rc<Shard>, orders: Rc<Orders>) {
    let limits = shard.limits;
    let shortest = limits
        .header_timeout
        .min(limits.body_timeout)
        .min(limits.idle_timeout);
    let sweep_every = (shortest / 10).clamp(Duration::from_millis(5), Duration::from_millis(500));
    // Connection peaks are sampled at least this often.
    let interval = sweep_every.min(Duration::from_millis(100));
    let mut last_sweep = Instant::now();
    let mut last_second = 0u64;
    // One timer re-armed every tick: a new `sleep` per tick allocated.
    let mut tick = glommio::timer::Timer::new(interval);
    let mut peak = PeakTrim::default();
    loop {
        take_orders(&shard, &orders);
        let wall = SystemTime::now();
        let since_epoch = wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let second = since_epoch.as_secs();
        let (open, accepted) = {
            let m = shard.metrics.borrow();
            (m.open_connections, m.accepted_connections)
        };
        peak.see(open);
        if second != last_second {
            last_second = second;
            shard.date.borrow_mut().refresh(wall);
            if peak.passed(open, accepted) {
                let released = sys::release_free_memory();
                tracing::debug!(
                    shard = shard.index,
                    open,
                    released,
                    "connection peak passed; freed memory returned"
                );
            }
        }
        let now = Instant::now();
        let draining = shard.draining.get();
        if now.duration_since(last_sweep) >= sweep_every || draining {
            last_sweep = now;
            sweep(&shard, now);
        }
        // Wake for the next sweep, and just after the next second starts.
        let next_second =
            Duration::from_secs(1) - Duration::from_nanos(u64::from(since_epoch.subsec_nanos()));
        let mut sleep = interval.min(next_second + Duration::from_millis(1));
        if draining {
            sleep = sleep.min(DRAIN_TICK);
        }
        tick.reset(sleep);
        (&mut tick).await;
    }
}

/// Notices when a connection peak has passed, so that the memory its
/// buffers took can be handed back (see [`sys::release_free_memory`]).
///
/// A peak has passed when at least [`PeakTrim::CLOSED`] connections closed
/// since the last release and the open ones fell to half the highest count
/// seen since. Steady churn at a constant level never triggers it, so a
/// busy shard does not pay for a trim every second.
#[derive(Debug, Default)]
struct PeakTrim {
    highest: u64,
    /// Connections closed (accepted − open) at the last release.
    closed_at_release: u64,
}

impl PeakTrim {
    const CLOSED: u64 = 256;

    fn see(&mut self, open: u64) {
        self.highest = self.highest.max(open);
    }

    fn passed(&mut self, open: u64, accepted: u64) -> bool {
        let closed = accepted.saturating_sub(open);
        if closed >= self.closed_at_release + Self::CLOSED && open <= self.highest / 2 {
            self.closed_at_release = closed;
            self.highest = open;
            return true;
        }
        false
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
