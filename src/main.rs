//! The `coreline` command: `run` serves a pipeline, `check` validates it,
//! `lb` prints a load balancer's configuration for it, `openapi` describes
//! it, `state` exports a checkpoint, `version` and `completions` help the
//! people and shells that run it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use coreline::config::LogFormat;

/// Serve a declared pipeline as per-core HTTP shards.
///
/// A TOML file declares the service (host, ports, shards), its routes, each
/// route's request schema, steps and reply. `coreline run` starts one pinned
/// executor per shard, each listening on base_port + i; put any load balancer
/// in front of those ports.
///
/// Environment overrides: CORELINE_HOST, CORELINE_BASE_PORT and
/// CORELINE_ADMIN_PORT replace [service] host, base_port and admin_port.
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
    /// SIGHUP (or POST /reload on the admin port, with the header
    /// `X-Coreline-Admin: 1`) re-reads CONFIG and swaps the new pipeline in
    /// on every shard between two requests, without closing a connection;
    /// a file that fails `check`, or that changes what needs a restart
    /// (ports, host, shards, cores, [limits], [checkpoint], [fleet], keyed
    /// tables), is refused and the running pipeline keeps serving.
    ///
    /// With [fleet], each key belongs to one instance; a keyed request that
    /// reaches another instance is answered 421 naming the owner, and
    /// checkpoints go to <dir>/instance-<index>.
    ///
    /// With a [checkpoint] table, state is restored from the newest valid
    /// committed epoch before any port opens, an epoch is committed every
    /// interval, and a final one after draining (exit 1 if that fails).
    ///
    /// Prints one line per listener (`listening shard=0 addr=127.0.0.1:8888`,
    /// `listening admin addr=…`), one per route with a curl line for the
    /// first, and `ready service=NAME` once every shard accepts connections.
    /// Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=coreline=debug) or
    /// --log to change the level; an invalid filter exits 2.
    Run {
        /// Path to the service's TOML configuration.
        config: PathBuf,
        /// Log filter (tracing-subscriber EnvFilter syntax), overriding
        /// RUST_LOG. Default: info.
        #[arg(long, value_name = "FILTER")]
        log: Option<String>,
        /// Log line format, overriding [service] log_format. Default: text.
        #[arg(long, value_enum, value_name = "FORMAT")]
        log_format: Option<LogFormatArg>,
        /// Start with empty state when the checkpoint directory holds
        /// committed epochs but none of them verifies (without it, start-up
        /// refuses and names the damaged files). Damaged epochs are renamed
        /// epoch-N.damaged, never deleted.
        #[arg(long)]
        discard_state: bool,
        /// This instance's index in the [fleet] instances list (overrides
        /// the file's `index`; instances started from one file differ only
        /// by it).
        #[arg(long, value_name = "N")]
        instance_index: Option<usize>,
    },
    /// Validate CONFIG and print the plan.
    ///
    /// Prints shards with their cores and ports, routes, request schemas,
    /// each step with its output column and type, and the reply, and the
    /// environment overrides in force. Exits 2 with file:line:column, the
    /// key and what was expected on the first mistake.
    Check {
        /// Path to the service's TOML configuration.
        config: PathBuf,
        /// This instance's index in the [fleet] instances list (overrides
        /// the file's `index`; instances started from one file differ only
        /// by it).
        #[arg(long, value_name = "N")]
        instance_index: Option<usize>,
    },
    /// Print the OpenAPI 3.1 document of CONFIG's routes (JSON).
    ///
    /// The same document is served at GET /openapi.json on the admin port.
    Openapi {
        /// Path to the service's TOML configuration.
        config: PathBuf,
    },
    /// Export the state of CONFIG's checkpoint directory as rows.
    ///
    /// Reads the newest committed epoch (or --epoch N) through the same
    /// recovery code `run` uses (full snapshot plus deltas) and writes one
    /// row per key: JSON lines, CSV or Parquet.
    State {
        /// Path to the service's TOML configuration.
        config: PathBuf,
        /// The committed epoch to read. Default: the newest valid one.
        #[arg(long, value_name = "N")]
        epoch: Option<u64>,
        /// Only this table. Default: every table (jsonl and csv add a
        /// `table` column; parquet needs --table when there are several).
        #[arg(long, value_name = "T")]
        table: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: coreline::export::Format,
        /// Output file. Default: standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// This instance's index in the [fleet] instances list (overrides
        /// the file's `index`; instances started from one file differ only
        /// by it).
        #[arg(long, value_name = "N")]
        instance_index: Option<usize>,
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
        /// Default: the config's [fleet] instances, or one instance at the
        /// config's host and base_port.
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
    /// Print the version, the git commit and the enabled features.
    Version,
    /// Print a shell completion script (e.g. `coreline completions bash >
    /// /etc/bash_completion.d/coreline`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum BalancerArg {
    Nginx,
    Haproxy,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the log subscriber. An invalid filter (from --log or RUST_LOG)
/// is an error: silently logging at another level hides the very lines the
/// operator asked for.
fn init_logs(filter: Option<&str>, format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).map_err(|e| format!("invalid --log filter {f:?}: {e}"))?,
        None => match std::env::var(EnvFilter::DEFAULT_ENV) {
            Ok(f) if !f.is_empty() => {
                EnvFilter::try_new(&f).map_err(|e| format!("invalid RUST_LOG filter {f:?}: {e}"))?
            }
            _ => EnvFilter::new("info"),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    Ok(())
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// The configuration with environment overrides applied, and those applied.
fn load_config(
    path: &Path,
    instance_index: Option<usize>,
    index_required: bool,
) -> Result<
    (
        coreline::config::ServiceConfig,
        Vec<coreline::overrides::Override>,
    ),
    ExitCode,
> {
    let mut config = coreline::config::load(path).map_err(|e| fail(2, e))?;
    let applied = coreline::overrides::apply(&mut config, |v| std::env::var(v).ok())
        .map_err(|e| fail(2, e))?;
    coreline::fleet::settle(&mut config, instance_index, index_required).map_err(|e| fail(2, e))?;
    Ok((config, applied))
}

fn plan(config: coreline::config::ServiceConfig) -> Result<coreline::pipeline::Plan, ExitCode> {
    coreline::pipeline::plan(config).map_err(|e| fail(2, e))
}

fn print_overrides(applied: &[coreline::overrides::Override]) {
    for o in applied {
        println!(
            "override: [service] {} = {} (from {})",
            o.key, o.value, o.var
        );
    }
}

fn version_text() -> String {
    let features = env!("CORELINE_FEATURES");
    format!(
        "coreline {}\ncommit: {}\nprofile: {}\nfeatures: {}\n",
        env!("CARGO_PKG_VERSION"),
        env!("CORELINE_GIT_COMMIT"),
        env!("CORELINE_PROFILE"),
        if features.is_empty() {
            "none"
        } else {
            features
        },
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            config,
            instance_index,
        } => check(&config, instance_index),
        Command::Run {
            config,
            log,
            log_format,
            discard_state,
            instance_index,
        } => run(
            &config,
            log.as_deref(),
            log_format,
            discard_state,
            instance_index,
        ),
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
                Ok(())
            } else {
                load_config(&config, None, false)
                    .and_then(|(c, _)| plan(c))
                    .and_then(|plan| {
                        match lb(plan, balancer, instances, listen, out, script, !no_affinity) {
                            code if code == ExitCode::SUCCESS => Ok(()),
                            code => Err(code),
                        }
                    })
            }
        }
        Command::Openapi { config } => load_config(&config, None, false)
            .and_then(|(c, _)| plan(c))
            .map(|plan| println!("{}", coreline::openapi::document_text(&plan))),
        Command::State {
            config,
            epoch,
            table,
            format,
            out,
            instance_index,
        } => state(
            &config,
            instance_index,
            epoch,
            table.as_deref(),
            format,
            out.as_deref(),
        ),
        Command::Version => {
            print!("{}", version_text());
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "coreline",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
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

fn check(path: &Path, instance_index: Option<usize>) -> Result<(), ExitCode> {
    let (config, applied) = load_config(path, instance_index, false)?;
    let plan = plan(config)?;
    let cores = coreline::runtime::shard_cores(&plan).map_err(|e| fail(2, e))?;
    print!("{}", plan.describe(&cores));
    if let Some(fleet) = &plan.config.fleet {
        let list: Vec<String> = fleet
            .instances
            .iter()
            .map(coreline::fleet::Member::text)
            .collect();
        let me = fleet.index.map_or(
            "index not set (run needs --instance-index N)".to_string(),
            |i| format!("this is instance {i}"),
        );
        println!(
            "fleet: {} instances [{}]; {me}; a key of another instance is answered 421",
            list.len(),
            list.join(", ")
        );
    }
    print_overrides(&applied);
    println!("ok: {} is valid", path.display());
    Ok(())
}

fn run(
    path: &Path,
    log: Option<&str>,
    format: Option<LogFormatArg>,
    discard_state: bool,
    instance_index: Option<usize>,
) -> Result<(), ExitCode> {
    let (config, applied) = load_config(path, instance_index, true)?;
    let format = match format {
        Some(LogFormatArg::Text) => LogFormat::Text,
        Some(LogFormatArg::Json) => LogFormat::Json,
        None => config.service.log_format,
    };
    init_logs(log, format).map_err(|e| fail(2, e))?;
    for o in &applied {
        tracing::info!(var = o.var, key = o.key, value = %o.value, "environment override");
    }
    let mut plan = plan(config)?;
    if let Some(cp) = plan.config.checkpoint.as_mut() {
        cp.discard_state = discard_state;
    }
    coreline::runtime::run_until_signal(plan).map_err(|e| fail(1, e))
}

fn state(
    path: &Path,
    instance_index: Option<usize>,
    epoch: Option<u64>,
    table: Option<&str>,
    format: coreline::export::Format,
    out: Option<&Path>,
) -> Result<(), ExitCode> {
    let (config, _) = load_config(path, instance_index, true)?;
    let plan = plan(config)?;
    let request = coreline::export::Request {
        epoch,
        table,
        format,
    };
    let result = match out {
        Some(file) => std::fs::File::create(file)
            .map_err(|e| coreline::export::ExportError::Io(format!("{}: {e}", file.display())))
            .and_then(|f| coreline::export::export(&plan, &request, std::io::BufWriter::new(f))),
        None => coreline::export::export(&plan, &request, std::io::stdout().lock()),
    };
    match result {
        Ok(summary) => {
            eprintln!("{summary}");
            Ok(())
        }
        Err(e) => Err(fail(e.exit_code(), e)),
    }
}
