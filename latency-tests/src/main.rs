//! `coreline-bench`: coreline's latency suite.
//!
//! - `coreline-bench run …` drives one open- or closed-loop run against any
//!   HTTP/1.1 server and prints its percentiles;
//! - `coreline-bench suite [--quick]` builds coreline and the baselines, runs
//!   every scenario in `latency-tests/scenarios/` with each server pinned to
//!   core 0 and the generator pinned to core 1, and writes a report.
//!
//! Layout: `schedule` (arrival process), `body` (templates, request pool),
//! `framing` (response boundaries), `generator` (the epoll engine), `hgrm`
//! (HdrHistogram text), `stats` (medians, paired ratios), `scenario` (TOML
//! scenario files), `server` (build, start, readiness, stop), `suite` (the
//! interleaved runs), `report` (report.md, summary.json, RESULTS.md), `plot`
//! (SVG), `machine` (what we ran on), `crosscheck` (wrk).

mod body;
mod ckpt;
mod crosscheck;
mod framing;
mod generator;
mod hgrm;
mod machine;
mod plot;
mod report;
mod scenario;
mod schedule;
mod server;
mod soak;
mod stats;
mod suite;
mod swap;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "coreline-bench",
    about = "Open-loop latency suite for coreline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One load run against already running server(s); prints percentiles.
    Run(RunArgs),
    /// Build and start every server, run every scenario, write the report.
    Suite(SuiteArgs),
    /// Bounded soak of coreline: load, hostile clients, checkpoints, kill -9.
    Soak(soak::SoakArgs),
}

/// Options of the whole suite.
#[derive(Args, Debug, Clone)]
struct SuiteArgs {
    /// The ~2-minute version: fewer points and shorter runs (headline points
    /// still repeated 3 times).
    #[arg(long)]
    quick: bool,
    /// Servers to run, comma-separated (default: coreline,axum,actix,floor,fastapi_onnx).
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Only these scenarios (names), comma-separated. Later scenarios need
    /// `capacity` for their rates.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Use this coreline binary instead of building one.
    #[arg(long)]
    coreline_bin: Option<std::path::PathBuf>,
    /// Scenario directory (default: latency-tests/scenarios).
    #[arg(long)]
    scenarios: Option<std::path::PathBuf>,
    /// Do not rewrite latency-tests/RESULTS.md.
    #[arg(long)]
    no_results_md: bool,
    /// Repeat a run when some task waited for a CPU during more than this
    /// percentage of it (Linux PSI): other processes disturbed it.
    #[arg(long, default_value_t = 10.0)]
    max_stall: f64,
    /// Repeats of a disturbed run (default: 1 with --quick, 2 otherwise).
    #[arg(long)]
    retries: Option<usize>,
}

/// Options of one generator run.
#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Target host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Target ports, comma-separated (connections are spread round-robin).
    #[arg(long, value_delimiter = ',', required = true)]
    ports: Vec<u16>,
    /// Requests per second (open loop). Omit with --closed.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: each connection keeps --depth requests in flight.
    #[arg(long)]
    closed: bool,
    /// Requests in flight per connection in closed-loop mode.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Arrival process for open loop.
    #[arg(long, value_enum, default_value = "poisson")]
    arrival: schedule::Arrival,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds (same load, not recorded).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Max requests in flight per connection in open loop (1 = wait for the response).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Request path.
    #[arg(long, default_value = "/my_api")]
    path: String,
    /// Body template (see `body` docs): {str:A..B}, {int:A..B}, {pick:a|b}, {seq}.
    #[arg(long, default_value = r#"{"foo":"{str:8..32}","bar":{int:0..1000}}"#)]
    body_template: String,
    /// Bodies from a file, one per line (overrides --body-template).
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// Send no body (e.g. with --method GET).
    #[arg(long)]
    no_body: bool,
    /// Distinct pre-generated bodies.
    #[arg(long, default_value_t = 4096)]
    pool: usize,
    /// Route each request to the port its JSON field hashes to.
    #[arg(long)]
    key_field: Option<String>,
    /// Seconds before an outstanding request is a timeout.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
    /// Core to pin the generator to (none: not pinned).
    #[arg(long)]
    core: Option<usize>,
    /// Sleep in epoll_wait between sends instead of busy-polling.
    #[arg(long)]
    no_spin: bool,
    /// Seed for arrivals and bodies.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the corrected latency distribution (.hgrm, microseconds) here.
    #[arg(long)]
    hgrm: Option<std::path::PathBuf>,
}

