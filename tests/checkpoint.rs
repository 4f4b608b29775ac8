//! Keyed state survives restarts: epoch checkpoints over real `coreline run`
//! processes. `kill -9` at random moments (also while a checkpoint is being
//! written) restores exactly a committed epoch; restarts may change the shard
//! count; a corrupt newest epoch falls back to the previous one; an
//! unwritable directory never stops serving; a graceful stop loses nothing;
//! arrow-rs reads the shard files (and pyarrow, in `.ci/run`).
//!
//! Checkpoints run with `interval = "1h"` unless a test says otherwise and
//! are forced with `POST /checkpoint`, so each test knows exactly which
//! updates a committed epoch holds. Random choices come from a seed printed
//! at the start of each test; set `CORELINE_TEST_SEED` to replay one.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Client, Proc, TempDir, parse_response, percent_encode};
use coreline::row::Val;
use coreline::state::owner_shard;

// ---------------------------------------------------------------------------
// The service under test
// ---------------------------------------------------------------------------

/// Per-user counters plus a `changed` table, checkpointed into `state/`
/// next to the config file.
fn config(shards: usize, interval: &str) -> String {
    format!(
        r#"
[service]
name = "counters"
host = "127.0.0.1"
base_port = 0
shards = {shards}
admin_port = 0

[limits]
drain_timeout = "5s"

[checkpoint]
dir = "state"
interval = "{interval}"
retain = 3
full_every = 3

[[route]]
method = "POST"
path = "/events"
request = {{ user = "utf8", amount = "int64" }}

  [[route.step]]
  aggregate = {{ name = "user_counts", key = "user", outputs = {{ n = "count()", total = "sum(amount)", mean = "avg(amount)", hi = "max(amount)", lo = "min(amount)", smooth = "ewma(amount, 0.1)", latest = "last(amount)", since = "first_seen()" }} }}

  [[route.step]]
  changed = {{ name = "big", key = "user", value = "amount >= 100", output = "big_changed" }}

  [route.reply]
  columns = ["user", "n", "total", "big_changed"]

[[route]]
method = "GET"
path = "/counts"
read = "user_counts"

[[route]]
method = "GET"
path = "/big"
read = "big"
"#
    )
}

/// Users with characters that need JSON escaping or percent-encoding.
const USERS: [&str; 10] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "zoë", "Mr Smith", "user/7", "50% off",
];

/// What the client expects one user's state to be.
#[derive(Debug, Clone, PartialEq)]
struct UserModel {
    n: i64,
    total: i64,
    hi: i64,
    lo: i64,
    latest: i64,
    smooth: f64,
    big: bool,
}

/// The expected state of every user that has one.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    users: BTreeMap<String, UserModel>,
}

impl Model {
    /// Applies one update; returns the expected `(n, total, big_changed)`.
    fn apply(&mut self, user: &str, amount: i64) -> (i64, i64, bool) {
        let big = amount >= 100;
        match self.users.get_mut(user) {
            None => {
                self.users.insert(
                    user.to_string(),
                    UserModel {
                        n: 1,
                        total: amount,
                        hi: amount,
                        lo: amount,
                        latest: amount,
                        smooth: amount as f64,
                        big,
                    },
                );
                (1, amount, true)
            }
            Some(u) => {
                u.n += 1;
                u.total += amount;
                u.hi = u.hi.max(amount);
                u.lo = u.lo.min(amount);
                u.latest = amount;
                u.smooth = 0.1 * amount as f64 + 0.9 * u.smooth;
                let changed = u.big != big;
                u.big = big;
                (u.n, u.total, changed)
            }
        }
    }
}

/// Every read answer for every user in the universe: `"counts <user>"` and
/// `"big <user>"` → the 200 body, or `None` for a 404.
type State = BTreeMap<String, Option<String>>;

/// Sends one update on `c` and checks the reply against the model.
fn update(c: &mut Client, model: &mut Model, user: &str, amount: i64) {
    let body = format!(
        r#"{{"user":{},"amount":{amount}}}"#,
        serde_json::to_string(user).unwrap()
    );
    let r = c.post("/events", &body);
    assert_eq!(r.status, 200, "POST /events {body}: {}", r.text());
    let (n, total, changed) = model.apply(user, amount);
    let j = r.json();
    assert_eq!(j["user"], user, "{}", r.text());
    assert_eq!(j["n"], n, "count of {user}: {}", r.text());
    assert_eq!(j["total"], total, "sum of {user}: {}", r.text());
    assert_eq!(j["big_changed"], changed, "changed of {user}: {}", r.text());
}

/// `count` random updates for random users of `users`, each on a random
/// shard port (so about half are forwarded with two shards).
fn random_updates(
    rng: &mut Rng,
    clients: &mut [Client],
    model: &mut Model,
    users: &[String],
    count: usize,
) {
    for _ in 0..count {
        let user = &users[rng.below(users.len())];
        let amount = rng.below(200) as i64;
        let c = rng.below(clients.len());
        update(&mut clients[c], model, user, amount);
    }
}

fn clients(p: &Proc) -> Vec<Client> {
    p.shards.iter().map(|a| Client::connect(*a)).collect()
}

/// One GET: the 200 body or `None` for 404; anything else fails the test.
fn read(c: &mut Client, route: &str, user: &str) -> Option<String> {
    let r = c.get(&format!("{route}?key={}", percent_encode(user)));
    match r.status {
        200 => Some(r.text().to_string()),
        404 => {
            assert_eq!(r.json()["field"], "key", "{}", r.text());
            None
        }
        s => panic!("GET {route} for {user:?}: {s} {}", r.text()),
    }
}

/// Reads every user's state through `addr`.
fn read_state(addr: SocketAddr, users: &[String]) -> State {
    let mut c = Client::connect(addr);
    let mut s = State::new();
    for u in users {
        s.insert(format!("counts {u}"), read(&mut c, "/counts", u));
        s.insert(format!("big {u}"), read(&mut c, "/big", u));
    }
    s
}

/// Reads the state through every shard port and checks they agree.
fn read_state_everywhere(p: &Proc, users: &[String]) -> State {
    let first = read_state(p.shards[0], users);
    for (i, addr) in p.shards.iter().enumerate().skip(1) {
        assert_eq!(
            read_state(*addr, users),
            first,
            "shard {i} answers reads differently from shard 0"
        );
    }
    first
}

/// Checks read answers against the model, field by field (and in order).
fn check_model(state: &State, model: &Model, users: &[String]) {
    for u in users {
        let counts = &state[&format!("counts {u}")];
        let big = &state[&format!("big {u}")];
        let Some(m) = model.users.get(u) else {
            assert_eq!(counts, &None, "{u} should be unknown");
            assert_eq!(big, &None, "{u} should be unknown");
            continue;
        };
        let text = counts
            .as_deref()
            .unwrap_or_else(|| panic!("{u} missing from /counts"));
        let j: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(j["key"], u.as_str(), "{text}");
        assert_eq!(j["n"], m.n, "{u}: {text}");
        assert_eq!(j["total"], m.total, "{u}: {text}");
        assert_eq!(j["hi"], m.hi, "{u}: {text}");
        assert_eq!(j["lo"], m.lo, "{u}: {text}");
        assert_eq!(j["latest"], m.latest, "{u}: {text}");
        let mean = j["mean"].as_f64().unwrap_or_else(|| panic!("{text}"));
        assert!(
            (mean - m.total as f64 / m.n as f64).abs() < 1e-9 * (1.0 + mean.abs()),
            "{u}: {text}"
        );
        let smooth = j["smooth"].as_f64().unwrap_or_else(|| panic!("{text}"));
        assert!(
            (smooth - m.smooth).abs() < 1e-6 * (1.0 + smooth.abs()),
            "{u}: smooth {smooth} != {}: {text}",
            m.smooth
        );
        assert!(j["since"].as_i64().is_some_and(|t| t > 0), "{text}");
        // Outputs in declared order.
        let order = [
            "\"key\"",
            "\"n\"",
            "\"total\"",
            "\"mean\"",
            "\"hi\"",
            "\"lo\"",
            "\"smooth\"",
            "\"latest\"",
            "\"since\"",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} in {text}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "order: {text}");

        let text = big
            .as_deref()
            .unwrap_or_else(|| panic!("{u} missing from /big"));
        let j: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(j["key"], u.as_str(), "{text}");
        assert_eq!(j["value"], m.big, "{u}: {text}");
    }
}

