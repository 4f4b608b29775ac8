//! The `checkpoint` scenario's pieces: per-run coreline configs with a fresh
//! checkpoint directory, the keyed-state prefill, the admin-port calls that
//! verify it and scrape checkpoint statistics, and the p99-ratio verdict.
//!
//! Invariants:
//! - a run never checkpoints into the repository or into an earlier run's
//!   directory: [`fresh_config`] writes a copy of the config whose
//!   `[checkpoint] dir` is a new, absolute, empty directory under the report;
//! - the prefill sends every key index `0..keys` exactly once (connection `c`
//!   owns the contiguous range [`key_ranges`]`[c]`) and fails loudly unless
//!   every one of them was answered 2xx.

use crate::body::Template;
use crate::framing::frame_response;
use crate::schedule::Rng;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `text` (a coreline config) with its `[checkpoint] dir` set to `ckpt_dir`
/// (absolute). Returns the new text and whether the config checkpoints.
pub fn rewrite_config(text: &str, ckpt_dir: &Path) -> Result<(String, bool)> {
    if !ckpt_dir.is_absolute() {
        bail!(
            "checkpoint dir {} must be absolute (coreline resolves relative dirs against the config's directory)",
            ckpt_dir.display()
        );
    }
    let mut table: toml::Table = toml::from_str(text).context("parsing the coreline config")?;
    let has = match table.get_mut("checkpoint") {
        None => false,
        Some(toml::Value::Table(t)) => {
            let dir = ckpt_dir
                .to_str()
                .with_context(|| format!("{} is not UTF-8", ckpt_dir.display()))?;
            t.insert("dir".into(), toml::Value::String(dir.into()));
            true
        }
        Some(_) => bail!("`checkpoint` in the coreline config must be a table"),
    };
    Ok((toml::to_string(&table)?, has))
}

/// A config written for one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The config file to start coreline with.
    pub path: PathBuf,
    /// Its checkpoint directory (fresh, empty), if it checkpoints.
    pub ckpt_dir: Option<PathBuf>,
    /// Admin port (`[service] admin_port`).
    pub admin_port: u16,
}

/// Writes `run_dir/config.toml`, a copy of `src` whose checkpoints go to
/// `run_dir/checkpoints` (created empty). `run_dir` must not exist yet.
pub fn fresh_config(src: &Path, run_dir: &Path) -> Result<RunConfig> {
    if run_dir.exists() {
        bail!(
            "run directory {} already exists; every run needs a fresh one",
            run_dir.display()
        );
    }
    let text =
        std::fs::read_to_string(src).with_context(|| format!("reading {}", src.display()))?;
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let run_dir = std::fs::canonicalize(run_dir)?;
    let ckpt_dir = run_dir.join("checkpoints");
    let (out, has) = rewrite_config(&text, &ckpt_dir)
        .with_context(|| format!("rewriting {} for a fresh checkpoint dir", src.display()))?;
    if has {
        std::fs::create_dir(&ckpt_dir)
            .with_context(|| format!("creating {}", ckpt_dir.display()))?;
    }
    let path = run_dir.join("config.toml");
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(RunConfig {
        admin_port: admin_port(&text)
            .with_context(|| format!("{}: [service] admin_port", src.display()))?,
        path,
        ckpt_dir: has.then_some(ckpt_dir),
    })
}

/// `[service] admin_port` of a coreline config's text.
pub fn admin_port(text: &str) -> Result<u16> {
    let table: toml::Table = toml::from_str(text)?;
    let port = table
        .get("service")
        .and_then(|s| s.get("admin_port"))
        .and_then(|p| p.as_integer())
        .context("the scenario needs an integer admin_port")?;
    u16::try_from(port).context("admin_port out of range")
}

