//! The control channel from the main thread to the shards: [`ShardCommand`]
//! and the two questions asked of every shard at once ([`collect_snapshots`],
//! [`ping_shards`]).
//!
//! A command goes through a [`ShardSender`]: the channel, then a byte on the
//! shard's wake-up line ([`crate::sys::Wake`]), so the shard's housekeeping
//! takes it between two requests without polling. The callers here wait a
//! bounded time for the answers, so a stuck shard shows up as a missing
//! answer rather than a hung scrape.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendError, Sender, bounded};

use crate::metrics::ShardSnapshot;
use crate::operator::ModelSwap;
use crate::pipeline::Router;
use crate::sys::Wake;

/// The sending end of one shard's command channel, with its wake-up line.
#[derive(Debug, Clone)]
pub struct ShardSender {
    tx: Sender<ShardCommand>,
    wake: Wake,
}

impl ShardSender {
    /// A channel's sending end and the shard's wake-up line.
    pub fn new(tx: Sender<ShardCommand>, wake: Wake) -> ShardSender {
        ShardSender { tx, wake }
    }

    /// Sends `cmd` and wakes the shard; an error when the shard has gone.
    pub fn send(&self, cmd: ShardCommand) -> Result<(), SendError<ShardCommand>> {
        self.tx.send(cmd)?;
        self.wake.wake();
        Ok(())
    }
}

/// Messages from the coordinator to a shard.
#[derive(Debug)]
pub enum ShardCommand {
    /// Send a copy of the shard's metrics to this channel.
    Snapshot(Sender<ShardSnapshot>),
    /// Answer with the shard's index (a liveness check for `/ready`).
    Ping(Sender<usize>),
    /// Lame duck: `/health` answers 503 and responses close their
    /// connection, while requests are still accepted and served.
    LameDuck,
    /// Stop accepting and drain; report on `drained` when done, then keep
    /// serving forwarded operations and checkpoint barriers until `Exit`.
    Shutdown,
    /// Leave: the final checkpoint (if any) is committed.
    Exit,
    /// Serve a reloaded plan from the next request on (see
    /// [`crate::reload`]).
    Reload(Box<PlanSwap>),
    /// Install a checked model in the `score` step it names, between two
    /// requests, and answer whether the step was found (`PUT /models`).
    InstallModel(Box<ModelSwap>, Sender<(usize, bool)>),
}

/// A reloaded plan for one shard, compiled off the request path: the shard
/// only swaps it in, between two requests.
#[derive(Debug)]
pub struct PlanSwap {
    /// The plan's generation (1 for the first reload).
    pub generation: u64,
    /// The shard's own routes, built from the new plan.
    pub router: Router,
    /// Route names in index order, for the metrics.
    pub route_names: Vec<String>,
    /// Told once the shard serves the new plan.
    pub done: Sender<SwapDone>,
}

/// A shard's answer to [`ShardCommand::Reload`].
#[derive(Debug, Clone, Copy)]
pub struct SwapDone {
    /// The shard.
    pub shard: usize,
    /// How long the shard stopped serving to swap (including freeing the
    /// old routes when no request holds them any more).
    pub pause: Duration,
}

/// How many shards answer a ping within `wait`.
pub fn ping_shards(shards: &[ShardSender], wait: Duration) -> usize {
    let (tx, rx) = bounded(shards.len().max(1));
    let asked = shards
        .iter()
        .filter(|s| s.send(ShardCommand::Ping(tx.clone())).is_ok())
        .count();
    let deadline = Instant::now() + wait;
    let mut answered = 0;
    while answered < asked {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            break;
        }
        answered += 1;
    }
    answered
}

/// Asks every shard for a snapshot and waits (bounded) for the answers.
pub fn collect_snapshots(shards: &[ShardSender], wait: Duration) -> Vec<ShardSnapshot> {
    let (tx, rx): (Sender<ShardSnapshot>, Receiver<ShardSnapshot>) = bounded(shards.len().max(1));
    let mut asked = 0;
    for s in shards {
        if s.send(ShardCommand::Snapshot(tx.clone())).is_ok() {
            asked += 1;
        }
    }
    let deadline = Instant::now() + wait;
    let mut out = Vec::with_capacity(asked);
    while out.len() < asked {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) => out.push(s),
            Err(_) => break,
        }
    }
    out.sort_by_key(|s| s.shard);
    out
}
