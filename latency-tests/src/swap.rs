//! The `model_swap` scenario's side task: while the generator offers its
//! load, a thread `PUT`s model files in turn on coreline's admin port
//! (`PUT /models/<step>`, `X-Coreline-Admin: 1`, body = the file) every
//! `interval_ms`, and checks every answer.
//!
//! Invariants:
//! - every `PUT` is a real swap: the files are sent in turn starting with
//!   the second (the config serves the first), so each one differs from the
//!   model being served; an answer flagged `unchanged` is a failure;
//! - a `PUT` counts as done only when it answered 200 with a non-empty
//!   `version` that is the same every time that file is sent, different
//!   from every other file's, and whose `previous` is the version the
//!   previous `PUT` installed. Anything else is a failure, counted and
//!   reported with the first failure's words.
//!
//! The thread is spawned by the generator's thread, so it inherits its
//! core (1): the server's core pays only for serving and installing, the
//! client side of the swaps runs beside the generator (which shows as
//! generator lag if it ever matters).

use crate::ckpt::http_with_body;
use anyhow::Result;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one run's swaps did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SwapStats {
    /// `PUT`s answered 200 with the expected versions.
    pub swaps: u64,
    /// `PUT`s that failed any check (status, version, previous, I/O).
    pub failures: u64,
    /// The first failure, in words.
    pub first_failure: Option<String>,
    /// Each `PUT`'s wall time (send → answer), milliseconds, in order.
    pub put_ms: Vec<f64>,
    /// The version each file was answered with (`None`: never answered).
    pub versions: Vec<Option<String>>,
}

impl SwapStats {
    fn fail(&mut self, why: String) {
        self.failures += 1;
        if self.first_failure.is_none() {
            self.first_failure = Some(why);
        }
    }

    /// Checks one answer to the `PUT` of file `i` (the previous `PUT` was
    /// of file `prev`) and records it.
    fn record(&mut self, i: usize, prev: usize, status: u16, body: &str, ms: f64) {
        self.put_ms.push(ms);
        if status != 200 {
            return self.fail(format!("PUT of model {i} answered {status}: {body}"));
        }
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        if json["unchanged"] == true {
            return self.fail(format!(
                "PUT of model {i} changed nothing (the step already served it): {body}"
            ));
        }
        let Some(version) = json["version"].as_str().filter(|v| !v.is_empty()) else {
            return self.fail(format!(
                "PUT of model {i} answered 200 without a version: {body}"
            ));
        };
        if let Some(known) = &self.versions[i]
            && known != version
        {
            return self.fail(format!(
                "model {i} was version {known}, now {version}: the same file must keep its version"
            ));
        }
        if let Some(j) = self
            .versions
            .iter()
            .position(|v| v.as_deref() == Some(version))
            && j != i
        {
            return self.fail(format!(
                "models {j} and {i} both answered version {version}: they are not different files"
            ));
        }
        let previous = json["previous"].as_str().unwrap_or_default();
        if previous == version {
            return self.fail(format!(
                "PUT of model {i} replaced version {version} by itself: the files are not different models"
            ));
        }
        match &self.versions[prev] {
            Some(p) if p != previous => {
                return self.fail(format!(
                    "PUT of model {i}: previous is {previous}, expected model {prev}'s {p}"
                ));
            }
            Some(_) => {}
            // The first swap: what it replaced is what the config served.
            None => self.versions[prev] = Some(previous.to_owned()),
        }
        self.versions[i] = Some(version.to_owned());
        self.swaps += 1;
    }
}

/// The running side task; [`Swapper::finish`] stops it and returns its
/// statistics (dropping it stops it too).
pub struct Swapper {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<SwapStats>>,
}

impl Swapper {
    /// Starts `PUT`ting `models` (file contents) in turn, from the second,
    /// to `/models/<step>` on `admin_port`, one every `interval`.
    pub fn start(admin_port: u16, step: &str, models: Vec<Vec<u8>>, interval: Duration) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/models/{step}");
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut stats = SwapStats {
                versions: vec![None; models.len()],
                ..Default::default()
            };
            let mut next = Instant::now();
            let mut prev = 0;
            while !flag.load(Ordering::Relaxed) {
                let i = (prev + 1) % models.len();
                let t = Instant::now();
                // Installing waits for every shard (up to 10 s in coreline).
                let answer = http_with_body(
                    admin_port,
                    "PUT",
                    &path,
                    &models[i],
                    Duration::from_secs(30),
                );
                let ms = t.elapsed().as_secs_f64() * 1e3;
                match answer {
                    Ok((status, body)) => stats.record(i, prev, status, &body, ms),
                    Err(e) => {
                        stats.put_ms.push(ms);
                        stats.fail(format!("PUT of model {i}: {e:#}"));
                    }
                }
                prev = i;
                next += interval;
                let now = Instant::now();
                if next < now {
                    next = now;
                }
                // Sleep in short steps so that `finish` is prompt.
                while !flag.load(Ordering::Relaxed) && Instant::now() < next {
                    std::thread::sleep(
                        next.saturating_duration_since(Instant::now())
                            .min(Duration::from_millis(5)),
                    );
                }
            }
            stats
        });
        Swapper {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the side task after its current `PUT` and returns what it did.
    pub fn finish(mut self) -> Result<SwapStats> {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.handle.take().expect("finish runs once");
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("the model swap thread panicked"))
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(version: &str, previous: &str) -> String {
        format!(r#"{{"step":"s","version":"{version}","previous":"{previous}","shards":1}}"#)
    }

    #[test]
    fn answers_are_checked_against_the_files_sent() {
        let mut s = SwapStats {
            versions: vec![None, None],
            ..Default::default()
        };
        s.record(1, 0, 200, &answer("b", "a"), 1.0);
        s.record(0, 1, 200, &answer("a", "b"), 1.0);
        s.record(1, 0, 200, &answer("b", "a"), 1.0);
        assert_eq!((s.swaps, s.failures), (3, 0), "{:?}", s.first_failure);
        assert_eq!(s.versions, vec![Some("a".into()), Some("b".into())]);
        // A file answered with another version, a wrong previous, a refusal,
        // an unchanged model, no version: each a failure.
        s.record(0, 1, 200, &answer("c", "b"), 1.0);
        assert!(
            s.first_failure
                .as_deref()
                .unwrap()
                .contains("keep its version")
        );
        s.record(0, 1, 200, &answer("a", "x"), 1.0);
        s.record(0, 1, 422, r#"{"error":"no"}"#, 1.0);
        s.record(0, 1, 200, r#"{"version":"a","unchanged":true}"#, 1.0);
        s.record(0, 1, 200, r#"{"step":"s"}"#, 1.0);
        assert_eq!((s.swaps, s.failures, s.put_ms.len()), (3, 5, 8));
        // Two files with one version are not two models.
        let mut s = SwapStats {
            versions: vec![None, None],
            ..Default::default()
        };
        s.record(1, 0, 200, &answer("a", "a"), 1.0);
        assert_eq!(s.failures, 1, "{:?}", s.first_failure);
    }
}
