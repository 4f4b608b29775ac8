//! Models as control data: `PUT /models/<step>` swaps the model of a
//! `score` step on every shard while requests keep flowing, `GET /models`
//! lists what each step serves, and a restart serves the models of the
//! last committed checkpoint.
//!
//! A swap runs on its own thread, never on a shard: the body is hashed
//! (its version, [`content_version`]), written to the model store (the
//! checkpoint's `models/` directory, see [`crate::checkpoint::models`], or
//! a temporary directory without checkpoints), loaded, checked against the
//! step ([`Score::prepare`]: feature count, every output the step maps,
//! same kinds) and given one runner per shard. Only then is each shard sent
//! an [`ShardCommand::InstallModel`]; its housekeeping task installs it
//! between two requests, so each request is scored wholly by the old model
//! or wholly by the new one, and nothing on the request path locks or
//! shares. A model that fails any check is refused (422, with the reason)
//! and no shard hears of it. Swaps are serialised: two concurrent `PUT`s to
//! the same step install in the same order on every shard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::bounded;

use crate::checkpoint::models::{self, ModelLedger};
use crate::command::{ShardCommand, ShardSender};
use crate::model::Model;
use crate::model::version::{FORMAT_NAMES, Format, content_version};
use crate::operator::Score;
use crate::pipeline::Plan;

/// How long a swap waits for every shard to install the model.
const INSTALL_WAIT: Duration = Duration::from_secs(10);

/// What one step serves, for `GET /models`.
#[derive(Debug, Clone)]
struct Active {
    version: String,
    format: &'static str,
    file: String,
    loaded_unix_ms: u64,
    /// `config`, `checkpoint` or `put`.
    origin: &'static str,
}

/// The admin side of model swaps, shared by the admin thread and the swap
/// threads it starts.
pub struct ModelControl {
    /// The plan being served: replaced by each hot reload
    /// ([`ModelControl::follow_reload`]).
    plan: Mutex<Arc<Plan>>,
    shards: Vec<ShardSender>,
    /// Where swapped-in files are kept (`<checkpoint dir>` or a temporary
    /// directory); files go in its `models/`.
    store: PathBuf,
    /// The checkpoint's ledger, when checkpoints are configured.
    ledger: Option<ModelLedger>,
    active: Mutex<BTreeMap<String, Active>>,
    /// Held for a whole swap: swaps install in one order on every shard.
    swapping: Mutex<()>,
}

/// Models recorded in a checkpoint and installed in a plan before its
/// shards start.
#[derive(Debug, Default)]
pub struct RestoredModels {
    /// Step → file in `models/`, for the ledger.
    pub ledger: BTreeMap<String, String>,
}

