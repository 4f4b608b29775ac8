//! Several shards on their own ports, and the admin endpoint.

mod common;

use common::{Client, admin_get, hello};

#[test]
fn every_shard_answers_on_its_own_port_and_metrics_merge() {
    let svc = hello(2);
    let addrs = svc.shard_addrs();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0].port(), addrs[1].port());
    for (i, addr) in addrs.iter().enumerate() {
        let mut c = Client::connect(*addr);
        for _ in 0..(i + 1) * 10 {
            let r = c.post("/my_api", r#"{"foo":"hello world","bar":42}"#);
            assert_eq!(r.text(), r#"{"fooLength":11}"#);
        }
        assert_eq!(c.post("/my_api", "{").status, 400);
    }

    let stats = admin_get(&svc, "/stats").json();
    assert_eq!(stats["service"], "hello");
    assert_eq!(stats["shards"].as_array().unwrap().len(), 2);
    assert_eq!(stats["shards"][0]["routes"][0]["statuses"]["200"], 10);
    assert_eq!(stats["shards"][1]["routes"][0]["statuses"]["200"], 20);
    assert_eq!(stats["shards"][1]["port"], addrs[1].port());
    let merged = &stats["merged"][0];
    assert_eq!(merged["route"], "POST /my_api");
    assert_eq!(merged["requests"], 32);
    assert_eq!(merged["statuses"]["400"], 2);
    for q in ["p50", "p90", "p99", "p99.9", "max"] {
        assert!(merged["latency_us"][q].as_f64().unwrap() > 0.0, "{q}");
    }

    let metrics = admin_get(&svc, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text();
    assert!(
        text.contains(
            r#"coreline_requests_total{shard="1",method="POST",route="/my_api",status="200"} 20"#
        ),
        "{text}"
    );
    assert!(text.contains(
        "coreline_request_duration_seconds_bucket{le=\"+Inf\",shard=\"0\",method=\"POST\",route=\"/my_api\"} 11"
    ), "{text}");
    assert!(text.contains(
        "coreline_request_duration_seconds_count{shard=\"0\",method=\"POST\",route=\"/my_api\"} 11"
    ));
    assert!(text.contains("coreline_open_connections{shard=\"0\"}"));
    assert!(text.contains("coreline_build_info{service=\"hello\""));
    assert!(!text.contains("quantile"));
    let om = admin_get(&svc, "/metrics?format=openmetrics");
    assert!(
        om.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    assert!(om.text().ends_with("# EOF\n"));

    let doc = admin_get(&svc, "/openapi.json");
    assert_eq!(doc.status, 200);
    assert_eq!(doc.json()["openapi"], "3.1.0");
    assert!(doc.json()["paths"]["/my_api"]["post"]["requestBody"].is_object());

    assert_eq!(admin_get(&svc, "/health").status, 200);
    let ready = admin_get(&svc, "/ready");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["ready"], true);
    assert_eq!(admin_get(&svc, "/nope").status, 404);
}

#[test]
fn a_spinning_shard_serves_and_reports_ready() {
    let svc = common::start(&common::hello_toml(2, "spin_before_park = \"50us\""));
    for addr in svc.shard_addrs() {
        let mut c = Client::connect(addr);
        let r = c.post("/my_api", r#"{"foo":"spin","bar":1}"#);
        assert_eq!(r.text(), r#"{"fooLength":4}"#);
    }
    let ready = admin_get(&svc, "/ready");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["ready"], true);
}