/// Splits `0..keys` into `connections` contiguous, disjoint ranges covering
/// every key once (earlier ranges get the remainder).
pub fn key_ranges(keys: u64, connections: usize) -> Vec<Range<u64>> {
    let n = connections.max(1) as u64;
    let (base, extra) = (keys / n, keys % n);
    let mut start = 0;
    (0..n)
        .map(|c| {
            let len = base + u64::from(c < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .collect()
}

/// What the prefill did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrefillStats {
    /// Keys (requests) sent.
    pub sent: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Other responses.
    pub non_2xx: u64,
    /// Wall seconds.
    pub seconds: f64,
}

/// Prefill settings for one run.
#[derive(Debug, Clone)]
pub struct PrefillConfig {
    /// Shard port.
    pub port: u16,
    /// Method and path, e.g. `POST`, `/events`.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Body template; `{seq}` is the key index.
    pub template: Template,
    /// Keys `0..keys`.
    pub keys: u64,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Seconds without progress before failing.
    pub timeout: Duration,
    /// Seed for the template's other placeholders.
    pub seed: u64,
}

fn render_request(
    cfg: &PrefillConfig,
    rng: &mut Rng,
    seq: u64,
    body: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    body.clear();
    cfg.template.render(rng, seq, body);
    let _ = write!(
        out,
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        cfg.method,
        cfg.path,
        body.len()
    );
    out.extend_from_slice(body);
}

/// One connection: a writer thread sends `range` (at most `pipeline` ahead of
/// the responses) while this thread reads and counts the responses.
fn prefill_connection(cfg: &PrefillConfig, range: Range<u64>, conn: usize) -> Result<(u64, u64)> {
    let stream = TcpStream::connect(("127.0.0.1", cfg.port))
        .with_context(|| format!("prefill: connecting to port {}", cfg.port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(cfg.timeout))?;
    let mut writer = stream.try_clone()?;
    let total = range.end - range.start;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (rcv, stp) = (received.clone(), stop.clone());
    let wcfg = cfg.clone();
    let pipeline = cfg.pipeline as u64;
    let writer_thread = std::thread::spawn(move || -> std::io::Result<()> {
        let mut rng = Rng::new(wcfg.seed ^ (conn as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (mut body, mut out) = (Vec::new(), Vec::new());
        let mut seq = range.start;
        while seq < range.end {
            if stp.load(Ordering::Relaxed) {
                return Ok(());
            }
            let in_flight = (seq - range.start) - rcv.load(Ordering::Acquire);
            let room = pipeline.saturating_sub(in_flight).min(range.end - seq);
            if room == 0 {
                std::thread::sleep(Duration::from_micros(20));
                continue;
            }
            out.clear();
            for _ in 0..room {
                render_request(&wcfg, &mut rng, seq, &mut body, &mut out);
                seq += 1;
            }
            writer.write_all(&out)?;
        }
        Ok(())
    });
    let mut buf = vec![0u8; 256 * 1024];
    let (mut filled, mut ok, mut other) = (0usize, 0u64, 0u64);
    let outcome = (|| -> Result<()> {
        let mut reader = &stream;
        while ok + other < total {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = reader.read(&mut buf[filled..]).with_context(|| {
                format!(
                    "prefill connection {conn}: no response within {:?} after {} of {total}",
                    cfg.timeout,
                    ok + other
                )
            })?;
            if n == 0 {
                bail!(
                    "prefill connection {conn}: server closed the connection after {} of {total} responses",
                    ok + other
                );
            }
            filled += n;
            let mut at = 0;
            while let Some(f) = frame_response(&buf[at..filled])
                .map_err(|e| anyhow::anyhow!("prefill connection {conn}: {e}"))?
            {
                if (200..300).contains(&f.status) {
                    ok += 1;
                } else {
                    other += 1;
                }
                at += f.len;
            }
            buf.copy_within(at..filled, 0);
            filled -= at;
            received.store(ok + other, Ordering::Release);
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    if outcome.is_err() {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    let written = writer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("prefill writer thread panicked"))?;
    outcome?;
    written.with_context(|| format!("prefill connection {conn}: writing"))?;
    Ok((ok, other))
}

/// Sends keys `0..keys` once each over `connections` pipelined connections
/// and counts the answers. Fails if any connection fails or any key was not
/// answered 2xx.
pub fn prefill(cfg: &PrefillConfig) -> Result<PrefillStats> {
    let started = Instant::now();
    let ranges = key_ranges(cfg.keys, cfg.connections);
    let results: Vec<Result<(u64, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .enumerate()
            .map(|(c, r)| {
                let r = r.clone();
                s.spawn(move || prefill_connection(cfg, r, c))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("prefill thread panicked")))
            })
            .collect()
    });
    let mut stats = PrefillStats {
        sent: cfg.keys,
        ..Default::default()
    };
    for r in results {
        let (ok, other) = r?;
        stats.ok += ok;
        stats.non_2xx += other;
    }
    stats.seconds = started.elapsed().as_secs_f64();
    if stats.ok != cfg.keys {
        bail!(
            "prefill incomplete: {} of {} keys answered 2xx ({} other responses)",
            stats.ok,
            cfg.keys,
            stats.non_2xx
        );
    }
    Ok(stats)
}

/// One blocking HTTP/1.1 request (`Connection: close`) without a body;
/// returns status and body.
pub fn http(port: u16, method: &str, path: &str, timeout: Duration) -> Result<(u16, String)> {
    http_with_body(port, method, path, &[], timeout)
}

/// One blocking HTTP/1.1 request (`Connection: close`, with the admin
/// header `X-Coreline-Admin: 1`) sending `body`; returns status and body.
pub fn http_with_body(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("{method} {path}: connecting to port {port}"))?;
    s.set_read_timeout(Some(timeout))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Coreline-Admin: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    s.write_all(&request)?;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 16 * 1024];
        let n = s
            .read(&mut chunk)
            .with_context(|| format!("{method} {path} on port {port}: reading"))?;
        if n == 0 {
            bail!("{method} {path} on port {port}: connection closed before a full response");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(f) =
            frame_response(&buf).map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))?
        {
            let head_end = buf
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(f.len, |p| p + 4);
            return Ok((
                f.status,
                String::from_utf8_lossy(&buf[head_end..f.len]).into_owned(),
            ));
        }
    }
}

/// Checkpoint statistics from the admin `/stats` (`checkpoint` object).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CkptStats {
    /// Epochs committed since start.
    pub committed: u64,
    /// Failed epochs.
    pub failures: u64,
    /// Newest committed epoch.
    pub last_committed_epoch: u64,
    /// `full` or `delta`.
    pub last_kind: Option<String>,
    /// Barrier to commit of the newest epoch, ms.
    pub last_duration_ms: f64,
    /// Bytes of the newest epoch.
    pub last_bytes: u64,
    /// Rows of the newest epoch.
    pub last_rows: u64,
    /// Last error, if any.
    pub last_error: Option<String>,
}

