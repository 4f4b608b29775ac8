//! Per-shard latency histograms and counters, and their renderings.
//!
//! Every shard owns one [`ShardMetrics`]: per route a fixed-bounds
//! hdrhistogram of server-side latency (request complete in the read buffer →
//! response handed to the socket) and per-status counters, plus connection
//! gauges. Nothing here is shared: the admin endpoint asks each shard for a
//! [`ShardSnapshot`] over a channel and merges the copies with
//! `Histogram::add`, so recording never takes a lock.
//!
//! Histograms record nanoseconds with bounds 1 µs … 60 s and three
//! significant digits; they are allocated once and never resize. Values below
//! 1 µs land in the lowest bucket, values above 60 s saturate. Beside each
//! histogram a plain `u64` keeps the exact sum of the recorded latencies, so
//! `_sum` is a sum and not mean × count.
//!
//! `/metrics` is encoded by `prometheus-client` from one custom collector,
//! [`Scrape`], that maps every HDR histogram onto fixed Prometheus buckets.
//! The crate writes OpenMetrics; [`render_prometheus`] serves that as is
//! when asked (`?format=openmetrics`) and otherwise as the Prometheus text
//! format 0.0.4 that `promtool check metrics` lints (see
//! [`openmetrics_to_prometheus`] for the three differences).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::checkpoint::CheckpointStats;

/// Lowest discernible latency: 1 µs, in nanoseconds.
pub const LATENCY_LOW_NS: u64 = 1_000;
/// Highest trackable latency: 60 s, in nanoseconds.
pub const LATENCY_HIGH_NS: u64 = 60_000_000_000;
/// Significant digits kept by every latency histogram.
pub const LATENCY_SIGFIG: u8 = 3;

/// The name metrics use for requests that matched no route (404, 405, and
/// requests rejected before routing such as 400 or 431).
pub const UNMATCHED_ROUTE: &str = "_unmatched";

/// The name metrics use for the shard's own `GET /health` (load-balancer
/// checks), counted apart from real traffic and from misses.
pub const HEALTH_ROUTE: &str = "_health";

/// A new, empty latency histogram with coreline's fixed bounds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LATENCY_LOW_NS, LATENCY_HIGH_NS, LATENCY_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Latency and status counts of one route on one shard.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    /// `METHOD /path`, or [`UNMATCHED_ROUTE`].
    pub name: String,
    /// Server-side latency in nanoseconds.
    pub latency: Histogram<u64>,
    /// Exact sum of the recorded latencies, in nanoseconds (not clamped to
    /// the histogram's bounds).
    pub latency_sum_ns: u64,
    /// `(status, count)`, in first-seen order. Statuses are few; a linear
    /// scan beats hashing here, and the vector only grows the first time a
    /// status is seen.
    pub statuses: Vec<(u16, u64)>,
}

impl RouteMetrics {
    /// Empty metrics for the route called `name`.
    pub fn new(name: impl Into<String>) -> RouteMetrics {
        RouteMetrics {
            name: name.into(),
            latency: latency_histogram(),
            latency_sum_ns: 0,
            statuses: Vec::with_capacity(8),
        }
    }

    /// Records one answered request.
    #[inline]
    pub fn record(&mut self, status: u16, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(ns.min(LATENCY_HIGH_NS));
        self.latency_sum_ns = self.latency_sum_ns.saturating_add(ns);
        self.count_status(status);
    }

    #[inline]
    fn count_status(&mut self, status: u16) {
        for entry in self.statuses.iter_mut() {
            if entry.0 == status {
                entry.1 += 1;
                return;
            }
        }
        self.statuses.push((status, 1));
    }

    /// Total requests answered.
    pub fn requests(&self) -> u64 {
        self.statuses.iter().map(|s| s.1).sum()
    }

    /// Adds `other` (same route on another shard) into `self`.
    pub fn merge(&mut self, other: &RouteMetrics) {
        self.latency
            .add(&other.latency)
            .expect("histograms share bounds");
        self.latency_sum_ns = self.latency_sum_ns.saturating_add(other.latency_sum_ns);
        for &(status, n) in &other.statuses {
            match self.statuses.iter_mut().find(|s| s.0 == status) {
                Some(entry) => entry.1 += n,
                None => self.statuses.push((status, n)),
            }
        }
        self.statuses.sort_unstable();
    }
}

/// Lowest discernible step latency: 1 ns (steps take tens of nanoseconds).
pub const STEP_LOW_NS: u64 = 1;
/// Significant digits of step histograms: two keep one at about 30 KB.
pub const STEP_SIGFIG: u8 = 2;

