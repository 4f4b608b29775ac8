//! Starting and stopping a service: checks, listeners, shards, admin.
//!
//! Start-up does everything that can fail before any shard runs, so that a
//! mistake is one clear error and nothing half-starts: it resolves cores,
//! checks `RLIMIT_MEMLOCK` against what the shards' io_uring rings need,
//! binds every listener on the main thread *without* `SO_REUSEPORT` (glommio's
//! own `bind` sets it, which would let a second process silently split the
//! traffic of a port; binding here makes a clash an error that names the
//! port), then starts one pinned executor thread per shard and waits until
//! each one accepts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, unbounded};
use socket2::{Domain, Protocol, Socket, Type};

use crate::admin::{Admin, AdminHandle};
use crate::checkpoint::{self, Coordinator, CoordinatorHandle, ShardCheckpoint};
use crate::command::{ShardCommand, collect_snapshots};
use crate::forward::Peers;
use crate::metrics::ShardSnapshot;
use crate::pipeline::{Plan, Router};
use crate::shard::{self, ShardSetup};
use crate::state::ShardState;

/// io_uring registered memory per shard. Network shards do no direct file
/// I/O, so glommio's 10 MiB default would only eat into `RLIMIT_MEMLOCK`
/// (8 MiB on many machines).
pub const SHARD_IO_MEMORY: usize = 256 * 1024;

/// Locked memory a shard needs beyond `io_memory`: its io_uring rings.
const RING_MEMLOCK_ESTIMATE: usize = 192 * 1024;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A shard or admin port is taken.
    #[error(
        "port {port} ({what}) on {host} is already in use by another process; stop it or change base_port/admin_port"
    )]
    PortInUse {
        /// The port.
        port: u16,
        /// `shard N` or `admin`.
        what: String,
        /// The host address.
        host: IpAddr,
    },
    /// Binding failed for another reason.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// `shard N` or `admin`.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not enough lockable memory for the io_uring rings.
    #[error(
        "RLIMIT_MEMLOCK is {have_kib} KiB but {shards} shard(s) need about {need_kib} KiB of locked memory for io_uring; raise it (`ulimit -l {need_kib}`, or LimitMEMLOCK= in a systemd unit, or --ulimit memlock in docker)"
    )]
    Memlock {
        /// Current soft limit in KiB.
        have_kib: u64,
        /// Estimated need in KiB.
        need_kib: u64,
        /// Shard count.
        shards: usize,
    },
    /// Cores missing or pinning impossible.
    #[error("{0}")]
    Cores(String),
    /// A shard failed while starting.
    #[error("{0}")]
    Shard(String),
    /// State could not be restored, or checkpoints not set up.
    #[error("checkpoints: {0}")]
    Checkpoint(String),
}

/// Picks the cores for the shards: the configured list, or the first
/// available cores in order.
pub fn shard_cores(plan: &Plan) -> Result<Vec<usize>, StartError> {
    let svc = &plan.config.service;
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if let Some(cores) = &svc.cores {
        for c in cores {
            if !available.contains(c) {
                return Err(StartError::Cores(format!(
                    "core {c} is not available to this process (available: {available:?})"
                )));
            }
        }
        return Ok(cores.clone());
    }
    if available.len() < svc.shards {
        return Err(StartError::Cores(format!(
            "{} shards need {} cores but only {} are available to this process",
            svc.shards,
            svc.shards,
            available.len()
        )));
    }
    Ok(available[..svc.shards].to_vec())
}

fn check_memlock(shards: usize) -> Result<(), StartError> {
    // With CAP_IPC_LOCK (root, usually) the limit does not apply; if the
    // capability is missing after all, executor creation fails and says so.
    if crate::sys::is_root() {
        return Ok(());
    }
    let need = (shards * (SHARD_IO_MEMORY + RING_MEMLOCK_ESTIMATE)) as u64;
    match crate::sys::memlock_limit() {
        Ok(Some(have)) if have < need => Err(StartError::Memlock {
            have_kib: have / 1024,
            need_kib: need.div_ceil(1024),
            shards,
        }),
        _ => Ok(()),
    }
}

/// Binds a listening socket without `SO_REUSEPORT`.
pub fn bind(host: IpAddr, port: u16, what: &str) -> Result<std::net::TcpListener, StartError> {
    let addr = SocketAddr::new(host, port);
    let err = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            StartError::PortInUse {
                port,
                what: what.to_string(),
                host,
            }
        } else {
            StartError::Bind {
                addr,
                what: what.to_string(),
                source,
            }
        }
    };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    // SO_REUSEADDR only lets us rebind while old connections sit in
    // TIME_WAIT; unlike SO_REUSEPORT it never lets two listeners share.
    socket.set_reuse_address(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    Ok(socket.into())
}

/// A running service.
pub struct Service {
    plan: Arc<Plan>,
    shards: Vec<ShardHandle>,
    admin: Option<AdminHandle>,
    coordinator: Option<CoordinatorHandle>,
    drained: Receiver<usize>,
    restored_epoch: u64,
    /// The access-log thread (none when `access_log = "off"`).
    access_logger: Option<crate::access_log::Logger>,
}