/// Parses `/stats`' `checkpoint` object; `None` when checkpoints are off.
pub fn parse_ckpt_stats(stats_json: &str) -> Result<Option<CkptStats>> {
    let v: serde_json::Value = serde_json::from_str(stats_json).context("/stats is not JSON")?;
    let c = &v["checkpoint"];
    if c.is_null() {
        return Ok(None);
    }
    let u = |k: &str| -> Result<u64> {
        c[k].as_u64()
            .with_context(|| format!("/stats checkpoint.{k} is not an unsigned integer"))
    };
    Ok(Some(CkptStats {
        committed: u("committed")?,
        failures: u("failures")?,
        last_committed_epoch: u("last_committed_epoch")?,
        last_kind: c["last_kind"].as_str().map(str::to_owned),
        last_duration_ms: c["last_duration_ms"]
            .as_f64()
            .context("/stats checkpoint.last_duration_ms is not a number")?,
        last_bytes: u("last_bytes")?,
        last_rows: u("last_rows")?,
        last_error: c["last_error"].as_str().map(str::to_owned),
    }))
}

/// Sum of 2xx responses over the merged routes of `/stats`.
pub fn ok_responses(stats_json: &str) -> Result<u64> {
    let v: serde_json::Value = serde_json::from_str(stats_json).context("/stats is not JSON")?;
    let routes = v["merged"]
        .as_array()
        .context("/stats has no `merged` route list")?;
    Ok(routes
        .iter()
        .filter_map(|r| r["statuses"].as_object())
        .flat_map(|s| s.iter())
        .filter(|(code, _)| code.starts_with('2'))
        .filter_map(|(_, n)| n.as_u64())
        .sum())
}