/// Time spent in one step of one route on one shard: a bounded histogram
/// (1 ns … 60 s, 2 significant digits, allocated once, never resized) and
/// the exact sum. For a keyed step answered by another shard, the time is
/// the forwarding round trip, so a slow hop shows up under its step.
#[derive(Debug, Clone)]
pub struct StepMetrics {
    /// The route's name, `METHOD /path`.
    pub route: String,
    /// The step's label: `<index>:<kind>`, e.g. `0:with_column`.
    pub step: String,
    /// Nanoseconds per run of the step.
    pub latency: Histogram<u64>,
    /// Exact sum of the recorded nanoseconds.
    pub sum_ns: u64,
}

impl StepMetrics {
    /// Empty metrics for `step` of `route`.
    pub fn new(route: impl Into<String>, step: impl Into<String>) -> StepMetrics {
        StepMetrics {
            route: route.into(),
            step: step.into(),
            latency: Histogram::new_with_bounds(STEP_LOW_NS, LATENCY_HIGH_NS, STEP_SIGFIG)
                .expect("constant histogram bounds are valid"),
            sum_ns: 0,
        }
    }

    /// Records one run; never allocates.
    #[inline]
    pub fn record(&mut self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency
            .saturating_record(ns.clamp(STEP_LOW_NS, LATENCY_HIGH_NS));
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }
}

/// Everything one shard measures. Route `i` of the plan is `routes[i]`;
/// then come [`UNMATCHED_ROUTE`] (at index "number of routes") and
/// [`HEALTH_ROUTE`] (last).
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    /// Per-route metrics, then unmatched requests, then health checks.
    pub routes: Vec<RouteMetrics>,
    /// Connections currently open.
    pub open_connections: u64,
    /// Connections accepted since start.
    pub accepted_connections: u64,
    /// Connections refused with 503 because `max_connections` was reached.
    pub rejected_connections: u64,
    /// Accepts that failed because the process or system ran out of file
    /// descriptors (`EMFILE`/`ENFILE`); accepting pauses with backoff.
    pub accept_fd_exhausted: u64,
    /// Keyed steps (and state reads) this shard forwarded to their owner.
    pub forwarded_requests: u64,
    /// Access-log records dropped because the logger fell behind.
    pub access_log_dropped: u64,
    /// Per-step latency, route by route. The shard's routes own the live
    /// histograms; a snapshot copies them here.
    pub steps: Vec<StepMetrics>,
}

impl ShardMetrics {
    /// Metrics for a shard serving routes with these names.
    pub fn new<'a>(route_names: impl IntoIterator<Item = &'a str>) -> ShardMetrics {
        let mut routes: Vec<RouteMetrics> =
            route_names.into_iter().map(RouteMetrics::new).collect();
        routes.push(RouteMetrics::new(UNMATCHED_ROUTE));
        routes.push(RouteMetrics::new(HEALTH_ROUTE));
        ShardMetrics {
            routes,
            open_connections: 0,
            accepted_connections: 0,
            rejected_connections: 0,
            accept_fd_exhausted: 0,
            forwarded_requests: 0,
            access_log_dropped: 0,
            steps: Vec::new(),
        }
    }

    /// Index of the unmatched pseudo-route (the number of routes).
    pub fn unmatched(&self) -> usize {
        self.routes.len() - 2
    }

    /// Index of the health-check pseudo-route (the last).
    pub fn health(&self) -> usize {
        self.routes.len() - 1
    }

    /// Switches to the routes of a reloaded plan: a route that keeps its
    /// name keeps its counts and histogram, a new one starts empty, a
    /// removed one is dropped; the unmatched and health pseudo-routes are
    /// kept. Returns where each old index went (a removed route's index
    /// maps to the unmatched pseudo-route), for the responses that were
    /// answered on the old plan and are recorded after the swap.
    pub fn reroute<'a>(&mut self, route_names: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
        let mut old: Vec<Option<RouteMetrics>> = self.routes.drain(..).map(Some).collect();
        let old_len = old.len();
        let health = old[old_len - 1].take().expect("health pseudo-route");
        let unmatched = old[old_len - 2].take().expect("unmatched pseudo-route");
        let mut remap = vec![usize::MAX; old_len];
        for name in route_names {
            let kept = old
                .iter()
                .position(|r| r.as_ref().is_some_and(|r| r.name == name));
            let metrics = match kept {
                Some(i) => {
                    remap[i] = self.routes.len();
                    old[i].take().expect("position found it")
                }
                None => RouteMetrics::new(name),
            };
            self.routes.push(metrics);
        }
        let new_unmatched = self.routes.len();
        self.routes.push(unmatched);
        self.routes.push(health);
        for (i, to) in remap.iter_mut().enumerate() {
            if *to == usize::MAX {
                *to = if i == old_len - 1 {
                    new_unmatched + 1
                } else {
                    new_unmatched
                };
            }
        }
        remap
    }
}

