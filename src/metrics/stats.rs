//! `/stats`: per shard and merged request counts and latency quantiles
//! (µs) as JSON.

use super::{RouteMetrics, ShardSnapshot, merge_routes};

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
