//! What the suite ran on: CPU, kernel, cores, load, toolchain and the
//! versions of every server, so a report can be compared with another.

use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// Facts about the machine and software of one suite run.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Whether core 0 and core 1 are SMT siblings (share a physical core).
    pub smt_siblings_0_1: bool,
    /// Running under a hypervisor.
    pub virtualized: bool,
    /// /proc/loadavg when the suite started.
    pub loadavg_start: String,
    /// /proc/loadavg when the suite ended.
    pub loadavg_end: String,
    /// `rustc --version`.
    pub rustc: String,
    /// coreline's version and git revision.
    pub coreline: String,
    /// Versions of axum, actix-web, tokio, hyper from the baselines' lock file.
    pub baselines: Vec<(String, String)>,
    /// `wrk -v`, if installed.
    pub wrk: Option<String>,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn command_line(cmd: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(|l| l.trim().to_owned())
}

/// Current `/proc/loadavg`.
pub fn loadavg() -> String {
    read("/proc/loadavg")
}

/// Collects the facts; `workspace` is the repository root.
pub fn detect(workspace: &Path) -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let siblings = read("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list");
    let smt = siblings.split([',', '-']).any(|c| c.trim() == "1");
    let virtualized = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.contains(" hypervisor"));
    let manifest = read(&workspace.join("Cargo.toml").display().to_string());
    let version = manifest
        .lines()
        .find(|l| l.starts_with("version"))
        .and_then(|l| l.split('"').nth(1))
        .unwrap_or("?")
        .to_owned();
    let rev = command_line("git", &["rev-parse", "--short", "HEAD"], workspace).unwrap_or_default();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(workspace)
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let lock = read(
        &workspace
            .join("latency-tests/baselines/Cargo.lock")
            .display()
            .to_string(),
    );
    let mut baselines = Vec::new();
    if let Ok(value) = lock.parse::<toml::Table>()
        && let Some(packages) = value.get("package").and_then(|p| p.as_array())
    {
        for p in packages {
            let name = p.get("name").and_then(|v| v.as_str()).unwrap_or_default();
            if ["axum", "actix-web", "actix-http", "tokio", "hyper"].contains(&name) {
                let v = p
                    .get("version")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                baselines.push((name.to_owned(), v.to_owned()));
            }
        }
    }
    Machine {
        cpu,
        kernel: read("/proc/sys/kernel/osrelease"),
        cpus,
        smt_siblings_0_1: smt,
        virtualized,
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
        rustc: command_line("rustc", &["--version"], workspace).unwrap_or_else(|| "?".into()),
        coreline: format!("{version} ({rev}{})", if dirty { ", dirty" } else { "" }),
        baselines,
        wrk: command_line("wrk", &["-v"], workspace).filter(|l| l.starts_with("wrk")),
    }
}
