//! Declared `[[table]]`s over real processes: replicated writes visible on
//! every port as soon as they are answered, partitioned writes and lookups
//! forwarded to the owner, tables restored after `kill -9` (also with
//! another shard count), bad control input refused with 422 and no change,
//! and in a fleet a partitioned table's key of another instance answered
//! 421 naming the owner.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Proc, TempDir};
use coreline::row::Val;
use coreline::state::owner_shard;

fn config(tmp: &TempDir, shards: usize) -> std::path::PathBuf {
    let dir = format!("{:?}", tmp.join("state").to_str().unwrap());
    tmp.write(
        &format!("tables-{shards}.toml"),
        &format!(
            r#"
[service]
name = "tables"
base_port = 0
shards = {shards}
admin_port = 0

[checkpoint]
dir = {dir}
interval = "1h"

[[table]]
name = "limits"
key = {{ tenant = "utf8" }}
columns = {{ max = "int64", note = "utf8" }}
scope = "replicated"

[[table]]
name = "profiles"
key = {{ user = "int64" }}
columns = {{ name = "utf8", score = "float64" }}

[[route]]
path = "/limits"
request = {{ tenant = "utf8", max = "int64", note = {{ type = "utf8", nullable = true }} }}
  [[route.step]]
  upsert = {{ table = "limits", key = "tenant", set = {{ max = "max", note = "note" }} }}

[[route]]
path = "/limits/delete"
request = {{ tenant = "utf8" }}
  [[route.step]]
  delete = {{ table = "limits", key = "tenant" }}
  [route.reply]
  columns = ["tenant"]

[[route]]
path = "/check"
request = {{ tenant = "utf8", n = "int64" }}
  [[route.step]]
  lookup = {{ table = "limits", key = "tenant", columns = ["max"], missing = {{ status = 404, message = "unknown tenant" }} }}
  [[route.step]]
  with_column = {{ name = "ok", expr = "n <= max" }}
  [route.reply]
  columns = ["tenant", "max", "ok"]

[[route]]
path = "/profiles"
request = {{ user = "int64", score = "float64" }}
  [[route.step]]
  upsert = {{ table = "profiles", key = "user", set = {{ score = "score * 2" }} }}
  [route.reply]
  columns = ["user", "name", "score"]

[[route]]
path = "/profiles/name"
request = {{ user = "int64", name = "utf8" }}
  [[route.step]]
  upsert = {{ table = "profiles", key = "user", set = {{ name = "upper(name)" }} }}

[[route]]
path = "/whois"
request = {{ user = "int64" }}
  [[route.step]]
  lookup = {{ table = "profiles", key = "user" }}
  [route.reply]
  columns = ["user", "name", "score"]

[[route]]
method = "GET"
path = "/limits"
read = "limits"

[[route]]
method = "GET"
path = "/profiles"
read = "profiles"
"#
        ),
    )
}