fn ckpt_stats(p: &Proc) -> serde_json::Value {
    let s = p.stats();
    let c = s["checkpoint"].clone();
    assert!(c.is_object(), "/stats has no checkpoint object: {s}");
    c
}

fn restored_epoch(p: &Proc) -> u64 {
    let c = ckpt_stats(p);
    c["restored_epoch"]
        .as_u64()
        .unwrap_or_else(|| panic!("restored_epoch: {c}"))
}

fn users_of(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A small deterministic generator (xorshift64*), seeded per test.
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Rng {
        let seed = std::env::var("CORELINE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test}: CORELINE_TEST_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Sends updates for `users` on a fresh connection until `stop` or until
/// the connection fails; returns how many were acknowledged.
fn hammer(addr: SocketAddr, users: Vec<String>, stop: Arc<AtomicBool>) -> u64 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut acked = 0;
    let mut buf = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let body = format!(
            r#"{{"user":{},"amount":{}}}"#,
            serde_json::to_string(&users[i % users.len()]).unwrap(),
            i % 250
        );
        i += 1;
        let req = format!(
            "POST /events HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(req.as_bytes()).is_err() {
            return acked;
        }
        loop {
            if let Some((r, used)) = parse_response(&buf) {
                buf.drain(..used);
                assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
                acked += 1;
                break;
            }
            let mut chunk = [0u8; 4096];
            match std::io::Read::read(&mut s, &mut chunk) {
                Ok(0) | Err(_) => return acked,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
    acked
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn epoch_dir(state: &Path, epoch: u64) -> PathBuf {
    state.join(format!("epoch-{epoch}"))
}

/// Polls `cond` every 20 ms for up to 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the first sample of `metric` in Prometheus text.
fn metric(text: &str, metric: &str) -> f64 {
    text.lines()
        .find(|l| {
            l.starts_with(metric)
                && matches!(l.as_bytes().get(metric.len()), Some(b' ') | Some(b'{'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {metric} sample in /metrics:\n{text}"))
}

// ---------------------------------------------------------------------------
// 1. kill -9 restores exactly the committed epoch
// ---------------------------------------------------------------------------

/// Rounds of: restart, check the restored state, committed updates (forced
/// checkpoints), uncommitted updates, `kill -9`. The kill happens (by
/// round) right after acknowledged updates, right after sending
/// `POST /checkpoint` without waiting for it (the state must then be the
/// previous OR the new epoch, never anything else), or while another
/// connection is streaming updates.
#[test]
fn kill9_restores_exactly_the_committed_epoch() {
    let tmp = TempDir::new("ckpt-kill9");
    let cfg = tmp.write("counters.toml", &config(2, "1h"));
    let mut rng = Rng::seeded("kill9_restores_exactly_the_committed_epoch");
    let users = users_of(&USERS);

    let mut committed = (0u64, Model::default());
    let mut committed_state: State = users
        .iter()
        .flat_map(|u| [(format!("counts {u}"), None), (format!("big {u}"), None)])
        .collect();
    // A kill during a checkpoint: the state the new epoch would hold.
    let mut pending: Option<(Model, State)> = None;

    const ROUNDS: usize = 9;
    for round in 0..=ROUNDS {
        let p = Proc::spawn(&cfg);
        let restored = read_state_everywhere(&p, &users);
        let epoch = restored_epoch(&p);
        match pending.take() {
            Some((model, state)) if restored == state && restored != committed_state => {
                assert!(
                    epoch > committed.0,
                    "round {round}: restored the new epoch's state but restored_epoch = {epoch}"
                );
                eprintln!("round {round}: the checkpoint in flight at the kill committed");
                committed = (epoch, model);
            }
            _ => {
                assert_eq!(
                    restored, committed_state,
                    "round {round}: the restored state is not the committed epoch {}",
                    committed.0
                );
                assert_eq!(epoch, committed.0, "round {round}: restored_epoch");
            }
        }
        check_model(&restored, &committed.1, &users);
        if round == ROUNDS {
            p.kill9();
            break;
        }

        let mut model = committed.1.clone();
        let mut cs = clients(&p);
        // Committed: one to three batches, each followed by a forced
        // checkpoint (full_every = 3, so deltas on top of fulls too).
        for _ in 0..1 + rng.below(3) {
            let n = 1 + rng.below(30);
            random_updates(&mut rng, &mut cs, &mut model, &users, n);
            let e = p.checkpoint();
            assert!(e > committed.0, "epoch {e} after {}", committed.0);
            committed = (e, model.clone());
        }
        committed_state = read_state_everywhere(&p, &users);
        check_model(&committed_state, &model, &users);

        // Not committed.
        let n = 1 + rng.below(30);
        random_updates(&mut rng, &mut cs, &mut model, &users, n);
        drop(cs);

        match round % 3 {
            0 => p.kill9(),
            1 => {
                let now = read_state(p.shards[0], &users);
                check_model(&now, &model, &users);
                pending = Some((model, now));
                let mut admin = TcpStream::connect(p.admin.unwrap()).unwrap();
                admin
                    .write_all(b"POST /checkpoint HTTP/1.1\r\nHost: t\r\nX-Coreline-Admin: 1\r\nContent-Length: 0\r\n\r\n")
                    .unwrap();
                // Right away, during the barrier or file writes, or around
                // the manifest's commit.
                let us = match rng.below(3) {
                    0 => 0,
                    1 => rng.below(2_000),
                    _ => 2_000 + rng.below(40_000),
                };
                std::thread::sleep(Duration::from_micros(us as u64));
                p.kill9();
            }
            _ => {
                let stop = Arc::new(AtomicBool::new(false));
                let threads: Vec<_> = p
                    .shards
                    .iter()
                    .map(|a| {
                        let (a, u, s) = (*a, users.clone(), stop.clone());
                        std::thread::spawn(move || hammer(a, u, s))
                    })
                    .collect();
                std::thread::sleep(Duration::from_millis(20 + rng.below(60) as u64));
                p.kill9();
                stop.store(true, Ordering::Relaxed);
                for t in threads {
                    t.join().unwrap();
                }
            }
        }
    }
}

/// Epochs also commit on their own every `interval`: once an epoch that
/// started after the updates has committed, `kill -9` loses none of them.
#[test]
fn interval_epochs_commit_without_being_asked() {
    let tmp = TempDir::new("ckpt-interval");
    let cfg = tmp.write("counters.toml", &config(2, "100ms"));
    let mut rng = Rng::seeded("interval_epochs_commit_without_being_asked");
    let users = users_of(&USERS);
    let p = Proc::spawn(&cfg);
    let mut model = Model::default();
    random_updates(&mut rng, &mut clients(&p), &mut model, &users, 60);
    let expected = read_state_everywhere(&p, &users);
    check_model(&expected, &model, &users);
    // An epoch that finds nothing changed is not committed. The epoch in
    // flight now may have taken its barrier before the last update; the
    // second unchanged epoch from here started after it finished, so every
    // update is in the last committed epoch by then.
    let u0 = ckpt_stats(&p)["unchanged"].as_u64().unwrap();
    eventually("two unchanged epochs", || {
        ckpt_stats(&p)["unchanged"].as_u64().unwrap() >= u0 + 2
    });
    let c = ckpt_stats(&p);
    assert!(c["committed"].as_u64().unwrap() >= 1, "{c}");
    assert_eq!(c["failures"], 0, "{c}");
    // Idle: epochs keep running but nothing more is committed or written.
    let idle = c["last_committed_epoch"].as_u64().unwrap();
    // Committed epochs on disk (an unchanged epoch's directory exists for
    // a moment while it is written and then removed).
    let committed_on_disk = || {
        let mut v: Vec<String> = std::fs::read_dir(tmp.join("state"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("MANIFEST").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let epochs_on_disk = committed_on_disk();
    // Two more idle epochs (waited for, not slept for: on a loaded machine
    // 500 ms did not always hold two 100 ms epochs).
    eventually("two more unchanged epochs", || {
        ckpt_stats(&p)["unchanged"].as_u64().unwrap() >= u0 + 4
    });
    let c = ckpt_stats(&p);
    assert_eq!(c["last_committed_epoch"].as_u64().unwrap(), idle, "{c}");
    assert_eq!(committed_on_disk(), epochs_on_disk);
    assert_eq!(
        std::fs::read_to_string(tmp.join("state/LATEST")).unwrap(),
        format!("epoch-{idle}\n")
    );
    let metrics = p.admin_get("/metrics");
    let last = metric(metrics.text(), "coreline_checkpoint_last_committed_epoch");
    assert_eq!(last, idle as f64, "{}", metrics.text());
    p.kill9();

    let p = Proc::spawn(&cfg);
    assert_eq!(read_state_everywhere(&p, &users), expected);
    assert_eq!(restored_epoch(&p), idle);
    let metrics = p.admin_get("/metrics");
    assert_eq!(
        metric(metrics.text(), "coreline_checkpoint_restored_epoch"),
        restored_epoch(&p) as f64
    );
    p.kill9();
}

// ---------------------------------------------------------------------------
// 2. A different shard count on restart re-hashes every key
// ---------------------------------------------------------------------------

#[test]
fn restart_with_another_shard_count_keeps_every_key() {
    let tmp = TempDir::new("ckpt-reshard");
    let cfg = tmp.write("counters.toml", &config(1, "1h"));
    let mut rng = Rng::seeded("restart_with_another_shard_count_keeps_every_key");
    let mut users = users_of(&USERS);
    users.extend((0..30).map(|i| format!("u{i}")));
    let owners: Vec<usize> = users.iter().map(|u| owner_shard(Val::Str(u), 2)).collect();
    assert!(owners.contains(&0) && owners.contains(&1));

    // 1 shard.
    let p = Proc::spawn(&cfg);
    assert_eq!(p.shards.len(), 1);
    let mut model = Model::default();
    let mut cs = clients(&p);
    for u in &users {
        update(&mut cs[0], &mut model, u, rng.below(200) as i64);
    }
    random_updates(&mut rng, &mut cs, &mut model, &users, 100);
    let e1 = p.checkpoint();
    let state1 = read_state(p.shards[0], &users);
    check_model(&state1, &model, &users);
    drop(cs);
    p.kill9();

    // 1 -> 2 shards: every key readable on both ports, then updated through
    // the port that does NOT own it.
    std::fs::write(&cfg, config(2, "1h")).unwrap();
    let p = Proc::spawn(&cfg);
    assert_eq!(p.shards.len(), 2);
    assert_eq!(restored_epoch(&p), e1);
    assert_eq!(read_state_everywhere(&p, &users), state1);
    let mut cs = clients(&p);
    for (u, owner) in users.iter().zip(&owners) {
        update(&mut cs[1 - owner], &mut model, u, rng.below(200) as i64);
    }
    random_updates(&mut rng, &mut cs, &mut model, &users, 50);
    let e2 = p.checkpoint();
    let state2 = read_state_everywhere(&p, &users);
    check_model(&state2, &model, &users);
    let s = p.stats();
    for i in 0..2 {
        assert!(
            s["shards"][i]["forwarded_requests"].as_u64().unwrap() > 0,
            "shard {i} forwarded nothing: {s}"
        );
    }
    drop(cs);
    p.kill9();

    // 2 -> 1 shard.
    std::fs::write(&cfg, config(1, "1h")).unwrap();
    let p = Proc::spawn(&cfg);
    assert_eq!(p.shards.len(), 1);
    assert_eq!(restored_epoch(&p), e2);
    assert_eq!(read_state(p.shards[0], &users), state2);
    let mut cs = clients(&p);
    random_updates(&mut rng, &mut cs, &mut model, &users, 20);
    check_model(&read_state(p.shards[0], &users), &model, &users);
    p.kill9();
}

// ---------------------------------------------------------------------------
// 3. A corrupt newest epoch falls back to the previous one
// ---------------------------------------------------------------------------

#[test]
fn corrupt_newest_epoch_falls_back_to_the_previous_one() {
    let tmp = TempDir::new("ckpt-corrupt");
    let cfg = tmp.write("counters.toml", &config(2, "1h"));
    let mut rng = Rng::seeded("corrupt_newest_epoch_falls_back_to_the_previous_one");
    let users = users_of(&USERS);
    let p = Proc::spawn(&cfg);
    let mut cs = clients(&p);
    let mut model = Model::default();
    random_updates(&mut rng, &mut cs, &mut model, &users[..7], 40);
    let ea = p.checkpoint();
    let state_a = read_state_everywhere(&p, &users);
    check_model(&state_a, &model, &users);
    // Epoch B changes keys on both shards and adds new ones.
    for u in &users {
        update(&mut cs[0], &mut model, u, rng.below(200) as i64);
    }
    let eb = p.checkpoint();
    assert!(eb > ea);
    let state_b = read_state_everywhere(&p, &users);
    assert_ne!(state_a, state_b);
    drop(cs);
    p.kill9();

    let state_dir = tmp.join("state");
    for e in [ea, eb] {
        for f in ["MANIFEST", "shard-0.arrow", "shard-1.arrow"] {
            let path = epoch_dir(&state_dir, e).join(f);
            assert!(path.is_file(), "{} is missing", path.display());
        }
    }

    type Corrupt = fn(&Path);
    // (what, damage, the one shard file it damages if any)
    let cases: [(&str, Option<Corrupt>, Option<usize>); 5] = [
        ("intact", None, None),
        (
            "flipped bytes in shard-1.arrow",
            Some(|d| {
                let path = d.join("shard-1.arrow");
                let mut bytes = std::fs::read(&path).unwrap();
                let mid = bytes.len() / 2;
                for b in &mut bytes[mid..mid + 8] {
                    *b ^= 0xff;
                }
                std::fs::write(&path, bytes).unwrap();
            }),
            Some(1),
        ),
        (
            "deleted shard-0.arrow",
            Some(|d| std::fs::remove_file(d.join("shard-0.arrow")).unwrap()),
            Some(0),
        ),
        (
            "truncated MANIFEST",
            Some(|d| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("MANIFEST"))
                    .unwrap();
                let len = f.metadata().unwrap().len();
                f.set_len(len / 2).unwrap();
            }),
            None,
        ),
        (
            "no MANIFEST (never committed)",
            Some(|d| std::fs::remove_file(d.join("MANIFEST")).unwrap()),
            None,
        ),
    ];
    for (name, corrupt, file) in cases {
        let case = TempDir::new("ckpt-corrupt-case");
        copy_dir(&state_dir, &case.join("state"));
        let cfg = case.write("counters.toml", &config(2, "1h"));
        if let Some(corrupt) = corrupt {
            corrupt(&epoch_dir(&case.join("state"), eb));
        }
        let p = Proc::spawn(&cfg);
        // One damaged shard file: only that shard falls back to epoch A.
        let mixed;
        let (want_epoch, want_state) = match (corrupt, file) {
            (None, _) => (eb, &state_b),
            (Some(_), Some(i)) => {
                mixed = by_owner(&state_b, &state_a, 2, i);
                (eb, &mixed)
            }
            (Some(_), None) => (ea, &state_a),
        };
        assert_eq!(
            read_state_everywhere(&p, &users),
            *want_state,
            "{name}: restored state is not epoch {want_epoch}'s"
        );
        assert_eq!(restored_epoch(&p), want_epoch, "{name}");
        // The fallback run checkpoints again into a new epoch.
        let e = p.checkpoint();
        assert!(e > eb, "{name}: new epoch {e} must not reuse {eb}");
        p.kill9();
        let p = Proc::spawn(&cfg);
        assert_eq!(restored_epoch(&p), e, "{name}");
        assert_eq!(read_state(p.shards[1], &users), *want_state, "{name}");
        p.kill9();
    }
}

/// The user a state entry (`"counts <user>"`) belongs to.
fn user_of(entry: &str) -> &str {
    entry.split_once(' ').map_or(entry, |(_, u)| u)
}

/// `new`, except the entries of users owned by shard `old_shard` (of
/// `shards`), which come from `old`.
fn by_owner(new: &State, old: &State, shards: usize, old_shard: usize) -> State {
    new.iter()
        .map(|(k, v)| {
            let from_old = owner_shard(Val::Str(user_of(k)), shards) == old_shard;
            (k.clone(), if from_old { old[k].clone() } else { v.clone() })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 4. An unwritable checkpoint directory never stops serving
// ---------------------------------------------------------------------------

/// Makes `dir` unwritable and returns how to undo it. Tests may run as
/// root, for whom a 0o500 directory is still writable: then the directory is
/// moved away and a regular file takes its place, so creating an epoch
/// directory in it fails.
fn break_dir(dir: &Path) -> Box<dyn FnOnce()> {
    use std::os::unix::fs::PermissionsExt;
    let set_mode = |m: u32| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(m));
    set_mode(0o500).unwrap();
    let probe = dir.join("probe");
    if std::fs::File::create(&probe).is_err() {
        let dir = dir.to_path_buf();
        return Box::new(move || {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap()
        });
    }
    std::fs::remove_file(&probe).unwrap();
    set_mode(0o755).unwrap();
    let moved = dir.with_extension("moved");
    std::fs::rename(dir, &moved).unwrap();
    std::fs::write(dir, "not a directory").unwrap();
    let dir = dir.to_path_buf();
    Box::new(move || {
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(&moved, &dir).unwrap();
    })
}

#[test]
fn unwritable_directory_fails_epochs_but_never_serving() {
    let tmp = TempDir::new("ckpt-unwritable");
    let cfg = tmp.write("counters.toml", &config(2, "200ms"));
    let mut rng = Rng::seeded("unwritable_directory_fails_epochs_but_never_serving");
    let users = users_of(&USERS);
    let p = Proc::spawn(&cfg);
    let mut cs = clients(&p);
    let mut model = Model::default();
    random_updates(&mut rng, &mut cs, &mut model, &users, 30);
    p.checkpoint();

    let fix = break_dir(&tmp.join("state"));
    random_updates(&mut rng, &mut cs, &mut model, &users, 30);
    let r = p.admin_post("/checkpoint");
    assert_eq!(
        r.status,
        500,
        "POST /checkpoint on a broken dir: {}",
        r.text()
    );
    assert!(r.json()["error"].is_string(), "{}", r.text());
    let c = ckpt_stats(&p);
    assert!(c["failures"].as_u64().unwrap() >= 1, "{c}");
    assert!(c["last_error"].is_string(), "{c}");
    let metrics = p.admin_get("/metrics");
    assert!(metric(metrics.text(), "coreline_checkpoint_failures_total") >= 1.0);
    // Serving goes on, on both shards, forwarded or not.
    random_updates(&mut rng, &mut cs, &mut model, &users, 30);
    check_model(&read_state_everywhere(&p, &users), &model, &users);
    let failed_at = c["last_committed_epoch"].as_u64().unwrap_or(0);

    fix();
    // The next interval epoch commits by itself...
    eventually("an epoch to commit after the directory was fixed", || {
        ckpt_stats(&p)["last_committed_epoch"].as_u64().unwrap_or(0) > failed_at
    });
    // ...and so does a forced one.
    let e = p.checkpoint();
    assert!(e > failed_at);
    // The error is cleared by the commit; when it happened is kept, and
    // the last success is after it.
    let c = ckpt_stats(&p);
    assert!(c["last_error"].is_null(), "{c}");
    let (failed, succeeded) = (
        c["last_error_unix_ms"].as_u64().unwrap(),
        c["last_success_unix_ms"].as_u64().unwrap(),
    );
    assert!(failed > 0 && succeeded >= failed, "{c}");
    let expected = read_state_everywhere(&p, &users);
    drop(cs);
    p.kill9();

    // Updates made while the directory was broken are in the new epochs.
    let p = Proc::spawn(&cfg);
    assert!(restored_epoch(&p) >= e);
    assert_eq!(read_state_everywhere(&p, &users), expected);
    check_model(&expected, &model, &users);
    p.kill9();
}

// ---------------------------------------------------------------------------
// 5. A graceful stop loses nothing
// ---------------------------------------------------------------------------

#[test]
fn graceful_stop_then_restart_loses_nothing() {
    let tmp = TempDir::new("ckpt-graceful");
    let cfg = tmp.write("counters.toml", &config(2, "1h"));
    let mut rng = Rng::seeded("graceful_stop_then_restart_loses_nothing");
    let users = users_of(&USERS);
    let p = Proc::spawn(&cfg);
    let mut model = Model::default();
    random_updates(&mut rng, &mut clients(&p), &mut model, &users, 80);

    // Load on both ports while the stop arrives: one user per connection,
    // amount 1, counting what was sent and what was acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for k in 0..4 {
        let addr = p.shards[k % 2];
        let user = format!("load-{k}");
        let (stop, sent, acked) = (
            stop.clone(),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s2, a2) = (sent.clone(), acked.clone());
        let body = format!(r#"{{"user":"{user}","amount":1}}"#);
        let t = std::thread::spawn(move || {
            let req = format!(
                "POST /events HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut c = Client::connect(addr);
            while !stop.load(Ordering::Relaxed) {
                s2.fetch_add(1, Ordering::SeqCst);
                if c.stream.write_all(req.as_bytes()).is_err() {
                    return;
                }
                match c.try_response() {
                    Some(r) => {
                        assert_eq!(r.status, 200, "{}", r.text());
                        a2.fetch_add(1, Ordering::SeqCst);
                        if r.header("connection") == Some("close") {
                            return;
                        }
                    }
                    None => return,
                }
            }
        });
        load.push((user, sent, acked, t));
    }
    // Stop once every connection has had answers (so the stop meets a
    // steady stream, on both shards, local and forwarded).
    eventually("every load connection to be answered", || {
        load.iter()
            .all(|(_, _, acked, _)| acked.load(Ordering::SeqCst) >= 20)
    });
    let mut p = p;
    p.sigterm();
    let code = p.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "log:\n{}", p.log_text());
    stop.store(true, Ordering::Relaxed);
    let mut load_users = Vec::new();
    for (user, sent, acked, t) in load {
        t.join().unwrap();
        load_users.push((
            user,
            sent.load(Ordering::SeqCst),
            acked.load(Ordering::SeqCst),
        ));
    }

    let p = Proc::spawn(&cfg);
    assert!(restored_epoch(&p) >= 1);
    check_model(&read_state_everywhere(&p, &users), &model, &users);
    let mut c = Client::connect(p.shards[1]);
    for (user, sent, acked) in &load_users {
        let body = read(&mut c, "/counts", user).unwrap_or_else(|| panic!("{user} lost"));
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        let n = j["n"].as_u64().unwrap();
        assert!(
            *acked <= n && n <= *sent,
            "{user}: {acked} acknowledged, {sent} sent, {n} restored"
        );
        assert_eq!(j["total"], n, "{body}");
    }
    p.stop();
}

// ---------------------------------------------------------------------------
// 6. arrow-rs and pyarrow read a shard file
// ---------------------------------------------------------------------------

const PYARROW_SCRIPT: &str = r#"
import datetime, json, sys
import pyarrow.ipc as ipc

def ms(v):  # timestamps (first_seen) as unix ms, as arrow-rs reads them
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (v - epoch) // datetime.timedelta(milliseconds=1)

table = ipc.open_file(sys.argv[1]).read_all()
meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
print(json.dumps({
    "rows": table.num_rows,
    "columns": table.column_names,
    "types": [str(f.type) for f in table.schema],
    "meta": meta,
    "data": table.to_pylist(),
}, default=ms))
"#;

/// The loader README's "Inspecting a checkpoint" shows: an epoch's state is
/// its full snapshot plus the deltas after it. Prints the rows as JSON.
const PYARROW_CHAIN_SCRIPT: &str = r#"
import datetime, json, pathlib, sys, zlib
import pyarrow.ipc as ipc

def ms(v):
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (v - epoch) // datetime.timedelta(milliseconds=1)

def load_epoch(dir, epoch):
    dir, chain = pathlib.Path(dir), []
    while epoch is not None:
        manifest = json.loads((dir / f"epoch-{epoch}" / "MANIFEST").read_text())
        chain.append(manifest)
        epoch = manifest.get("base")
    rows = {}
    for manifest in reversed(chain):
        for f in manifest["files"]:
            path = dir / f"epoch-{manifest['epoch']}" / f["path"]
            assert zlib.crc32(path.read_bytes()) == f["crc32"], f"{path} is corrupt"
            for row in ipc.open_file(path).read_all().to_pylist():
                rows[(row["table"], row["key"])] = row
    return rows

print(json.dumps(list(load_epoch(sys.argv[1], int(sys.argv[2])).values()), default=ms))
"#;

/// Runs a Python script with arguments; its stdout as JSON.
fn python(script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 failed on {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Checks file rows (pyarrow `to_pylist`) against the model.
fn check_rows(rows: &[serde_json::Value], model: &Model) {
    for row in rows {
        let user = row["key"].as_str().unwrap();
        let m = &model.users[user];
        assert_eq!(row["key_type"], "utf8");
        match row["table"].as_str().unwrap() {
            "user_counts" => {
                assert_eq!(row["user_counts.n"], m.n, "{row}");
                assert_eq!(row["user_counts.total"], m.total, "{row}");
                assert_eq!(row["user_counts.mean.n"], m.n, "{row}");
                assert_eq!(row["user_counts.hi"], m.hi, "{row}");
                assert_eq!(row["user_counts.lo"], m.lo, "{row}");
                assert_eq!(row["user_counts.latest"], m.latest, "{row}");
                // `first_seen()`, a timestamp in the file, read as unix ms.
                let since = row["user_counts.since"].as_i64();
                assert!(since.is_some_and(|ms| ms > 1_600_000_000_000), "{row}");
                assert!(row["big.value"].is_null(), "{row}");
            }
            "big" => {
                assert_eq!(row["big.value"], m.big, "{row}");
                assert!(row["user_counts.n"].is_null(), "{row}");
            }
            t => panic!("unexpected table {t}: {row}"),
        }
    }
}

/// The default run reads the checkpoint files with arrow-rs's IPC reader, so
/// `cargo test --workspace` needs no Python. The same checks with pyarrow
/// (an independent implementation of the format) run in `.ci/run` through
/// `pyarrow_reads_a_checkpoint_file`.
#[test]
fn arrow_rs_reads_a_checkpoint_file() {
    checkpoint_files_read_back("ckpt-arrow-rs", &ArrowRs);
}

/// The same checks with pyarrow. Ignored by default because it needs python3
/// with pyarrow; `.ci/run` installs pyarrow and runs it with
/// `cargo test --test checkpoint -- --ignored pyarrow`.
#[test]
#[ignore = "needs python3 with pyarrow; .ci/run runs it (cargo test --test checkpoint -- --ignored pyarrow)"]
fn pyarrow_reads_a_checkpoint_file() {
    let have = std::process::Command::new("python3")
        .args(["-c", "import pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have,
        "python3 with pyarrow is required by this test: install it with \
         `python3 -m pip install pyarrow` (.ci/run does)"
    );
    checkpoint_files_read_back("ckpt-pyarrow", &PyArrow);
}

/// The python code block that follows `<!-- snippet: NAME -->` in README.md,
/// exactly as written there.
fn readme_snippet(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let marker = format!("<!-- snippet: {name} -->\n");
    let start = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no `{}` marker", marker.trim()));
    let rest = &readme[start + marker.len()..];
    let code = rest
        .strip_prefix("```python\n")
        .unwrap_or_else(|| panic!("`{}` is not followed by a python block", marker.trim()));
    let end = code
        .find("\n```\n")
        .unwrap_or_else(|| panic!("the `{name}` block is not closed"));
    code[..=end].to_string()
}

/// Runs a script with python3 in `cwd`; its stdout.
fn python_in(cwd: &Path, script: &str) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .current_dir(cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 failed on\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The README's pyarrow snippets ("Inspecting a checkpoint with pyarrow"),
/// extracted from README.md and run as written, against the directory they
/// name (`checkpoints/counters`) after enough epochs that `retain` has
/// deleted the first ones: they must find the newest epoch through `LATEST`.
#[test]
#[ignore = "needs python3 with pyarrow; .ci/run runs it (cargo test --test checkpoint -- --ignored readme_checkpoint)"]
fn readme_checkpoint_snippets_run_literally() {
    let latest_snippet = readme_snippet("checkpoint-read-latest");
    let chain_snippet = readme_snippet("checkpoint-read-chain");
    let tmp = TempDir::new("ckpt-readme");
    let text = config(2, "1h").replace(r#"dir = "state""#, r#"dir = "checkpoints/counters""#);
    let cfg = tmp.write("counters.toml", &text);
    let mut rng = Rng::seeded("readme_checkpoint_snippets_run_literally");
    let users = users_of(&USERS);
    let p = Proc::spawn(&cfg);
    let mut model = Model::default();
    let mut cs = clients(&p);
    for u in &users {
        update(&mut cs[0], &mut model, u, rng.below(200) as i64);
    }
    let dir = tmp.join("checkpoints/counters");
    let mut last = 0;
    // 11 epochs: with `full_every = 3` the last one is a delta, so the
    // chain snippet applies one; `retain = 3` deletes the first ones.
    for _ in 0..11 {
        random_updates(&mut rng, &mut cs, &mut model, &users, 20);
        last = p.checkpoint();
    }
    let kind = |e: u64| -> serde_json::Value {
        let text = std::fs::read_to_string(epoch_dir(&dir, e).join("MANIFEST")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["kind"].clone()
    };
    assert_eq!(kind(last), "delta");
    eventually("retention to delete epoch 1", || {
        !epoch_dir(&dir, 1).exists()
    });
    drop(cs);
    p.kill9();
    let latest = std::fs::read_to_string(dir.join("LATEST")).unwrap();
    assert_eq!(latest, format!("epoch-{last}\n"));

    // One file of the newest epoch: the first line names it and its kind.
    let out = python_in(&tmp.path, &latest_snippet);
    println!("checkpoint-read-latest printed:\n{out}");
    let mut lines = out.lines();
    let head: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(epoch_dir(&dir, last).join("MANIFEST")).unwrap(),
    )
    .unwrap();
    assert_eq!(head[0], format!("epoch-{last}"), "{out}");
    assert_eq!(head[1], manifest["kind"], "{out}");
    let rows: usize = head[2].parse().unwrap();
    assert_eq!(
        rows,
        manifest["files"][0]["rows"].as_u64().unwrap() as usize
    );
    assert_eq!(lines.count(), rows, "{out}");

    // The whole state through the MANIFEST chain: the snippet prints alice's
    // count; the epilogue dumps every row for the model check.
    // Timestamps (`first_seen()`) are dumped as unix ms, as check_rows reads them.
    let epilogue = "
import datetime
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
ms = lambda v: (v - EPOCH) // datetime.timedelta(milliseconds=1)
print(json.dumps(list(state.values()), default=ms))
";
    let out = python_in(&tmp.path, &format!("{chain_snippet}{epilogue}"));
    let mut lines = out.lines();
    let first = lines.next().unwrap();
    println!("checkpoint-read-chain printed: {first}");
    assert_eq!(
        first,
        format!("epoch-{last} {}", model.users["alice"].n),
        "{out}"
    );
    let rows: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2 * users.len());
    check_rows(rows, &model);
}

/// Reads checkpoint files into JSON the way the README's Python does.
trait FileReader {
    /// One file: `{rows, columns, types, meta, data}` (types named as
    /// pyarrow prints them, data as `to_pylist()` rows).
    fn file(&self, path: &Path) -> serde_json::Value;
    /// Every (table, key) row as of `epoch`: its full snapshot plus deltas.
    fn epoch(&self, dir: &Path, epoch: u64) -> serde_json::Value;
}

struct PyArrow;

impl FileReader for PyArrow {
    fn file(&self, path: &Path) -> serde_json::Value {
        python(PYARROW_SCRIPT, &[path.as_os_str()])
    }
    fn epoch(&self, dir: &Path, epoch: u64) -> serde_json::Value {
        python(
            PYARROW_CHAIN_SCRIPT,
            &[dir.as_os_str(), std::ffi::OsStr::new(&epoch.to_string())],
        )
    }
}

/// arrow-rs's own IPC file reader (`arrow_ipc::reader::FileReader`), which
/// validates the footer, schema and every record batch.
struct ArrowRs;

impl FileReader for ArrowRs {
    fn file(&self, path: &Path) -> serde_json::Value {
        use arrow_array::Array;
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
        use arrow_schema::{DataType, TimeUnit};

        let f = std::fs::File::open(path).unwrap();
        let reader = arrow_ipc::reader::FileReader::try_new(f, None)
            .unwrap_or_else(|e| panic!("arrow-rs cannot open {}: {e}", path.display()));
        let schema = reader.schema();
        let meta: serde_json::Map<String, serde_json::Value> = schema
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let types: Vec<&str> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => "string",
                DataType::Int64 => "int64",
                DataType::Float64 => "double",
                DataType::Boolean => "bool",
                DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if &**tz == "UTC" => {
                    "timestamp[ms, tz=UTC]"
                }
                t => panic!("unexpected column type {t}"),
            })
            .collect();
        let mut data = Vec::new();
        for batch in reader {
            let batch = batch.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for i in 0..batch.num_rows() {
                let mut row = serde_json::Map::new();
                for (name, col) in columns.iter().zip(batch.columns()) {
                    let v = if col.is_null(i) {
                        serde_json::Value::Null
                    } else {
                        match col.data_type() {
                            DataType::Utf8 => col.as_string::<i32>().value(i).into(),
                            DataType::Int64 => col.as_primitive::<Int64Type>().value(i).into(),
                            DataType::Float64 => col.as_primitive::<Float64Type>().value(i).into(),
                            DataType::Boolean => col.as_boolean().value(i).into(),
                            DataType::Timestamp(TimeUnit::Millisecond, _) => col
                                .as_primitive::<TimestampMillisecondType>()
                                .value(i)
                                .into(),
                            t => panic!("unexpected column type {t}"),
                        }
                    };
                    row.insert(name.clone(), v);
                }
                data.push(serde_json::Value::Object(row));
            }
        }
        serde_json::json!({
            "rows": data.len(),
            "columns": columns,
            "types": types,
            "meta": meta,
            "data": data,
        })
    }

    fn epoch(&self, dir: &Path, epoch: u64) -> serde_json::Value {
        let mut chain = Vec::new();
        let mut next = Some(epoch);
        while let Some(e) = next {
            let text = std::fs::read_to_string(epoch_dir(dir, e).join("MANIFEST")).unwrap();
            let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
            next = manifest["base"].as_u64();
            chain.push(manifest);
        }
        let mut rows = BTreeMap::new();
        for manifest in chain.iter().rev() {
            let e = manifest["epoch"].as_u64().unwrap();
            for f in manifest["files"].as_array().unwrap() {
                let path = epoch_dir(dir, e).join(f["path"].as_str().unwrap());
                let crc = crc32fast::hash(&std::fs::read(&path).unwrap());
                assert_eq!(u64::from(crc), f["crc32"], "{} is corrupt", path.display());
                for row in self.file(&path)["data"].as_array().unwrap() {
                    let id = (row["table"].to_string(), row["key"].to_string());
                    rows.insert(id, row.clone());
                }
            }
        }
        serde_json::Value::Array(rows.into_values().collect())
    }
}

/// Writes a full snapshot and a delta, then checks both files and the chain
/// through `reader`.
fn checkpoint_files_read_back(name: &str, reader: &dyn FileReader) {
    let tmp = TempDir::new(name);
    let cfg = tmp.write("counters.toml", &config(1, "1h"));
    let mut rng = Rng::seeded("checkpoint_files_read_back");
    let users = users_of(&USERS);
    let p = Proc::spawn(&cfg);
    let mut model = Model::default();
    let mut cs = clients(&p);
    for u in &users {
        update(&mut cs[0], &mut model, u, 100 + rng.below(100) as i64);
    }
    random_updates(&mut rng, &mut cs, &mut model, &users, 50);
    let e = p.checkpoint();
    let model_e = model.clone();
    // A delta on top: three users change.
    for u in &users[..3] {
        update(&mut cs[0], &mut model, u, 7);
    }
    let e2 = p.checkpoint();
    drop(cs);
    p.kill9();

    let state = tmp.join("state");
    let file = epoch_dir(&state, e).join("shard-0.arrow");
    let j = reader.file(&file);
    let columns: Vec<&str> = j["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "table",
            "key",
            "key_type",
            "user_counts.n",
            "user_counts.total",
            "user_counts.mean.sum",
            "user_counts.mean.n",
            "user_counts.mean",
            "user_counts.hi",
            "user_counts.lo",
            "user_counts.smooth",
            "user_counts.latest",
            "user_counts.since",
            "big.value",
        ]
    );
    let types: Vec<&str> = j["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "string",
            "string",
            "string",
            "int64",
            "int64",
            "double",
            "int64",
            "double",
            "int64",
            "int64",
            "double",
            "int64",
            "timestamp[ms, tz=UTC]",
            "bool",
        ]
    );
    // One row per (table, key): every user in both tables (the first epoch
    // of a run is a full snapshot).
    assert_eq!(j["rows"], 2 * users.len(), "{}", j["data"]);
    assert_eq!(j["meta"]["coreline.epoch"], e.to_string());
    assert_eq!(j["meta"]["coreline.shard"], "0");
    assert_eq!(j["meta"]["coreline.kind"], "full");
    check_rows(j["data"].as_array().unwrap(), &model_e);

    // The delta file holds only the changed keys, each with its full state.
    let file = epoch_dir(&state, e2).join("shard-0.arrow");
    let j = reader.file(&file);
    assert_eq!(j["meta"]["coreline.kind"], "delta");
    assert_eq!(j["meta"]["coreline.base"], e.to_string());
    let rows = j["data"].as_array().unwrap();
    let agg: Vec<&str> = rows
        .iter()
        .filter(|r| r["table"] == "user_counts")
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(agg.len(), 3, "{rows:?}");
    assert!(
        agg.iter().all(|k| users[..3].iter().any(|u| u == k)),
        "{agg:?}"
    );
    assert!(rows.len() <= 6, "{rows:?}");
    check_rows(rows, &model);

    // Full snapshot + deltas = the state at e2, for every user.
    let j = reader.epoch(&state, e2);
    let rows = j.as_array().unwrap();
    assert_eq!(rows.len(), 2 * users.len());
    check_rows(rows, &model);
}

// ---------------------------------------------------------------------------
// Listeners open only after the state is loaded
// ---------------------------------------------------------------------------

/// Two consecutive free ports.
fn free_port_pair() -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// Clients that connect while the process starts never see an empty state:
/// the very first answer on each port is already the restored one.
#[test]
fn first_answers_after_a_restart_come_from_the_restored_state() {
    let tmp = TempDir::new("ckpt-first-answer");
    let port = free_port_pair();
    let text = config(2, "1h").replace("base_port = 0", &format!("base_port = {port}"));
    let cfg = tmp.write("counters.toml", &text);
    let users: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
    let p = Proc::spawn(&cfg);
    let mut model = Model::default();
    let mut cs = clients(&p);
    for (i, u) in users.iter().enumerate() {
        update(&mut cs[i % 2], &mut model, u, i as i64);
    }
    p.checkpoint();
    drop(cs);
    p.kill9();
    // A killed process's listening sockets can outlive it briefly (io_uring
    // tears down asynchronously) and accept connections they then reset:
    // wait until nothing listens, so that what answers below is the new one.
    for shard in 0..2u16 {
        let addr: SocketAddr = ([127, 0, 0, 1], port + shard).into();
        eventually("the killed process's ports to close", || {
            TcpStream::connect(addr).is_err()
        });
    }

    let starting = {
        let cfg = cfg.clone();
        std::thread::spawn(move || Proc::spawn(&cfg))
    };
    // Ask both ports as early as they accept, for a key the other shard owns.
    let probe = |shard: usize| {
        let user = users
            .iter()
            .find(|u| owner_shard(Val::Str(u), 2) != shard)
            .unwrap()
            .clone();
        let addr: SocketAddr = ([127, 0, 0, 1], port + shard as u16).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(mut c) = Client::try_connect(addr) {
                return (user.clone(), read(&mut c, "/counts", &user));
            }
            assert!(Instant::now() < deadline, "port {addr} never opened");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let first = [probe(0), probe(1)];
    let p = starting.join().unwrap();
    for (user, answer) in first {
        let body = answer.unwrap_or_else(|| panic!("{user}: first answer was 404"));
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["n"], 1, "{body}");
        assert_eq!(j["total"], model.users[&user].total, "{body}");
    }
    p.kill9();
}

#[test]
fn a_failed_final_checkpoint_exits_1() {
    let tmp = TempDir::new("ckpt-final-fails");
    let cfg = tmp.write("counters.toml", &config(1, "1h"));
    let mut rng = Rng::seeded("a_failed_final_checkpoint_exits_1");
    let users = users_of(&USERS);
    let mut p = Proc::spawn(&cfg);
    let mut cs = clients(&p);
    let mut model = Model::default();
    random_updates(&mut rng, &mut cs, &mut model, &users, 20);
    let _fix = break_dir(&tmp.join("state"));
    drop(cs);
    p.sigterm();
    assert_eq!(
        p.wait_exit(Duration::from_secs(20)),
        Some(1),
        "{}",
        p.log_text()
    );
    let log = p.log_text();
    assert!(log.contains("final checkpoint failed"), "{log}");
}

// ---------------------------------------------------------------------------
// 9. Fifty random corruptions: the newest verifying chain, or a refusal
// ---------------------------------------------------------------------------

/// What a corruption case did to the checkpoint directory.
#[derive(Debug, Default, Clone)]
struct Damage {
    /// Epochs whose MANIFEST was removed: never committed.
    uncommitted: std::collections::BTreeSet<u64>,
    /// Epochs whose MANIFEST was truncated: damaged.
    bad_manifest: std::collections::BTreeSet<u64>,
    /// Epochs whose MANIFEST had a byte flipped: damaged, unless the flip
    /// left the JSON meaning the same (whitespace for whitespace).
    flipped_manifest: std::collections::BTreeSet<u64>,
    /// Shard files flipped, truncated or removed.
    bad_files: std::collections::BTreeSet<(u64, usize)>,
}

/// The recovery rule, written independently of the implementation: for
/// every writer shard, the newest committed epoch whose chain of manifests
/// is intact and whose file for that shard is intact all along.
fn expected_choice(
    bases: &BTreeMap<u64, Option<u64>>,
    damage: &Damage,
    bad_manifest: &std::collections::BTreeSet<u64>,
    shards: usize,
) -> Option<Vec<Vec<u64>>> {
    let usable = |e: u64| {
        bases.contains_key(&e) && !damage.uncommitted.contains(&e) && !bad_manifest.contains(&e)
    };
    let chain = |e: u64| -> Option<Vec<u64>> {
        let mut links = vec![e];
        let mut cur = bases[&e];
        while let Some(b) = cur {
            if !usable(b) {
                return None;
            }
            links.push(b);
            cur = bases[&b];
        }
        Some(links)
    };
    (0..shards)
        .map(|i| {
            bases
                .keys()
                .rev()
                .filter(|&&e| usable(e))
                .filter_map(|&e| chain(e))
                .find(|links| links.iter().all(|&l| !damage.bad_files.contains(&(l, i))))
        })
        .collect()
}

#[test]
fn fifty_random_corruptions_restore_the_newest_verifying_chain_or_refuse() {
    use std::collections::BTreeSet;
    let tmp = TempDir::new("ckpt-fifty");
    let text = config(2, "1h").replace("retain = 3", "retain = 20");
    let cfg = tmp.write("counters.toml", &text);
    let mut rng =
        Rng::seeded("fifty_random_corruptions_restore_the_newest_verifying_chain_or_refuse");
    let users = users_of(&USERS);
    // Seven epochs with full_every = 3: 1 full, 2-3 deltas, 4 full, 5-6
    // deltas, 7 full; the state after each one.
    let p = Proc::spawn(&cfg);
    let mut cs = clients(&p);
    let mut model = Model::default();
    let mut states: BTreeMap<u64, State> = BTreeMap::new();
    for _ in 0..7 {
        random_updates(&mut rng, &mut cs, &mut model, &users, 25);
        let e = p.checkpoint();
        states.insert(e, read_state_everywhere(&p, &users));
    }
    drop(cs);
    p.kill9();
    let state_dir = tmp.join("state");
    let mut bases: BTreeMap<u64, Option<u64>> = BTreeMap::new();
    for &e in states.keys() {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(epoch_dir(&state_dir, e).join("MANIFEST")).unwrap(),
        )
        .unwrap();
        bases.insert(e, m["base"].as_u64());
    }
    assert_eq!(
        bases.values().filter(|b| b.is_none()).count(),
        3,
        "three full snapshots: {bases:?}"
    );
    let empty: State = states[&1].keys().map(|k| (k.clone(), None)).collect();

    let (mut restored, mut fell_back, mut refused) = (0, 0, 0);
    for case in 0..50 {
        let dir = TempDir::new("ckpt-fifty-case");
        let sdir = dir.join("state");
        copy_dir(&state_dir, &sdir);
        let cfg = dir.write("counters.toml", &text);
        // Every fourth case keeps a single chain (4 full, 5 and 6 deltas),
        // so that damage can leave nothing that verifies.
        let mut bases = bases.clone();
        if case % 4 == 3 {
            for e in [1, 2, 3, 7] {
                std::fs::remove_dir_all(epoch_dir(&sdir, e)).unwrap();
                bases.remove(&e);
            }
        }
        let mut damage = Damage::default();
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let e = *bases.keys().nth(rng.below(bases.len())).unwrap();
            let edir = epoch_dir(&sdir, e);
            let shard = rng.below(2);
            let file = edir.join(format!("shard-{shard}.arrow"));
            let manifest = edir.join("MANIFEST");
            let manifest_touched = damage.uncommitted.contains(&e)
                || damage.bad_manifest.contains(&e)
                || damage.flipped_manifest.contains(&e);
            let kind = rng.below(6);
            if (kind < 3 && damage.bad_files.contains(&(e, shard)))
                || (kind >= 3 && manifest_touched)
            {
                continue;
            }
            let flip = |path: &Path, rng: &mut Rng| {
                let mut b = std::fs::read(path).unwrap();
                let at = rng.below(b.len());
                b[at] ^= 1 + rng.below(255) as u8;
                std::fs::write(path, b).unwrap();
                at
            };
            let truncate = |path: &Path, keep: usize| {
                let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                f.set_len(keep as u64).unwrap();
            };
            match kind {
                0 => {
                    let at = flip(&file, &mut rng);
                    what.push(format!("flip byte {at} of epoch-{e}/shard-{shard}.arrow"));
                    damage.bad_files.insert((e, shard));
                }
                1 => {
                    let len = std::fs::metadata(&file).unwrap().len() as usize;
                    let keep = rng.below(len);
                    truncate(&file, keep);
                    what.push(format!("truncate epoch-{e}/shard-{shard}.arrow to {keep}"));
                    damage.bad_files.insert((e, shard));
                }
                2 => {
                    std::fs::remove_file(&file).unwrap();
                    what.push(format!("remove epoch-{e}/shard-{shard}.arrow"));
                    damage.bad_files.insert((e, shard));
                }
                3 => {
                    let before: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
                    let at = flip(&manifest, &mut rng);
                    // Damage unless the JSON still means the same (a blank
                    // turned into another blank).
                    let after = serde_json::from_slice::<serde_json::Value>(
                        &std::fs::read(&manifest).unwrap(),
                    );
                    let harmless = after.is_ok_and(|v| v == before);
                    what.push(format!(
                        "flip byte {at} of epoch-{e}/MANIFEST{}",
                        if harmless { " (harmless)" } else { "" }
                    ));
                    damage.flipped_manifest.insert(e);
                    if !harmless {
                        damage.bad_manifest.insert(e);
                    }
                }
                4 => {
                    // Shorter than its closing brace: never valid JSON.
                    let len = std::fs::metadata(&manifest).unwrap().len() as usize;
                    let keep = rng.below(len - 1);
                    truncate(&manifest, keep);
                    what.push(format!("truncate epoch-{e}/MANIFEST to {keep}"));
                    damage.bad_manifest.insert(e);
                }
                _ => {
                    std::fs::remove_file(&manifest).unwrap();
                    what.push(format!("remove epoch-{e}/MANIFEST"));
                    damage.uncommitted.insert(e);
                }
            }
        }
        let what = what.join(", ");
        let variants: Vec<BTreeSet<u64>> = vec![damage.bad_manifest.clone()];
        let expect = |choice: &[Vec<u64>]| -> State {
            states[&1]
                .keys()
                .map(|k| {
                    let i = owner_shard(Val::Str(user_of(k)), 2);
                    (k.clone(), states[&choice[i][0]][k].clone())
                })
                .collect()
        };
        match Proc::try_spawn(&cfg) {
            Ok(p) => {
                let got = read_state_everywhere(&p, &users);
                let epoch = restored_epoch(&p);
                let matched = variants.iter().find_map(|bad| {
                    let choice = expected_choice(&bases, &damage, bad, 2)?;
                    let newest = choice.iter().map(|c| c[0]).max().unwrap();
                    (expect(&choice) == got && newest == epoch).then_some((choice, bad.clone()))
                });
                let Some((choice, bad)) = matched else {
                    panic!(
                        "case {case} ({what}): restored epoch {epoch} with a state no verifying chain gives; expected one of {:?}",
                        variants
                            .iter()
                            .map(|b| expected_choice(&bases, &damage, b, 2))
                            .collect::<Vec<_>>()
                    );
                };
                assert_ne!(got, empty, "case {case} ({what}): started empty");
                restored += 1;
                if choice
                    .iter()
                    .any(|c| c[0] != *bases.keys().next_back().unwrap())
                {
                    fell_back += 1;
                }
                // Damaged epochs recovery looked at (every manifest; a shard
                // file newer than the epoch its shard came from) and no shard
                // uses are renamed aside.
                let used: BTreeSet<u64> = choice.iter().flatten().copied().collect();
                // Whether every manifest of `e`'s chain is intact (otherwise
                // recovery never gets to read `e`'s files).
                let chain_ok = |e: u64| {
                    let mut cur = Some(e);
                    while let Some(c) = cur {
                        if damage.uncommitted.contains(&c)
                            || bad.contains(&c)
                            || !bases.contains_key(&c)
                        {
                            return false;
                        }
                        cur = bases[&c];
                    }
                    true
                };
                let own_damage: BTreeSet<u64> = damage
                    .bad_files
                    .iter()
                    .filter(|&&(e, i)| e > choice[i][0] && chain_ok(e))
                    .map(|&(e, _)| e)
                    .chain(bad.iter().copied())
                    .collect();
                for e in own_damage.difference(&used) {
                    assert!(
                        sdir.join(format!("epoch-{e}.damaged")).is_dir()
                            && !epoch_dir(&sdir, *e).exists(),
                        "case {case} ({what}): damaged epoch {e} was not renamed aside"
                    );
                }
                if case % 5 == 0 {
                    // The run goes on from there: a new epoch, restored next.
                    let e = p.checkpoint();
                    p.kill9();
                    let p = Proc::spawn(&cfg);
                    assert_eq!(restored_epoch(&p), e, "case {case} ({what})");
                    assert_eq!(read_state(p.shards[1], &users), got, "case {case} ({what})");
                    p.kill9();
                } else {
                    p.kill9();
                }
            }
            Err(log) => {
                assert!(
                    variants
                        .iter()
                        .all(|bad| expected_choice(&bases, &damage, bad, 2).is_none()),
                    "case {case} ({what}): refused although a chain verifies:\n{log}"
                );
                assert!(log.contains("--discard-state"), "case {case}: {log}");
                assert!(
                    log.contains("epoch-"),
                    "case {case}: the error names no file: {log}"
                );
                // Nothing was renamed or deleted by the refusal.
                for &e in bases.keys() {
                    assert!(epoch_dir(&sdir, e).is_dir(), "case {case}: epoch {e} gone");
                }
                refused += 1;
                let p = Proc::try_spawn_args(&cfg, &["--discard-state"])
                    .unwrap_or_else(|log| panic!("case {case}: --discard-state: {log}"));
                assert_eq!(restored_epoch(&p), 0);
                assert_eq!(read_state(p.shards[0], &users), empty);
                p.kill9();
            }
        }
    }
    eprintln!(
        "50 corruptions: {restored} restored ({fell_back} of them from an older chain or file), {refused} refused"
    );
    assert!(
        restored > 0 && fell_back > 0 && refused > 0,
        "the random cases never exercised a fallback or a refusal"
    );
}
