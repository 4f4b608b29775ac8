//! Building, starting, health-checking and stopping the servers under test.
//!
//! Every server process is restricted to its cores (core 0 unless a scenario
//! says otherwise) before `exec`, so all of its threads, including helper
//! threads, stay there, and dies with the suite
//! (`PR_SET_PDEATHSIG`). A server is ready when every one of its ports answers
//! `GET /health` with 200; one that is not ready in time, or exits, fails the
//! run with the tail of its log.

use crate::scenario::ServerKind;
use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The core servers run on unless a scenario says otherwise.
pub const SERVER_CORE: usize = 0;
/// The core the generator (and wrk) run on.
pub const GENERATOR_CORE: usize = 1;

/// Paths of the built server binaries.
#[derive(Debug, Clone, Default)]
pub struct Binaries {
    /// `coreline`.
    pub coreline: Option<PathBuf>,
    /// `baseline-axum`.
    pub axum: Option<PathBuf>,
    /// `baseline-actix`.
    pub actix: Option<PathBuf>,
    /// `baseline-floor`.
    pub floor: Option<PathBuf>,
    /// `python3`, when it can import what `baselines/fastapi_onnx` needs.
    pub fastapi_onnx: Option<PathBuf>,
}

impl Binaries {
    /// The binary for `kind`, or an error saying it was not built.
    pub fn get(&self, kind: ServerKind) -> Result<&Path> {
        let path = match kind {
            ServerKind::Coreline => &self.coreline,
            ServerKind::Axum => &self.axum,
            ServerKind::Actix => &self.actix,
            ServerKind::Floor => &self.floor,
            ServerKind::FastapiOnnx => &self.fastapi_onnx,
        };
        path.as_deref()
            .with_context(|| format!("no binary for {} (not built)", kind.name()))
    }
}

/// Runs `cargo build` and returns the executables it produced, by name.
fn cargo_build(mut cmd: Command, what: &str) -> Result<Vec<(String, PathBuf)>> {
    eprintln!("building {what} …");
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = cmd
        .output()
        .with_context(|| format!("running cargo to build {what}"))?;
    if !out.status.success() {
        bail!(
            "building {what} failed ({}); see the compiler output above",
            out.status
        );
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && let Some(exe) = msg["executable"].as_str()
        {
            let name = msg["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            exes.push((name, PathBuf::from(exe)));
        }
    }
    Ok(exes)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds what `servers` need, in release mode: coreline at the workspace
/// root (honouring `CARGO_TARGET_DIR`), the baselines in their own workspace
/// with their own target directory.
pub fn build(
    servers: &[ServerKind],
    workspace: &Path,
    coreline_bin: Option<&Path>,
) -> Result<Binaries> {
    let mut bins = Binaries::default();
    if servers.contains(&ServerKind::Coreline) {
        bins.coreline = Some(match coreline_bin {
            Some(p) => p.to_path_buf(),
            None => {
                let mut cmd = cargo();
                cmd.current_dir(workspace)
                    .args(["build", "--release", "--bin", "coreline"]);
                cargo_build(cmd, "coreline (cargo build --release --bin coreline)")?
                    .into_iter()
                    .find(|(n, _)| n == "coreline")
                    .map(|(_, p)| p)
                    .context("cargo built no `coreline` executable")?
            }
        });
    }
    if servers.contains(&ServerKind::FastapiOnnx) {
        match fastapi_onnx_missing() {
            None => bins.fastapi_onnx = Some(PathBuf::from("python3")),
            Some(why) => eprintln!(
                "WARNING: the fastapi_onnx baseline cannot run ({why}); scenarios that need it are SKIPPED. \
                 Install it with: python3 -m pip install -r latency-tests/baselines/fastapi_onnx/requirements.txt"
            ),
        }
    }
    if servers
        .iter()
        .any(|&s| !matches!(s, ServerKind::Coreline | ServerKind::FastapiOnnx))
    {
        let manifest = workspace.join("latency-tests/baselines/Cargo.toml");
        let mut cmd = cargo();
        cmd.current_dir(workspace)
            .env_remove("CARGO_TARGET_DIR")
            .args(["build", "--release", "--manifest-path"])
            .arg(&manifest);
        for (name, path) in cargo_build(cmd, "baselines (latency-tests/baselines)")? {
            match name.as_str() {
                "baseline-axum" => bins.axum = Some(path),
                "baseline-actix" => bins.actix = Some(path),
                "baseline-floor" => bins.floor = Some(path),
                _ => {}
            }
        }
    }
    Ok(bins)
}

/// Why the FastAPI + onnxruntime baseline cannot run here (no python3, or
/// a module it imports is missing), or `None` when it can.
pub fn fastapi_onnx_missing() -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import fastapi, uvicorn, onnxruntime, numpy, pydantic",
        ])
        .output();
    match out {
        Err(e) => Some(format!("python3: {e}")),
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            Some(
                err.lines()
                    .last()
                    .unwrap_or("python3 cannot import fastapi, uvicorn, onnxruntime, numpy")
                    .to_owned(),
            )
        }
    }
}