struct ShardHandle {
    addr: SocketAddr,
    commands: Sender<ShardCommand>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Starts every shard (and the admin endpoint) of a plan and returns once
    /// all of them accept connections.
    pub fn start(plan: Plan) -> Result<Service, StartError> {
        let plan = Arc::new(plan);
        let svc = &plan.config.service;
        let cores = shard_cores(&plan)?;
        check_memlock(svc.shards)?;

        // State first: listeners open only once it is loaded.
        let (states, endpoints, coordinator, restored_epoch) = restore(&plan)?;

        let mut listeners = Vec::with_capacity(svc.shards);
        for i in 0..svc.shards {
            let port = if svc.base_port == 0 {
                0
            } else {
                u16::try_from(svc.base_port as usize + i).map_err(|_| {
                    StartError::Cores(format!("shard {i} would listen on a port above 65535"))
                })?
            };
            listeners.push(bind(svc.host, port, &format!("shard {i}"))?);
        }
        let admin_listener = match svc.admin_port {
            Some(p) => Some(bind(svc.host, p, "admin")?),
            None => None,
        };

        let (ready_tx, ready_rx) = unbounded::<Result<(), String>>();
        let (drained_tx, drained_rx) = unbounded::<usize>();
        let mut shards = Vec::with_capacity(svc.shards);
        let peers = Peers::mesh(svc.shards, plan.config.limits.max_connections + 64);
        let (access_logger, access_logs) =
            crate::access_log::Logger::start(svc.access_log, svc.shards);
        let mut access_logs = access_logs.into_iter();
        let mut per_shard = states
            .into_iter()
            .zip(endpoints)
            .zip(peers)
            .map(|((s, e), p)| (s, e, p));
        for (i, listener) in listeners.into_iter().enumerate() {
            let (state, checkpoint, peers) = per_shard.next().expect("one state per shard");
            let addr = listener.local_addr().map_err(|source| StartError::Bind {
                addr: SocketAddr::new(svc.host, 0),
                what: format!("shard {i}"),
                source,
            })?;
            let (tx, rx) = unbounded();
            let setup = ShardSetup {
                index: i,
                core: cores[i],
                listener,
                router: Router::from_plan(&plan),
                limits: plan.config.limits,
                io_memory: SHARD_IO_MEMORY,
                spin_before_park: svc.spin_before_park,
                commands: rx,
                shards: svc.shards,
                state,
                checkpoint,
                peers,
                drained: drained_tx.clone(),
                access_log: access_logs.next().expect("one access log per shard"),
            };
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("coreline-shard-{i}"))
                .spawn(move || shard::run(setup, ready))
                .map_err(|e| StartError::Shard(format!("cannot spawn shard {i}: {e}")))?;
            shards.push(ShardHandle {
                addr,
                commands: tx,
                thread: Some(thread),
            });
        }
        drop(ready_tx);
        let mut service = Service {
            plan: plan.clone(),
            shards,
            admin: None,
            coordinator,
            drained: drained_rx,
            restored_epoch,
            access_logger,
        };
        for _ in 0..service.shards.len() {
            match ready_rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Ok(())) => {}
                Ok(Err(msg)) => {
                    service.abandon();
                    return Err(StartError::Shard(msg));
                }
                Err(_) => {
                    service.abandon();
                    return Err(StartError::Shard(
                        "a shard did not start within 30 s".to_string(),
                    ));
                }
            }
        }
        if let Some(listener) = admin_listener {
            let senders = service.shards.iter().map(|s| s.commands.clone()).collect();
            service.admin =
                Some(Admin::new(plan, senders, service.coordinator.clone()).spawn(listener));
        }
        Ok(service)
    }

    /// The address of each shard, in shard order.
    pub fn shard_addrs(&self) -> Vec<SocketAddr> {
        self.shards.iter().map(|s| s.addr).collect()
    }

    /// The admin endpoint's address, if one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminHandle::addr)
    }

    /// The plan being served.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Copies of every shard's metrics.
    pub fn snapshots(&self) -> Vec<ShardSnapshot> {
        let senders: Vec<_> = self.shards.iter().map(|s| s.commands.clone()).collect();
        collect_snapshots(&senders, Duration::from_secs(2))
    }

    /// Start-up failed: tell every shard to stop but do not wait for them
    /// (a shard still connecting to a peer that never started would wait
    /// forever). The process is about to report the error and exit.
    fn abandon(&mut self) {
        for s in &self.shards {
            let _ = s.commands.send(ShardCommand::Shutdown);
            let _ = s.commands.send(ShardCommand::Exit);
        }
        for s in &mut self.shards {
            drop(s.thread.take());
        }
        if let Some(c) = self.coordinator.take() {
            drop(c);
        }
    }

    /// The epoch state was restored from at start (0: none).
    pub fn restored_epoch(&self) -> u64 {
        self.restored_epoch
    }

    /// The checkpoint coordinator, when checkpoints are configured.
    pub fn coordinator(&self) -> Option<&CoordinatorHandle> {
        self.coordinator.as_ref()
    }

    /// Drains and stops every shard (bounded by the drain timeout), takes
    /// the final checkpoint, then stops the admin endpoint. Returns once all
    /// shard threads have exited; an error says the final checkpoint failed
    /// (the updates since the last committed epoch are not on disk).
    pub fn stop(&mut self) -> Result<(), StartError> {
        if self.shards.iter().all(|s| s.thread.is_none()) {
            return Ok(());
        }
        let mut result = Ok(());
        if let Some(admin) = &self.admin {
            admin.set_draining();
        }
        for s in &self.shards {
            let _ = s.commands.send(ShardCommand::Shutdown);
        }
        let wait = self.plan.config.limits.drain_timeout + Duration::from_secs(5);
        let deadline = std::time::Instant::now() + wait;
        let mut drained = 0;
        while drained < self.shards.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.drained.recv_timeout(left) {
                Ok(_) => drained += 1,
                Err(_) => {
                    tracing::warn!(drained, "not every shard drained in time");
                    break;
                }
            }
        }
        // Every request is answered: the final epoch holds every update.
        if let Some(coordinator) = self.coordinator.take() {
            match coordinator.stop() {
                Ok(epoch) => tracing::info!(epoch, "final checkpoint committed"),
                Err(e) => {
                    tracing::error!(error = %e, "final checkpoint failed");
                    result = Err(StartError::Checkpoint(format!(
                        "the final checkpoint failed ({e}); updates since the last committed epoch are lost"
                    )));
                }
            }
        }
        for s in &self.shards {
            let _ = s.commands.send(ShardCommand::Exit);
        }
        // Every answer is in: write the access log's last lines.
        if let Some(logger) = self.access_logger.take() {
            logger.stop();
        }
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        result
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::error!(error = %e, "stopping the service");
        }
    }
}

