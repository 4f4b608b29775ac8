//! Hot reload: `SIGHUP` or `POST /reload` re-reads the configuration file
//! and swaps the new plan in on every shard, without closing a connection.
//!
//! A [`Reloader`] runs on the thread that asked (the signal loop, or a
//! thread the admin endpoint starts), never on a shard:
//!
//! 1. the file is read, the environment overrides applied, and the result
//!    checked exactly as `coreline check` does; a mistake is refused with the
//!    same `file:line:column` error and the old plan keeps serving;
//! 2. settings a running process cannot change (ports, host, shards, cores,
//!    limits, checkpoint settings, the fleet) are compared with the running
//!    plan and refused by name ([`restart_only_changes`]);
//! 3. keyed tables must match the running ones (same names, kinds, outputs
//!    and key types, in the same order): their state then carries over as
//!    it is, and the checkpoint layout, fixed at start, stays valid. A key
//!    type change is refused with its own message ([`table_changes`]);
//! 4. every shard's routes are built here from the new plan (expressions are
//!    compiled and models loaded by planning, above), then sent to each
//!    shard as one [`ShardCommand::Reload`]; the shard swaps them in between
//!    two requests and answers with the time it stopped serving.
//!
//! A request that is waiting for its owner shard when the swap comes holds
//! the old routes (an `Rc`) and finishes on them; every later request of
//! every connection runs on the new plan. Reloads are serialised.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::command::{PlanSwap, ShardCommand, ShardSender, SwapDone};
use crate::config::ServiceConfig;
use crate::pipeline::{Plan, Router};

/// How long a reload waits for every shard to take the new plan.
pub const SWAP_WAIT: Duration = Duration::from_secs(5);

/// Why a reload was refused; the old plan keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The file does not pass `coreline check` (the rendered error, with
    /// file:line:column).
    #[error("{0}")]
    Config(String),
    /// Settings only a restart can change.
    #[error(
        "these settings cannot change while running; restart to apply them (or put the running values back): {}",
        .0.join("; ")
    )]
    NeedsRestart(Vec<String>),
    /// Keyed tables changed in a way state cannot follow.
    #[error("{}", .0.join("; "))]
    Tables(Vec<String>),
    /// A shard did not take the new plan in time (it may still do so).
    #[error("{0}")]
    Shards(String),
}

impl ReloadError {
    /// The HTTP status `POST /reload` answers with.
    pub fn status(&self) -> u16 {
        match self {
            ReloadError::Shards(_) => 500,
            _ => 400,
        }
    }
}

/// A reload that took effect.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The new plan's generation (1 for the first reload).
    pub generation: u64,
    /// Reading, checking and compiling the new plan, and building the
    /// shards' routes (off every shard).
    pub compile: Duration,
    /// Each shard's pause: the time it stopped serving to swap, by shard.
    pub pauses: Vec<Duration>,
    /// From sending the plans to the last shard's answer.
    pub swap: Duration,
    /// The new plan's route names.
    pub routes: Vec<String>,
}

impl Reloaded {
    /// The JSON `POST /reload` answers with.
    pub fn to_json(&self) -> serde_json::Value {
        let us = |d: &Duration| d.as_secs_f64() * 1e6;
        serde_json::json!({
            "generation": self.generation,
            "routes": self.routes,
            "compile_ms": self.compile.as_secs_f64() * 1e3,
            "swap_ms": self.swap.as_secs_f64() * 1e3,
            "pause_us": self.pauses.iter().map(us).collect::<Vec<_>>(),
            "pause_us_max": self.pauses.iter().map(us).fold(0.0, f64::max),
        })
    }
}

/// Re-reads the configuration and swaps it in on every shard.
pub struct Reloader {
    path: PathBuf,
    shards: Vec<ShardSender>,
    /// The plan being served and its generation; the lock also serialises
    /// reloads. Never touched by a shard.
    current: Mutex<(Arc<Plan>, u64)>,
    /// Live model control, when the admin port serves it: a reload keeps
    /// the live models and never interleaves with a swap.
    models: std::sync::OnceLock<Arc<crate::model_control::ModelControl>>,
}

