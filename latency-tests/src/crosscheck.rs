//! Running `wrk` (the external reference client) against a server, pinned to
//! the generator's core, and reading its summary.

use crate::scenario::Scenario;
use crate::server::{GENERATOR_CORE, pin_child};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// What we read from wrk's output.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkResult {
    /// `Requests/sec`.
    pub rps: f64,
    /// The `99%` line of `--latency`, µs.
    pub p99_us: Option<f64>,
    /// `Socket errors` / `Non-2xx` lines, if any.
    pub errors: Option<String>,
}

/// `1.23ms` → 1230.0 µs.
fn duration_us(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1e3,
        "s" => v * 1e6,
        "m" => v * 60e6,
        _ => return None,
    })
}

/// Parses wrk's text output.
pub fn parse(text: &str) -> Result<WrkResult> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no `Requests/sec:` in wrk output:\n{text}"))?;
    let p99_us = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| duration_us(v.trim()));
    let errors: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Socket errors") || l.starts_with("Non-2xx"))
        .collect();
    Ok(WrkResult {
        rps,
        p99_us,
        errors: (!errors.is_empty()).then(|| errors.join("; ")),
    })
}

/// Runs `wrk -t1 -c<connections> -d<duration>` with `script` against `port`.
pub fn wrk(sc: &Scenario, port: u16, script: &Path) -> Result<WrkResult> {
    let secs = (sc.duration + sc.warmup).ceil().max(1.0) as u64;
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{}", sc.load.connections),
        &format!("-d{secs}s"),
        "--latency",
        "-s",
    ])
    .arg(script)
    .arg(format!("http://127.0.0.1:{port}{}", sc.load.path));
    pin_child(&mut cmd, &[GENERATOR_CORE]);
    let out = cmd.output().context("running wrk")?;
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_summary() {
        let text = "Running 4s test @ http://127.0.0.1:18920/my_api
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.12ms    2.34ms  32.60ms   89.79%
    Req/Sec    44.87k    28.64k  120.44k    85.00%
  Latency Distribution
     50%  101.00us
     75%  150.00us
     90%  250.00us
     99%    4.17ms
  179349 requests in 4.04s, 14.88MB read
  Non-2xx or 3xx responses: 3
Requests/sec:  44417.06
Transfer/sec:      3.69MB
";
        let r = parse(text).unwrap();
        assert_eq!(r.rps, 44417.06);
        assert_eq!(r.p99_us, Some(4170.0));
        assert_eq!(r.errors.as_deref(), Some("Non-2xx or 3xx responses: 3"));
        assert!(parse("garbage").is_err());
        assert_eq!(duration_us("2.00s"), Some(2e6));
    }
}