impl RunArgs {
    fn load_config(&self) -> Result<generator::LoadConfig> {
        let mode = match (self.closed, self.rate) {
            (true, None) => generator::Mode::Closed { depth: self.depth },
            (false, Some(rate)) if rate > 0.0 => generator::Mode::Open {
                rate,
                arrival: self.arrival,
            },
            (true, Some(_)) => bail!("--closed and --rate exclude each other"),
            _ => bail!("give --rate R (> 0) for an open-loop run, or --closed"),
        };
        Ok(generator::LoadConfig {
            host: self.host.clone(),
            ports: self.ports.clone(),
            connections: self.connections,
            mode,
            pipeline: self.pipeline,
            duration: Duration::from_secs_f64(self.duration),
            warmup: Duration::from_secs_f64(self.warmup),
            timeout: Duration::from_secs_f64(self.timeout),
            balance: if self.key_field.is_some() {
                generator::Balance::KeyHash
            } else {
                generator::Balance::RoundRobin
            },
            seed: self.seed,
            spin: !self.no_spin,
        })
    }

    fn request_spec(&self) -> Result<body::RequestSpec> {
        let source = if self.no_body {
            body::BodySource::Empty
        } else if let Some(path) = &self.body_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading body file {}", path.display()))?;
            body::BodySource::Lines(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
        } else {
            body::BodySource::Template(body::Template::parse(&self.body_template)?)
        };
        Ok(body::RequestSpec {
            method: self.method.clone(),
            path: self.path.clone(),
            host: self.host.clone(),
            body: source,
            pool: self.pool,
            key_field: self.key_field.clone(),
            seed: self.seed,
        })
    }
}

/// Pins the current thread to `core`.
/// Raises this process's open-file limit to its hard limit (the servers the
/// suite starts inherit it): 10,000 connections need 10,000 descriptors on
/// each side, more than the usual soft limit of 1,024.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the one struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                eprintln!(
                    "warning: could not raise the open-file limit to {}",
                    lim.rlim_max
                );
            }
        }
    }
}

fn pin(core: usize) -> Result<()> {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        bail!("cannot pin the generator to core {core}");
    }
    Ok(())
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// Human summary of one run.
fn print_stats(s: &generator::RunStats) {
    let h = &s.corrected;
    println!(
        "offered {:.0} req/s, achieved {:.0} req/s over {:.1} s",
        s.offered_rate, s.achieved_rate, s.seconds
    );
    for (name, h) in [
        ("latency (from intended send)", h),
        ("service time (from actual send)", &s.service),
    ] {
        println!(
            "{name:32} p50 {:>9.1} us  p90 {:>9.1}  p99 {:>9.1}  p99.9 {:>9.1}  max {:>10.1}  (n={})",
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.9)),
            us(h.value_at_quantile(0.99)),
            us(h.value_at_quantile(0.999)),
            us(h.max()),
            h.len()
        );
    }
    println!(
        "{:32} {:.0}% of the run",
        "generator idle (waiting for server)", s.idle_pct
    );
    println!(
        "{:32} p99 {:.1} us, max {:.1} us",
        "generator dispatch lag",
        us(s.dispatch_lag.value_at_quantile(0.99)),
        us(s.dispatch_lag.max())
    );
    let c = &s.counts;
    println!(
        "errors {}: non-2xx {}, timeouts {}, unsent {}, connect failures {}, io {}, framing {}; statuses {:?}",
        c.errors(),
        c.non_2xx,
        c.timeouts,
        c.unsent,
        c.connect_failures,
        c.io_errors,
        c.frame_errors,
        c.statuses
    );
}

/// The command line as a user would retype it.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("CARGO").is_some() {
        let release = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        format!("cargo run{release} -p latency-tests -- {}", args.join(" "))
    } else {
        format!("coreline-bench {}", args.join(" "))
    }
}