impl Reloader {
    /// A reloader for a running plan whose shards listen on `shards`. The
    /// file is re-read from the path the plan was loaded from.
    pub fn new(plan: Arc<Plan>, shards: Vec<ShardSender>) -> Reloader {
        Reloader {
            path: plan.config.source.path.clone(),
            shards,
            current: Mutex::new((plan, 0)),
            models: std::sync::OnceLock::new(),
        }
    }

    /// Keeps live-swapped models across reloads (see
    /// [`ModelControl::carry_into`](crate::model_control::ModelControl::carry_into)).
    pub fn attach_models(&self, models: Arc<crate::model_control::ModelControl>) {
        let _ = self.models.set(models);
    }

    /// The plan being served.
    pub fn plan(&self) -> Arc<Plan> {
        self.lock().0.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Arc<Plan>, u64)> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the file (with the environment overrides) and, if it is
    /// valid and only changes what a running process can change, serves it
    /// on every shard.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let mut current = self.lock();
        let started = Instant::now();
        let mut config =
            crate::config::load(&self.path).map_err(|e| ReloadError::Config(e.to_string()))?;
        crate::overrides::apply(&mut config, |v| std::env::var(v).ok())
            .map_err(|e| ReloadError::Config(e.to_string()))?;
        // The running index stands for `--instance-index`, which the file
        // cannot repeat.
        let index = current.0.config.fleet.as_ref().and_then(|f| f.index);
        crate::fleet::settle(&mut config, index, index.is_some())
            .map_err(|e| ReloadError::Config(e.to_string()))?;
        keep_runtime_settings(&current.0.config, &mut config);
        let changes = restart_only_changes(&current.0.config, &config);
        if !changes.is_empty() {
            return Err(ReloadError::NeedsRestart(changes));
        }
        let mut plan =
            crate::pipeline::plan(config).map_err(|e| ReloadError::Config(e.to_string()))?;
        let models = self.models.get();
        let _no_swaps = models.map(|m| m.lock_swaps());
        if let Some(m) = models {
            m.carry_into(&mut plan).map_err(ReloadError::Config)?;
        }
        let tables = table_changes(&current.0, &plan);
        if !tables.is_empty() {
            return Err(ReloadError::Tables(tables));
        }
        let generation = current.1 + 1;
        let route_names: Vec<String> = plan.routes.iter().map(|r| r.name.clone()).collect();
        let routers: Vec<Router> = self
            .shards
            .iter()
            .map(|_| Router::from_plan(&plan))
            .collect();
        let compile = started.elapsed();

        let (done, answers) = crossbeam_channel::unbounded::<SwapDone>();
        let sent_at = Instant::now();
        let mut asked = 0;
        for (tx, router) in self.shards.iter().zip(routers) {
            let swap = PlanSwap {
                generation,
                router,
                route_names: route_names.clone(),
                done: done.clone(),
            };
            if tx.send(ShardCommand::Reload(Box::new(swap))).is_ok() {
                asked += 1;
            }
        }
        drop(done);
        let mut pauses = vec![Duration::ZERO; self.shards.len()];
        let deadline = sent_at + SWAP_WAIT;
        let mut answered = 0;
        while answered < asked {
            let left = deadline.saturating_duration_since(Instant::now());
            match answers.recv_timeout(left) {
                Ok(a) => {
                    pauses[a.shard] = a.pause;
                    answered += 1;
                }
                Err(_) => break,
            }
        }
        let swap = sent_at.elapsed();
        // Whatever the shards said, those that answered serve it now.
        *current = (Arc::new(plan), generation);
        if let Some(m) = models {
            m.follow_reload(current.0.clone());
        }
        if answered < self.shards.len() {
            return Err(ReloadError::Shards(format!(
                "only {answered} of {} shards took the new plan within {SWAP_WAIT:?}; the others take it when they next run their housekeeping",
                self.shards.len()
            )));
        }
        Ok(Reloaded {
            generation,
            compile,
            pauses,
            swap,
            routes: route_names,
        })
    }
}

