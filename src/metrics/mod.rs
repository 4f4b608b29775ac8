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
//!
//! # Layout
//!
//! - `mod.rs`: what a shard records ([`ShardMetrics`], [`RouteMetrics`],
//!   [`StepMetrics`]), the snapshot it hands over and [`merge_routes`];
//! - `prometheus.rs`: `/metrics`, the [`Scrape`] collector and its
//!   OpenMetrics and Prometheus texts;
//! - `stats.rs`: `/stats`, the JSON rendering;
//! - `process.rs`: the `process_*` figures read from the system.

use std::time::Duration;

use hdrhistogram::Histogram;

mod process;
mod prometheus;
mod stats;

pub use process::ProcessStats;
pub use prometheus::{Scrape, openmetrics_to_prometheus, render_prometheus};
pub use stats::render_stats;

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

#[cfg(test)]
mod tests;
