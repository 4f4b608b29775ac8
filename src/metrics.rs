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
//! 1 µs land in the lowest bucket, values above 60 s saturate.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Lowest discernible latency: 1 µs, in nanoseconds.
pub const LATENCY_LOW_NS: u64 = 1_000;
/// Highest trackable latency: 60 s, in nanoseconds.
pub const LATENCY_HIGH_NS: u64 = 60_000_000_000;
/// Significant digits kept by every latency histogram.
pub const LATENCY_SIGFIG: u8 = 3;

/// The name metrics use for requests that matched no route (404, 405, and
/// requests rejected before routing such as 400 or 431).
pub const UNMATCHED_ROUTE: &str = "_unmatched";

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
            statuses: Vec::with_capacity(8),
        }
    }

    /// Records one answered request.
    #[inline]
    pub fn record(&mut self, status: u16, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(ns.min(LATENCY_HIGH_NS));
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
        for &(status, n) in &other.statuses {
            match self.statuses.iter_mut().find(|s| s.0 == status) {
                Some(entry) => entry.1 += n,
                None => self.statuses.push((status, n)),
            }
        }
        self.statuses.sort_unstable();
    }
}

/// Everything one shard measures. Route `i` of the plan is `routes[i]`; the
/// last entry is [`UNMATCHED_ROUTE`].
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    /// Per-route metrics; the last one collects unmatched requests.
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
}

impl ShardMetrics {
    /// Metrics for a shard serving routes with these names.
    pub fn new<'a>(route_names: impl IntoIterator<Item = &'a str>) -> ShardMetrics {
        let mut routes: Vec<RouteMetrics> =
            route_names.into_iter().map(RouteMetrics::new).collect();
        routes.push(RouteMetrics::new(UNMATCHED_ROUTE));
        ShardMetrics {
            routes,
            open_connections: 0,
            accepted_connections: 0,
            rejected_connections: 0,
            accept_fd_exhausted: 0,
            forwarded_requests: 0,
        }
    }

    /// Index of the unmatched pseudo-route.
    pub fn unmatched(&self) -> usize {
        self.routes.len() - 1
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

/// Quantiles reported by `/stats` and `/metrics`.
pub const QUANTILES: [(f64, &str); 5] = [
    (0.5, "0.5"),
    (0.9, "0.9"),
    (0.99, "0.99"),
    (0.999, "0.999"),
    (1.0, "1"),
];

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

/// Escapes a Prometheus label value (backslash, quote, newline).
pub fn label_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the Prometheus text exposition format (version 0.0.4).
pub fn render_prometheus(service: &str, snapshots: &[ShardSnapshot], extra: &str) -> String {
    let svc = label_escape(service);
    let mut out = String::with_capacity(4096);
    out.push_str("# HELP coreline_requests_total Requests answered, by shard, route and status.\n");
    out.push_str("# TYPE coreline_requests_total counter\n");
    for snap in snapshots {
        for r in &snap.metrics.routes {
            let route = label_escape(&r.name);
            for &(status, n) in &r.statuses {
                let _ = writeln!(
                    out,
                    "coreline_requests_total{{service=\"{svc}\",shard=\"{}\",route=\"{route}\",status=\"{status}\"}} {n}",
                    snap.shard
                );
            }
        }
    }
    out.push_str("# HELP coreline_request_duration_seconds Server-side latency: request complete in buffer to response handed to the socket.\n");
    out.push_str("# TYPE coreline_request_duration_seconds histogram\n");
    for snap in snapshots {
        for r in &snap.metrics.routes {
            if r.latency.is_empty() {
                continue;
            }
            let route = label_escape(&r.name);
            let labels = format!(
                "service=\"{svc}\",shard=\"{}\",route=\"{route}\"",
                snap.shard
            );
            for le in BUCKETS_S {
                let ns = (le * 1e9) as u64;
                let n = r.latency.count_between(0, ns);
                let _ = writeln!(
                    out,
                    "coreline_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
                );
            }
            let total = r.latency.len();
            let _ = writeln!(
                out,
                "coreline_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {total}"
            );
            let sum = r.latency.mean() * total as f64 / 1e9;
            let _ = writeln!(
                out,
                "coreline_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "coreline_request_duration_seconds_count{{{labels}}} {total}"
            );
        }
    }
    out.push_str("# HELP coreline_request_duration_quantile_seconds Server-side latency quantiles per route, merged over shards.\n");
    out.push_str("# TYPE coreline_request_duration_quantile_seconds gauge\n");
    for r in merge_routes(snapshots) {
        if r.latency.is_empty() {
            continue;
        }
        let route = label_escape(&r.name);
        for (q, qs) in QUANTILES {
            let v = r.latency.value_at_quantile(q) as f64 / 1e9;
            let _ = writeln!(
                out,
                "coreline_request_duration_quantile_seconds{{service=\"{svc}\",route=\"{route}\",quantile=\"{qs}\"}} {v}"
            );
        }
    }
    type Gauge = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ShardMetrics) -> u64,
    );
    let gauges: [Gauge; 5] = [
        (
            "coreline_open_connections",
            "gauge",
            "Connections currently open.",
            |m| m.open_connections,
        ),
        (
            "coreline_accepted_connections_total",
            "counter",
            "Connections accepted.",
            |m| m.accepted_connections,
        ),
        (
            "coreline_rejected_connections_total",
            "counter",
            "Connections refused with 503 at max_connections.",
            |m| m.rejected_connections,
        ),
        (
            "coreline_accept_fd_exhausted_total",
            "counter",
            "Accepts that failed for lack of file descriptors (EMFILE/ENFILE).",
            |m| m.accept_fd_exhausted,
        ),
        (
            "coreline_forwarded_requests_total",
            "counter",
            "Keyed steps (and state reads) forwarded to their owner shard.",
            |m| m.forwarded_requests,
        ),
    ];
    for (name, kind, help, get) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for snap in snapshots {
            let _ = writeln!(
                out,
                "{name}{{service=\"{svc}\",shard=\"{}\"}} {}",
                snap.shard,
                get(&snap.metrics)
            );
        }
    }
    out.push_str(extra);
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
        for &l in lat_us {
            m.routes[0].record(status, Duration::from_micros(l));
        }
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

    #[test]
    fn prometheus_has_counts_buckets_and_quantiles() {
        let text = render_prometheus("svc", &[snap(0, &[5, 50, 500], 200)], "");
        assert!(text.contains(
            "coreline_requests_total{service=\"svc\",shard=\"0\",route=\"POST /a\",status=\"200\"} 3"
        ));
        assert!(text.contains("le=\"0.0001\"} 2"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3"));
        assert!(text.contains("quantile=\"0.99\""));
        assert!(text.contains("coreline_open_connections{service=\"svc\",shard=\"0\"} 0"));
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
