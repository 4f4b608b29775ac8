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
//!
//! # Layout
//!
//! - `mod.rs`: [`Admin`] (built, then spawned on its thread),
//!   [`AdminHandle`], and the admin port's limits and timeouts;
//! - `guard.rs`: who may call a mutating endpoint: [`AdminToken`], the
//!   bearer token and the `X-Coreline-Admin` header;
//! - `connection.rs`: the `poll(2)` loop and one connection's phases
//!   (read, wait for a checkpoint, reload or model swap, write, time out);
//! - `endpoints.rs`: what each path answers.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::checkpoint::CoordinatorHandle;
use crate::command::ShardSender;
use crate::model_control::ModelControl;
use crate::pipeline::Plan;
use crate::reload::Reloader;

mod connection;
mod endpoints;
mod guard;

pub use guard::AdminToken;
use guard::Guard;

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

/// The admin endpoint, before it runs.
pub struct Admin {
    plan: Arc<Plan>,
    shards: Vec<ShardSender>,
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
        shards: Vec<ShardSender>,
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
