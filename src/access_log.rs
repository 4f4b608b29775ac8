//! The access log: one line per answer, written off the request path.
//!
//! A shard never formats or writes a log line itself. When it answers a
//! request that the `[service] access_log` mode selects (`errors`: status
//! 400 and above; `all`: every answer), it fills a fixed-size [`Record`]
//! (method, the first [`PATH_BYTES`] bytes of the path, status, latency,
//! shard, the first [`ID_BYTES`] bytes of the request id) and offers it to
//! its own bounded channel with `try_send`. The channel is a crossbeam
//! array channel whose slots are allocated once, when the shard starts, and
//! a record is `Copy`: sending allocates nothing and never waits. When the
//! channel is full (a flood of errors faster than the logger writes), the
//! record is dropped and counted in the shard's
//! `coreline_access_log_dropped_total`, so a slow log never stalls a shard.
//!
//! One logger thread drains every shard's channel and writes each record as
//! a `tracing` event with target `coreline::access` at INFO level, so the
//! access log follows `--log-format` (a JSON object per line, or text) and
//! the log filter (`RUST_LOG=coreline::access=off` silences it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::http::Method;

/// Bytes of the path kept in a record; a longer path is cut and marked.
pub const PATH_BYTES: usize = 128;
/// Bytes of the request id kept in a record.
pub const ID_BYTES: usize = 64;
/// Records a shard's channel holds before it drops (about 1.6 MB a shard).
pub const CAPACITY: usize = 8192;

/// Which answers the access log records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// None.
    Off,
    /// Answers with a status of 400 or more (the default).
    #[default]
    Errors,
    /// Every answer.
    All,
}

impl Mode {
    /// Parses `off`, `errors` or `all`.
    pub fn parse(name: &str) -> Option<Mode> {
        match name {
            "off" => Some(Mode::Off),
            "errors" => Some(Mode::Errors),
            "all" => Some(Mode::All),
            _ => None,
        }
    }

    /// Whether an answer with `status` is logged.
    #[inline]
    pub fn selects(self, status: u16) -> bool {
        match self {
            Mode::Off => false,
            Mode::Errors => status >= 400,
            Mode::All => true,
        }
    }
}

/// Fixed-size text: the first `N` bytes of a string, cut at a character
/// boundary.
#[derive(Clone, Copy)]
pub struct Text<const N: usize> {
    bytes: [u8; N],
    len: u8,
    cut: bool,
}

impl<const N: usize> Text<N> {
    /// Empty text.
    pub const EMPTY: Text<N> = Text {
        bytes: [0; N],
        len: 0,
        cut: false,
    };

    /// The first `N` bytes of `s` (fewer if `N` falls inside a character).
    #[inline]
    pub fn new(s: &str) -> Text<N> {
        let mut len = s.len().min(N).min(u8::MAX as usize);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut t = Text::EMPTY;
        t.bytes[..len].copy_from_slice(&s.as_bytes()[..len]);
        t.len = len as u8;
        t.cut = len < s.len();
        t
    }

    /// The kept text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)])
            .expect("cut at a character boundary")
    }

    /// Whether the original was longer.
    pub fn is_cut(&self) -> bool {
        self.cut
    }
}

impl<const N: usize> std::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// One answer, as the access log records it. `Copy` and fixed-size: making
/// and sending one allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// The request's method (`Other` for methods coreline does not name).
    pub method: Method,
    /// The path (not the query), cut to [`PATH_BYTES`].
    pub path: Text<PATH_BYTES>,
    /// The status answered.
    pub status: u16,
    /// Request complete in the buffer to response handed to the socket.
    pub latency: Duration,
    /// The shard that answered.
    pub shard: u16,
    /// The request id (`X-Request-Id`), empty if none.
    pub request_id: Text<ID_BYTES>,
}

/// What a record needs from the request, copied when the answer is not
/// known yet (a request waiting for its owner shard).
#[derive(Debug, Clone, Copy)]
pub struct Asker {
    /// The request's method.
    pub method: Method,
    /// Its path, cut to [`PATH_BYTES`].
    pub path: Text<PATH_BYTES>,
    /// Its request id, cut to [`ID_BYTES`]; empty if none.
    pub request_id: Text<ID_BYTES>,
}

/// A shard's end of the access log.
#[derive(Debug, Clone)]
pub struct AccessLog {
    mode: Mode,
    tx: Option<Sender<Record>>,
}

impl AccessLog {
    /// An access log that records nothing.
    pub fn off() -> AccessLog {
        AccessLog {
            mode: Mode::Off,
            tx: None,
        }
    }

    /// Whether an answer with `status` is to be recorded.
    #[inline]
    pub fn selects(&self, status: u16) -> bool {
        self.tx.is_some() && self.mode.selects(status)
    }