fn run_suite(args: &SuiteArgs) -> Result<()> {
    use scenario::ServerKind;
    let workspace = suite::workspace_root();
    let root = workspace.join("latency-tests");
    let scenario_dir = args
        .scenarios
        .clone()
        .unwrap_or_else(|| root.join("scenarios"));
    let mut scenarios = scenario::load_dir(&scenario_dir, args.quick)?;
    if !args.only.is_empty() {
        for name in &args.only {
            if !scenarios.iter().any(|s| &s.name == name) {
                bail!(
                    "--only {name}: no such scenario in {}",
                    scenario_dir.display()
                );
            }
        }
        scenarios.retain(|s| args.only.contains(&s.name));
    }
    let servers: Vec<ServerKind> = if args.servers.is_empty() {
        ServerKind::EVERY.to_vec()
    } else {
        args.servers
            .iter()
            .map(|s| ServerKind::parse(s))
            .collect::<Result<_>>()?
    };
    let bins = server::build(&servers, &workspace, args.coreline_bin.as_deref())?;
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let started = suite::timestamp(unix);
    let out = root.join("reports").join(&started);
    std::fs::create_dir_all(out.join("logs"))
        .with_context(|| format!("creating {}", out.display()))?;
    let mut machine = machine::detect(&workspace);
    suite::pin_generator()?;
    let mut s = suite::Suite {
        root: root.clone(),
        out: out.clone(),
        bins,
        capacity: Default::default(),
        sweep: Default::default(),
        servers: servers.clone(),
        max_stall_pct: args.max_stall,
        retries: args.retries.unwrap_or(if args.quick { 1 } else { 2 }),
    };
    // Fail fast, with the server's own words, if anything cannot start: each
    // server once per distinct setup (coreline: config; baselines: instances).
    for &server in &servers {
        if server == ServerKind::FastapiOnnx && s.bins.fastapi_onnx.is_none() {
            // Its scenarios are skipped (loudly) when they come up.
            continue;
        }
        let mut seen: Vec<(String, Vec<usize>)> = Vec::new();
        for sc in &scenarios {
            let key = if server == ServerKind::Coreline {
                (sc.coreline_config.clone(), sc.server_cores.clone())
            } else {
                (sc.instances.to_string(), sc.server_cores.clone())
            };
            if !sc.servers.contains(&server) || sc.min_cores > suite::machine_cores() {
                continue;
            }
            // Config variants (checkpoint scenario) start from a copy whose
            // checkpoint dir is fresh and under the report, never the repo.
            let mut configs = Vec::new();
            if server == ServerKind::Coreline && !sc.variants.is_empty() {
                for v in &sc.variants {
                    let dir = out
                        .join("preflight")
                        .join(format!("{}-{}", sc.name, v.label));
                    configs.push((
                        (v.config.clone(), sc.server_cores.clone()),
                        Some(ckpt::fresh_config(&root.join(&v.config), &dir)?),
                    ));
                }
            } else {
                configs.push((key, None));
            }
            for (key, fresh) in configs {
                if seen.contains(&key) {
                    continue;
                }
                seen.push(key);
                let config = fresh
                    .as_ref()
                    .map_or_else(|| root.join(&sc.coreline_config), |f| f.path.clone());
                let running = server::start(
                    server,
                    &s.bins,
                    &config,
                    sc.instances,
                    &sc.server_cores,
                    &out.join("logs").join(format!("{}.log", server.name())),
                )
                .with_context(|| {
                    format!(
                        "preflight: starting {} for scenario {}",
                        server.name(),
                        sc.name
                    )
                })?;
                running.stop()?;
            }
        }
    }
    eprintln!(
        "all servers start and answer /health; report → {}",
        out.display()
    );
    let t0 = std::time::Instant::now();
    let results: Vec<suite::ScenarioResult> =
        scenarios.iter().map(|sc| s.run_scenario(sc)).collect();
    machine.loadavg_end = machine::loadavg();
    let results_md = root.join("RESULTS.md");
    let scratch = out.join("RESULTS.md");
    let problems = report::write(
        &out,
        if args.no_results_md {
            &scratch
        } else {
            &results_md
        },
        &machine,
        &results,
        &command_line(),
        &started,
        t0.elapsed().as_secs_f64() / 60.0,
        args.quick,
    )?;
    println!("\nHeadline targets:");
    for t in report::targets(&results) {
        let sep = if t.unit == "×" { "" } else { " " };
        let m = t.measured.map_or("—".to_owned(), |m| {
            format!(
                "{:.2}{sep}{u} ({:.2}–{:.2})",
                m.median,
                m.min,
                m.max,
                u = t.unit
            )
        });
        println!(
            "  {:58} goal {:7} measured {:24} {}",
            t.name, t.goal, m, t.status
        );
    }
    for r in results
        .iter()
        .filter(|r| r.scenario.kind == scenario::Kind::Crosscheck)
    {
        println!(
            "Generator vs wrk (closed loop, {} connections):",
            r.scenario.load.connections
        );
        for c in &r.crosscheck {
            println!(
                "  {:8} rep {}: wrk {:>9} req/s, generator {:>9.0} req/s (generator idle {:.0}% of the run)",
                c.server.name(),
                c.rep + 1,
                c.wrk_rps.map_or("n/a".into(), |w| format!("{w:.0}")),
                c.generator_rps,
                c.generator_idle_pct
            );
        }
    }
    for p in &problems {
        println!("problem: {p}");
    }
    println!("report: {}", out.join("report.md").display());
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.error
                .as_ref()
                .map(|e| format!("{}: {e}", r.scenario.name))
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} scenario(s) failed:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    raise_open_file_limit();
    match cli.command {
        Command::Suite(args) => run_suite(&args)?,
        Command::Soak(args) => {
            if !soak::run(&args, command_line())? {
                bail!("soak: a check failed (see FAILED lines above)");
            }
        }
        Command::Run(args) => {
            let cfg = args.load_config()?;
            let pool =
                body::RequestPool::build(&args.request_spec()?).map_err(anyhow::Error::msg)?;
            println!(
                "{} distinct requests, {} bytes on average (head + body)",
                pool.len(),
                pool.mean_len()
            );
            if let Some(core) = args.core {
                pin(core)?;
            }
            let stats = generator::run(&cfg, &pool)?;
            print_stats(&stats);
            if let Some(path) = &args.hgrm {
                std::fs::write(path, hgrm::render(&stats.corrected, 1000.0, 5))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}
