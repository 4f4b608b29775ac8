//! The suite: every scenario, every server, interleaved and repeated.
//!
//! Fairness rules, in code here:
//! - one server runs at a time, freshly started for each run, pinned to
//!   core 0; the generator (this thread) and wrk are pinned to core 1;
//! - runs are interleaved: for each point and repetition the servers run one
//!   after the other (coreline, axum, actix, floor, coreline, …), so drift of
//!   a shared machine lands on all of them alike;
//! - every server of a repetition gets the same seed, hence the same arrival
//!   times and the same bodies;
//! - ratios are computed per interleaved pair (see `stats`).

use crate::body::{BodySource, RequestPool, RequestSpec, Template};
use crate::ckpt;
use crate::generator::{self, Balance, LoadConfig, Mode, RunStats};
use crate::scenario::{KeyPort, Kind, RateOf, Scenario, ServerKind};
use crate::server::{self, Binaries, GENERATOR_CORE};
use crate::stats::Spread;
use crate::swap::{SwapStats, Swapper};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Percentiles and counts of one run (microseconds).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Offered requests/s in the measured window.
    pub offered_rate: f64,
    /// Responses/s for measured requests.
    pub achieved_rate: f64,
    /// Corrected latency percentiles.
    pub p50_us: f64,
    /// p90.
    pub p90_us: f64,
    /// p99.
    pub p99_us: f64,
    /// p99.9.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Service time (actual send → response) p50.
    pub service_p50_us: f64,
    /// Service time p99.
    pub service_p99_us: f64,
    /// Generator dispatch lag p99 (did the generator keep up?).
    pub lag_p99_us: f64,
    /// Generator dispatch lag max.
    pub lag_max_us: f64,
    /// Share of the run the generator waited with nothing to do, percent.
    pub generator_idle_pct: f64,
    /// Sum of every kind of error.
    pub errors: u64,
    /// Share of the run's wall time in which some task on this machine waited
    /// for a CPU (Linux PSI `cpu some`), percent. Near 0 on a quiet machine;
    /// large values mean other processes competed with the server or the
    /// generator and the run's latencies are suspect.
    pub cpu_stall_pct: f64,
    /// All counters.
    pub counts: generator::Counts,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl RunSummary {
    /// Summarizes a run.
    pub fn of(s: &RunStats, cpu_stall_pct: f64) -> RunSummary {
        let h = &s.corrected;
        RunSummary {
            offered_rate: s.offered_rate,
            achieved_rate: s.achieved_rate,
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
            service_p50_us: us(s.service.value_at_quantile(0.5)),
            service_p99_us: us(s.service.value_at_quantile(0.99)),
            lag_p99_us: us(s.dispatch_lag.value_at_quantile(0.99)),
            lag_max_us: us(s.dispatch_lag.max()),
            generator_idle_pct: s.idle_pct,
            errors: s.counts.errors(),
            cpu_stall_pct,
            counts: s.counts.clone(),
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Server.
    pub server: ServerKind,
    /// Repetition (0-based).
    pub rep: usize,
    /// Point label, e.g. `rate=20000` or `closed`.
    pub point: String,
    /// Target rate (open loop), requests/s.
    pub target_rate: Option<f64>,
    /// Results.
    pub summary: RunSummary,
    /// `.hgrm` file, relative to the report directory.
    pub hgrm: String,
    /// Which attempt was kept (0-based; > 0 when a disturbed run was redone).
    pub attempt: usize,
    /// Percentile spectrum for plots: (quantile, microseconds).
    #[serde(skip)]
    pub spectrum: Vec<(f64, f64)>,
}

/// One server's bisection in one repetition.
#[derive(Debug, Clone, Serialize)]
pub struct SloSearch {
    /// Server.
    pub server: ServerKind,
    /// Repetition.
    pub rep: usize,
    /// Highest rate known to hold the objective (requests/s).
    pub max_rate: f64,
    /// Whether `max_rate` was actually measured passing (it is an untested
    /// bracket end otherwise).
    pub verified: bool,
    /// Every probe: (rate, p99 µs, errors, passed).
    pub probes: Vec<(f64, f64, u64, bool)>,
}

/// wrk and our generator on one server, one repetition.
#[derive(Debug, Clone, Serialize)]
pub struct CrossRecord {
    /// Server.
    pub server: ServerKind,
    /// Repetition.
    pub rep: usize,
    /// wrk's Requests/sec (None: wrk unavailable or failed).
    pub wrk_rps: Option<f64>,
    /// wrk's p99 latency (closed loop), µs.
    pub wrk_p99_us: Option<f64>,
    /// wrk's error summary lines, if any.
    pub wrk_errors: Option<String>,
    /// Our closed-loop requests/s.
    pub generator_rps: f64,
    /// Our closed-loop p99 service time, µs.
    pub generator_p99_us: f64,
    /// Our error count.
    pub generator_errors: u64,
    /// Share of our run spent waiting for the server, percent.
    pub generator_idle_pct: f64,
}

/// One run of a checkpoint scenario: its prefill and checkpoint statistics.
#[derive(Debug, Clone, Serialize)]
pub struct CkptRecord {
    /// Variant label (the run's point).
    pub variant: String,
    /// Repetition.
    pub rep: usize,
    /// Keys prefilled.
    pub keys: u64,
    /// The prefill.
    pub prefill: ckpt::PrefillStats,
    /// Epoch committed by the `POST /checkpoint` forced after the prefill.
    pub forced_epoch: Option<u64>,
    /// `/stats` checkpoint object when the measured load started.
    pub at_start: Option<ckpt::CkptStats>,
    /// `/stats` checkpoint object when the measured load ended.
    pub at_end: Option<ckpt::CkptStats>,
    /// Epochs committed during warm-up and measurement.
    pub epochs_during_load: Option<u64>,
    /// Bytes in the checkpoint directory after the server stopped (its final
    /// checkpoint included; the directory is then deleted).
    pub dir_bytes: Option<u64>,
    /// The run's directory (config copy), relative to the report directory.
    pub run_dir: String,
}

/// The model swaps of one `swapping` run of a model_swap scenario.
#[derive(Debug, Clone, Serialize)]
pub struct SwapRecord {
    /// Repetition.
    pub rep: usize,
    /// What the side task did (warm-up included).
    pub stats: SwapStats,
}

/// What a checkpoint run learned in each attempt.
#[derive(Debug, Clone, Default)]
struct CkptAttempt {
    config: Option<ckpt::RunConfig>,
    run_dir: String,
    prefill: ckpt::PrefillStats,
    forced_epoch: Option<u64>,
    at_start: Option<ckpt::CkptStats>,
    at_end: Option<ckpt::CkptStats>,
    dir_bytes: Option<u64>,
}

/// Extra steps of a run beyond start → load → stop (checkpoint scenario).
trait RunHooks {
    /// coreline config for `attempt` (`None`: the scenario's).
    fn config(&self, attempt: usize) -> Result<Option<PathBuf>>;
    /// After the server is ready, before the load.
    fn before(&self, running: &server::Running) -> Result<()>;
    /// After the load, before the server stops.
    fn after(&self, running: &server::Running) -> Result<()>;
    /// After the server stopped.
    fn stopped(&self) -> Result<()>;
}

/// A plain run.
struct NoHooks;

impl RunHooks for NoHooks {
    fn config(&self, _: usize) -> Result<Option<PathBuf>> {
        Ok(None)
    }
    fn before(&self, _: &server::Running) -> Result<()> {
        Ok(())
    }
    fn after(&self, _: &server::Running) -> Result<()> {
        Ok(())
    }
    fn stopped(&self) -> Result<()> {
        Ok(())
    }
}

/// A run with its own coreline config (scaling scenario).
struct ConfigHook(PathBuf);

impl RunHooks for ConfigHook {
    fn config(&self, _: usize) -> Result<Option<PathBuf>> {
        Ok(Some(self.0.clone()))
    }
    fn before(&self, _: &server::Running) -> Result<()> {
        Ok(())
    }
    fn after(&self, _: &server::Running) -> Result<()> {
        Ok(())
    }
    fn stopped(&self) -> Result<()> {
        Ok(())
    }
}

/// A `swapping` run: model swaps on the admin port from just before the
/// load (warm-up included) until it ends.
struct SwapHooks<'a> {
    swap: &'a crate::scenario::Swap,
    admin_port: u16,
    models: &'a [Vec<u8>],
    running: std::cell::RefCell<Option<Swapper>>,
    /// Each attempt's statistics.
    attempts: std::cell::RefCell<Vec<SwapStats>>,
}

impl RunHooks for SwapHooks<'_> {
    fn config(&self, _: usize) -> Result<Option<PathBuf>> {
        Ok(None)
    }
    fn before(&self, _: &server::Running) -> Result<()> {
        *self.running.borrow_mut() = Some(Swapper::start(
            self.admin_port,
            &self.swap.step,
            self.models.to_vec(),
            Duration::from_millis(self.swap.interval_ms),
        ));
        Ok(())
    }
    fn after(&self, _: &server::Running) -> Result<()> {
        let swapper = self.running.borrow_mut().take().context("no swapper ran")?;
        self.attempts.borrow_mut().push(swapper.finish()?);
        Ok(())
    }
    fn stopped(&self) -> Result<()> {
        Ok(())
    }
}

