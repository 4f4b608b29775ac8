//! The `coreline` command: `run` serves a pipeline, `check` validates it,
//! `lb` prints a load balancer's configuration for it.

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
    /// Print an nginx or haproxy configuration for CONFIG's shard ports.
    ///
    /// Upstreams for every shard port of every instance, health checks
    /// (haproxy: active GET /health; nginx: passive, max_fails), keep-alive
    /// to the shards, passive retry of idempotent requests only, and key
    /// affinity: routes with `key_from` (and read routes, by ?key=) go to
    /// the port that owns the key, computed with coreline's owner hash by a
    /// script (haproxy Lua, nginx njs). Check the result with `haproxy -c
    /// -f FILE` or `nginx -t -c FILE`.
    Lb {
        /// Which balancer.
        #[arg(value_enum)]
        balancer: BalancerArg,
        /// Path to the service's TOML configuration.
        config: PathBuf,
        /// An instance of the service, HOST[:BASE_PORT] (default: the
        /// config's base_port); repeat for a fleet, in a fixed order.
        /// Default: one instance at the config's host and base_port.
        #[arg(long = "instance", value_name = "HOST[:BASE_PORT]")]
        instances: Vec<String>,
        /// Where the balancer listens.
        #[arg(long, value_name = "[HOST:]PORT", default_value = "8000")]
        listen: String,
        /// Write the configuration and the key-affinity script into DIR
        /// (nginx.conf or haproxy.cfg, and coreline_owner.js or .lua) instead
        /// of printing the configuration.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Where the printed configuration loads the key-affinity script
        /// from (default /etc/nginx/coreline_owner.js or
        /// /etc/haproxy/coreline_owner.lua); write it with --print-script.
        #[arg(long, value_name = "PATH", conflicts_with = "out")]
        script: Option<PathBuf>,
        /// Print the key-affinity script instead of the configuration.
        #[arg(long, conflicts_with = "out")]
        print_script: bool,
        /// Balance every route round-robin, without key affinity.
        #[arg(long)]
        no_affinity: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum BalancerArg {
    Nginx,
    Haproxy,
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

fn lb(
    plan: coreline::pipeline::Plan,
    balancer: coreline::lb::Balancer,
    instances: Vec<String>,
    listen: String,
    out: Option<PathBuf>,
    script: Option<PathBuf>,
    affinity: bool,
) -> ExitCode {
    let out = match out.map(|dir| std::fs::create_dir_all(&dir).and_then(|()| dir.canonicalize())) {
        None => None,
        Some(Ok(dir)) => Some(dir),
        Some(Err(e)) => {
            eprintln!("error: --out: {e}");
            return ExitCode::from(1);
        }
    };
    let script_path = match (&out, script) {
        (Some(dir), _) => dir.join(balancer.script_file()),
        (None, Some(path)) => path,
        (None, None) => balancer.default_script_path(),
    };
    let options = coreline::lb::Options {
        balancer,
        instances,
        listen,
        script_path: script_path.clone(),
        affinity,
    };
    let generated = match coreline::lb::generate(&plan, &options) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(dir) = out else {
        print!("{}", generated.config);
        return ExitCode::SUCCESS;
    };
    let config_path = dir.join(balancer.config_file());
    let mut written = vec![(config_path, generated.config.as_str())];
    if generated.needs_script {
        written.push((script_path, balancer.script()));
    }
    for (path, text) in written {
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(1);
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
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
        Command::Lb {
            balancer,
            config,
            instances,
            listen,
            out,
            script,
            print_script,
            no_affinity,
        } => {
            let balancer = match balancer {
                BalancerArg::Nginx => coreline::lb::Balancer::Nginx,
                BalancerArg::Haproxy => coreline::lb::Balancer::Haproxy,
            };
            if print_script {
                print!("{}", balancer.script());
                return ExitCode::SUCCESS;
            }
            let plan = match load(&config) {
                Ok(p) => p,
                Err(code) => return code,
            };
            lb(plan, balancer, instances, listen, out, script, !no_affinity)
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
