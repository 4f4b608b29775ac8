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

use crossbeam_channel::{Receiver, unbounded};
use socket2::{Domain, Protocol, Socket, Type};

use crate::admin::{Admin, AdminHandle};
use crate::checkpoint::{self, Coordinator, CoordinatorHandle, ShardCheckpoint};
use crate::command::{ShardCommand, ShardSender, collect_snapshots};
use crate::forward::Peers;
use crate::metrics::ShardSnapshot;
use crate::pipeline::{Plan, Router};
use crate::reload::{ReloadError, Reloaded, Reloader};
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
    /// A shard or admin port is taken by a live listener.
    #[error(
        "port {port} ({what}) on {host} is already in use by {holder}; stop it or change base_port/admin_port"
    )]
    PortInUse {
        /// The port.
        port: u16,
        /// `shard N` or `admin`.
        what: String,
        /// The host address.
        host: IpAddr,
        /// Who listens there: `another process (pid 12, nginx)` when
        /// `/proc` tells, else `another process`.
        holder: String,
    },
    /// A port stayed unavailable for the whole bind retry, yet nothing
    /// listens on it (sockets of a previous run still being torn down).
    #[error(
        "port {port} ({what}) on {host} stayed unavailable for {waited:?} although no process listens on it (a connection of a previous run still closing, or an outgoing connection using it as its local port: keep service ports out of net.ipv4.ip_local_port_range); retry, or change base_port/admin_port"
    )]
    PortBusy {
        /// The port.
        port: u16,
        /// `shard N` or `admin`.
        what: String,
        /// The host address.
        host: IpAddr,
        /// How long binding was retried.
        waited: Duration,
    },
    /// The file-descriptor limit cannot hold the configured connections.
    #[error(
        "RLIMIT_NOFILE is {limit} (hard limit {hard}) but {shards} shard(s) × max_connections {max_connections} + {reserve} reserved = {need} descriptors may be needed; lower [limits] max_connections to {fits} or less, or raise the limit (`ulimit -n`, LimitNOFILE= in a systemd unit, --ulimit nofile in docker)"
    )]
    FdLimit {
        /// The soft limit after raising it to the hard one.
        limit: u64,
        /// The hard limit.
        hard: u64,
        /// Shard count.
        shards: usize,
        /// Configured connections per shard.
        max_connections: usize,
        /// Descriptors kept for listeners, rings, the admin endpoint and
        /// checkpoint files.
        reserve: u64,
        /// The total.
        need: u64,
        /// The largest max_connections that fits.
        fits: u64,
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
    /// io_uring cannot be used here.
    #[error(
        "io_uring is not available ({0}): coreline's shards run on io_uring (Linux 5.8+); a seccomp \
         profile (Docker's and containerd's defaults block it: use deploy/seccomp-io_uring.json) or \
         the sysctl kernel.io_uring_disabled may forbid it"
    )]
    IoUring(std::io::Error),
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

