//! Owner-shard routing over real `coreline run` processes: every key lives on
//! one shard, a request arriving elsewhere is forwarded there, and clients
//! cannot tell: the same answers on every port, per-connection order kept
//! under pipelining, forwarded requests counted. Also the read-route
//! contract and `changed` semantics end to end (configs/thermostat.toml).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

use common::{Client, Proc, TempDir, percent_encode, rewrite_config};
use coreline::row::Val;
use coreline::state::owner_shard;

/// An example config from configs/, on OS-assigned ports, checkpointing
/// into `tmp/state` every hour (so only a stop writes one).
fn example(name: &str, tmp: &TempDir, shards: usize) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join(name),
    )
    .unwrap();
    let dir = format!("{:?}", tmp.join("state").to_str().unwrap());
    let shards = shards.to_string();
    let text = rewrite_config(
        &text,
        &[
            ("base_port", "0"),
            ("admin_port", "0"),
            ("shards", &shards),
            ("dir", &dir),
            ("interval", "\"1h\""),
        ],
    );
    tmp.write(name, &text)
}

/// `n` names `prefix-<i>` owned by `shard` of `shards`.
fn keys_owned_by(prefix: &str, shard: usize, shards: usize, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|k| owner_shard(Val::Str(k), shards) == shard)
        .take(n)
        .collect()
}

fn event(user: &str, amount: i64) -> String {
    format!(
        r#"{{"user":{},"amount":{amount}}}"#,
        serde_json::to_string(user).unwrap()
    )
}