/// A copy of one shard's metrics, sent to the admin thread on request.
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    /// Shard index.
    pub shard: usize,
    /// Core the shard is pinned to.
    pub core: usize,
    /// Port the shard listens on.
    pub port: u16,
    /// The metrics at the time of the snapshot.
    pub metrics: ShardMetrics,
}

/// Upper bounds (seconds) of the Prometheus histogram buckets.
const BUCKETS_S: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Merges the same route across shards (routes are index-aligned).
pub fn merge_routes(snapshots: &[ShardSnapshot]) -> Vec<RouteMetrics> {
    let mut merged: Vec<RouteMetrics> = Vec::new();
    for snap in snapshots {
        if merged.is_empty() {
            merged = snap.metrics.routes.clone();
            continue;
        }
        for (m, r) in merged.iter_mut().zip(&snap.metrics.routes) {
            m.merge(r);
        }
    }
    merged
}

/// Upper bounds (seconds) of the step histogram buckets: steps run in
/// nanoseconds to microseconds, a forwarding hop in tens of microseconds.
const STEP_BUCKETS_S: [f64; 19] = [
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
    5e-3, 1e-2, 0.1, 1.0, 10.0,
];

/// `process_*` figures of this process, read from `/proc/self` and
/// `getrusage`. A figure the system does not give is left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, Unix seconds.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads the current figures; `started` is when the service started.
    pub fn read(started: SystemTime) -> ProcessStats {
        use nix::sys::resource::{UsageWho, getrusage};
        let cpu_seconds = getrusage(UsageWho::RUSAGE_SELF).ok().map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        });
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |field: &str| {
            status.lines().find_map(|l| {
                let rest = l.strip_prefix(field)?.trim();
                let n: u64 = rest.strip_suffix("kB")?.trim().parse().ok()?;
                Some(n * 1024)
            })
        };
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft);
        ProcessStats {
            cpu_seconds,
            resident_bytes: kib("VmRSS:"),
            virtual_bytes: kib("VmSize:"),
            open_fds,
            max_fds,
            start_time_seconds: started
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs_f64()),
        }
    }
}

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

fn route_json(r: &RouteMetrics) -> serde_json::Value {
    let us = |v: u64| v as f64 / 1000.0;
    let statuses: serde_json::Map<String, serde_json::Value> = r
        .statuses
        .iter()
        .map(|&(s, n)| (s.to_string(), serde_json::Value::from(n)))
        .collect();
    let h = &r.latency;
    let empty = h.is_empty();
    let q = |q: f64| {
        if empty {
            serde_json::Value::Null
        } else {
            serde_json::Value::from(us(h.value_at_quantile(q)))
        }
    };
    serde_json::json!({
        "route": r.name,
        "requests": r.requests(),
        "statuses": statuses,
        "latency_us": {
            "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99.9": q(0.999),
            "max": if empty { serde_json::Value::Null } else { us(h.max()).into() },
            "mean": if empty { serde_json::Value::Null } else { (h.mean() / 1000.0).into() },
        },
    })
}