/// Online cores of this machine (not this thread's affinity mask: the
/// generator thread is pinned to one core).
pub fn machine_cores() -> usize {
    // SAFETY: sysconf reads a system constant and touches no memory.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 { n as usize } else { 1 }
}

/// Writes `source` (a coreline config) to `dest` with `[service] shards = k`
/// and `cores = [0, …, k−1]`.
pub fn write_sharded_config(source: &Path, k: usize, dest: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(source).with_context(|| format!("reading {}", source.display()))?;
    let mut doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", source.display()))?;
    let service = doc
        .get_mut("service")
        .and_then(|v| v.as_table_mut())
        .with_context(|| format!("{}: no [service] table", source.display()))?;
    service.insert("shards".into(), toml::Value::Integer(k as i64));
    service.insert(
        "cores".into(),
        toml::Value::Array((0..k as i64).map(toml::Value::Integer).collect()),
    );
    std::fs::write(dest, toml::to_string(&doc)?)
        .with_context(|| format!("writing {}", dest.display()))
}

/// A checkpoint-scenario run: fresh config and checkpoint dir per attempt,
/// verified prefill before the load, checkpoint statistics around it.
struct CkptHooks<'a> {
    sc: &'a Scenario,
    source: PathBuf,
    dir: PathBuf,
    out: &'a Path,
    rep: usize,
    label: &'a str,
    attempts: std::cell::RefCell<Vec<CkptAttempt>>,
}

impl CkptHooks<'_> {
    fn current(&self) -> std::cell::RefMut<'_, CkptAttempt> {
        std::cell::RefMut::map(self.attempts.borrow_mut(), |a| {
            a.last_mut().expect("config() ran first")
        })
    }

    fn admin(&self) -> u16 {
        self.current().config.as_ref().expect("config").admin_port
    }

    /// `GET <read path>?key=<key>` → status and the `n` output.
    fn read_key(&self, port: u16, key: &str) -> Result<(u16, Option<i64>)> {
        let (status, body) = ckpt::http(
            port,
            "GET",
            &format!("{}?key={key}", self.sc.prefill.read_path),
            Duration::from_secs(5),
        )?;
        let n = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["n"].as_i64());
        Ok((status, n))
    }
}

