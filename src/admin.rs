//! The admin endpoint: `/metrics`, `/stats`, `/health`, `/ready`.
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
use crate::metrics::{label_escape, render_prometheus, render_stats};
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

    fn checkpoint_metrics(&self, name: &str) -> String {
        let Some(c) = &self.coordinator else {
            return String::new();
        };
        let s = c.stats();
        let mut out = String::new();
        for (metric, kind, help, value) in [
            (
                "coreline_checkpoint_restored_epoch",
                "gauge",
                "Epoch the state was restored from at start.",
                s.restored_epoch as f64,
            ),
            (
                "coreline_checkpoint_last_committed_epoch",
                "gauge",
                "Newest committed epoch.",
                s.last_committed_epoch as f64,
            ),
            (
                "coreline_checkpoint_committed_total",
                "counter",
                "Epochs committed since start.",
                s.committed as f64,
            ),
            (
                "coreline_checkpoint_failures_total",
                "counter",
                "Epochs that failed to commit.",
                s.failures as f64,
            ),
            (
                "coreline_checkpoint_last_duration_seconds",
                "gauge",
                "Barrier to manifest commit of the newest epoch.",
                s.last_duration.as_secs_f64(),
            ),
            (
                "coreline_checkpoint_last_bytes",
                "gauge",
                "Bytes written by the newest epoch.",
                s.last_bytes as f64,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {metric} {help}\n# TYPE {metric} {kind}\n{metric}{{service=\"{name}\"}} {value}\n"
            ));
        }
        out
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
                        self.route(request.method, request.path, draining);
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
        draining: bool,
    ) -> (u16, ContentType, Vec<u8>, Option<&'static str>) {
        let get = matches!(method, Method::Get | Method::Head);
        let name = &self.plan.config.service.name;
        match path {
            "/metrics" | "/stats" | "/health" | "/ready" if !get => (
                405,
                ContentType::Json,
                error_body("use GET"),
                Some("GET, HEAD"),
            ),
            "/metrics" => {
                let snaps = collect_snapshots(&self.shards, SNAPSHOT_WAIT);
                let svc = label_escape(name);
                let extra = format!(
                    "# HELP coreline_uptime_seconds Seconds since the service started.\n# TYPE coreline_uptime_seconds gauge\ncoreline_uptime_seconds{{service=\"{}\"}} {}\n# HELP coreline_shards_reporting Shards that answered this scrape.\n# TYPE coreline_shards_reporting gauge\ncoreline_shards_reporting{{service=\"{}\"}} {}\n",
                    svc,
                    self.started.elapsed().as_secs_f64(),
                    svc,
                    snaps.len()
                ) + &self.checkpoint_metrics(&svc);
                let text = render_prometheus(name, &snaps, &extra);
                (200, ContentType::Prometheus, text.into_bytes(), None)
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
                error_body("unknown admin path; try /metrics, /stats, /health or /ready"),
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
