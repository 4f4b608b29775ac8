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
//! [`connection`](crate::connection). Housekeeping polls commands, takes
//! checkpoint barriers between requests, refreshes the `Date` header and
//! sweeps connection timeouts: one task a few times per shortest timeout,
//! which keeps timers out of the request path (a per-read timer would cost a
//! timer-tree insert and removal per request).
//!
//! # Shutdown
//!
//! On [`ShardCommand::Shutdown`] the shard stops accepting, closes idle
//! connections, lets connections with a request in flight finish it (their
//! responses carry `Connection: close`), and after `drain_timeout` shuts down
//! whatever is left.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
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

/// The shard-wide state every task of the shard borrows.
pub(crate) struct Shard {
    pub(crate) index: usize,
    core: usize,
    port: u16,
    pub(crate) limits: Limits,
    pub(crate) router: RefCell<Router>,
    pub(crate) metrics: RefCell<ShardMetrics>,
    pub(crate) date: RefCell<HttpDate>,
    /// Live connections, for the sweep and for forward replies. A slot is
    /// reused after close.
    pub(crate) conns: RefCell<Vec<Option<Rc<ConnTimer>>>>,
    /// Buffers of closed connections, reused by new ones.
    pub(crate) buffers: RefCell<Vec<Buffers>>,
    pub(crate) draining: Cell<bool>,
    shards: usize,
    pub(crate) state: RefCell<ShardState>,
    checkpoint: Option<ShardCheckpoint>,
    /// This shard's ends of the channels to the other shards.
    pub(crate) mesh: Mesh,
    /// This shard's end of the access log.
    pub(crate) access_log: AccessLog,
}

impl Shard {
    /// The context keyed steps run in on this shard.
    pub(crate) fn ctx<'a>(&self, state: &'a mut ShardState) -> Ctx<'a> {
        Ctx::new(state, self.index, self.shards)
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
        shards,
        state,
        checkpoint,
        peers,
        drained,
        access_log,
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
        router: RefCell::new(router),
        metrics: RefCell::new(ShardMetrics::new(route_names.iter().map(String::as_str))),
        date: RefCell::new(date),
        conns: RefCell::new(Vec::new()),
        buffers: RefCell::new(Vec::new()),
        draining: Cell::new(false),
        shards,
        state: RefCell::new(state),
        checkpoint,
        mesh,
        access_log,
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