/// Reads `[service] base_port` and `shards` from a coreline config.
pub fn coreline_ports(config: &Path) -> Result<Vec<u16>> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("reading coreline config {}", config.display()))?;
    let value: toml::Value =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    let service = value
        .get("service")
        .with_context(|| format!("{}: no [service] table", config.display()))?;
    let base = service
        .get("base_port")
        .and_then(|v| v.as_integer())
        .with_context(|| {
            format!(
                "{}: [service] base_port must be an integer",
                config.display()
            )
        })?;
    let shards = service
        .get("shards")
        .and_then(|v| v.as_integer())
        .unwrap_or(1);
    Ok((0..shards).map(|i| (base + i) as u16).collect())
}

/// Ports of baseline `kind`, instance `i`.
pub fn baseline_port(kind: ServerKind, i: usize) -> u16 {
    let base = match kind {
        // Outside the ephemeral range (32768+) and away from common 8xxx/18xxx
        // test ports, so other processes on a shared machine rarely collide.
        ServerKind::Coreline => 28888,
        ServerKind::Axum => 28900,
        ServerKind::Actix => 28910,
        ServerKind::Floor => 28920,
        ServerKind::FastapiOnnx => 28930,
    };
    base + i as u16
}

/// Restricts `cmd`'s process to `cores` and ties its life to ours.
pub fn pin_child(cmd: &mut Command, cores: &[usize]) {
    let cores = cores.to_vec();
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (sched_setaffinity and prctl are plain
    // syscalls); the cpu_set_t lives on the child's stack and `cores` was
    // allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &core in &cores {
                libc::CPU_SET(core, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A running server (one or more processes) and the ports it serves.
pub struct Running {
    /// Which server.
    pub kind: ServerKind,
    /// Ports to load, in shard/instance order.
    pub ports: Vec<u16>,
    children: Vec<Child>,
    log: PathBuf,
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Who listens on `port`, according to `ss -ltnp`.
fn listener_of(port: u16) -> String {
    let out = Command::new("ss")
        .args(["-ltnpH", &format!("sport = :{port}")])
        .output();
    match out {
        Ok(o) if !o.stdout.is_empty() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => "ss could not tell which process".into(),
    }
}

/// True if `GET /health` on `port` answers 200.
pub fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200")
}

/// Starts `kind` (coreline with `coreline_config`, a baseline as `instances`
/// processes, instance `i` on `cores[i % cores.len()]`), restricted to
/// `cores`, and waits until every port is healthy. Output goes to `log`.
pub fn start(
    kind: ServerKind,
    bins: &Binaries,
    coreline_config: &Path,
    instances: usize,
    cores: &[usize],
    log: &Path,
) -> Result<Running> {
    let bin = bins.get(kind)?;
    let logfile = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let mut commands = Vec::new();
    let ports = if kind == ServerKind::Coreline {
        let mut cmd = Command::new(bin);
        cmd.arg("run").arg(coreline_config);
        pin_child(&mut cmd, cores);
        commands.push(cmd);
        coreline_ports(coreline_config)?
    } else {
        (0..instances)
            .map(|i| {
                let port = baseline_port(kind, i);
                let core = cores[i % cores.len()];
                let mut cmd = Command::new(bin);
                if kind == ServerKind::FastapiOnnx {
                    // One uvicorn worker; the model is tests/models/digits_mlp.onnx.
                    cmd.arg(
                        Path::new(env!("CARGO_MANIFEST_DIR"))
                            .join("baselines/fastapi_onnx/server.py"),
                    )
                    .args(["--port", &port.to_string()]);
                } else {
                    cmd.args(["--port", &port.to_string(), "--core", &core.to_string()]);
                }
                pin_child(&mut cmd, &[core]);
                commands.push(cmd);
                port
            })
            .collect()
    };
    for &port in &ports {
        // A previous instance may still be closing; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(3);
        while healthy(port) {
            if Instant::now() > deadline {
                bail!(
                    "port {port} already answers /health before {} started: another server is running there ({})",
                    kind.name(),
                    listener_of(port)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut running = Running {
        kind,
        ports,
        children: Vec::new(),
        log: log.to_path_buf(),
    };
    for mut cmd in commands {
        cmd.stdin(Stdio::null())
            .stdout(logfile.try_clone()?)
            .stderr(logfile.try_clone()?);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", kind.name(), bin.display()))?;
        running.children.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut pending: Vec<u16> = running.ports.clone();
    while !pending.is_empty() {
        for child in &mut running.children {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "{} exited ({status}) before it became ready on ports {:?}; last lines of {}:\n{}",
                    kind.name(),
                    running.ports,
                    log.display(),
                    log_tail(log)
                );
            }
        }
        pending.retain(|&p| !healthy(p));
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not become ready: GET /health on ports {pending:?} did not answer 200 within 15 s; last lines of {}:\n{}",
                kind.name(),
                log.display(),
                log_tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(running)
}

impl Running {
    /// SIGTERM, then SIGKILL after 5 s; waits until the ports are closed.
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        for child in &self.children {
            // SAFETY: plain syscall on a pid we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut forced = false;
        for child in &mut self.children {
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    forced = true;
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.children.clear();
        if forced {
            eprintln!(
                "warning: {} ignored SIGTERM for 5 s and was killed (log {})",
                self.kind.name(),
                self.log.display()
            );
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coreline_ports_follow_base_port_and_shards() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        assert_eq!(
            coreline_ports(&dir.join("hello.toml")).unwrap(),
            vec![28888]
        );
        assert_eq!(
            coreline_ports(&dir.join("hello_2shards.toml")).unwrap(),
            vec![28888, 28889]
        );
    }
}
