//! `/metrics`: one [`Scrape`] of every shard's snapshot, encoded by
//! `prometheus-client` as a custom [`Collector`] that maps each HDR
//! histogram onto fixed Prometheus buckets, served as OpenMetrics or as the
//! Prometheus text format 0.0.4.

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::{ProcessStats, ShardMetrics, ShardSnapshot};
use crate::checkpoint::CheckpointStats;

/// Upper bounds (seconds) of the Prometheus histogram buckets.
const BUCKETS_S: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the step histogram buckets: steps run in
/// nanoseconds to microseconds, a forwarding hop in tens of microseconds.
const STEP_BUCKETS_S: [f64; 19] = [
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
    5e-3, 1e-2, 0.1, 1.0, 10.0,
];
/// Everything one `/metrics` answer shows, owned, so that it can be handed
/// to `prometheus-client` as a [`Collector`].
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The service's name (only in `coreline_build_info`).
    pub service: String,
    /// Shards in the plan.
    pub shards_total: usize,
    /// The shards that answered, in shard order.
    pub snapshots: Vec<ShardSnapshot>,
    /// Checkpoint figures, when checkpoints are configured.
    pub checkpoint: Option<CheckpointStats>,
    /// Process figures.
    pub process: ProcessStats,
}

/// `POST /a` → (`POST`, `/a`); a pseudo-route has no method.
fn method_and_route(name: &str) -> (&str, &str) {
    match name.split_once(' ') {
        Some((m, r)) => (m, r),
        None => ("", name),
    }
}

type Labels = Vec<(&'static str, String)>;

fn route_labels(shard: usize, name: &str) -> Labels {
    let (method, route) = method_and_route(name);
    let mut l = vec![("shard", shard.to_string())];
    if !method.is_empty() {
        l.push(("method", method.to_owned()));
    }
    l.push(("route", route.to_owned()));
    l
}

/// `(upper bound, count in that bucket)` of `h` on [`BUCKETS_S`] then
/// `+Inf`; the encoder makes them cumulative. HDR counts are exact up to
/// its 3 significant digits, so a bucket bound falls within 0.1 % of `le`.
fn buckets(h: &Histogram<u64>, bounds: &[f64]) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut below = 0;
    for &le in bounds {
        let cumulative = h.count_between(0, (le * 1e9) as u64).max(below);
        out.push((le, cumulative - below));
        below = cumulative;
    }
    out.push((f64::INFINITY, h.len().saturating_sub(below)));
    out
}

