//! The `coreline` command: `run` serves a pipeline, `check` validates it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Serve a declared pipeline as per-core HTTP shards.
///
/// A TOML file declares the service (host, ports, shards), its routes, each
/// route's request schema, steps and reply. `coreline run` starts one pinned
/// executor per shard, each listening on base_port + i; put any load balancer
/// in front of those ports.
///
/// Exit codes: 0 success, 2 bad configuration or usage, 1 runtime failure.
#[derive(Parser, Debug)]
#[command(name = "coreline", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve CONFIG until SIGINT or SIGTERM, then drain and exit 0.
    ///
    /// With a [checkpoint] table, state is restored from the newest valid
    /// committed epoch before any port opens, an epoch is committed every
    /// interval, and a final one after draining (exit 1 if that fails).
    ///
    /// Prints one line per listener (`listening shard=0 addr=127.0.0.1:8888`,
    /// `listening admin addr=…`) and `ready service=NAME` once every shard
    /// accepts connections. Logs go to stderr; set RUST_LOG (e.g.
    /// RUST_LOG=coreline=debug) or --log to change the level.
    Run {
        /// Path to the service's TOML configuration.
        config: PathBuf,
        /// Log filter (tracing-subscriber EnvFilter syntax), overriding
        /// RUST_LOG. Default: info.
        #[arg(long, value_name = "FILTER")]
        log: Option<String>,
        /// Start with empty state when the checkpoint directory holds
        /// committed epochs but none of them verifies (without it, start-up
        /// refuses and names the damaged files). Damaged epochs are renamed
        /// epoch-N.damaged, never deleted.
        #[arg(long)]
        discard_state: bool,
    },
    /// Validate CONFIG and print the plan.
    ///
    /// Prints shards with their cores and ports, routes, request schemas,
    /// each step with its output column and type, and the reply. Exits 2
    /// with file:line:column, the key and what was expected on the first
    /// mistake.
    Check {
        /// Path to the service's TOML configuration.
        config: PathBuf,
    },
}

fn init_logs(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn load(path: &std::path::Path) -> Result<coreline::pipeline::Plan, ExitCode> {
    let config = coreline::config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    coreline::pipeline::plan(config).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            let plan = match load(&config) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let cores = match coreline::runtime::shard_cores(&plan) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            print!("{}", plan.describe(&cores));
            println!("ok: {} is valid", config.display());
            ExitCode::SUCCESS
        }
        Command::Run {
            config,
            log,
            discard_state,
        } => {
            init_logs(log.as_deref());
            let mut plan = match load(&config) {
                Ok(p) => p,
                Err(code) => return code,
            };
            if let Some(cp) = plan.config.checkpoint.as_mut() {
                cp.discard_state = discard_state;
            }
            match coreline::runtime::run_until_signal(plan) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
