//! What each admin path answers: `/metrics` and `/stats` from the shards'
//! snapshots, `/health`, `/ready`, `/openapi.json`, `GET /models`, and the
//! answers of the mutating endpoints once their work is done.

use super::{Admin, SNAPSHOT_WAIT};
use crate::checkpoint::CoordinatorHandle;
use crate::command::{collect_snapshots, ping_shards};
use crate::http::{ContentType, Method};
use crate::metrics::{ProcessStats, Scrape, render_prometheus, render_stats};
use crate::reload::{ReloadError, Reloaded};
use crate::reply::write_error_json;

impl Admin {
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

    pub(super) fn route(
        &self,
        method: Method,
        path: &str,
        query: &str,
        draining: bool,
    ) -> (u16, ContentType, Vec<u8>, Option<&'static str>) {
        let get = matches!(method, Method::Get | Method::Head);
        let plan = self.plan();
        let name = &plan.config.service.name;
        match path {
            "/metrics" | "/stats" | "/health" | "/ready" | "/openapi.json" | "/models" if !get => (
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
            "/models" => match &self.models {
                Some(m) => (200, ContentType::Json, m.list(), None),
                None => (200, ContentType::Json, br#"{"models":[]}"#.to_vec(), None),
            },
            "/openapi.json" => (
                200,
                ContentType::Json,
                crate::openapi::document_text(&plan).into_bytes(),
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
            "/reload" if method != Method::Post => {
                (405, ContentType::Json, error_body("use POST"), Some("POST"))
            }
            "/reload" => (
                500,
                ContentType::Json,
                error_body("hot reload is not available in this process"),
                None,
            ),
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
                Some(c) => {
                    let (status, body) = checkpoint_answer(c.checkpoint_now());
                    (status, ContentType::Json, body, None)
                }
            },
            _ => (
                404,
                ContentType::Json,
                error_body(
                    "unknown admin path; try /metrics, /stats, /health, /ready, /openapi.json or /models",
                ),
                None,
            ),
        }
    }
}

/// The answer to `POST /reload`: 200 with the generation and the measured
/// pauses, or the reason it was refused (400 with the configuration's
/// errors, file:line:column) while the old plan keeps serving.
pub(super) fn reload_answer(result: Result<Reloaded, ReloadError>) -> (u16, Vec<u8>) {
    match result {
        Ok(r) => (200, r.to_json().to_string().into_bytes()),
        Err(e) => (e.status(), error_body(&format!("reload refused: {e}"))),
    }
}

/// The answer to `POST /checkpoint`.
pub(super) fn checkpoint_answer(
    result: Result<u64, crate::checkpoint::CommitError>,
) -> (u16, Vec<u8>) {
    match result {
        Ok(epoch) => (200, format!("{{\"epoch\":{epoch}}}").into_bytes()),
        Err(e) => (500, error_body(&format!("checkpoint failed: {e}"))),
    }
}

pub(super) fn error_body(message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    write_error_json(&mut body, message, None);
    body
}