impl RunHooks for CkptHooks<'_> {
    fn config(&self, attempt: usize) -> Result<Option<PathBuf>> {
        let name = format!("{}-rep{}-try{}", self.label, self.rep + 1, attempt + 1);
        let run_dir = self.dir.join(&name);
        let config = ckpt::fresh_config(&self.source, &run_dir)?;
        let path = config.path.clone();
        self.attempts.borrow_mut().push(CkptAttempt {
            config: Some(config),
            run_dir: run_dir
                .strip_prefix(self.out)
                .unwrap_or(&run_dir)
                .display()
                .to_string(),
            ..Default::default()
        });
        Ok(Some(path))
    }

    fn before(&self, running: &server::Running) -> Result<()> {
        let sc = self.sc;
        let admin = self.admin();
        let ok_before = ckpt::ok_responses(&ckpt::stats(admin)?)?;
        let cfg = ckpt::PrefillConfig {
            port: running.ports[0],
            method: sc.load.method.clone(),
            path: sc.load.path.clone(),
            template: Template::parse(&sc.prefill.body_template)?,
            keys: sc.keys,
            connections: sc.prefill.connections,
            pipeline: sc.prefill.pipeline,
            timeout: Duration::from_secs_f64(sc.prefill.timeout),
            seed: seed_of(self.rep),
        };
        let prefill = ckpt::prefill(&cfg)?;
        // The server must agree: exactly `keys` more 2xx, the first and last
        // key seen once, the one after the last never.
        let ok_after = ckpt::ok_responses(&ckpt::stats(admin)?)?;
        if ok_after - ok_before != sc.keys {
            bail!(
                "prefill: the server counted {} 2xx responses, expected {}",
                ok_after - ok_before,
                sc.keys
            );
        }
        let port = running.ports[0];
        for (key, want) in [
            ("u0".to_owned(), (200, Some(1))),
            (format!("u{}", sc.keys - 1), (200, Some(1))),
            (format!("u{}", sc.keys), (404, None)),
        ] {
            let got = self.read_key(port, &key)?;
            if got != want {
                bail!(
                    "prefill check: {}?key={key} gave status {} n {:?}, expected status {} n {:?}",
                    sc.prefill.read_path,
                    got.0,
                    got.1,
                    want.0,
                    want.1
                );
            }
        }
        let has_ckpt = self
            .current()
            .config
            .as_ref()
            .is_some_and(|c| c.ckpt_dir.is_some());
        let mut forced = None;
        if has_ckpt {
            let (status, body) = ckpt::http(admin, "POST", "/checkpoint", Duration::from_secs(60))?;
            if status != 200 {
                bail!("POST /checkpoint after the prefill answered {status}: {body}");
            }
            forced = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["epoch"].as_u64());
        }
        let at_start = ckpt::parse_ckpt_stats(&ckpt::stats(admin)?)?;
        eprintln!(
            "  [{}] {:8} {:>14} rep {}: prefilled {} keys in {:.1} s ({:.0}/s){}",
            sc.name,
            "coreline",
            self.label,
            self.rep + 1,
            prefill.ok,
            prefill.seconds,
            prefill.ok as f64 / prefill.seconds.max(1e-9),
            match &at_start {
                Some(c) => format!(
                    "; forced checkpoint epoch {} ({}, {} rows, {:.1} ms)",
                    forced.map_or("?".into(), |e| e.to_string()),
                    c.last_kind.as_deref().unwrap_or("?"),
                    c.last_rows,
                    c.last_duration_ms
                ),
                None => String::new(),
            }
        );
        let mut cur = self.current();
        cur.prefill = prefill;
        cur.forced_epoch = forced;
        cur.at_start = at_start;
        Ok(())
    }

    fn after(&self, _: &server::Running) -> Result<()> {
        let at_end = ckpt::parse_ckpt_stats(&ckpt::stats(self.admin())?)?;
        self.current().at_end = at_end;
        Ok(())
    }

    fn stopped(&self) -> Result<()> {
        let mut cur = self.current();
        if let Some(dir) = cur.config.as_ref().and_then(|c| c.ckpt_dir.clone()) {
            cur.dir_bytes = Some(ckpt::dir_bytes(&dir));
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }
}

/// Everything one scenario produced.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// The scenario as run.
    pub scenario: Scenario,
    /// Points in order: (label, target rate).
    pub points: Vec<(String, Option<f64>)>,
    /// Every run.
    pub runs: Vec<RunRecord>,
    /// SLO searches (slo scenarios).
    pub slo: Vec<SloSearch>,
    /// Cross-check records (crosscheck scenarios).
    pub crosscheck: Vec<CrossRecord>,
    /// Prefill and checkpoint statistics (checkpoint scenarios).
    pub checkpoint: Vec<CkptRecord>,
    /// Model swaps of each `swapping` run (model_swap scenarios).
    pub swaps: Vec<SwapRecord>,
    /// Why the scenario stopped early, if it did.
    pub error: Option<String>,
    /// Why the scenario did not run on this machine, if it did not.
    pub skipped: Option<String>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl ScenarioResult {
    /// Values of `metric` for `server` at `point`, in repetition order.
    pub fn values(
        &self,
        point: &str,
        server: ServerKind,
        metric: impl Fn(&RunSummary) -> f64,
    ) -> Vec<f64> {
        let mut runs: Vec<&RunRecord> = self
            .runs
            .iter()
            .filter(|r| r.point == point && r.server == server)
            .collect();
        runs.sort_by_key(|r| r.rep);
        runs.iter().map(|r| metric(&r.summary)).collect()
    }
}

/// Suite-wide state.
pub struct Suite {
    /// `latency-tests/`.
    pub root: PathBuf,
    /// Report directory.
    pub out: PathBuf,
    /// Server binaries.
    pub bins: Binaries,
    /// Capacity (closed-loop requests/s) per server, per repetition.
    pub capacity: BTreeMap<ServerKind, Vec<f64>>,
    /// Sweep medians per server: (rate, median p99 µs, total errors).
    pub sweep: BTreeMap<ServerKind, Vec<(f64, f64, u64)>>,
    /// Servers to run (the intersection with each scenario's list).
    pub servers: Vec<ServerKind>,
    /// A run whose CPU stall exceeds this (percent) is repeated.
    pub max_stall_pct: f64,
    /// How many times a disturbed run is repeated at most.
    pub retries: usize,
}