/// Installs, in `plan`'s score steps, the models the manifest of committed
/// epoch `epoch` in `dir` records. A recorded step the configuration no
/// longer has is skipped (logged); a recorded model that is missing or no
/// longer fits its step is an error: the service would otherwise serve a
/// model other than the one committed.
pub fn restore(plan: &mut Plan, dir: &Path, epoch: u64) -> Result<RestoredModels, String> {
    let recorded = models::committed(dir, epoch)?;
    let mut restored = RestoredModels::default();
    for (step, file) in recorded {
        let Some(score) = plan.score_step_mut(&step) else {
            tracing::warn!(
                step,
                file,
                epoch,
                "the checkpoint records a model for a score step the configuration does not have; ignored"
            );
            continue;
        };
        let path = models::model_path(dir, &file);
        let model = Model::load(&path)
            .map_err(|e| format!("the model of step \"{step}\" recorded at epoch {epoch}: {e}"))?;
        let version = file.split('.').next().unwrap_or(&file).to_string();
        let swap = score
            .prepare(model, version.clone(), path.display().to_string())
            .map_err(|e| {
                format!(
                    "the model of step \"{step}\" recorded at epoch {epoch} ({}) no longer fits the step: {e}",
                    path.display()
                )
            })?;
        score.install(swap);
        tracing::info!(step, version, epoch, "model restored from the checkpoint");
        restored.ledger.insert(step, file);
    }
    Ok(restored)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ModelControl {
    /// Model control over `plan`'s score steps on `shards`. `checkpoint` is
    /// the checkpoint directory and ledger when checkpoints are configured;
    /// `restored` names the steps whose model came from it.
    pub fn new(
        plan: Arc<Plan>,
        shards: Vec<ShardSender>,
        checkpoint: Option<(PathBuf, ModelLedger)>,
        restored: &RestoredModels,
    ) -> ModelControl {
        let now = unix_ms();
        let active = plan
            .score_steps()
            .map(|s| {
                let origin = if restored.ledger.contains_key(s.name()) {
                    "checkpoint"
                } else {
                    "config"
                };
                let a = Active {
                    version: s.version().to_string(),
                    format: s.format(),
                    file: s.file().to_string(),
                    loaded_unix_ms: now,
                    origin,
                };
                (s.name().to_string(), a)
            })
            .collect();
        let (store, ledger) = match checkpoint {
            Some((dir, ledger)) => (dir, Some(ledger)),
            None => (
                std::env::temp_dir().join(format!("coreline-models-{}", std::process::id())),
                None,
            ),
        };
        ModelControl {
            plan: Mutex::new(plan),
            shards,
            store,
            ledger,
            active: Mutex::new(active),
            swapping: Mutex::new(()),
        }
    }

    fn plan(&self) -> Arc<Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Held by a hot reload from compiling to swapping, so that a model swap
    /// never interleaves with it.
    pub fn lock_swaps(&self) -> std::sync::MutexGuard<'_, ()> {
        self.swapping.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A hot reload's new `plan` keeps the live models: each step whose
    /// active model did not come from the configuration (a `PUT`, or the
    /// checkpoint at start-up) gets that model installed again, so a reload
    /// changes pipelines, not models. A step the new plan no longer has is
    /// dropped from the list; a kept model that no longer fits its step
    /// (its inputs or outputs changed) refuses the reload.
    pub fn carry_into(&self, plan: &mut Plan) -> Result<(), String> {
        let active = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (step, a) in active.iter().filter(|(_, a)| a.origin != "config") {
            let Some(score) = plan.score_step_mut(step) else {
                continue;
            };
            let model = Model::load(Path::new(&a.file))
                .map_err(|e| format!("the live model of step \"{step}\" ({}): {e}", a.file))?;
            let swap = score
                .prepare(model, a.version.clone(), a.file.clone())
                .map_err(|e| {
                    format!(
                        "the live model of step \"{step}\" (version {}) does not fit the reloaded step: {e}; PUT a fitting model first",
                        a.version
                    )
                })?;
            score.install(swap);
        }
        Ok(())
    }

    /// After a hot reload: `plan` is served. Steps it no longer has leave
    /// the list; new steps, and steps whose model came from the
    /// configuration, show the new configuration's model.
    pub fn follow_reload(&self, plan: Arc<Plan>) {
        let now = unix_ms();
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = BTreeMap::new();
        for s in plan.score_steps() {
            let entry = match active.remove(s.name()) {
                Some(a) if a.origin != "config" => a,
                Some(a) if a.version == s.version() => a,
                _ => Active {
                    version: s.version().to_string(),
                    format: s.format(),
                    file: s.file().to_string(),
                    loaded_unix_ms: now,
                    origin: "config",
                },
            };
            next.insert(s.name().to_string(), entry);
        }
        *active = next;
        drop(active);
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = plan;
    }

    /// `GET /models`: each score step's active version, format, file and
    /// when it was loaded.
    pub fn list(&self) -> Vec<u8> {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let models: Vec<serde_json::Value> =
            active.iter().map(|(step, a)| entry_json(step, a)).collect();
        serde_json::json!({ "models": models })
            .to_string()
            .into_bytes()
    }

    /// `PUT /models/<step>`: loads, checks and installs `body` on every
    /// shard. `format` is `?format=`, `content_type` the header, both
    /// optional (the format is sniffed otherwise). Returns status and JSON.
    pub fn put(
        &self,
        step: &str,
        format: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let plan = self.plan();
        let Some(score) = plan.score_steps().find(|s| s.name() == step) else {
            let names: Vec<&str> = plan.score_steps().map(Score::name).collect();
            return error(
                404,
                &format!(
                    "no score step is called \"{step}\"; score steps: {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            );
        };
        if body.is_empty() {
            return error(422, "the body is empty; send the model file as the body");
        }
        let format = match (format, content_type.and_then(Format::from_content_type)) {
            (Some(name), _) => match Format::from_name(name) {
                Some(f) => f,
                None => {
                    return error(
                        422,
                        &format!(
                            "format: unknown model format {name:?}; expected one of {FORMAT_NAMES}"
                        ),
                    );
                }
            },
            (None, Some(f)) => f,
            (None, None) => match Format::sniff(body) {
                Some(f) => f,
                None => {
                    return error(
                        422,
                        &format!(
                            "cannot tell the model format from the body; add ?format= ({FORMAT_NAMES})"
                        ),
                    );
                }
            },
        };
        let version = content_version(body);
        let _serial = self.swapping.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(step)
            .cloned();
        if let Some(prev) = &previous
            && prev.version == version
        {
            let mut v = entry_json(step, prev);
            v["unchanged"] = true.into();
            return (200, v.to_string().into_bytes());
        }
        let file = match models::store(&self.store, &version, format.extension(), body) {
            Ok(f) => f,
            Err(e) => {
                return error(
                    500,
                    &format!("cannot store the model under {}: {e}", self.store.display()),
                );
            }
        };
        let path = models::model_path(&self.store, &file);
        let refused = |status: u16, message: String| {
            self.forget(&file, &path);
            error(status, &message)
        };
        let model = match Model::load(&path) {
            Ok(m) => m,
            Err(e) => return refused(422, format!("the model does not load: {e}")),
        };
        let format_name = model.format();
        let first = match score.prepare(model, version.clone(), path.display().to_string()) {
            Ok(s) => s,
            Err(e) => {
                return refused(
                    422,
                    format!("the model does not fit score step \"{step}\": {e}"),
                );
            }
        };
        let mut swaps = Vec::with_capacity(self.shards.len());
        for _ in 1..self.shards.len() {
            match first.another() {
                Ok(s) => swaps.push(s),
                Err(e) => return refused(422, format!("the model does not run: {e}")),
            }
        }
        swaps.push(first);
        tracing::info!(
            step,
            version,
            format = format_name,
            "model loaded and checked; installing on every shard"
        );
        let (tx, rx) = bounded(self.shards.len().max(1));
        let mut sent = 0;
        for (shard, swap) in self.shards.iter().zip(swaps) {
            if shard
                .send(ShardCommand::InstallModel(Box::new(swap), tx.clone()))
                .is_ok()
            {
                sent += 1;
            }
        }
        let deadline = std::time::Instant::now() + INSTALL_WAIT;
        let mut installed = 0;
        while installed < sent {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((_, true)) => installed += 1,
                Ok((shard, false)) => {
                    tracing::error!(shard, step, "a shard has no score step of that name");
                }
                Err(_) => break,
            }
        }
        let all = installed == self.shards.len();
        if installed > 0 {
            if let Some(ledger) = &self.ledger {
                ledger.record(step, &file);
            }
            let a = Active {
                version: version.clone(),
                format: format_name,
                file: path.display().to_string(),
                loaded_unix_ms: unix_ms(),
                origin: "put",
            };
            let mut body = entry_json(step, &a);
            self.active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(step.to_string(), a);
            body["previous"] = previous.map(|p| p.version).into();
            body["shards"] = installed.into();
            tracing::info!(step, version, installed, "model swapped in");
            if all {
                return (200, body.to_string().into_bytes());
            }
            body["error"] = format!(
                "only {installed} of {} shards installed the model within {INSTALL_WAIT:?}",
                self.shards.len()
            )
            .into();
            return (500, body.to_string().into_bytes());
        }
        refused(
            500,
            format!("no shard installed the model within {INSTALL_WAIT:?}"),
        )
    }

    /// Removes a stored file nothing serves or records.
    fn forget(&self, file: &str, path: &Path) {
        let in_ledger = self
            .ledger
            .as_ref()
            .is_some_and(|l| l.snapshot().0.values().any(|f| f == file));
        let shown = path.display().to_string();
        let active = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|a| a.file == shown);
        if !in_ledger && !active {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn entry_json(step: &str, a: &Active) -> serde_json::Value {
    serde_json::json!({
        "step": step,
        "version": a.version,
        "format": a.format,
        "file": a.file,
        "loaded_at_unix_ms": a.loaded_unix_ms,
        "loaded_at": httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(a.loaded_unix_ms)),
        "origin": a.origin,
    })
}

fn error(status: u16, message: &str) -> (u16, Vec<u8>) {
    let mut body = Vec::new();
    crate::reply::write_error_json(&mut body, message, None);
    (status, body)
}