/// Descriptors kept aside from connections: stdio, listeners, each
/// shard's io_uring rings and eventfds (about 4 each, measured), checkpoint
/// files, and 16 for admin connections. (The admin endpoint may hold up to
/// [`ADMIN_MAX_CONNECTIONS`](crate::admin::ADMIN_MAX_CONNECTIONS); beyond
/// its share it competes with the shards, and whoever meets `EMFILE`
/// pauses accepting.)
pub fn fd_reserve(shards: usize, admin: bool) -> u64 {
    16 + 8 * shards as u64 + if admin { 16 } else { 0 }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and checks that every
/// shard can hold `max_connections` connections. A `max_connections` left
/// at its default is lowered to what fits (logged); an explicit one that
/// does not fit is refused with the numbers.
fn check_fd_limit(config: &mut crate::config::ServiceConfig) -> Result<(), StartError> {
    let (soft, hard) = crate::sys::nofile_limit().unwrap_or((u64::MAX, u64::MAX));
    let limit = match crate::sys::raise_nofile_limit() {
        Ok(raised) => {
            if raised > soft {
                tracing::info!(
                    from = soft,
                    to = raised,
                    "raised the soft RLIMIT_NOFILE to the hard limit"
                );
            }
            raised
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE");
            soft
        }
    };
    let shards = config.service.shards;
    let reserve = fd_reserve(shards, config.service.admin_port.is_some());
    let max_connections = config.limits.max_connections;
    let need = (shards as u64)
        .saturating_mul(max_connections as u64)
        .saturating_add(reserve);
    if need <= limit {
        return Ok(());
    }
    let fits = limit.saturating_sub(reserve) / shards as u64;
    if !config.max_connections_set && fits > 0 {
        tracing::warn!(
            limit,
            shards,
            default = max_connections,
            max_connections = fits,
            "max_connections (not set in the file) lowered to fit RLIMIT_NOFILE"
        );
        config.limits.max_connections = fits as usize;
        return Ok(());
    }
    Err(StartError::FdLimit {
        limit,
        hard,
        shards,
        max_connections,
        reserve,
        need,
        fits,
    })
}

/// How long [`bind`] retries a port that is in use.
pub const BIND_RETRY: Duration = Duration::from_secs(2);

/// Binds a listening socket without `SO_REUSEPORT`.
///
/// On `EADDRINUSE` the bind is retried with backoff (1 ms doubling to
/// 100 ms) for up to [`BIND_RETRY`]: right after a `kill -9` the kernel
/// tears the dead process's io_uring and sockets down asynchronously, and
/// its ports stay bound for a few milliseconds. If the port is still taken
/// after that, the error says who holds it when a live listener does
/// ([`StartError::PortInUse`]) and says so when nothing listens
/// ([`StartError::PortBusy`]).
pub fn bind(host: IpAddr, port: u16, what: &str) -> Result<std::net::TcpListener, StartError> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match bind_once(host, port) {
            Ok(l) => {
                if !started.elapsed().is_zero() && pause > Duration::from_millis(1) {
                    tracing::debug!(
                        port,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "bound after retrying"
                    );
                }
                return Ok(l);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port != 0 => {
                if started.elapsed() >= BIND_RETRY {
                    return Err(match listener_holder(port) {
                        Some(holder) => StartError::PortInUse {
                            port,
                            what: what.to_string(),
                            host,
                            holder,
                        },
                        None => StartError::PortBusy {
                            port,
                            what: what.to_string(),
                            host,
                            waited: started.elapsed(),
                        },
                    });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(source) => {
                return Err(StartError::Bind {
                    addr: SocketAddr::new(host, port),
                    what: what.to_string(),
                    source,
                });
            }
        }
    }
}

fn bind_once(host: IpAddr, port: u16) -> std::io::Result<std::net::TcpListener> {
    let addr = SocketAddr::new(host, port);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR only lets us rebind while old connections sit in
    // TIME_WAIT; unlike SO_REUSEPORT it never lets two listeners share.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Who listens on `port`, if a socket in `LISTEN` state is bound to it
/// (from `/proc/net/tcp{,6}`), named by pid and command when `/proc` lets
/// this process see the owner.
fn listener_holder(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == "0A" {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let owner = std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        let fds = std::fs::read_dir(p.path().join("fd")).ok()?;
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
        });
        holds.then(|| {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            format!("another process (pid {pid}, {})", comm.trim())
        })
    });
    Some(owner.unwrap_or_else(|| "another process".to_string()))
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
    /// Hot reload (`SIGHUP`, `POST /reload`).
    reloader: Option<Arc<Reloader>>,
}