impl Scrape {
    fn gauges(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: &[(Labels, f64)],
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, v) in samples {
            let m = family.encode_family(labels)?;
            // Whole numbers (counts, bytes, epochs) print as integers.
            let whole = v.fract() == 0.0 && v.abs() < 9.0e15;
            match (kind, whole) {
                (MetricType::Counter, true) => ConstCounter::new(*v as u64).encode(m)?,
                (MetricType::Counter, false) => ConstCounter::new(*v).encode(m)?,
                (_, true) => ConstGauge::new(*v as i64).encode(m)?,
                (_, false) => ConstGauge::new(*v).encode(m)?,
            }
        }
        Ok(())
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let one = |l: Labels, v: f64| vec![(l, v)];
        self.gauges(
            &mut encoder,
            "coreline_build_info",
            "The running build: service name, version and commit (value 1).",
            Gauge,
            &one(
                vec![
                    ("service", self.service.clone()),
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                    ("commit", env!("CORELINE_GIT_COMMIT").to_owned()),
                ],
                1.0,
            ),
        )?;
        let mut requests = Vec::new();
        for snap in &self.snapshots {
            for r in &snap.metrics.routes {
                for &(status, n) in &r.statuses {
                    let mut l = route_labels(snap.shard, &r.name);
                    l.push(("status", status.to_string()));
                    requests.push((l, n as f64));
                }
            }
        }
        self.gauges(
            &mut encoder,
            "coreline_requests",
            "Requests answered, by shard, method, route and status. route=\"_unmatched\" is 404/405 and requests refused before routing; route=\"_health\" is the shard's GET /health.",
            Counter,
            &requests,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "coreline_request_duration_seconds",
                "Server-side latency: request complete in the read buffer to response handed to the socket.",
                None,
                MetricType::Histogram,
            )?;
            for snap in &self.snapshots {
                for r in &snap.metrics.routes {
                    if r.latency.is_empty() {
                        continue;
                    }
                    let labels = route_labels(snap.shard, &r.name);
                    family
                        .encode_family(&labels)?
                        .encode_histogram::<Vec<(&str, &str)>>(
                            r.latency_sum_ns as f64 / 1e9,
                            r.latency.len(),
                            &buckets(&r.latency, &BUCKETS_S),
                            None,
                        )?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "coreline_step_duration_seconds",
                "Time in each step of each route; for a keyed step run by its owner shard, the forwarding round trip.",
                None,
                MetricType::Histogram,
            )?;
            for snap in &self.snapshots {
                for st in &snap.metrics.steps {
                    if st.latency.is_empty() {
                        continue;
                    }
                    let mut labels = route_labels(snap.shard, &st.route);
                    labels.push(("step", st.step.clone()));
                    family
                        .encode_family(&labels)?
                        .encode_histogram::<Vec<(&str, &str)>>(
                            st.sum_ns as f64 / 1e9,
                            st.latency.len(),
                            &buckets(&st.latency, &STEP_BUCKETS_S),
                            None,
                        )?;
                }
            }
        }
        type Get = fn(&ShardMetrics) -> u64;
        let per_shard: [(&str, &str, MetricType, Get); 6] = [
            (
                "coreline_open_connections",
                "Connections currently open.",
                Gauge,
                |m| m.open_connections,
            ),
            (
                "coreline_accepted_connections",
                "Connections accepted.",
                Counter,
                |m| m.accepted_connections,
            ),
            (
                "coreline_rejected_connections",
                "Connections refused with 503 at max_connections.",
                Counter,
                |m| m.rejected_connections,
            ),
            (
                "coreline_accept_fd_exhausted",
                "Accepts that failed for lack of file descriptors (EMFILE/ENFILE).",
                Counter,
                |m| m.accept_fd_exhausted,
            ),
            (
                "coreline_forwarded_requests",
                "Keyed steps (and state reads) forwarded to their owner shard.",
                Counter,
                |m| m.forwarded_requests,
            ),
            (
                "coreline_access_log_dropped",
                "Access-log lines dropped because the logger fell behind.",
                Counter,
                |m| m.access_log_dropped,
            ),
        ];
        for (name, help, kind, get) in per_shard {
            let samples: Vec<(Labels, f64)> = self
                .snapshots
                .iter()
                .map(|s| (vec![("shard", s.shard.to_string())], get(&s.metrics) as f64))
                .collect();
            self.gauges(&mut encoder, name, help, kind, &samples)?;
        }
        self.gauges(
            &mut encoder,
            "coreline_shards",
            "Shards in the plan.",
            Gauge,
            &one(vec![], self.shards_total as f64),
        )?;
        self.gauges(
            &mut encoder,
            "coreline_shards_reporting",
            "Shards that answered this scrape.",
            Gauge,
            &one(vec![], self.snapshots.len() as f64),
        )?;
        if let Some(c) = &self.checkpoint {
            let has = c.last_committed_epoch > 0;
            let figures: [(&str, &str, MetricType, f64, bool); 8] = [
                (
                    "coreline_checkpoint_restored_epoch",
                    "Epoch the state was restored from at start (0: none).",
                    Gauge,
                    c.restored_epoch as f64,
                    true,
                ),
                (
                    "coreline_checkpoint_last_committed_epoch",
                    "Newest epoch committed by this process.",
                    Gauge,
                    c.last_committed_epoch as f64,
                    has,
                ),
                (
                    "coreline_checkpoint_last_commit_timestamp_seconds",
                    "Unix time the newest epoch committed.",
                    Gauge,
                    c.last_commit_unix_ms as f64 / 1000.0,
                    has,
                ),
                (
                    "coreline_checkpoint_last_duration_seconds",
                    "Barrier to durable manifest, newest epoch.",
                    Gauge,
                    c.last_duration.as_secs_f64(),
                    has,
                ),
                (
                    "coreline_checkpoint_last_size_bytes",
                    "Bytes of the newest epoch's shard files.",
                    Gauge,
                    c.last_bytes as f64,
                    has,
                ),
                (
                    "coreline_checkpoint_last_rows",
                    "Rows (keys x tables) in the newest epoch's shard files.",
                    Gauge,
                    c.last_rows as f64,
                    has,
                ),
                (
                    "coreline_checkpoint_committed",
                    "Epochs committed since start.",
                    Counter,
                    c.committed as f64,
                    true,
                ),
                (
                    "coreline_checkpoint_failures",
                    "Epochs that failed to commit since start.",
                    Counter,
                    c.failures as f64,
                    true,
                ),
            ];
            for (name, help, kind, v, shown) in figures {
                if shown {
                    self.gauges(&mut encoder, name, help, kind, &one(vec![], v))?;
                }
            }
        }
        let p = &self.process;
        let figures: [(&str, &str, MetricType, Option<f64>); 6] = [
            (
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                Counter,
                p.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Gauge,
                p.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                Gauge,
                p.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                Gauge,
                p.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                Gauge,
                p.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Gauge,
                p.start_time_seconds,
            ),
        ];
        for (name, help, kind, v) in figures {
            if let Some(v) = v {
                self.gauges(&mut encoder, name, help, kind, &one(vec![], v))?;
            }
        }
        Ok(())
    }
}

/// Renders a scrape: OpenMetrics 1.0 when `openmetrics`, else the Prometheus
/// text format 0.0.4.
pub fn render_prometheus(scrape: Scrape, openmetrics: bool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail");
    if openmetrics {
        text
    } else {
        openmetrics_to_prometheus(&text)
    }
}

/// OpenMetrics text as `prometheus-client` writes it, in the Prometheus
/// text format 0.0.4 (what `promtool check metrics` and older scrapers
/// read). The three differences that matter for what we write:
///
/// 1. a counter family is named without `_total` in OpenMetrics
///    (`# TYPE coreline_requests counter`) but its samples end in `_total`;
///    0.0.4 names the family by its samples;
/// 2. `# UNIT` lines do not exist in 0.0.4;
/// 3. the closing `# EOF` does not exist in 0.0.4.
///
/// Everything else (labels, escaping, histogram samples) is the same text.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.push(name);
        }
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or("");
            if counters.contains(&name) {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