/// Reads `/stats` from the admin port.
pub fn stats(admin_port: u16) -> Result<String> {
    let (status, body) = http(admin_port, "GET", "/stats", Duration::from_secs(10))?;
    if status != 200 {
        bail!("GET /stats on the admin port answered {status}: {body}");
    }
    Ok(body)
}

/// Total size of the files under `dir`, bytes.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Goal of issue 4: p99 with checkpoints ≤ this × p99 without.
pub const P99_RATIO_GOAL: f64 = 1.10;

/// The two variants the ratio compares: the first listed (with
/// checkpoints) over the second (without).
pub fn ratio_pair(labels: &[String]) -> Option<(&str, &str)> {
    match labels {
        [with, without, ..] => Some((with, without)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::TcpListener;

    #[test]
    fn config_rewrite_points_checkpoints_at_the_run_dir_only() {
        let text = "[service]\nname='c'\nbase_port=1\nadmin_port=2\n\n[checkpoint]\ndir='in-the-repo'\ninterval='1s'\n\n[[route]]\npath='/e'\nrequest={user='utf8'}\n";
        let (out, has) = rewrite_config(text, Path::new("/tmp/run/ck")).unwrap();
        assert!(has);
        let v: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(v["checkpoint"]["dir"].as_str(), Some("/tmp/run/ck"));
        assert_eq!(v["checkpoint"]["interval"].as_str(), Some("1s"));
        assert_eq!(v["route"][0]["request"]["user"].as_str(), Some("utf8"));
        let plain = "[service]\nname='c'\nbase_port=1\n";
        let (out, has) = rewrite_config(plain, Path::new("/x")).unwrap();
        assert!(!has);
        assert!(!out.contains("checkpoint"));
        assert!(rewrite_config(text, Path::new("relative")).is_err());
        assert!(rewrite_config("checkpoint = 3\n", Path::new("/x")).is_err());
    }

    #[test]
    fn fresh_config_writes_an_empty_dir_and_refuses_reuse() {
        let base = std::env::temp_dir().join(format!("ckpt-fresh-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/counters_ckpt.toml");
        let run = base.join("ckpt-rep1-try1");
        let rc = fresh_config(&src, &run).unwrap();
        let ck = rc.ckpt_dir.clone().unwrap();
        assert!(ck.is_dir() && std::fs::read_dir(&ck).unwrap().next().is_none());
        assert!(ck.starts_with(std::fs::canonicalize(&run).unwrap()));
        assert_eq!(rc.admin_port, 28880);
        let written: toml::Table =
            toml::from_str(&std::fs::read_to_string(&rc.path).unwrap()).unwrap();
        assert_eq!(written["checkpoint"]["dir"].as_str(), ck.to_str());
        assert!(fresh_config(&src, &run).is_err());
        let plain = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/counters_nockpt.toml");
        assert!(
            fresh_config(&plain, &base.join("n"))
                .unwrap()
                .ckpt_dir
                .is_none()
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn key_ranges_cover_every_key_once() {
        for (keys, conns) in [(10, 3), (3, 8), (0, 2), (1_000_000, 4), (7, 1)] {
            let r = key_ranges(keys, conns);
            assert_eq!(r.len(), conns);
            let mut next = 0;
            for x in &r {
                assert_eq!(x.start, next);
                next = x.end;
            }
            assert_eq!(next, keys);
        }
    }

    /// A tiny pipelining server: answers 200 to every request (404 to bodies
    /// containing `refuse`) and sends every body it saw down `tx`.
    fn server(conns: usize, refuse: &'static str) -> (u16, std::sync::mpsc::Receiver<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..conns {
                let (mut s, _) = l.accept().unwrap();
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        let mut out = Vec::new();
                        loop {
                            let mut h = [httparse::EMPTY_HEADER; 8];
                            let mut req = httparse::Request::new(&mut h);
                            let Ok(httparse::Status::Complete(head)) = req.parse(&buf) else {
                                break;
                            };
                            let cl: usize = req
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                                .unwrap();
                            if buf.len() < head + cl {
                                break;
                            }
                            let body = String::from_utf8(buf[head..head + cl].to_vec()).unwrap();
                            let status = if body.contains(refuse) { 404 } else { 200 };
                            out.extend_from_slice(
                                format!("HTTP/1.1 {status} OK\r\nContent-Length: 2\r\n\r\n{{}}")
                                    .as_bytes(),
                            );
                            let _ = tx.send(body);
                            buf.drain(..head + cl);
                        }
                        if s.write_all(&out).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (port, rx)
    }

    fn config(port: u16, keys: u64) -> PrefillConfig {
        PrefillConfig {
            port,
            method: "POST".into(),
            path: "/events".into(),
            template: Template::parse(r#"{"user":"u{seq}","amount":{int:0..100}}"#).unwrap(),
            keys,
            connections: 3,
            pipeline: 16,
            timeout: Duration::from_secs(5),
            seed: 1,
        }
    }

    #[test]
    fn prefill_sends_every_key_exactly_once() {
        let (port, rx) = server(3, "no such body");
        let stats = prefill(&config(port, 1000)).unwrap();
        assert_eq!((stats.sent, stats.ok, stats.non_2xx), (1000, 1000, 0));
        let users: Vec<String> = rx
            .try_iter()
            .map(|b| {
                let v: serde_json::Value = serde_json::from_str(&b).unwrap();
                v["user"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(users.len(), 1000);
        let distinct: HashSet<&String> = users.iter().collect();
        let want: HashSet<String> = (0..1000).map(|i| format!("u{i}")).collect();
        assert_eq!(distinct, want.iter().collect());
    }

    #[test]
    fn prefill_fails_loudly_when_a_key_is_refused() {
        let (port, _rx) = server(3, "\"u13\"");
        let e = prefill(&config(port, 20)).unwrap_err();
        assert!(format!("{e:#}").contains("19 of 20 keys"), "{e:#}");
    }

    #[test]
    fn stats_parsing_reads_checkpoint_and_status_counts() {
        let doc = r#"{"merged":[{"route":"POST /events","statuses":{"200":7,"422":1}},{"route":"GET /counts","statuses":{"200":2}}],
            "checkpoint":{"restored_epoch":0,"last_committed_epoch":12,"last_kind":"full","last_commit_unix_ms":1,
            "last_duration_ms":35.5,"last_bytes":1234,"last_rows":1000,"committed":12,"failures":0,"last_error":null,"in_flight":false}}"#;
        assert_eq!(ok_responses(doc).unwrap(), 9);
        let c = parse_ckpt_stats(doc).unwrap().unwrap();
        assert_eq!(
            (c.committed, c.failures, c.last_bytes, c.last_rows),
            (12, 0, 1234, 1000)
        );
        assert_eq!(c.last_kind.as_deref(), Some("full"));
        assert_eq!(c.last_duration_ms, 35.5);
        assert!(
            parse_ckpt_stats(r#"{"merged":[],"checkpoint":null}"#)
                .unwrap()
                .is_none()
        );
        assert!(parse_ckpt_stats(r#"{"checkpoint":{"committed":"x"}}"#).is_err());
    }

    #[test]
    fn the_ratio_is_first_variant_over_second() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ratio_pair(&l(&["ckpt", "nockpt"])),
            Some(("ckpt", "nockpt"))
        );
        assert_eq!(ratio_pair(&l(&["a", "b", "c"])), Some(("a", "b")));
        assert_eq!(ratio_pair(&l(&["a"])), None);
    }
}