type Restored = (
    Vec<ShardState>,
    Vec<Option<ShardCheckpoint>>,
    Option<CoordinatorHandle>,
    u64,
);

/// Loads the newest valid checkpoint (re-hashed to the current shard count)
/// and starts the epoch coordinator; or, without `[checkpoint]`, empty state.
fn restore(plan: &Plan) -> Result<Restored, StartError> {
    let shards = plan.config.service.shards;
    let Some(cp) = &plan.config.checkpoint else {
        let mut states = Vec::with_capacity(shards);
        for _ in 0..shards {
            states.push(
                ShardState::without_checkpoints(&plan.tables)
                    .map_err(|e| StartError::Checkpoint(e.to_string()))?,
            );
        }
        return Ok((states, (0..shards).map(|_| None).collect(), None, 0));
    };
    let on_damage = if cp.discard_state {
        checkpoint::OnDamage::Discard
    } else {
        checkpoint::OnDamage::Refuse
    };
    let recovered = checkpoint::recover_with(&cp.dir, shards, &plan.tables, on_damage)
        .map_err(|e| StartError::Checkpoint(e.to_string()))?;
    for (epoch, why) in &recovered.skipped {
        tracing::warn!(epoch, reason = %why, "skipped a damaged checkpoint");
    }
    tracing::info!(
        epoch = recovered.epoch,
        keys = recovered.keys,
        dir = %cp.dir.display(),
        "state restored"
    );
    let config = checkpoint::CheckpointConfig {
        dir: cp.dir.clone(),
        interval: cp.interval,
        retain: cp.retain,
        full_every: u32::try_from(cp.full_every).unwrap_or(u32::MAX),
        ..checkpoint::CheckpointConfig::new(&cp.dir)
    };
    let (handle, endpoints) = Coordinator::start(config, &plan.tables, shards, recovered.epoch)
        .map_err(|e| StartError::Checkpoint(e.to_string()))?;
    Ok((
        recovered.shards,
        endpoints.into_iter().map(Some).collect(),
        Some(handle),
        recovered.epoch,
    ))
}

/// Serves a plan until SIGINT or SIGTERM, then drains and returns.
pub fn run_until_signal(plan: Plan) -> Result<(), StartError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| StartError::Shard(format!("cannot install signal handlers: {e}")))?;
    let mut service = Service::start(plan)?;
    let svc = &service.plan.config.service;
    for (i, addr) in service.shard_addrs().iter().enumerate() {
        tracing::info!(shard = i, %addr, "shard listening");
        // A stable, machine-readable line for scripts and tests.
        println!("listening shard={i} addr={addr}");
    }
    if let Some(addr) = service.admin_addr() {
        tracing::info!(%addr, "admin listening");
        println!("listening admin addr={addr}");
    }
    if let Some(first) = service.shard_addrs().first() {
        for line in crate::openapi::route_lines(&service.plan, *first) {
            println!("{line}");
        }
    }
    println!("ready service={}", svc.name);
    let signal = signals.forever().next();
    let signal = signal
        .and_then(signal_hook::low_level::signal_name)
        .unwrap_or("unknown");
    tracing::info!(signal, "shutting down: draining in-flight requests");
    service.stop()?;
    tracing::info!("stopped");
    Ok(())
}
