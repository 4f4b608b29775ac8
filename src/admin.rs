//! The admin endpoint: `/metrics`, `/stats`, `/health`, `/ready`,
//! `/openapi.json`, `POST /checkpoint`.
//!
//! It runs on its own plain thread, off every shard's core budget, and
//! handles one short connection at a time (`Connection: close`): admin
//! traffic is a scrape every few seconds. It never touches shard data
//! directly; each request that needs metrics asks every shard for a
//! [`ShardSnapshot`](crate::metrics::ShardSnapshot) over its command channel
//! and merges the copies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;

use crate::checkpoint::CoordinatorHandle;
use crate::command::{ShardCommand, collect_snapshots, ping_shards};
use crate::http::{
    ContentType, Decoded, Decoder, HttpDate, Method, ResponseOptions, write_error, write_response,
};
use crate::metrics::{ProcessStats, Scrape, render_prometheus, render_stats};
use crate::pipeline::Plan;
use crate::reply::write_error_json;

/// How long the admin endpoint waits for shards to answer a snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// The admin endpoint, before it runs.
pub struct Admin {
    plan: Arc<Plan>,
    shards: Vec<Sender<ShardCommand>>,
    coordinator: Option<CoordinatorHandle>,
    started: Instant,
    /// Wall-clock time of `started`, for `process_start_time_seconds`.
    started_at: SystemTime,
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
        shards: Vec<Sender<ShardCommand>>,
        coordinator: Option<CoordinatorHandle>,
    ) -> Admin {
        Admin {
            plan,
            shards,
            coordinator,
            started: Instant::now(),
            started_at: SystemTime::now(),
        }
    }

    fn checkpoint_json(&self) -> serde_json::Value {
        match &self.coordinator {
            None => serde_json::Value::Null,
            Some(c) => {
                let s = c.stats();
                serde_json::json!({
                    "restored_epoch": s.restored_epoch,
                    "last_committed_epoch": s.last_committed_epoch,
                    "last_kind": s.last_kind.map(|k| format!("{k:?}").to_lowercase()),
                    "last_commit_unix_ms": s.last_commit_unix_ms,
                    "last_duration_ms": s.last_duration.as_secs_f64() * 1000.0,
                    "last_bytes": s.last_bytes,
                    "last_rows": s.last_rows,
                    "committed": s.committed,
                    "failures": s.failures,
                    "last_error": s.last_error,
                    "last_error_unix_ms": s.last_error_unix_ms,
                    "last_success_unix_ms": s.last_commit_unix_ms,
                    "unchanged": s.unchanged,
                    "verified_epoch": s.verified_epoch,
                    "set_aside": s.set_aside,
                    "in_flight": s.in_flight,
                })
            }
        }
    }

    /// Serves on `listener` from a new thread.
    pub fn spawn(self, listener: TcpListener) -> AdminHandle {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
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

    fn serve(self, listener: TcpListener, stop: &AtomicBool, draining: &AtomicBool) {
        // Non-blocking accept polled every 20 ms so that stop is prompt
        // without a wake-up connection.
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = self.handle(stream, draining.load(Ordering::Relaxed)) {
                        tracing::debug!(error = %e, "admin connection failed");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn handle(&self, mut stream: TcpStream, draining: bool) -> std::io::Result<()> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        let limits = self.plan.config.limits;
        let mut buf = vec![0u8; 16 * 1024];
        let mut len = 0;
        let mut decoder = Decoder::new();
        let mut out = Vec::with_capacity(4096);
        let date = HttpDate::new(SystemTime::now());
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = stream.read(&mut buf[len..])?;
            if n == 0 {
                return Ok(());
            }
            len += n;
            match decoder.decode(&buf[..len], &limits) {
                Ok(Decoded::Incomplete { send_continue, .. }) => {
                    if send_continue {
                        stream.write_all(crate::http::CONTINUE)?;
                    }
                }
                Ok(Decoded::Request { request, .. }) => {
                    let (status, ct, body, allow) =
                        self.route(request.method, request.path, request.query, draining);
                    let mut opts = ResponseOptions::closing();
                    opts.head = request.method == Method::Head;
                    opts.allow = allow;
                    write_response(&mut out, &date, status, ct, &body, opts);
                    return stream.write_all(&out);
                }
                Err(e) => {
                    write_error(&mut out, &date, e);
                    return stream.write_all(&out);
                }
            }
        }
    }

    fn route(
        &self,
        method: Method,
        path: &str,
        query: &str,
        draining: bool,
    ) -> (u16, ContentType, Vec<u8>, Option<&'static str>) {
        let get = matches!(method, Method::Get | Method::Head);
        let name = &self.plan.config.service.name;
        match path {
            "/metrics" | "/stats" | "/health" | "/ready" | "/openapi.json" if !get => (
                405,
                ContentType::Json,
                error_body("use GET"),
                Some("GET, HEAD"),
            ),
            "/metrics" => {
                let openmetrics = query.split('&').any(|p| p == "format=openmetrics");
                let scrape = Scrape {
                    service: name.clone(),
                    shards_total: self.shards.len(),
                    snapshots: collect_snapshots(&self.shards, SNAPSHOT_WAIT),
                    checkpoint: self.coordinator.as_ref().map(CoordinatorHandle::stats),
                    process: ProcessStats::read(self.started_at),
                };
                let text = render_prometheus(scrape, openmetrics);
                let ct = if openmetrics {
                    ContentType::OpenMetrics
                } else {
                    ContentType::Prometheus
                };
                (200, ct, text.into_bytes(), None)
            }
            "/stats" => {
                let snaps = collect_snapshots(&self.shards, SNAPSHOT_WAIT);
                let extra = serde_json::json!({
                    "uptime_seconds": self.started.elapsed().as_secs_f64(),
                    "shards_reporting": snaps.len(),
                    "shards_total": self.shards.len(),
                    "checkpoint": self.checkpoint_json(),
                });
                let text = render_stats(name, &snaps, extra);
                (200, ContentType::Json, text.into_bytes(), None)
            }
            "/health" => (200, ContentType::Json, br#"{"status":"ok"}"#.to_vec(), None),
            "/openapi.json" => (
                200,
                ContentType::Json,
                crate::openapi::document_text(&self.plan).into_bytes(),
                None,
            ),
            "/ready" => {
                if draining {
                    (
                        503,
                        ContentType::Json,
                        br#"{"ready":false,"reason":"draining"}"#.to_vec(),
                        None,
                    )
                } else {
                    let answered = ping_shards(&self.shards, SNAPSHOT_WAIT);
                    if answered == self.shards.len() {
                        (200, ContentType::Json, br#"{"ready":true}"#.to_vec(), None)
                    } else {
                        (
                            503,
                            ContentType::Json,
                            format!(
                                "{{\"ready\":false,\"reason\":\"{} of {} shards answered\"}}",
                                answered,
                                self.shards.len()
                            )
                            .into_bytes(),
                            None,
                        )
                    }
                }
            }
            "/checkpoint" if method != Method::Post => {
                (405, ContentType::Json, error_body("use POST"), Some("POST"))
            }
            "/checkpoint" => match &self.coordinator {
                None => (
                    501,
                    ContentType::Json,
                    error_body("checkpoints are not configured: add a [checkpoint] table"),
                    None,
                ),
                Some(c) => match c.checkpoint_now() {
                    Ok(epoch) => (
                        200,
                        ContentType::Json,
                        format!("{{\"epoch\":{epoch}}}").into_bytes(),
                        None,
                    ),
                    Err(e) => (
                        500,
                        ContentType::Json,
                        error_body(&format!("checkpoint failed: {e}")),
                        None,
                    ),
                },
            },
            _ => (
                404,
                ContentType::Json,
                error_body(
                    "unknown admin path; try /metrics, /stats, /health, /ready or /openapi.json",
                ),
                None,
            ),
        }
    }
}

fn error_body(message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    write_error_json(&mut body, message, None);
    body
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