fn post_request(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn forwarded(stats: &serde_json::Value, shard: usize) -> u64 {
    stats["shards"][shard]["forwarded_requests"]
        .as_u64()
        .unwrap_or_else(|| panic!("no shards[{shard}].forwarded_requests in {stats}"))
}

// ---------------------------------------------------------------------------
// 7. The same answers whichever port a client uses
// ---------------------------------------------------------------------------

#[test]
fn forwarded_requests_answer_like_local_ones() {
    let tmp = TempDir::new("routing-same");
    let p = Proc::spawn(&example("counters.toml", &tmp, 2));
    assert_eq!(p.shards.len(), 2);
    let mut cs: Vec<Client> = p.shards.iter().map(|a| Client::connect(*a)).collect();

    // Pairs of keys with the same owner: the first always sent to its owner,
    // the second always to the other shard, with the same amounts. Their
    // answers must be identical but for the name.
    let mut forwarded_posts = [0u64; 2];
    for owner in 0..2 {
        let keys = keys_owned_by(&format!("pair{owner}"), owner, 2, 6);
        for pair in keys.chunks(2) {
            let (local, remote) = (&pair[0], &pair[1]);
            let mut total = 0;
            for (i, amount) in [5i64, 120, 0, 77, 300, 1].into_iter().enumerate() {
                total += amount;
                let a = cs[owner].post("/events", &event(local, amount));
                let b = cs[1 - owner].post("/events", &event(remote, amount));
                forwarded_posts[1 - owner] += 1;
                assert_eq!(
                    (a.status, b.status),
                    (200, 200),
                    "{} / {}",
                    a.text(),
                    b.text()
                );
                assert_eq!(
                    a.text().replace(local.as_str(), "K"),
                    b.text().replace(remote.as_str(), "K"),
                    "local and forwarded answers differ"
                );
                let j = b.json();
                assert_eq!(j["n"], i + 1, "{}", b.text());
                assert_eq!(j["total"], total, "{}", b.text());
            }
        }
    }

    // Keys of both shards, each update on alternating ports: the counts
    // advance the same whichever port.
    let mut keys = keys_owned_by("alt", 0, 2, 4);
    keys.extend(keys_owned_by("alt", 1, 2, 4));
    let mut totals: HashMap<&str, i64> = HashMap::new();
    for round in 0..6 {
        for (k, key) in keys.iter().enumerate() {
            let port = (round + k) % 2;
            if owner_shard(Val::Str(key), 2) != port {
                forwarded_posts[port] += 1;
            }
            let amount = (round * 10 + k) as i64;
            let r = cs[port].post("/events", &event(key, amount));
            assert_eq!(r.status, 200, "{}", r.text());
            let total = totals.entry(key).or_default();
            *total += amount;
            let j = r.json();
            assert_eq!(j["user"], key.as_str());
            assert_eq!(j["n"], round + 1, "{key} on port {port}: {}", r.text());
            assert_eq!(j["total"], *total, "{key} on port {port}: {}", r.text());
            let mean = j["mean"].as_f64().unwrap();
            assert!((mean - *total as f64 / (round + 1) as f64).abs() < 1e-9);
        }
    }

    // The read route answers the same on both ports, and reading changes
    // nothing.
    for key in &keys {
        let path = format!("/counts?key={}", percent_encode(key));
        let a = cs[0].get(&path);
        let b = cs[1].get(&path);
        assert_eq!(
            (a.status, b.status),
            (200, 200),
            "{} / {}",
            a.text(),
            b.text()
        );
        assert_eq!(a.text(), b.text(), "{key}");
        assert_eq!(a.json()["key"], key.as_str());
        assert_eq!(a.json()["n"], 6, "{}", a.text());
        assert_eq!(a.json()["total"], totals[key.as_str()], "{}", a.text());
        assert_eq!(cs[1].get(&path).text(), a.text(), "a read changed {key}");
        assert_eq!(cs[0].get(&path).text(), a.text(), "a read changed {key}");
    }
    let r = cs[1].post("/events", &event(&keys[0], 1));
    assert_eq!(r.json()["n"], 7, "{}", r.text());
    forwarded_posts[1] += u64::from(owner_shard(Val::Str(&keys[0]), 2) != 1);

    let stats = p.stats();
    for (shard, &posts) in forwarded_posts.iter().enumerate() {
        assert!(posts > 0);
        assert!(
            forwarded(&stats, shard) >= posts,
            "shard {shard} forwarded {} requests, expected at least {posts}: {stats}",
            forwarded(&stats, shard)
        );
    }
    let metrics = p.admin_get("/metrics");
    for (shard, &posts) in forwarded_posts.iter().enumerate() {
        let prefix = format!("coreline_forwarded_requests_total{{shard=\"{shard}\"}} ");
        let line = metrics
            .text()
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{}", metrics.text()));
        let v: f64 = line[prefix.len()..].trim().parse().unwrap();
        assert!(v >= posts as f64, "{line}");
    }
    p.stop();
}

// ---------------------------------------------------------------------------
// 8. Pipelining with forwarding keeps per-connection order
// ---------------------------------------------------------------------------

/// What one pipelined request expects back.
enum Expect {
    /// A POST: the key's count and running total after it.
    Post { key: String, n: i64, total: i64 },
    /// A GET of a key: its count and total so far, or 404.
    Read {
        key: String,
        seen: Option<(i64, i64)>,
    },
}

/// Pipelines `count` requests (every 7th a read) for `keys` on one
/// connection in a single write, then checks every response in order.
/// `state` carries counts across calls.
fn pipeline(
    addr: SocketAddr,
    keys: &[String],
    count: usize,
    seed: usize,
    state: &mut HashMap<String, (i64, i64)>,
) {
    let mut bytes = String::new();
    let mut expect = Vec::with_capacity(count);
    for i in 0..count {
        // A fixed but irregular walk over the keys, so that local and
        // forwarded requests interleave in every pattern.
        let key = keys[(i * 7 + i / 3 + seed) % keys.len()].clone();
        if i % 7 == 6 {
            bytes.push_str(&format!(
                "GET /counts?key={} HTTP/1.1\r\nHost: t\r\n\r\n",
                percent_encode(&key)
            ));
            expect.push(Expect::Read {
                seen: state.get(&key).copied(),
                key,
            });
        } else {
            let amount = (seed * 1000 + i) as i64;
            bytes.push_str(&post_request("/events", &event(&key, amount)));
            let e = state.entry(key.clone()).or_default();
            e.0 += 1;
            e.1 += amount;
            expect.push(Expect::Post {
                key,
                n: e.0,
                total: e.1,
            });
        }
    }
    let mut c = Client::connect(addr);
    c.send(bytes.as_bytes());
    for (i, e) in expect.iter().enumerate() {
        let r = c.response();
        let j = if r.status == 404 {
            serde_json::Value::Null
        } else {
            assert_eq!(r.status, 200, "response #{i}: {}", r.text());
            r.json()
        };
        match e {
            Expect::Post { key, n, total } => {
                assert_eq!(
                    j["user"],
                    key.as_str(),
                    "response #{i} out of order: {}",
                    r.text()
                );
                assert_eq!(j["n"], *n, "response #{i} ({key}): {}", r.text());
                assert_eq!(j["total"], *total, "response #{i} ({key}): {}", r.text());
            }
            Expect::Read { key, seen: None } => {
                assert_eq!(
                    r.status,
                    404,
                    "response #{i}: read of unseen {key}: {}",
                    r.text()
                );
            }
            Expect::Read {
                key,
                seen: Some((n, total)),
            } => {
                assert_eq!(
                    j["key"],
                    key.as_str(),
                    "response #{i} out of order: {}",
                    r.text()
                );
                assert_eq!(j["n"], *n, "response #{i} (read {key}): {}", r.text());
                assert_eq!(
                    j["total"],
                    *total,
                    "response #{i} (read {key}): {}",
                    r.text()
                );
            }
        }
    }
}

#[test]
fn pipelined_requests_keep_their_order_across_shards() {
    let tmp = TempDir::new("routing-pipeline");
    let p = Proc::spawn(&example("counters.toml", &tmp, 2));
    let before = p.stats();

    // One connection per port, concurrently, on disjoint keys that mix both
    // owners: 50 requests each, twice.
    let threads: Vec<_> = (0..2)
        .map(|port| {
            let addr = p.shards[port];
            let mut keys = keys_owned_by(&format!("p{port}"), 0, 2, 3);
            keys.extend(keys_owned_by(&format!("p{port}"), 1, 2, 2));
            std::thread::spawn(move || {
                let mut state = HashMap::new();
                pipeline(addr, &keys, 50, port, &mut state);
                pipeline(addr, &keys, 50, port + 2, &mut state);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let after = p.stats();
    for shard in 0..2 {
        assert!(
            forwarded(&after, shard) > forwarded(&before, shard),
            "shard {shard} forwarded nothing: {after}"
        );
    }
    p.stop();
}

// ---------------------------------------------------------------------------
// The read route's contract; key types
// ---------------------------------------------------------------------------

const KEYS_TOML: &str = r#"
[service]
name = "keys"
host = "127.0.0.1"
base_port = 0
shards = 2
admin_port = 0

[[route]]
method = "POST"
path = "/devices"
request = { id = { type = "int64", nullable = true }, on = "bool", v = "float64" }

  [[route.step]]
  aggregate = { name = "by_id", key = "id", outputs = { n = "count()", v_max = "max(v)" } }

  [[route.step]]
  aggregate = { name = "by_flag", key = "on", outputs = { n_flag = "count()" } }

[[route]]
method = "GET"
path = "/devices"
read = "by_id"

[[route]]
method = "GET"
path = "/flags"
read = "by_flag"
"#;

#[test]
fn read_routes_answer_by_key_type() {
    let tmp = TempDir::new("routing-keys");
    let p = Proc::spawn(&tmp.write("keys.toml", KEYS_TOML));
    let mut cs: Vec<Client> = p.shards.iter().map(|a| Client::connect(*a)).collect();
    let ids: Vec<i64> = vec![0, 1, 2, 3, 42, -7, i64::MAX, i64::MIN];
    assert!(ids.iter().any(|&i| owner_shard(Val::Int(i), 2) == 0));
    assert!(ids.iter().any(|&i| owner_shard(Val::Int(i), 2) == 1));
    for (k, &id) in ids.iter().enumerate() {
        for round in 0..=k % 3 {
            let body = format!(r#"{{"id":{id},"on":{},"v":{}.5}}"#, k % 2 == 0, round);
            let r = cs[(k + round) % 2].post("/devices", &body);
            assert_eq!(r.status, 200, "{body}: {}", r.text());
        }
    }
    let mut flags = [0i64; 2];
    for (k, _) in ids.iter().enumerate() {
        flags[usize::from(k % 2 == 0)] += (k % 3 + 1) as i64;
    }
    for (k, &id) in ids.iter().enumerate() {
        let rounds = (k % 3 + 1) as i64;
        for c in cs.iter_mut() {
            let r = c.get(&format!("/devices?key={id}"));
            assert_eq!(r.status, 200, "{id}: {}", r.text());
            let j = r.json();
            assert_eq!(j["key"], id, "{}", r.text());
            assert_eq!(j["n"], rounds, "{}", r.text());
            assert_eq!(j["v_max"], rounds as f64 - 0.5, "{}", r.text());
            assert!(r.text().starts_with(r#"{"key":"#), "{}", r.text());
        }
    }
    for (b, n) in [(false, flags[0]), (true, flags[1])] {
        for c in cs.iter_mut() {
            let r = c.get(&format!("/flags?key={b}"));
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["key"], b, "{}", r.text());
            assert_eq!(r.json()["n_flag"], n, "{}", r.text());
        }
    }

    for c in cs.iter_mut() {
        // Unknown key: 404 naming the key parameter.
        let r = c.get("/devices?key=5");
        assert_eq!(r.status, 404, "{}", r.text());
        assert_eq!(r.json()["field"], "key", "{}", r.text());
        assert!(r.json()["error"].is_string(), "{}", r.text());
        // Missing key parameter: 400.
        for path in ["/devices", "/devices?", "/devices?other=1"] {
            let r = c.get(path);
            assert_eq!(r.status, 400, "{path}: {}", r.text());
        }
        // Not an int64: 400.
        for bad in ["abc", "1.5", "99999999999999999999", ""] {
            let r = c.get(&format!("/devices?key={bad}"));
            assert_eq!(r.status, 400, "key={bad}: {}", r.text());
        }
        let r = c.get("/flags?key=maybe");
        assert_eq!(r.status, 400, "{}", r.text());
        // Percent-encoded int: %34%32 is "42".
        let r = c.get("/devices?key=%34%32");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["key"], 42);
    }

    // A null key is refused, naming the key field.
    let r = cs[1].post("/devices", r#"{"id":null,"on":true,"v":1.0}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["field"], "id", "{}", r.text());
    // ...and changed nothing.
    let r = cs[0].get("/flags?key=true");
    assert_eq!(r.json()["n_flag"], flags[1], "{}", r.text());

    // Keyed state without a [checkpoint] table: no checkpoints to force.
    let r = p.admin_post("/checkpoint");
    assert_eq!(r.status, 501, "{}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());
    assert_eq!(p.admin_get("/checkpoint").status, 405);
    assert!(p.stats()["checkpoint"].is_null());
    p.stop();
}

#[test]
fn read_route_decodes_utf8_keys() {
    let tmp = TempDir::new("routing-utf8");
    let p = Proc::spawn(&example("counters.toml", &tmp, 2));
    let mut cs: Vec<Client> = p.shards.iter().map(|a| Client::connect(*a)).collect();
    let names = [
        "Zoë Ångström",
        "a&b=c",
        "50% off",
        "slash/and?query",
        "+plus",
        "ü",
    ];
    for (i, name) in names.iter().enumerate() {
        let r = cs[i % 2].post("/events", &event(name, 10));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for name in names {
        for c in cs.iter_mut() {
            let r = c.get(&format!("/counts?key={}", percent_encode(name)));
            assert_eq!(r.status, 200, "{name}: {}", r.text());
            assert_eq!(r.json()["key"], name, "{}", r.text());
            assert_eq!(r.json()["n"], 1, "{}", r.text());
        }
    }
    let r = cs[0].get("/counts?key=Zo%C3%AB%20%C3%85ngstr%C3%B6m");
    assert_eq!(r.json()["key"], "Zoë Ångström", "{}", r.text());
    // `+` is a space, as in HTML forms; a literal plus is %2B.
    let r = cs[1].get("/counts?key=Zo%C3%AB+%C3%85ngstr%C3%B6m");
    assert_eq!(r.json()["key"], "Zoë Ångström", "{}", r.text());
    assert_eq!(cs[1].get("/counts?key=%2Bplus").json()["key"], "+plus");
    // Malformed escapes and non-UTF-8 bytes: 400 naming the key.
    for bad in ["%zz", "%F", "%FF", "a%C3"] {
        let r = cs[0].get(&format!("/counts?key={bad}"));
        assert_eq!(r.status, 400, "key={bad}: {}", r.text());
        assert_eq!(r.json()["field"], "key", "{}", r.text());
    }
    let r = cs[0].get("/counts?key=nobody");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["field"], "key");
    p.stop();
}

// ---------------------------------------------------------------------------
// 9. The thermostat of seed 003 end to end: settings changed live
// ---------------------------------------------------------------------------

fn reading(c: &mut Client, sensor: i64, temp: f64) -> (i64, bool) {
    let body = format!(r#"{{"sensor_id":{sensor},"temperature":{temp:?}}}"#);
    let r = c.post("/readings", &body);
    assert_eq!(r.status, 200, "{body}: {}", r.text());
    let j = r.json();
    assert_eq!(j["sensor_id"], sensor, "{}", r.text());
    (j["action"].as_i64().unwrap(), j["send"].as_bool().unwrap())
}

fn set_point(c: &mut Client, sensor: i64, desired: f64, delta: f64) {
    let body = format!(
        r#"{{"sensor_id":{sensor},"desired":{desired:?},"up_delta":{delta:?},"down_delta":{delta:?}}}"#
    );
    let r = c.post("/settings", &body);
    assert_eq!(r.status, 200, "{body}: {}", r.text());
    assert_eq!(r.json()["desired"], desired, "{}", r.text());
}

#[test]
fn thermostat_uses_a_set_point_changed_mid_stream_on_the_very_next_reading() {
    let tmp = TempDir::new("routing-thermostat");
    let cfg = example("thermostat.toml", &tmp, 2);
    let p = Proc::spawn(&cfg);
    // Persistent connections, one per port, kept for the whole stream.
    let mut cs: Vec<Client> = p.shards.iter().map(|a| Client::connect(*a)).collect();
    // No settings yet: in band, nothing sent.
    assert_eq!(reading(&mut cs[0], 7, 10.0), (-1, false));
    set_point(&mut cs[1], 7, 20.0, 1.0);
    // (temperature, action, send) against desired 20 +- 1.
    for (i, &(t, action, send)) in [
        (18.5, 0, true), // heater on: send
        (18.7, 0, false),
        (20.0, -1, false), // in band
        (18.0, 0, false),  // on again, but already sent
        (21.5, 1, true),   // off: send
        (20.5, -1, false),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            reading(&mut cs[i % 2], 7, t),
            (action, send),
            "reading #{i} {t}"
        );
    }
    // Mid-stream, the set point moves (on one port); the very next reading,
    // on the other port and on the first, uses it.
    for round in 0..20 {
        let (a, b) = (round % 2, 1 - round % 2);
        let desired = if round % 2 == 0 { 25.0 } else { 15.0 };
        set_point(&mut cs[a], 7, desired, 0.5);
        let expect = if desired > 20.0 { 0 } else { 1 };
        let got = reading(&mut cs[b], 7, 20.0);
        assert_eq!(got, (expect, true), "round {round}: desired {desired}");
        let got = reading(&mut cs[a], 7, 20.0);
        assert_eq!(got, (expect, false), "round {round}: desired {desired}");
    }
    for c in cs.iter_mut() {
        let r = c.get("/settings?key=7");
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(
            (&j["key"], &j["desired"], &j["up_delta"], &j["down_delta"]),
            (&7.into(), &15.0.into(), &0.5.into(), &0.5.into()),
            "{}",
            r.text()
        );
    }
    // Deltas default to 0.5 when left out.
    let r = cs[0].post("/settings", r#"{"sensor_id":8,"desired":21.0}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["up_delta"], 0.5);
    assert_eq!(reading(&mut cs[1], 8, 20.4), (0, true));
    drop(cs);
    // A graceful stop checkpoints settings and the last action sent.
    p.stop();
    let p = Proc::spawn(&cfg);
    let mut cs: Vec<Client> = p.shards.iter().map(|a| Client::connect(*a)).collect();
    assert_eq!(
        reading(&mut cs[1], 7, 20.0),
        (1, false),
        "restored, not re-sent"
    );
    assert_eq!(reading(&mut cs[0], 7, 14.0), (0, true));
    assert_eq!(reading(&mut cs[0], 8, 22.0), (1, true));
    p.stop();
}