/// Carries the values start-up decided, not the file, into a reloaded
/// configuration: `--discard-state`, and `max_connections` when neither
/// file sets it (start-up may have lowered the default to fit
/// `RLIMIT_NOFILE`).
fn keep_runtime_settings(running: &ServiceConfig, new: &mut ServiceConfig) {
    if let (Some(old), Some(cp)) = (&running.checkpoint, new.checkpoint.as_mut()) {
        cp.discard_state = old.discard_state;
    }
    if !running.max_connections_set && !new.max_connections_set {
        new.limits.max_connections = running.limits.max_connections;
    }
}

/// The settings of `new` that differ from the running configuration and
/// that only a restart can change, each as `[table] key (old → new)`.
pub fn restart_only_changes(running: &ServiceConfig, new: &ServiceConfig) -> Vec<String> {
    let mut changes = Vec::new();
    let mut check = |key: &str, old: String, new: String| {
        if old != new {
            changes.push(format!("{key} ({old} → {new})"));
        }
    };
    let (a, b) = (&running.service, &new.service);
    check("[service] name", a.name.clone(), b.name.clone());
    check("[service] host", a.host.to_string(), b.host.to_string());
    check(
        "[service] base_port",
        a.base_port.to_string(),
        b.base_port.to_string(),
    );
    check(
        "[service] shards",
        a.shards.to_string(),
        b.shards.to_string(),
    );
    check(
        "[service] cores",
        format!("{:?}", a.cores),
        format!("{:?}", b.cores),
    );
    check(
        "[service] admin_port",
        format!("{:?}", a.admin_port),
        format!("{:?}", b.admin_port),
    );
    check(
        "[service] admin_host",
        a.admin_host.to_string(),
        b.admin_host.to_string(),
    );
    check(
        "[service] spin_before_park",
        format!("{:?}", a.spin_before_park),
        format!("{:?}", b.spin_before_park),
    );
    check(
        "[service] lame_duck",
        format!("{:?}", a.lame_duck),
        format!("{:?}", b.lame_duck),
    );
    check(
        "[service] log_format",
        format!("{:?}", a.log_format),
        format!("{:?}", b.log_format),
    );
    check(
        "[service] access_log",
        format!("{:?}", a.access_log),
        format!("{:?}", b.access_log),
    );
    let (a, b) = (&running.limits, &new.limits);
    let limits: [(&str, String, String); 8] = [
        (
            "max_header_bytes",
            a.max_header_bytes.to_string(),
            b.max_header_bytes.to_string(),
        ),
        (
            "max_body_bytes",
            a.max_body_bytes.to_string(),
            b.max_body_bytes.to_string(),
        ),
        (
            "max_headers",
            a.max_headers.to_string(),
            b.max_headers.to_string(),
        ),
        (
            "header_timeout",
            format!("{:?}", a.header_timeout),
            format!("{:?}", b.header_timeout),
        ),
        (
            "body_timeout",
            format!("{:?}", a.body_timeout),
            format!("{:?}", b.body_timeout),
        ),
        (
            "idle_timeout",
            format!("{:?}", a.idle_timeout),
            format!("{:?}", b.idle_timeout),
        ),
        (
            "max_connections",
            a.max_connections.to_string(),
            b.max_connections.to_string(),
        ),
        (
            "drain_timeout",
            format!("{:?}", a.drain_timeout),
            format!("{:?}", b.drain_timeout),
        ),
    ];
    for (key, old, new) in limits {
        check(&format!("[limits] {key}"), old, new);
    }
    let fleet = |c: &ServiceConfig| match &c.fleet {
        None => ("none".to_string(), "none".to_string()),
        Some(f) => (
            format!(
                "[{}]",
                f.instances
                    .iter()
                    .map(crate::fleet::Member::text)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("{:?}", f.index),
        ),
    };
    let ((old_list, old_index), (new_list, new_index)) = (fleet(running), fleet(new));
    check("[fleet] instances", old_list, new_list);
    check("[fleet] index", old_index, new_index);
    match (&running.checkpoint, &new.checkpoint) {
        (None, None) => {}
        (Some(_), None) => changes.push("[checkpoint] (removed)".to_string()),
        (None, Some(_)) => changes.push("[checkpoint] (added)".to_string()),
        (Some(a), Some(b)) => {
            let mut check = |key: &str, old: String, new: String| {
                if old != new {
                    changes.push(format!("[checkpoint] {key} ({old} → {new})"));
                }
            };
            check(
                "dir",
                a.dir.display().to_string(),
                b.dir.display().to_string(),
            );
            check(
                "interval",
                format!("{:?}", a.interval),
                format!("{:?}", b.interval),
            );
            check("retain", a.retain.to_string(), b.retain.to_string());
            check(
                "full_every",
                a.full_every.to_string(),
                b.full_every.to_string(),
            );
        }
    }
    changes
}

/// How the keyed tables of `new` differ from the running ones, one message
/// per table; empty when the state carries over as it is.
pub fn table_changes(running: &Plan, new: &Plan) -> Vec<String> {
    let mut problems = Vec::new();
    let restart = "adding, removing or changing keyed state needs a restart (the shards' state tables and the checkpoint layout are fixed at start)";
    for (i, spec) in new.tables.iter().enumerate() {
        match running.tables.iter().position(|t| t.name == spec.name) {
            None => problems.push(format!("keyed table `{}` is new: {restart}", spec.name)),
            Some(j) => {
                let (old_key, new_key) = (running.table_keys[j], new.table_keys[i]);
                if old_key != new_key {
                    problems.push(format!(
                        "keyed table `{}`: its key type changed from {old_key} to {new_key}; its state holds {old_key} keys, which the new pipeline cannot look up. Keep the key type {old_key}, or give the step a new name and restart",
                        spec.name
                    ));
                } else if running.tables[j] != *spec {
                    problems.push(format!(
                        "keyed table `{}` changed its {} definition: {restart}",
                        spec.name,
                        spec.kind_name()
                    ));
                } else if i != j {
                    problems.push(format!(
                        "keyed table `{}` moved from position {j} to {i} among the keyed steps: {restart}; keep the keyed steps in their order",
                        spec.name
                    ));
                }
            }
        }
    }
    for spec in &running.tables {
        if !new.tables.iter().any(|t| t.name == spec.name) {
            problems.push(format!("keyed table `{}` is gone: {restart}", spec.name));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Source, parse};

    fn plan(text: &str) -> Plan {
        let config = parse(Source::new("t.toml", text)).unwrap();
        crate::pipeline::plan(config).unwrap()
    }

    fn keyed(key_type: &str, outputs: &str) -> String {
        format!(
            r#"
[service]
name = "t"
base_port = 9000
shards = 1

[[route]]
path = "/a"
request = {{ user = "{key_type}", amount = "float64" }}
  [[route.step]]
  aggregate = {{ name = "totals", key = "user", outputs = {{ {outputs} }} }}
"#
        )
    }

    #[test]
    fn same_tables_carry_over() {
        let a = plan(&keyed("utf8", "n = \"count()\""));
        let b = plan(&keyed("utf8", "n = \"count()\""));
        assert!(table_changes(&a, &b).is_empty());
        assert!(restart_only_changes(&a.config, &b.config).is_empty());
    }

    #[test]
    fn a_key_type_change_is_refused_by_name() {
        let a = plan(&keyed("utf8", "n = \"count()\""));
        let b = plan(&keyed("int64", "n = \"count()\""));
        let problems = table_changes(&a, &b);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("`totals`: its key type changed from utf8 to int64"),
            "{problems:?}"
        );
    }

    #[test]
    fn changed_outputs_are_refused() {
        let a = plan(&keyed("utf8", "n = \"count()\""));
        let b = plan(&keyed("utf8", "n = \"count()\", s = \"sum(amount)\""));
        let problems = table_changes(&a, &b);
        assert!(
            problems[0].contains("changed its aggregate definition"),
            "{problems:?}"
        );
    }

    #[test]
    fn restart_only_settings_are_named() {
        let a = plan(&keyed("utf8", "n = \"count()\""));
        let text = keyed("utf8", "n = \"count()\"")
            .replace("base_port = 9000", "base_port = 9100")
            .replace("[[route]]", "[limits]\nmax_body_bytes = 1000\n\n[[route]]");
        let b = plan(&text);
        let changes = restart_only_changes(&a.config, &b.config);
        assert_eq!(
            changes,
            [
                "[service] base_port (9000 → 9100)",
                "[limits] max_body_bytes (1048576 → 1000)"
            ]
        );
    }
}