fn request_pool(sc: &Scenario, seed: u64) -> Result<RequestPool> {
    let spec = RequestSpec {
        method: sc.load.method.clone(),
        path: sc.load.path.clone(),
        host: "127.0.0.1".into(),
        body: BodySource::Template(Template::parse(&sc.load.body_template)?),
        pool: sc.load.pool,
        key_field: sc.load.key_field.clone(),
        seed,
    };
    RequestPool::build(&spec).map_err(anyhow::Error::msg)
}

fn seed_of(rep: usize) -> u64 {
    1000 + rep as u64
}

fn spectrum(stats: &RunStats) -> Vec<(f64, f64)> {
    if stats.corrected.is_empty() {
        return Vec::new();
    }
    stats
        .corrected
        .iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to(), us(v.value_iterated_to())))
        .collect()
}

impl Suite {
    fn servers_of(&self, sc: &Scenario) -> Vec<ServerKind> {
        sc.servers
            .iter()
            .copied()
            .filter(|s| self.servers.contains(s))
            .collect()
    }

    fn log_path(&self, server: ServerKind) -> PathBuf {
        self.out.join("logs").join(format!("{}.log", server.name()))
    }

    fn start(&self, sc: &Scenario, server: ServerKind) -> Result<server::Running> {
        self.start_with(sc, server, None)
    }

    fn start_with(
        &self,
        sc: &Scenario,
        server: ServerKind,
        config: Option<&Path>,
    ) -> Result<server::Running> {
        let config = config.map_or_else(|| self.root.join(&sc.coreline_config), Path::to_path_buf);
        server::start(
            server,
            &self.bins,
            &config,
            sc.instances,
            &sc.server_cores,
            &self.log_path(server),
        )
    }

    /// Starts `server`, runs one load, stops it; returns the stats and the
    /// CPU stall percentage of the run.
    #[allow(clippy::too_many_arguments)]
    fn run_once(
        &self,
        sc: &Scenario,
        server: ServerKind,
        rep: usize,
        mode: Mode,
        pool: &RequestPool,
        attempt: usize,
        hooks: &dyn RunHooks,
    ) -> Result<(RunStats, f64)> {
        let config = hooks.config(attempt)?;
        let running = self.start_with(sc, server, config.as_deref())?;
        hooks.before(&running)?;
        let cfg = LoadConfig {
            host: "127.0.0.1".into(),
            ports: running.ports.clone(),
            connections: sc.load.connections,
            mode,
            pipeline: sc.load.pipeline,
            duration: Duration::from_secs_f64(sc.duration),
            warmup: Duration::from_secs_f64(sc.warmup),
            timeout: Duration::from_secs_f64(sc.load.timeout),
            balance: match (&sc.load.key_field, sc.load.key_port) {
                (None, _) => Balance::RoundRobin,
                (Some(_), KeyPort::Owner) => Balance::KeyHash,
                (Some(_), KeyPort::Other) => Balance::KeyOther,
            },
            seed: seed_of(rep),
            spin: sc.load.spin,
        };
        let psi_before = cpu_pressure_us();
        let wall = Instant::now();
        let result = generator::run(&cfg, pool);
        let stall_pct = match (psi_before, cpu_pressure_us()) {
            (Some(a), Some(b)) => 100.0 * (b - a) as f64 / 1e6 / wall.elapsed().as_secs_f64(),
            _ => f64::NAN,
        };
        let result = result?;
        hooks.after(&running)?;
        running.stop()?;
        hooks.stopped()?;
        Ok((result, stall_pct))
    }

    /// One measured point: runs it, and again (up to `retries` times) while
    /// other processes disturbed it (CPU stall above `max_stall_pct`),
    /// keeping the least disturbed attempt; writes its `.hgrm`.
    fn measure(
        &self,
        sc: &Scenario,
        server: ServerKind,
        rep: usize,
        point: &str,
        mode: Mode,
        pool: &RequestPool,
    ) -> Result<RunRecord> {
        self.measure_with(sc, server, rep, point, mode, pool, &NoHooks)
    }

    #[allow(clippy::too_many_arguments)]
    fn measure_with(
        &self,
        sc: &Scenario,
        server: ServerKind,
        rep: usize,
        point: &str,
        mode: Mode,
        pool: &RequestPool,
        hooks: &dyn RunHooks,
    ) -> Result<RunRecord> {
        let mut best: Option<(RunStats, f64, usize)> = None;
        for attempt in 0..=self.retries {
            let (stats, stall) = self
                .run_once(sc, server, rep, mode, pool, attempt, hooks)
                .with_context(|| format!("{} {point} rep {}", server.name(), rep + 1))?;
            let better = best
                .as_ref()
                .is_none_or(|(_, b, _)| stall < *b || b.is_nan());
            if better {
                best = Some((stats, stall, attempt));
            }
            if stall <= self.max_stall_pct || stall.is_nan() {
                break;
            }
            if attempt < self.retries {
                eprintln!(
                    "  [{}] {:8} {point:>14} rep {}: CPU stall {stall:.0}% > {:.0}%, other processes disturbed the run; again",
                    sc.name,
                    server.name(),
                    rep + 1,
                    self.max_stall_pct
                );
            }
        }
        let (stats, stall_pct, attempt) = best.expect("at least one attempt");
        let dir = self.out.join(&sc.name);
        std::fs::create_dir_all(&dir)?;
        let file = format!(
            "{}-{}-rep{}.hgrm",
            server.name(),
            point.replace('=', ""),
            rep + 1
        );
        std::fs::write(
            dir.join(&file),
            crate::hgrm::render(&stats.corrected, 1000.0, 5),
        )?;
        let summary = RunSummary::of(&stats, stall_pct);
        eprintln!(
            "  [{}] {:8} {point:>14} rep {}/{}: offered {:>8.0}/s achieved {:>8.0}/s  p50 {:>8.1} us  p99 {:>9.1} us  max {:>9.1} us  errors {}  cpu stall {:.0}%",
            sc.name,
            server.name(),
            rep + 1,
            sc.repeats,
            summary.offered_rate,
            summary.achieved_rate,
            summary.p50_us,
            summary.p99_us,
            summary.max_us,
            summary.errors,
            summary.cpu_stall_pct
        );
        Ok(RunRecord {
            server,
            rep,
            point: point.to_owned(),
            target_rate: match mode {
                Mode::Open { rate, .. } => Some(rate),
                Mode::Closed { .. } => None,
            },
            summary,
            hgrm: format!("{}/{file}", sc.name),
            attempt,
            spectrum: spectrum(&stats),
        })
    }