fn check(c: &mut Client, tenant: &str, n: i64) -> (u16, serde_json::Value) {
    let r = c.post("/check", &format!(r#"{{"tenant":"{tenant}","n":{n}}}"#));
    (r.status, r.json())
}

#[test]
fn a_replicated_upsert_is_visible_on_every_port_once_answered() {
    let tmp = TempDir::new("tables-replicated");
    let p = Proc::spawn(&config(&tmp, 2));
    let mut cs: Vec<Client> = p.shards.iter().map(|a| Client::connect(*a)).collect();
    assert_eq!(check(&mut cs[0], "acme", 1).0, 404);
    let mut acks = Vec::new();
    for i in 0..200i64 {
        let writer = (i % 2) as usize;
        let t = Instant::now();
        let r = cs[writer].post(
            "/limits",
            &format!(r#"{{"tenant":"acme","max":{i},"note":"v{i}"}}"#),
        );
        acks.push(t.elapsed());
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["max"], i, "{}", r.text());
        // Right after the answer, every port's lookup sees it.
        for c in cs.iter_mut() {
            let (status, j) = check(c, "acme", i);
            assert_eq!(status, 200, "{j}");
            assert_eq!(j["max"], i, "write #{i}: {j}");
            assert_eq!(j["ok"], true);
        }
    }
    acks.sort();
    eprintln!(
        "replicated upsert ack over 2 shards (debug build, busy machine): p50 {:?} p90 {:?} max {:?}",
        acks[acks.len() / 2],
        acks[acks.len() * 9 / 10],
        acks[acks.len() - 1]
    );
    // A column the upsert leaves out keeps its value.
    let r = cs[1].post("/limits", r#"{"tenant":"acme","max":5}"#);
    assert_eq!(
        r.json()["note"],
        serde_json::Value::Null,
        "note = null was set"
    );
    for c in cs.iter_mut() {
        let r = c.get("/limits?key=acme");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["max"], 5);
    }
    // Delete: gone everywhere; deleting again is refused.
    let r = cs[0].post("/limits/delete", r#"{"tenant":"acme"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    for c in cs.iter_mut() {
        assert_eq!(check(c, "acme", 1).0, 404);
    }
    let r = cs[1].post("/limits/delete", r#"{"tenant":"acme"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    p.stop();
}

#[test]
fn concurrent_replicated_writes_end_equal_on_every_shard() {
    let tmp = TempDir::new("tables-order");
    let p = Proc::spawn(&config(&tmp, 2));
    let addrs = p.shards.clone();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = addrs[t % 2];
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..100 {
                    let r = c.post(
                        "/limits",
                        &format!(r#"{{"tenant":"t{}","max":{}}}"#, i % 5, t * 1000 + i),
                    );
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut cs: Vec<Client> = addrs.iter().map(|a| Client::connect(*a)).collect();
    for k in 0..5 {
        let a = check(&mut cs[0], &format!("t{k}"), 0).1["max"].clone();
        let b = check(&mut cs[1], &format!("t{k}"), 0).1["max"].clone();
        assert_eq!(a, b, "t{k}: the shards applied writes in different orders");
    }
    p.stop();
}

#[test]
fn partitioned_upserts_and_lookups_run_on_the_owner() {
    let tmp = TempDir::new("tables-partitioned");
    let p = Proc::spawn(&config(&tmp, 2));
    let mut cs: Vec<Client> = p.shards.iter().map(|a| Client::connect(*a)).collect();
    for user in 0..40i64 {
        let owner = owner_shard(Val::Int(user), 2);
        // Written through the other shard: forwarded.
        let r = cs[1 - owner].post(
            "/profiles",
            &format!(r#"{{"user":{user},"score":{user}.5}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["score"], (user as f64 + 0.5) * 2.0);
        assert_eq!(r.json()["name"], serde_json::Value::Null);
        let r = cs[owner].post(
            "/profiles/name",
            &format!(r#"{{"user":{user},"name":"u{user}"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for user in 0..40i64 {
        for c in cs.iter_mut() {
            let r = c.post("/whois", &format!(r#"{{"user":{user}}}"#));
            assert_eq!(r.status, 200, "{}", r.text());
            let j = r.json();
            assert_eq!(j["name"], format!("U{user}"), "{j}");
            assert_eq!(j["score"], (user as f64 + 0.5) * 2.0, "{j}");
        }
    }
    // A user without a row: nulls (missing = "null" is the default).
    let r = cs[0].post("/whois", r#"{"user":999}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], serde_json::Value::Null);
    let forwarded = |stats: &serde_json::Value| -> u64 {
        (0..2)
            .map(|i| stats["shards"][i]["forwarded_requests"].as_u64().unwrap())
            .sum()
    };
    let before = forwarded(&p.stats());
    // 40 upserts and 40 of the 80 lookups landed on the other shard.
    assert!(before >= 80, "{}", p.stats());
    // Lookups on a replicated table never hop.
    cs[0].post("/limits", r#"{"tenant":"a","max":1}"#);
    let before = forwarded(&p.stats());
    for _ in 0..20 {
        for c in cs.iter_mut() {
            assert_eq!(check(c, "a", 1).0, 200);
        }
    }
    assert_eq!(forwarded(&p.stats()), before, "{}", p.stats());
    p.stop();
}

/// `n` consecutive free ports.
fn free_ports(n: u16) -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = a.local_addr().unwrap().port();
        if base.checked_add(n).is_none() {
            continue;
        }
        drop(a);
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// A fleet of two instances of two shards, each started with
/// `--instance-index`: an upsert, a lookup or a read of a partitioned
/// table's key that the other instance owns is answered 421 naming the
/// owner (address, instance, shard) and changes nothing; the owner serves
/// it from either of its ports (a hop inside the instance). A replicated
/// table is per instance: both instances take its writes.
#[test]
fn a_partitioned_table_key_of_another_fleet_instance_is_answered_421() {
    let tmp = TempDir::new("tables-fleet");
    let shards = 2;
    let first = free_ports(2 * shards as u16);
    let bases = [first, first + shards as u16];
    let text = std::fs::read_to_string(config(&tmp, shards)).unwrap();
    let procs: Vec<Proc> = (0..2)
        .map(|i| {
            let fleet = format!(
                "[fleet]\ninstances = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n\n[checkpoint]",
                bases[0], bases[1]
            );
            let own = text
                .replacen("base_port = 0", &format!("base_port = {}", bases[i]), 1)
                .replacen("[checkpoint]", &fleet, 1);
            let cfg = tmp.write(&format!("fleet{i}.toml"), &own);
            Proc::try_spawn_args(&cfg, &["--instance-index", &i.to_string()])
                .unwrap_or_else(|log| panic!("instance {i} did not start:\n{log}"))
        })
        .collect();
    let place = coreline::fleet::Place {
        index: 0,
        members: bases
            .iter()
            .map(|b| coreline::fleet::parse_member(&format!("127.0.0.1:{b}")).unwrap())
            .collect(),
        shards,
    };
    let mut seen = [false; 2];
    for user in 0..40i64 {
        let (inst, shard) = place.owner(Val::Int(user));
        seen[inst] = true;
        let owner = format!("127.0.0.1:{}", bases[inst] + shard as u16);
        let (mine, other) = (&procs[inst], &procs[1 - inst]);
        // Every port of the other instance refuses, naming the owner.
        // (A fresh connection each: whether a 421 keeps it open is not
        // what this test is about.)
        for addr in &other.shards {
            for (path, body) in [
                ("/profiles", format!(r#"{{"user":{user},"score":1.0}}"#)),
                ("/whois", format!(r#"{{"user":{user}}}"#)),
            ] {
                let r = Client::connect(*addr).post(path, &body);
                assert_eq!(r.status, 421, "{path} {user} on {addr}: {}", r.text());
                let j = r.json();
                assert_eq!(j["owner"], owner.as_str(), "{j}");
                assert_eq!(j["owner_instance"], inst, "{j}");
                assert_eq!(j["owner_shard"], shard, "{j}");
                assert_eq!(j["field"], "user", "{j}");
            }
            let r = Client::connect(*addr).get(&format!("/profiles?key={user}"));
            assert_eq!(r.status, 421, "read {user} on {addr}: {}", r.text());
            assert_eq!(r.json()["owner"], owner.as_str());
        }
        // The refused upsert changed nothing: the owner has no row yet.
        let mut c = Client::connect(mine.shards[1 - shard]);
        let r = c.post("/whois", &format!(r#"{{"user":{user}}}"#));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["score"], serde_json::Value::Null, "{}", r.text());
        // The owner takes it, through its other shard (forwarded inside).
        let r = c.post(
            "/profiles",
            &format!(r#"{{"user":{user},"score":{user}.5}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let mut c = Client::connect(mine.shards[shard]);
        let r = c.post("/whois", &format!(r#"{{"user":{user}}}"#));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["score"], (user as f64 + 0.5) * 2.0);
    }
    assert_eq!(seen, [true, true], "40 keys cover both instances");
    // A replicated table is not owned by an instance: each takes its writes.
    for p in &procs {
        let mut c = Client::connect(p.shards[1]);
        let r = c.post("/limits", r#"{"tenant":"acme","max":3}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        let (status, j) = check(&mut c, "acme", 2);
        assert_eq!(status, 200, "{j}");
        assert_eq!(j["max"], 3, "{j}");
        assert_eq!(j["ok"], true, "{j}");
    }
    for p in procs {
        p.stop();
    }
}

#[test]
fn bad_control_input_is_refused_and_changes_nothing() {
    let tmp = TempDir::new("tables-bad");
    let p = Proc::spawn(&config(&tmp, 2));
    let mut cs: Vec<Client> = p.shards.iter().map(|a| Client::connect(*a)).collect();
    let r = cs[0].post("/limits", r#"{"tenant":"acme","max":10}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    for (body, field) in [
        (r#"{"tenant":"acme","max":"lots"}"#, "max"),
        (r#"{"tenant":"acme","max":1.5}"#, "max"),
        (r#"{"tenant":7,"max":1}"#, "tenant"),
        (r#"{"tenant":null,"max":1}"#, "tenant"),
        (r#"{"max":1}"#, "tenant"),
    ] {
        for c in cs.iter_mut() {
            let r = c.post("/limits", body);
            assert_eq!(r.status, 422, "{body}: {}", r.text());
            assert!(r.text().contains(field), "{body}: {}", r.text());
        }
    }
    // Deleting a key without a row: 422, nothing changes.
    let r = cs[1].post("/limits/delete", r#"{"tenant":"nobody"}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    for c in cs.iter_mut() {
        let (status, j) = check(c, "acme", 10);
        assert_eq!((status, &j["max"]), (200, &10.into()), "{j}");
    }
    p.stop();
}

#[test]
fn tables_survive_kill_9_after_a_committed_epoch_and_a_rescale() {
    let tmp = TempDir::new("tables-kill9");
    let p = Proc::spawn(&config(&tmp, 2));
    let mut cs: Vec<Client> = p.shards.iter().map(|a| Client::connect(*a)).collect();
    for i in 0..30i64 {
        let r = cs[(i % 2) as usize].post(
            "/limits",
            &format!(r#"{{"tenant":"t{i}","max":{i},"note":"n{i}"}}"#),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let r = cs[(i % 2) as usize].post("/profiles", &format!(r#"{{"user":{i},"score":{i}}}"#));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = cs[0].post("/limits/delete", r#"{"tenant":"t3"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let first = p.checkpoint();
    assert!(first >= 1);
    // The replicated table is written once (30 rows, in shard 0's file),
    // not once per shard: 30 + 30 profile rows in all.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.join(format!("state/epoch-{first}/MANIFEST"))).unwrap(),
    )
    .unwrap();
    let rows: Vec<u64> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rows"].as_u64().unwrap())
        .collect();
    assert_eq!(rows.iter().sum::<u64>(), 60, "{manifest}");
    // A second epoch as a delta: one change, one more delete.
    cs[1].post("/limits", r#"{"tenant":"t4","max":400}"#);
    cs[1].post("/limits/delete", r#"{"tenant":"t5"}"#);
    assert!(p.checkpoint() >= 2);
    // Not committed: lost on kill -9.
    cs[0].post("/limits", r#"{"tenant":"t6","max":600}"#);
    drop(cs);
    p.kill9();
    for shards in [2, 1, 2] {
        let p = Proc::spawn(&config(&tmp, shards));
        let mut cs: Vec<Client> = p.shards.iter().map(|a| Client::connect(*a)).collect();
        for c in cs.iter_mut() {
            for i in 0..30i64 {
                let (status, j) = check(c, &format!("t{i}"), 0);
                match i {
                    3 | 5 => assert_eq!(status, 404, "t{i} was deleted ({shards} shards): {j}"),
                    4 => assert_eq!(j["max"], 400, "{j}"),
                    _ => assert_eq!(j["max"], i, "t{i} ({shards} shards): {j}"),
                }
                let r = c.post("/whois", &format!(r#"{{"user":{i}}}"#));
                assert_eq!(r.json()["score"], (i * 2) as f64, "{}", r.text());
            }
        }
        let r = cs[0].get("/limits?key=t7");
        assert_eq!(r.json()["note"], "n7", "{}", r.text());
        // Make the next run restore from this run's own checkpoint.
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.checkpoint() == 0 && Instant::now() < deadline {}
        drop(cs);
        p.stop();
    }
}

/// `POST /checkpoint` with the given extra header lines; the status.
fn post_checkpoint(p: &Proc, headers: &str) -> (u16, String) {
    post_admin_path(p, "/checkpoint", headers)
}

/// `POST <path>` on the admin port with the given extra header lines.
fn post_admin_path(p: &Proc, path: &str, headers: &str) -> (u16, String) {
    let mut c = Client::connect(p.admin.expect("admin port"));
    c.send(
        format!("POST {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: 0\r\n\r\n").as_bytes(),
    );
    let r = c.response();
    (r.status, r.text().to_string())
}

#[test]
fn admin_token_guards_mutating_admin_requests() {
    let tmp = TempDir::new("tables-admin");
    tmp.write("admin.token", "s3cret-token-0123456789\n");
    let text = std::fs::read_to_string(config(&tmp, 1)).unwrap();
    let with_token = tmp.write(
        "token.toml",
        &text.replace(
            "admin_port = 0\n",
            "admin_port = 0\nadmin_token_file = \"admin.token\"\n",
        ),
    );
    let p = Proc::spawn(&with_token);
    assert!(
        p.log_text().contains("need the bearer token"),
        "{}",
        p.log_text()
    );
    assert_eq!(post_checkpoint(&p, "X-Coreline-Admin: 1\r\n").0, 401);
    assert_eq!(
        post_checkpoint(&p, "Authorization: Bearer wrong-token-0123456789\r\n").0,
        401
    );
    let (status, body) = post_checkpoint(&p, "Authorization: Bearer s3cret-token-0123456789\r\n");
    assert_eq!(status, 200, "{body}");
    // A reload re-reads the token file: the token rotates without a restart.
    tmp.write("admin.token", "n3w-token-abcdefghijklmnop\n");
    let (status, body) = post_admin_path(
        &p,
        "/reload",
        "Authorization: Bearer s3cret-token-0123456789\r\n",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        post_checkpoint(&p, "Authorization: Bearer s3cret-token-0123456789\r\n").0,
        401
    );
    let (status, body) =
        post_checkpoint(&p, "Authorization: Bearer n3w-token-abcdefghijklmnop\r\n");
    assert_eq!(status, 200, "{body}");
    p.stop();

    // No token, admin on a non-loopback address: refused, and the log says so.
    let open = tmp.write(
        "open.toml",
        &text.replace(
            "admin_port = 0\n",
            "admin_port = 0\nadmin_host = \"0.0.0.0\"\n",
        ),
    );
    let p = Proc::spawn(&open);
    assert!(p.log_text().contains("refused"), "{}", p.log_text());
    let (status, body) = post_checkpoint(&p, "X-Coreline-Admin: 1\r\n");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin_token_file"), "{body}");
    p.stop();

    // No token, loopback: the header is enough (as before).
    let p = Proc::spawn(&config(&tmp, 1));
    assert!(
        p.log_text().contains("open without a token"),
        "{}",
        p.log_text()
    );
    assert_eq!(post_checkpoint(&p, "").0, 403);
    assert_eq!(post_checkpoint(&p, "X-Coreline-Admin: 1\r\n").0, 200);
    p.stop();

    // A token file that is missing or too short is a config error with a place.
    let bad = tmp.write(
        "bad.toml",
        &text.replace(
            "admin_port = 0\n",
            "admin_port = 0\nadmin_token_file = \"nope.token\"\n",
        ),
    );
    let err = Proc::try_spawn(&bad).err().expect("refused");
    assert!(
        err.contains("bad.toml:7:") && err.contains("nope.token"),
        "{err}"
    );
}

#[test]
fn table_declarations_are_checked_with_file_line_and_column() {
    use coreline::config::{Source, parse};
    let base = |table: &str, step: &str| {
        format!(
            "[service]\nname = \"t\"\nbase_port = 0\nshards = 1\n\n{table}\n[[route]]\npath = \"/x\"\nrequest = {{ k = \"int64\", v = \"float64\" }}\n  [[route.step]]\n  {step}\n"
        )
    };
    let ok_table =
        "[[table]]\nname = \"s\"\nkey = { k = \"int64\" }\ncolumns = { v = \"float64\" }\n";
    for (table, step, place, what) in [
        (
            "[[table]]\nname = \"s\"\nkey = { k = \"float64\" }\ncolumns = { v = \"float64\" }\n",
            "with_column = { name = \"a\", expr = \"1\" }",
            "t.toml:8:13",
            "table[0].key.k",
        ),
        (
            "[[table]]\nname = \"s\"\nkey = { k = \"int64\" }\ncolumns = { v = \"float64\" }\nscope = \"global\"\n",
            "with_column = { name = \"a\", expr = \"1\" }",
            "t.toml:10:9",
            "table[0].scope",
        ),
        (
            ok_table,
            "upsert = { table = \"nope\", key = \"k\", set = { v = \"v\" } }",
            "t.toml:15:22",
            "route[0].step[0].upsert.table",
        ),
        (
            ok_table,
            "upsert = { table = \"s\", key = \"k\", set = { w = \"v\" } }",
            "t.toml:15:46",
            "route[0].step[0].upsert.set.w",
        ),
        (
            ok_table,
            "lookup = { table = \"s\", key = \"v\" }",
            "t.toml:15:33",
            "route[0].step[0].lookup.key",
        ),
    ] {
        let text = base(table, step);
        let e = parse(Source {
            path: "t.toml".into(),
            text: text.clone(),
        })
        .and_then(coreline::pipeline::plan)
        .map(|_| ())
        .expect_err(&text)
        .to_string();
        assert!(
            e.contains(place) && e.contains(what),
            "{place} {what}:\n{e}"
        );
    }
}
