//! Unit tests of recording, merging and both renderings.

use std::time::SystemTime;

use super::*;
use crate::checkpoint::CheckpointStats;

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