    fn median_capacity(&self, server: ServerKind) -> Option<f64> {
        self.capacity
            .get(&server)
            .and_then(|v| Spread::of(v))
            .map(|s| s.median)
    }

    /// Absolute rates of a sweep or fixed scenario.
    fn rates(&self, sc: &Scenario, servers: &[ServerKind]) -> Result<Vec<f64>> {
        if !sc.rates.is_empty() {
            return Ok(sc.rates.clone());
        }
        let base = match sc.rate_of {
            RateOf::Fastest => servers
                .iter()
                .filter_map(|&s| self.median_capacity(s))
                .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))))
                .context(
                    "rate_of = \"max_capacity\" needs the capacity scenario to have run first",
                )?,
            RateOf::Axum => self.median_capacity(ServerKind::Axum).context(
                "rate_of = \"axum_capacity\" needs the capacity scenario to have measured axum",
            )?,
        };
        Ok(sc
            .fractions
            .iter()
            .map(|f| ((f * base) / 100.0).round().max(1.0) * 100.0)
            .collect())
    }

    /// Runs one scenario; errors end it early but keep what was measured.
    pub fn run_scenario(&mut self, sc: &Scenario) -> ScenarioResult {
        let started = Instant::now();
        let mut result = ScenarioResult {
            scenario: sc.clone(),
            points: Vec::new(),
            runs: Vec::new(),
            slo: Vec::new(),
            crosscheck: Vec::new(),
            checkpoint: Vec::new(),
            swaps: Vec::new(),
            error: None,
            skipped: None,
            seconds: 0.0,
        };
        eprintln!("scenario {}: {}", sc.name, sc.title);
        let cores = machine_cores();
        if cores < sc.min_cores {
            let why = format!(
                "skipped: needs at least {} cores, this machine has {cores}",
                sc.min_cores
            );
            eprintln!("scenario {} {why}", sc.name);
            result.skipped = Some(why);
            return result;
        }
        if let Some(note) = shared_core_note(sc) {
            eprintln!("scenario {}: note: {note}", sc.name);
        }
        if sc.servers.contains(&ServerKind::FastapiOnnx)
            && self.servers.contains(&ServerKind::FastapiOnnx)
            && self.bins.fastapi_onnx.is_none()
        {
            let why = format!(
                "SKIPPED: the FastAPI + onnxruntime baseline cannot run here ({}); install it with \
                 `python3 -m pip install -r latency-tests/baselines/fastapi_onnx/requirements.txt`",
                server::fastapi_onnx_missing().unwrap_or_else(|| "not found at build time".into())
            );
            eprintln!("scenario {} {why}", sc.name);
            result.skipped = Some(why);
            return result;
        }
        let outcome = match sc.kind {
            Kind::Capacity => self.capacity_scenario(sc, &mut result),
            Kind::Sweep | Kind::Fixed => self.rate_scenario(sc, &mut result),
            Kind::Slo => self.slo_scenario(sc, &mut result),
            Kind::Crosscheck => self.crosscheck_scenario(sc, &mut result),
            Kind::Checkpoint => self.checkpoint_scenario(sc, &mut result),
            Kind::Forwarding => self.forwarding_scenario(sc, &mut result),
            Kind::Scaling => self.scaling_scenario(sc, &mut result),
            Kind::Model => self.model_scenario(sc, &mut result),
            Kind::ModelSwap => self.model_swap_scenario(sc, &mut result),
        };
        if let Err(e) = outcome {
            eprintln!("scenario {} FAILED: {e:#}", sc.name);
            result.error = Some(format!("{e:#}"));
        }
        result.seconds = started.elapsed().as_secs_f64();
        result
    }

    /// The model route against FastAPI + onnxruntime: each server's
    /// closed-loop capacity (kept out of the hello capacities), then both at
    /// `fractions[0]` of the baseline's median capacity, then coreline alone
    /// at `fractions[1]` of it (the issue: ≥ 10× its highest rate holding
    /// p99 ≤ 1 ms, and ≤ 0.2× its p99 at 50% of its capacity).
    fn model_scenario(&mut self, sc: &Scenario, result: &mut ScenarioResult) -> Result<()> {
        let servers = self.servers_of(sc);
        let baseline = ServerKind::FastapiOnnx;
        if !servers.contains(&baseline) || !servers.contains(&ServerKind::Coreline) {
            bail!("a model scenario needs servers = [\"coreline\", \"fastapi_onnx\"]");
        }
        let [half, many] = sc.fractions[..] else {
            bail!(
                "a model scenario needs fractions = [share of the baseline's capacity for both, multiple of it for coreline]"
            );
        };
        result.points.push(("closed".into(), None));
        let mut capacity = Vec::new();
        for rep in 0..sc.repeats {
            let pool = request_pool(sc, seed_of(rep))?;
            for &server in &servers {
                let mode = Mode::Closed {
                    depth: sc.load.depth,
                };
                let run = self.measure(sc, server, rep, "closed", mode, &pool)?;
                if server == baseline {
                    capacity.push(run.summary.achieved_rate);
                }
                result.runs.push(run);
            }
        }
        let base = Spread::of(&capacity)
            .context("the baseline's capacity was not measured")?
            .median;
        let rate_at = |f: f64| ((f * base) / 100.0).round().max(1.0) * 100.0;
        let points = [
            (format!("{half}x_fastapi"), rate_at(half), servers.clone()),
            (
                format!("{many}x_fastapi"),
                rate_at(many),
                vec![ServerKind::Coreline],
            ),
        ];
        for (label, rate, _) in &points {
            result.points.push((label.clone(), Some(*rate)));
        }
        for rep in 0..sc.repeats {
            let pool = request_pool(sc, seed_of(rep))?;
            for (label, rate, on) in &points {
                for &server in on {
                    let mode = Mode::Open {
                        rate: *rate,
                        arrival: sc.load.arrival,
                    };
                    let run = self.measure(sc, server, rep, label, mode, &pool)?;
                    result.runs.push(run);
                }
            }
        }
        Ok(())
    }

    /// Points `steady` and `swapping` interleaved per repetition at one
    /// rate; during `swapping` a side task swaps the step's model on the
    /// admin port every `interval_ms` (see `swap`).
    fn model_swap_scenario(&mut self, sc: &Scenario, result: &mut ScenarioResult) -> Result<()> {
        let swap = sc
            .swap
            .as_ref()
            .context("a model_swap scenario needs [swap]")?;
        let rate = *self
            .rates(sc, &[ServerKind::Coreline])?
            .first()
            .context("model_swap: no rate")?;
        let config = self.root.join(&sc.coreline_config);
        let text = std::fs::read_to_string(&config)
            .with_context(|| format!("reading {}", config.display()))?;
        let admin_port = ckpt::admin_port(&text)
            .with_context(|| format!("{}: [service] admin_port", config.display()))?;
        let models: Vec<Vec<u8>> = swap
            .models
            .iter()
            .map(|m| {
                let path = self.root.join(m);
                std::fs::read(&path).with_context(|| format!("reading model {}", path.display()))
            })
            .collect::<Result<_>>()?;
        for label in ["steady", "swapping"] {
            result.points.push((label.into(), Some(rate)));
        }
        let mode = Mode::Open {
            rate,
            arrival: sc.load.arrival,
        };
        for rep in 0..sc.repeats {
            let pool = request_pool(sc, seed_of(rep))?;
            let run = self.measure(sc, ServerKind::Coreline, rep, "steady", mode, &pool)?;
            result.runs.push(run);
            let hooks = SwapHooks {
                swap,
                admin_port,
                models: &models,
                running: Default::default(),
                attempts: Default::default(),
            };
            let run = self.measure_with(
                sc,
                ServerKind::Coreline,
                rep,
                "swapping",
                mode,
                &pool,
                &hooks,
            )?;
            let stats = hooks.attempts.borrow()[run.attempt].clone();
            let put = Spread::of(&stats.put_ms);
            eprintln!(
                "  [{}] {:8} {:>14} rep {}: {} swaps, {} failed{}; PUT p50 {:.1} ms, max {:.1} ms",
                sc.name,
                "coreline",
                "swapping",
                rep + 1,
                stats.swaps,
                stats.failures,
                stats
                    .first_failure
                    .as_deref()
                    .map_or(String::new(), |f| format!(" (first: {f})")),
                put.map_or(f64::NAN, |p| p.median),
                put.map_or(f64::NAN, |p| p.max),
            );
            result.swaps.push(SwapRecord { rep, stats });
            result.runs.push(run);
        }
        Ok(())
    }

    fn capacity_scenario(&mut self, sc: &Scenario, result: &mut ScenarioResult) -> Result<()> {
        let servers = self.servers_of(sc);
        result.points.push(("closed".into(), None));
        for rep in 0..sc.repeats {
            let pool = request_pool(sc, seed_of(rep))?;
            for &server in &servers {
                let mode = Mode::Closed {
                    depth: sc.load.depth,
                };
                let run = self.measure(sc, server, rep, "closed", mode, &pool)?;
                self.capacity
                    .entry(server)
                    .or_default()
                    .push(run.summary.achieved_rate);
                result.runs.push(run);
            }
        }
        Ok(())
    }

    /// Points `owner` and `other` interleaved per repetition at one rate: the
    /// same keyed requests sent to their owner shard's port, then to the next
    /// port, whose shard forwards each one to the owner and relays the reply.
    fn forwarding_scenario(&mut self, sc: &Scenario, result: &mut ScenarioResult) -> Result<()> {
        let rate = *self
            .rates(sc, &[ServerKind::Coreline])?
            .first()
            .context("forwarding: no rate")?;
        let points = [("owner", KeyPort::Owner), ("other", KeyPort::Other)];
        for (label, _) in points {
            result.points.push((label.into(), Some(rate)));
        }
        for rep in 0..sc.repeats {
            let pool = request_pool(sc, seed_of(rep))?;
            for (label, port) in points {
                let mut variant = sc.clone();
                variant.load.key_port = port;
                let mode = Mode::Open {
                    rate,
                    arrival: sc.load.arrival,
                };
                let run = self.measure(&variant, ServerKind::Coreline, rep, label, mode, &pool)?;
                result.runs.push(run);
            }
        }
        Ok(())
    }

    /// Closed-loop throughput of coreline with k = 1…n−1 shards on cores
    /// 0…k−1, the generator pinned to core n−1 (then back to its usual core).
    fn scaling_scenario(&mut self, sc: &Scenario, result: &mut ScenarioResult) -> Result<()> {
        let cores = machine_cores();
        let generator_core = cores - 1;
        if !core_affinity::set_for_current(core_affinity::CoreId { id: generator_core }) {
            bail!("scaling: cannot pin the generator to core {generator_core}");
        }
        let outcome = (|| -> Result<()> {
            let dir = self.out.join(&sc.name);
            std::fs::create_dir_all(&dir)?;
            for k in 1..cores {
                let point = format!("shards={k}");
                result.points.push((point.clone(), None));
                let config = dir.join(format!("shards-{k}.toml"));
                write_sharded_config(&self.root.join(&sc.coreline_config), k, &config)?;
                let hooks = ConfigHook(config);
                // The server process may use exactly its shards' cores.
                let mut sharded = sc.clone();
                sharded.server_cores = (0..k).collect();
                for rep in 0..sc.repeats {
                    let pool = request_pool(sc, seed_of(rep))?;
                    let mode = Mode::Closed {
                        depth: sc.load.depth,
                    };
                    let run = self.measure_with(
                        &sharded,
                        ServerKind::Coreline,
                        rep,
                        &point,
                        mode,
                        &pool,
                        &hooks,
                    )?;
                    result.runs.push(run);
                }
            }
            Ok(())
        })();
        pin_generator()?;
        outcome
    }

    fn rate_scenario(&mut self, sc: &Scenario, result: &mut ScenarioResult) -> Result<()> {
        let servers = self.servers_of(sc);
        let rates = self.rates(sc, &servers)?;
        for &rate in &rates {
            let point = format!("rate={rate:.0}");
            result.points.push((point.clone(), Some(rate)));
            for rep in 0..sc.repeats {
                let pool = request_pool(sc, seed_of(rep))?;
                for &server in &servers {
                    let mode = Mode::Open {
                        rate,
                        arrival: sc.load.arrival,
                    };
                    let run = self.measure(sc, server, rep, &point, mode, &pool)?;
                    result.runs.push(run);
                }
            }
            if sc.kind == Kind::Sweep {
                for &server in &servers {
                    let p99 = Spread::of(&result.values(&point, server, |s| s.p99_us));
                    let errors: f64 = result
                        .values(&point, server, |s| s.errors as f64)
                        .iter()
                        .sum();
                    if let Some(p99) = p99 {
                        self.sweep.entry(server).or_default().push((
                            rate,
                            p99.median,
                            errors as u64,
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Bisection bracket for `server`: from the sweep if it has a passing
    /// point, else `bracket` × own capacity. Returns (lo, hi, lo_verified).
    fn slo_bracket(&self, sc: &Scenario, server: ServerKind) -> Result<(f64, f64, bool)> {
        let pass = |&(_, p99, errors): &(f64, f64, u64)| p99 <= sc.slo_p99_us && errors == 0;
        if let Some(points) = self.sweep.get(&server)
            && let Some(&(lo, _, _)) = points.iter().rfind(|p| pass(p))
        {
            let hi = points
                .iter()
                .filter(|p| p.0 > lo && !pass(p))
                .map(|p| p.0)
                .fold(f64::INFINITY, f64::min);
            let hi = if hi.is_finite() { hi } else { lo * 1.5 };
            return Ok((lo, hi, true));
        }
        let cap = self.median_capacity(server).with_context(|| {
            format!(
                "slo bracket for {}: no sweep point passed and no capacity was measured",
                server.name()
            )
        })?;
        Ok((sc.bracket[0] * cap, sc.bracket[1] * cap, false))
    }

    fn slo_scenario(&mut self, sc: &Scenario, result: &mut ScenarioResult) -> Result<()> {
        let servers = self.servers_of(sc);
        let mut brackets = BTreeMap::new();
        for &s in &servers {
            brackets.insert(s, self.slo_bracket(sc, s)?);
        }
        for rep in 0..sc.repeats {
            let pool = request_pool(sc, seed_of(rep))?;
            let mut searches: Vec<SloSearch> = servers
                .iter()
                .map(|&server| SloSearch {
                    server,
                    rep,
                    max_rate: brackets[&server].0,
                    verified: brackets[&server].2,
                    probes: Vec::new(),
                })
                .collect();
            let mut his: Vec<f64> = servers.iter().map(|s| brackets[s].1).collect();
            for step in 0..sc.steps {
                for (i, &server) in servers.iter().enumerate() {
                    let search = &mut searches[i];
                    // An unverified lower end is probed itself and halved until
                    // it passes; after that, plain bisection.
                    let rate = if search.verified {
                        ((search.max_rate + his[i]) / 2.0 / 10.0).round() * 10.0
                    } else {
                        (search.max_rate / 10.0).round().max(1.0) * 10.0
                    };
                    let point = format!("slo-step{}", step + 1);
                    let mode = Mode::Open {
                        rate,
                        arrival: sc.load.arrival,
                    };
                    let run = self.measure(sc, server, rep, &point, mode, &pool)?;
                    let s = &run.summary;
                    let passed = s.p99_us <= sc.slo_p99_us
                        && s.errors == 0
                        && s.achieved_rate >= 0.95 * s.offered_rate;
                    search.probes.push((rate, s.p99_us, s.errors, passed));
                    if passed {
                        search.max_rate = rate;
                        search.verified = true;
                    } else {
                        his[i] = rate;
                        if !search.verified {
                            search.max_rate = rate / 2.0;
                        }
                    }
                    result.runs.push(run);
                }
            }
            for s in &searches {
                eprintln!(
                    "  [{}] {:8} rep {}: max rate holding p99 ≤ {} us: {:.0}/s{}",
                    sc.name,
                    s.server.name(),
                    rep + 1,
                    sc.slo_p99_us,
                    s.max_rate,
                    if s.verified {
                        ""
                    } else {
                        " (unverified bracket end)"
                    }
                );
            }
            result.slo.extend(searches);
        }
        Ok(())
    }

    /// coreline variants interleaved (A, B, A, B, … with one seed per
    /// repetition) at one rate, each run after a verified prefill.
    fn checkpoint_scenario(&mut self, sc: &Scenario, result: &mut ScenarioResult) -> Result<()> {
        if !self.servers_of(sc).contains(&ServerKind::Coreline) {
            return Ok(());
        }
        let rate = *sc
            .rates
            .first()
            .context("a checkpoint scenario needs rates = [r]")?;
        for v in &sc.variants {
            result.points.push((v.label.clone(), Some(rate)));
        }
        let dir = self.out.join(&sc.name).join("runs");
        for rep in 0..sc.repeats {
            let pool = request_pool(sc, seed_of(rep))?;
            for v in &sc.variants {
                let hooks = CkptHooks {
                    sc,
                    source: self.root.join(&v.config),
                    dir: dir.clone(),
                    out: &self.out,
                    rep,
                    label: &v.label,
                    attempts: Default::default(),
                };
                let mode = Mode::Open {
                    rate,
                    arrival: sc.load.arrival,
                };
                let run = self.measure_with(
                    sc,
                    ServerKind::Coreline,
                    rep,
                    &v.label,
                    mode,
                    &pool,
                    &hooks,
                )?;
                let a = hooks.attempts.borrow()[run.attempt].clone();
                let during = match (&a.at_start, &a.at_end) {
                    (Some(s), Some(e)) => Some(e.committed.saturating_sub(s.committed)),
                    _ => None,
                };
                if let Some(e) = &a.at_end {
                    eprintln!(
                        "  [{}] {:8} {:>14} rep {}: {} epochs committed during the load, {} failures in all; last epoch {} ({}): {:.1} ms, {} bytes, {} rows",
                        sc.name,
                        "coreline",
                        v.label,
                        rep + 1,
                        during.unwrap_or(0),
                        e.failures,
                        e.last_committed_epoch,
                        e.last_kind.as_deref().unwrap_or("?"),
                        e.last_duration_ms,
                        e.last_bytes,
                        e.last_rows
                    );
                }
                result.checkpoint.push(CkptRecord {
                    variant: v.label.clone(),
                    rep,
                    keys: sc.keys,
                    prefill: a.prefill,
                    forced_epoch: a.forced_epoch,
                    at_start: a.at_start,
                    at_end: a.at_end,
                    epochs_during_load: during,
                    dir_bytes: a.dir_bytes,
                    run_dir: a.run_dir,
                });
                result.runs.push(run);
            }
        }
        Ok(())
    }

    fn crosscheck_scenario(&mut self, sc: &Scenario, result: &mut ScenarioResult) -> Result<()> {
        let servers = self.servers_of(sc);
        result.points.push(("closed".into(), None));
        let dir = self.out.join(&sc.name);
        std::fs::create_dir_all(&dir)?;
        let mut body = Vec::new();
        Template::parse(&sc.load.body_template)?.render(
            &mut crate::schedule::Rng::new(1),
            0,
            &mut body,
        );
        let script = dir.join("post.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"{}\"\nwrk.body = [==[{}]==]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
                sc.load.method,
                String::from_utf8_lossy(&body)
            ),
        )?;
        let have_wrk = std::process::Command::new("wrk").arg("-v").output().is_ok();
        for rep in 0..sc.repeats {
            let pool = request_pool(sc, seed_of(rep))?;
            for &server in &servers {
                let (wrk_rps, wrk_p99_us, wrk_errors) = if have_wrk {
                    let running = self.start(sc, server)?;
                    let port = running.ports[0];
                    let out = crate::crosscheck::wrk(sc, port, &script);
                    running.stop()?;
                    match out {
                        Ok(w) => (Some(w.rps), w.p99_us, w.errors),
                        Err(e) => (None, None, Some(format!("{e:#}"))),
                    }
                } else {
                    (
                        None,
                        None,
                        Some("wrk not installed (apt-get install -y wrk)".into()),
                    )
                };
                let mode = Mode::Closed {
                    depth: sc.load.depth,
                };
                let run = self.measure(sc, server, rep, "closed", mode, &pool)?;
                eprintln!(
                    "  [{}] {:8} rep {}: wrk {} req/s, generator {:.0} req/s",
                    sc.name,
                    server.name(),
                    rep + 1,
                    wrk_rps.map_or("n/a".into(), |r| format!("{r:.0}")),
                    run.summary.achieved_rate
                );
                result.crosscheck.push(CrossRecord {
                    server,
                    rep,
                    wrk_rps,
                    wrk_p99_us,
                    wrk_errors,
                    generator_rps: run.summary.achieved_rate,
                    generator_p99_us: run.summary.service_p99_us,
                    generator_errors: run.summary.errors,
                    generator_idle_pct: run.summary.generator_idle_pct,
                });
                result.runs.push(run);
            }
        }
        Ok(())
    }
}

/// Says so when the server may run on the generator's core (e.g. 2 shards
/// on a 2-core machine): server and generator then share a CPU.
pub fn shared_core_note(sc: &Scenario) -> Option<String> {
    sc.server_cores.contains(&GENERATOR_CORE).then(|| {
        format!(
            "the server runs on cores {:?}, which include the generator's core {GENERATOR_CORE}, on a {}-core machine: server and generator share a CPU, so latencies include that contention",
            sc.server_cores,
            machine_cores()
        )
    })
}

/// Cumulative µs in which some task waited for a CPU (`/proc/pressure/cpu`).
fn cpu_pressure_us() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    let some = text.lines().find(|l| l.starts_with("some"))?;
    some.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Pins this thread (the generator) to [`GENERATOR_CORE`].
pub fn pin_generator() -> Result<()> {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: GENERATOR_CORE }) {
        bail!("cannot pin the generator to core {GENERATOR_CORE}: the suite needs 2 cores");
    }
    Ok(())
}

/// `YYYY-MM-DDTHH-MM-SSZ` (UTC) for report directory names.
pub fn timestamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The workspace root (parent of `latency-tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("latency-tests has a parent directory")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00-00-00Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00-00-00Z");
        assert_eq!(timestamp(1_767_225_599), "2025-12-31T23-59-59Z");
    }
}