/// Renders `/stats`: per shard and merged quantiles (µs) and counts.
pub fn render_stats(
    service: &str,
    snapshots: &[ShardSnapshot],
    extra: serde_json::Value,
) -> String {
    let shards: Vec<serde_json::Value> = snapshots
        .iter()
        .map(|s| {
            serde_json::json!({
                "shard": s.shard,
                "core": s.core,
                "port": s.port,
                "open_connections": s.metrics.open_connections,
                "accepted_connections": s.metrics.accepted_connections,
                "rejected_connections": s.metrics.rejected_connections,
                "accept_fd_exhausted": s.metrics.accept_fd_exhausted,
                "forwarded_requests": s.metrics.forwarded_requests,
                "routes": s.metrics.routes.iter().map(route_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let merged: Vec<serde_json::Value> = merge_routes(snapshots).iter().map(route_json).collect();
    let mut doc = serde_json::json!({
        "service": service,
        "shards": shards,
        "merged": merged,
    });
    if let (Some(obj), serde_json::Value::Object(extra)) = (doc.as_object_mut(), extra) {
        obj.extend(extra);
    }
    let mut s = serde_json::to_string_pretty(&doc).expect("json values serialize");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(shard: usize, lat_us: &[u64], status: u16) -> ShardSnapshot {
        let mut m = ShardMetrics::new(["POST /a"]);
        let mut step = StepMetrics::new("POST /a", "0:with_column:n");
        for &l in lat_us {
            m.routes[0].record(status, Duration::from_micros(l));
            step.record(Duration::from_nanos(l * 10));
        }
        m.steps.push(step);
        ShardSnapshot {
            shard,
            core: shard,
            port: 9000 + shard as u16,
            metrics: m,
        }
    }

    #[test]
    fn merge_adds_histograms_and_statuses() {
        let a = snap(0, &[10, 20, 30], 200);
        let b = snap(1, &[1000], 422);
        let merged = merge_routes(&[a, b]);
        assert_eq!(merged[0].latency.len(), 4);
        assert_eq!(merged[0].statuses, vec![(200, 3), (422, 1)]);
        assert!(merged[0].latency.max() >= 999_000);
        assert_eq!(merged[1].name, UNMATCHED_ROUTE);
    }

    #[test]
    fn saturates_instead_of_failing() {
        let mut r = RouteMetrics::new("x");
        r.record(200, Duration::from_secs(3600));
        r.record(200, Duration::from_nanos(3));
        assert_eq!(r.latency.len(), 2);
    }

    fn scrape(snapshots: Vec<ShardSnapshot>) -> Scrape {
        Scrape {
            service: "svc".into(),
            shards_total: snapshots.len(),
            snapshots,
            checkpoint: Some(CheckpointStats {
                last_committed_epoch: 7,
                last_commit_unix_ms: 1_700_000_000_500,
                committed: 3,
                ..CheckpointStats::default()
            }),
            process: ProcessStats::read(SystemTime::now()),
        }
    }

    #[test]
    fn prometheus_has_counts_buckets_and_exact_sums() {
        let text = render_prometheus(scrape(vec![snap(0, &[5, 50, 500], 200)]), false);
        assert!(
            text.contains(
                "coreline_requests_total{shard=\"0\",method=\"POST\",route=\"/a\",status=\"200\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE coreline_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("coreline_request_duration_seconds_bucket{le=\"0.0001\",shard=\"0\",method=\"POST\",route=\"/a\"} 2"),
            "{text}"
        );
        assert!(text.contains("le=\"+Inf\",shard=\"0\",method=\"POST\",route=\"/a\"} 3"));
        assert!(
            text.contains(
                "coreline_request_duration_seconds_sum{shard=\"0\",method=\"POST\",route=\"/a\"} 0.000555"
            ),
            "{text}"
        );
        assert!(text.contains("coreline_open_connections{shard=\"0\"} 0"));
        assert!(text.contains("coreline_build_info{service=\"svc\",version=\""));
        assert!(text.contains("coreline_checkpoint_last_commit_timestamp_seconds 1700000000.5"));
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(!text.contains("quantile"));
        assert!(!text.contains("# EOF"));
        assert!(
            text.contains(
                "coreline_step_duration_seconds_bucket{le=\"5e-7\",shard=\"0\",method=\"POST\",route=\"/a\",step=\"0:with_column:n\"} 2"
            ),
            "{text}"
        );
        // Only build_info carries the service name.
        assert_eq!(text.matches("service=").count(), 1, "{text}");
    }

    #[test]
    fn openmetrics_is_served_as_written() {
        let text = render_prometheus(scrape(vec![snap(0, &[5], 200)]), true);
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE coreline_requests counter"));
        assert!(text.contains("coreline_requests_total{"));
    }

    #[test]
    fn reroute_keeps_routes_by_name() {
        let mut m = ShardMetrics::new(["POST /a", "POST /b"]);
        m.routes[0].record(200, Duration::from_micros(5));
        m.routes[1].record(200, Duration::from_micros(5));
        let (u, h) = (m.unmatched(), m.health());
        m.routes[u].record(404, Duration::from_micros(5));
        m.routes[h].record(200, Duration::from_micros(5));
        let remap = m.reroute(["POST /c", "POST /b"]);
        let names: Vec<&str> = m.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["POST /c", "POST /b", UNMATCHED_ROUTE, HEALTH_ROUTE],
            "new routes in plan order, then the pseudo-routes"
        );
        assert_eq!(m.routes[0].requests(), 0, "a new route starts empty");
        assert_eq!(m.routes[1].requests(), 1, "a kept route keeps its counts");
        assert_eq!(m.routes[m.unmatched()].requests(), 1);
        assert_eq!(m.routes[m.health()].requests(), 1);
        // /a (removed) counts as unmatched; /b moved to 1; pseudo-routes follow.
        assert_eq!(remap, [2, 1, 2, 3]);
    }

    #[test]
    fn health_and_unmatched_are_separate() {
        let m = ShardMetrics::new(["GET /x"]);
        assert_eq!(m.routes[m.unmatched()].name, UNMATCHED_ROUTE);
        assert_eq!(m.routes[m.health()].name, HEALTH_ROUTE);
        assert_eq!(m.unmatched(), 1);
    }

    #[test]
    fn stats_json_is_valid_and_merged() {
        let text = render_stats(
            "svc",
            &[snap(0, &[5], 200), snap(1, &[7], 200)],
            serde_json::json!({"restored_epoch": 3}),
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["merged"][0]["requests"], 2);
        assert_eq!(v["shards"][1]["port"], 9001);
        assert_eq!(v["restored_epoch"], 3);
        assert!(v["merged"][1]["latency_us"]["p99"].is_null());
    }
}