struct ShardHandle {
    addr: SocketAddr,
    commands: ShardSender,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Starts every shard (and the admin endpoint) of a plan and returns once
    /// all of them accept connections.
    pub fn start(mut plan: Plan) -> Result<Service, StartError> {
        check_fd_limit(&mut plan.config)?;
        let cores = shard_cores(&plan)?;
        check_memlock(plan.config.service.shards)?;
        crate::sys::io_uring_setup_probe().map_err(StartError::IoUring)?;

        // State first: listeners open only once it is loaded. The models a
        // checkpoint records are installed in the plan before any shard
        // copies it.
        // Each shard's wake-up line: its housekeeping sleeps until a command
        // or a checkpoint barrier is sent to it.
        let lines = (0..plan.config.service.shards)
            .map(|i| {
                crate::sys::wake_line().map_err(|e| {
                    StartError::Shard(format!("cannot create shard {i}'s wake-up line: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (wakes, wake_rxs): (Vec<_>, Vec<_>) = lines.into_iter().unzip();
        let mut wake_rxs = wake_rxs.into_iter();
        let (states, endpoints, coordinator, restored_epoch, models) = restore(&mut plan, &wakes)?;
        let plan = Arc::new(plan);
        let svc = &plan.config.service;

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
            Some(p) => Some(bind(svc.admin_host, p, "admin")?),
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
                wake: wake_rxs.next().expect("one wake-up line per shard"),
                shards: svc.shards,
                state,
                checkpoint,
                peers,
                drained: drained_tx.clone(),
                access_log: access_logs.next().expect("one access log per shard"),
                fleet: crate::fleet::Place::of(&plan.config),
            };
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("coreline-shard-{i}"))
                .spawn(move || shard::run(setup, ready))
                .map_err(|e| StartError::Shard(format!("cannot spawn shard {i}: {e}")))?;
            shards.push(ShardHandle {
                addr,
                commands: ShardSender::new(tx, wakes[i].clone()),
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
            reloader: None,
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
        let senders: Vec<_> = service.shards.iter().map(|s| s.commands.clone()).collect();
        let reloader = Arc::new(Reloader::new(plan.clone(), senders.clone()));
        service.reloader = Some(reloader.clone());
        if let Some(listener) = admin_listener {
            let (checkpoint, restored) = models;
            let control = crate::model_control::ModelControl::new(
                plan.clone(),
                senders.clone(),
                checkpoint,
                &restored,
            );
            let control = Arc::new(control);
            reloader.attach_models(control.clone());
            service.admin = Some(
                Admin::new(plan, senders, service.coordinator.clone())
                    .with_reloader(reloader)
                    .with_models(control)
                    .spawn(listener),
            );
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

    /// Re-reads the configuration file and serves it on every shard (see
    /// [`crate::reload`]); refused, with the old plan still serving, when
    /// the file is invalid or changes what needs a restart.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        match &self.reloader {
            Some(r) => r.reload(),
            None => Err(ReloadError::Shards(
                "the service is not running".to_string(),
            )),
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

    /// After the `lame_duck` period (if any: `/health` fails, requests are
    /// still served), drains and stops every shard (bounded by the drain timeout), takes
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
        let lame_duck = self.plan.config.service.lame_duck;
        if !lame_duck.is_zero() {
            tracing::info!(
                ?lame_duck,
                "lame duck: /health answers 503, requests are still served"
            );
            for s in &self.shards {
                let _ = s.commands.send(ShardCommand::LameDuck);
            }
            std::thread::sleep(lame_duck);
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
    (
        Option<(std::path::PathBuf, crate::checkpoint::models::ModelLedger)>,
        crate::model_control::RestoredModels,
    ),
);

/// Loads the newest valid checkpoint (re-hashed to the current shard count)
/// and starts the epoch coordinator; or, without `[checkpoint]`, empty state.
fn restore(plan: &mut Plan, wakes: &[crate::sys::Wake]) -> Result<Restored, StartError> {
    let shards = plan.config.service.shards;
    let Some(cp) = &plan.config.checkpoint else {
        let mut states = Vec::with_capacity(shards);
        for _ in 0..shards {
            states.push(
                ShardState::without_checkpoints(&plan.tables)
                    .map_err(|e| StartError::Checkpoint(e.to_string()))?,
            );
        }
        return Ok((
            states,
            (0..shards).map(|_| None).collect(),
            None,
            0,
            (None, Default::default()),
        ));
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
    let dir = cp.dir.clone();
    let restored_models = crate::model_control::restore(plan, &dir, recovered.epoch)
        .map_err(|e| StartError::Checkpoint(e.to_string()))?;
    let ledger = checkpoint::models::ModelLedger::new(restored_models.ledger.clone());
    let Some(cp) = &plan.config.checkpoint else {
        unreachable!("checked above")
    };
    let config = checkpoint::CheckpointConfig {
        models: ledger.clone(),
        dir: cp.dir.clone(),
        interval: cp.interval,
        retain: cp.retain,
        full_every: u32::try_from(cp.full_every).unwrap_or(u32::MAX),
        wakes: wakes.to_vec(),
        ..checkpoint::CheckpointConfig::new(&cp.dir)
    };
    let (handle, endpoints) = Coordinator::start(config, &plan.tables, shards, recovered.epoch)
        .map_err(|e| StartError::Checkpoint(e.to_string()))?;
    Ok((
        recovered.shards,
        endpoints.into_iter().map(Some).collect(),
        Some(handle),
        recovered.epoch,
        (Some((dir, ledger)), restored_models),
    ))
}

/// Serves a plan until SIGINT or SIGTERM, then drains and returns; SIGHUP
/// reloads the configuration file.
pub fn run_until_signal(plan: Plan) -> Result<(), StartError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
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
    let mut signal = None;
    for received in signals.forever() {
        if received != SIGHUP {
            signal = Some(received);
            break;
        }
        log_reload("SIGHUP", service.reload());
    }
    let signal = signal
        .and_then(signal_hook::low_level::signal_name)
        .unwrap_or("unknown");
    tracing::info!(signal, "shutting down: draining in-flight requests");
    service.stop()?;
    tracing::info!("stopped");
    Ok(())
}

/// One log line for a reload, whoever asked for it.
pub(crate) fn log_reload(by: &str, result: Result<Reloaded, ReloadError>) {
    match result {
        Ok(r) => {
            let pause_max = r.pauses.iter().max().copied().unwrap_or_default();
            tracing::info!(
                by,
                generation = r.generation,
                routes = r.routes.len(),
                compile_ms = r.compile.as_secs_f64() * 1e3,
                pause_max_us = pause_max.as_secs_f64() * 1e6,
                "configuration reloaded"
            );
        }
        Err(e) => tracing::error!(by, error = %e, "reload refused; the running plan keeps serving"),
    }
}