    /// The request's part of a record, when the log records anything.
    #[inline]
    pub fn asker(&self, method: Method, path: &str, request_id: &str) -> Option<Asker> {
        self.tx.as_ref()?;
        Some(Asker {
            method,
            path: Text::new(path),
            request_id: Text::new(request_id),
        })
    }

    /// A record for an answer with `status` by `shard` to `asker`, when the
    /// mode selects it; the latency is filled in once the answer is sent.
    #[inline]
    pub fn line(&self, shard: usize, status: u16, asker: Option<Asker>) -> Option<Record> {
        let asker = asker?;
        self.selects(status).then_some(Record {
            method: asker.method,
            path: asker.path,
            status,
            latency: Duration::ZERO,
            shard: u16::try_from(shard).unwrap_or(u16::MAX),
            request_id: asker.request_id,
        })
    }

    /// [`AccessLog::line`] straight from the request: the path is copied
    /// only when the answer is selected.
    #[inline]
    pub fn line_for(
        &self,
        shard: usize,
        status: u16,
        method: Method,
        path: &str,
        request_id: &str,
    ) -> Option<Record> {
        if !self.selects(status) {
            return None;
        }
        self.line(shard, status, self.asker(method, path, request_id))
    }

    /// Offers a record to the logger; `false` when the channel is full and
    /// the record was dropped (the caller counts it). Never blocks and never
    /// allocates.
    #[inline]
    pub fn offer(&self, record: Record) -> bool {
        match &self.tx {
            Some(tx) => match tx.try_send(record) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => false,
                // The logger has stopped (shutdown): nothing to count.
                Err(TrySendError::Disconnected(_)) => true,
            },
            None => true,
        }
    }
}

/// The logger thread and the shards' ends of the log.
pub struct Logger {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Logger {
    /// Starts the logger thread for `shards` shards in `mode`, and returns
    /// it with one [`AccessLog`] per shard. With [`Mode::Off`] no thread
    /// starts and the logs record nothing.
    pub fn start(mode: Mode, shards: usize) -> (Option<Logger>, Vec<AccessLog>) {
        if mode == Mode::Off {
            return (None, vec![AccessLog::off(); shards]);
        }
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| crossbeam_channel::bounded::<Record>(CAPACITY))
            .unzip();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("coreline-access-log".into())
            .spawn(move || drain(&rxs, &s))
            .expect("spawning the access-log thread");
        let logs = txs
            .into_iter()
            .map(|tx| AccessLog { mode, tx: Some(tx) })
            .collect();
        (
            Some(Logger {
                stop,
                thread: Some(thread),
            }),
            logs,
        )
    }

    /// Writes what is left and stops the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn drain(rxs: &[Receiver<Record>], stop: &AtomicBool) {
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut any = false;
        for rx in rxs {
            while let Ok(r) = rx.try_recv() {
                any = true;
                write(&r);
            }
        }
        if stopping {
            return;
        }
        if !any {
            // Lines are written within 20 ms; an idle logger costs nothing.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn write(r: &Record) {
    let method = r.method.as_str().unwrap_or("-");
    let latency_us = r.latency.as_secs_f64() * 1e6;
    let path = match r.path.as_str() {
        // An answer to no request: a timeout, a request too malformed to
        // have a path.
        "" => "-",
        p => p,
    };
    let cut = if r.path.is_cut() { "…" } else { "" };
    let id = r.request_id.as_str();
    // An `Option` field that is `None` is left out of the line.
    tracing::info!(
        target: "coreline::access",
        method,
        path = format_args!("{path}{cut}"),
        status = r.status,
        latency_us,
        shard = r.shard,
        request_id = (!id.is_empty()).then_some(id),
        "answered"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cuts_at_a_character_boundary() {
        let t = Text::<4>::new("/é/x");
        assert_eq!(t.as_str(), "/é/");
        assert!(t.is_cut());
        let t = Text::<8>::new("/a");
        assert_eq!(t.as_str(), "/a");
        assert!(!t.is_cut());
    }

    #[test]
    fn modes_select_statuses() {
        assert!(!Mode::Off.selects(500));
        assert!(Mode::Errors.selects(404));
        assert!(!Mode::Errors.selects(200));
        assert!(Mode::All.selects(200));
        assert_eq!(Mode::parse("errors"), Some(Mode::Errors));
        assert_eq!(Mode::parse("loud"), None);
    }

    #[test]
    fn a_full_channel_drops_instead_of_waiting() {
        let (tx, rx) = crossbeam_channel::bounded(2);
        let log = AccessLog {
            mode: Mode::All,
            tx: Some(tx),
        };
        let r = Record {
            method: Method::Get,
            path: Text::new("/x"),
            status: 500,
            latency: Duration::from_micros(5),
            shard: 0,
            request_id: Text::EMPTY,
        };
        assert!(log.offer(r));
        assert!(log.offer(r));
        assert!(!log.offer(r), "the third record does not fit");
        assert_eq!(rx.try_iter().count(), 2);
    }
}
