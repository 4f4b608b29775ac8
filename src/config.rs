//! The service configuration: a TOML file parsed and validated into a
//! [`ServiceConfig`].
//!
//! This module owns the file format, its structural validation and the error
//! type every later stage uses to point into the file ([`ConfigError`]). It
//! works in two phases, like ripgrep's `LowArgs`/`HiArgs`: serde structs that
//! mirror the file (`deny_unknown_fields`, every value wrapped in
//! [`toml::Spanned`]) are deserialized first; then they are checked and turned
//! into the plain structs below, which keep a byte [`Span`] for every string a
//! later stage checks (expressions, column names, state names). Invariants of
//! a [`ServiceConfig`]: at least one route, no two routes with the same method
//! and path, no two keyed states (`aggregate`/`changed`) with the same name,
//! every `read` names one of them, every port fits in a `u16` and no port is
//! used twice, `shards` is resolved to a number.
//!
//! Expressions, column names and aggregate specs are *not* checked here: the
//! pipeline compiler does that and reports through [`ConfigError::at`] with
//! the spans kept here and the keys built by [`route_key`] / [`step_key`].
//!
//! # Format
//!
//! ```toml
//! [service]
//! name = "hello"            # required, non-empty
//! host = "127.0.0.1"        # default 127.0.0.1; an IP address
//! base_port = 8888          # required; shard i listens on base_port + i; 0 = OS-assigned ports
//! shards = 2                # integer >= 1, or "auto" (default): one per available core
//! cores = [0, 1]            # optional core ids to pin shards to; as many as shards
//!                           # (with shards = "auto", one shard per listed core)
//! admin_port = 8880         # optional; no admin endpoint if absent; 0 = OS-assigned
//! spin_before_park = "50us" # optional; an idle shard busy-polls this long before sleeping (default 0)
//! log_format = "text"       # "text" (default) or "json"; `run --log-format` overrides it
//! access_log = "errors"     # "off", "errors" (default: answers >= 400) or "all"
//!
//! [limits]                  # optional; every key optional, defaults shown
//! max_header_bytes = 16384  # request head; larger -> 431
//! max_body_bytes = 1048576  # larger -> 413
//! max_headers = 64          # 1..=64
//! header_timeout = "10s"    # durations: "50us", "250ms", "10s", "2m", "1h", or an integer of seconds
//! body_timeout = "30s"
//! idle_timeout = "60s"      # keep-alive idle time
//! max_connections = 10000   # per shard
//! drain_timeout = "10s"     # on shutdown; may be "0s"
//!
//! [checkpoint]              # optional: keyed state is snapshotted every interval
//! dir = "checkpoints/hello" # required; relative to this file's directory
//! interval = "1s"           # default 1s
//! retain = 3                # committed epochs kept, >= 1 (default 3)
//! full_every = 10           # a full snapshot every N epochs, deltas between (default 10)
//!
//! [[route]]                 # at least one; method + path unique
//! method = "POST"           # GET, POST (default), PUT, PATCH, DELETE
//! path = "/my_api"          # starts with '/'; no '?', '#' or whitespace
//! request = { foo = "utf8", bar = "int64", baz = { type = "float64", nullable = true } }
//!                           # JSON body fields, in order; utf8 | int64 | float64 | bool;
//!                           # required unless the route is GET
//! # read = "user_counts"    # GET only, no steps/reply: answers a keyed state's value
//!
//!   [[route.step]]          # in order; exactly one operator per step:
//!   with_column = { name = "fooLength", expr = "length(foo)" }
//!   [[route.step]]
//!   filter = { expr = "bar >= 0", status = 422, message = "bar must be >= 0" }
//!                           # status 400..=599 (default 400); message default "filtered: <expr>"
//!   [[route.step]]
//!   select = { columns = ["foo", "fooLength"] }
//!   [[route.step]]
//!   aggregate = { name = "user_counts", key = "foo", outputs = { n = "count()", total = "sum(bar)" } }
//!                           # name unique per service; outputs in order
//!   [[route.step]]
//!   changed = { name = "foo_changes", key = "foo", value = "bar > 0", output = "flipped" }
//!
//!   [route.reply]           # optional
//!   columns = ["fooLength"] # default: every visible column
//!   status = "code"         # optional: an int64 column giving the HTTP status
//! ```
//!
//! Errors render as `file:line:column: key: message; expected ...`, followed by
//! the offending source line with a caret under the span.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Unexpected, Visitor};
use toml::Spanned as TomlSpanned;

use crate::http::Limits;
use crate::row::{Column, ColumnType};

/// A byte range into the configuration text.
pub type Span = Range<usize>;

/// A value and the byte range of the configuration text it came from.
///
/// For strings the span covers the literal including its quotes; use
/// [`Spanned::subspan`] to point at part of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    fn from_toml(value: TomlSpanned<T>) -> Spanned<T> {
        let span = value.span();
        Spanned {
            value: value.into_inner(),
            span,
        }
    }
}

impl Spanned<String> {
    /// The source span of the bytes `within` of the string's value (say, one
    /// identifier of an expression), when the value is written verbatim in the
    /// source (no escape sequences). Otherwise the span of the whole literal.
    pub fn subspan(&self, source: &Source, within: Range<usize>) -> Span {
        let Some(raw) = source.text.get(self.span.clone()) else {
            return self.span.clone();
        };
        match raw.find(self.value.as_str()) {
            Some(at) if within.start <= within.end && within.end <= self.value.len() => {
                let start = self.span.start + at;
                start + within.start..start + within.end
            }
            _ => self.span.clone(),
        }
    }
}

/// A configuration file: where it came from and its text. Spans index `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The path the text was read from (as given; used in error messages and
    /// to resolve relative paths in the file).
    pub path: PathBuf,
    /// The file's contents.
    pub text: String,
}

impl Source {
    /// A source from a path and its text.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Source {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }

    /// The 1-based line and column (in characters) of a byte offset, and the
    /// text of that line. Offsets past the end point just after the last byte.
    fn locate(&self, offset: usize) -> (usize, usize, &str) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line = self.text[..line_start].matches('\n').count() + 1;
        let column = self.text[line_start..offset].chars().count() + 1;
        let text = self.text[line_start..line_end].trim_end_matches('\r');
        (line, column, text)
    }
}

/// An error in a configuration file: where (file, line, column, dotted key),
/// what was wrong and what was expected.
///
/// Rendered as `path:line:column: key: message; expected ...` and, when the
/// position is known, a second and third line quoting the source line with a
/// caret under the offending span. Boxed: it is built once, at start-up, and
/// keeps `Result<_, ConfigError>` one pointer wide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(Box<Detail>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Detail {
    path: PathBuf,
    line: usize,
    column: usize,
    key: String,
    message: String,
    expected: Option<String>,
    source_line: Option<String>,
    width: usize,
}

impl ConfigError {
    /// An error at `span` of `source`, for the value at dotted `key` (see
    /// [`route_key`] and [`step_key`]).
    pub fn at(source: &Source, span: Span, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column, text) = source.locate(span.start);
        let (end_line, end_column, _) = source.locate(span.end);
        let width = if end_line == line && end_column > column {
            end_column - column
        } else {
            // A span running past its line: mark to the end of the line.
            text.chars().count().saturating_sub(column - 1)
        };
        ConfigError(Box::new(Detail {
            path: source.path.clone(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
            expected: None,
            source_line: Some(text.to_owned()),
            width: width.max(1),
        }))
    }

    /// An error about the whole file (it cannot be read, say).
    pub fn file(path: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError(Box::new(Detail {
            path: path.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message: message.into(),
            expected: None,
            source_line: None,
            width: 0,
        }))
    }

    /// Adds what was expected, rendered after the message as `; expected ...`.
    pub fn with_expected(mut self, expected: impl Into<String>) -> ConfigError {
        self.0.expected = Some(expected.into());
        self
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// 1-based line; 0 when the error concerns the whole file.
    pub fn line(&self) -> usize {
        self.0.line
    }

    /// 1-based column, counted in characters; 0 when [`line`](Self::line) is 0.
    pub fn column(&self) -> usize {
        self.0.column
    }

    /// Dotted key of the offending value, like `route[0].step[1].filter.expr`;
    /// empty when there is none.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// What was wrong.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// What was expected instead, if that can be said.
    pub fn expected(&self) -> Option<&str> {
        self.0.expected.as_deref()
    }

    /// The source line holding the error, quoted under the message.
    pub fn source_line(&self) -> Option<&str> {
        self.0.source_line.as_deref()
    }

    /// How many characters of the source line the caret marks.
    pub fn width(&self) -> usize {
        self.0.width
    }

    fn from_toml(source: &Source, error: &toml::de::Error) -> ConfigError {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim_end();
        let key = if span == (0..0) {
            // The document itself (a missing top-level table, say).
            String::new()
        } else if message == "duplicate key" {
            // The spanned tree keeps only the first of the two keys: name
            // the duplicate after the key written just before it.
            let (_, preceding) = key_path_at(&source.text, span.start);
            let parent = preceding.rsplit_once('.').map_or("", |(parent, _)| parent);
            let name = source.text.get(span.clone()).unwrap_or("");
            match (parent.is_empty(), name.is_empty()) {
                (_, true) => preceding,
                (true, false) => name.to_owned(),
                (false, false) => format!("{parent}.{name}"),
            }
        } else {
            key_path_at(&source.text, span.start).0
        };
        // serde's messages read "<what>, expected <what>"; the last one is the
        // real separator (a quoted string value may contain the same words).
        let (message, expected) = match message.rfind(", expected ") {
            Some(at) => (&message[..at], Some(&message[at + ", expected ".len()..])),
            None => (message, None),
        };
        let error = ConfigError::at(source, span, &key, in_toml_terms(message));
        match expected {
            Some(expected) => error.with_expected(in_toml_terms(expected)),
            None => error,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &*self.0;
        write!(f, "{}", d.path.display())?;
        if d.line > 0 {
            write!(f, ":{}:{}", d.line, d.column)?;
        }
        f.write_str(": ")?;
        if !d.key.is_empty() {
            write!(f, "{}: ", d.key)?;
        }
        f.write_str(&d.message)?;
        if let Some(expected) = &d.expected {
            write!(f, "; expected {expected}")?;
        }
        if let (Some(text), true) = (&d.source_line, d.line > 0) {
            let number = d.line.to_string();
            write!(
                f,
                "\n {number} | {text}\n {:width$} | ",
                "",
                width = number.len()
            )?;
            // Keep tabs so the caret lines up under tab-indented text.
            for c in text.chars().take(d.column - 1) {
                f.write_str(if c == '\t' { "\t" } else { " " })?;
            }
            for _ in 0..d.width {
                f.write_str("^")?;
            }
        }
        Ok(())
    }
}

/// The dotted key of a route's value: `route_key(0, "path")` is
/// `route[0].path`; an empty `field` names the route itself.
pub fn route_key(route: usize, field: &str) -> String {
    if field.is_empty() {
        format!("route[{route}]")
    } else {
        format!("route[{route}].{field}")
    }
}

/// The dotted key of a step's value: `step_key(0, 1, "filter.expr")` is
/// `route[0].step[1].filter.expr`; an empty `field` names the step itself.
pub fn step_key(route: usize, step: usize, field: &str) -> String {
    if field.is_empty() {
        format!("route[{route}].step[{step}]")
    } else {
        format!("route[{route}].step[{step}].{field}")
    }
}

/// A validated configuration: what the runtime starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The file it came from; spans below index `source.text`.
    pub source: Source,
    /// The `[service]` table.
    pub service: Service,
    /// The `[limits]` table, defaults filled in.
    pub limits: Limits,
    /// The `[checkpoint]` table, if present.
    pub checkpoint: Option<CheckpointConfig>,
    /// The routes, in file order (at least one).
    pub routes: Vec<RouteConfig>,
}

impl ServiceConfig {
    /// Shorthand for [`ConfigError::at`] on this configuration's source.
    pub fn error(&self, span: Span, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.source, span, key, message)
    }
}

/// The `[service]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Service name (non-empty), used in logs and metrics.
    pub name: String,
    /// Address every shard listens on. Default 127.0.0.1.
    pub host: IpAddr,
    /// Shard `i` listens on `base_port + i`; 0 means every shard gets an
    /// OS-assigned port.
    pub base_port: u16,
    /// Number of shards (at least 1).
    pub shards: usize,
    /// Whether `shards` came from `"auto"` (or was left out).
    pub shards_auto: bool,
    /// Core ids to pin shard `i` to (`cores[i]`); one per shard when present.
    pub cores: Option<Vec<usize>>,
    /// The admin endpoint's port; none means no admin endpoint; 0 means
    /// OS-assigned.
    pub admin_port: Option<u16>,
    /// How long an idle shard busy-polls for new work before it sleeps in
    /// the kernel. Default 0 (sleep at once). A few tens of microseconds
    /// trade CPU for latency on machines where waking a sleeping thread is
    /// slow (virtual machines), at the cost of a busier core.
    pub spin_before_park: Duration,
    /// How `coreline run` writes its logs. Default [`LogFormat::Text`].
    pub log_format: LogFormat,
    /// Which answers the access log records. Default
    /// [`access_log::Mode::Errors`](crate::access_log::Mode::Errors).
    pub access_log: crate::access_log::Mode,
}

/// The format of log lines on stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (colour only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`.
    pub fn parse(name: &str) -> Option<LogFormat> {
        match name {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

impl Service {
    /// The port shard `shard` listens on (0 when ports are OS-assigned).
    pub fn port(&self, shard: usize) -> u16 {
        if self.base_port == 0 {
            0
        } else {
            // Validation guarantees base_port + shards - 1 <= 65535.
            self.base_port + shard as u16
        }
    }
}

/// The `[checkpoint]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Directory of epoch snapshots, resolved against the config file's
    /// directory when relative.
    pub dir: PathBuf,
    /// Epoch length. Default 1 s.
    pub interval: Duration,
    /// Committed epochs kept (at least 1). Default 3.
    pub retain: usize,
    /// A full snapshot every this many epochs, deltas in between (at least
    /// 1; 1 = always full). Default 10.
    pub full_every: usize,
    /// Start with empty state even though the directory holds committed
    /// epochs none of which verifies (`coreline run --discard-state`; never
    /// read from the file).
    pub discard_state: bool,
}

/// The HTTP methods a route may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl Method {
    /// Every method, in the order error messages list them.
    pub const ALL: [Method; 5] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
    ];

    /// The method's name as written on the request line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// The method named exactly `name` (upper case, as on the request line).
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The method it answers.
    pub method: Method,
    /// The exact path it answers.
    pub path: String,
    /// The span of the route's table (its `[[route]]` header).
    pub span: Span,
    /// The span of the `path` value.
    pub path_span: Span,
    /// The request body's fields, in declaration order: field `i` is row
    /// column `i`.
    pub request: Vec<FieldConfig>,
    /// `read = "state"`: the route answers a keyed state's value (GET only;
    /// then `steps` is empty and `reply` is default).
    pub read: Option<Spanned<String>>,
    /// `key_from = "header:X-Key"` or `"query:key"`: where a load balancer
    /// finds the key of the route's first keyed step, to send the request
    /// straight to the key's owner (`coreline lb`). Routes with a keyed step
    /// only; coreline itself still takes the key from the body.
    pub key_from: Option<Spanned<KeyFrom>>,
    /// The steps, in order.
    pub steps: Vec<StepConfig>,
    /// The `[route.reply]` table (default: every visible column, status 200).
    pub reply: ReplyConfig,
}

/// Where a balancer reads a keyed route's key (`[[route]] key_from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFrom {
    /// `"header:NAME"`: the first value of request header `NAME`, verbatim.
    Header(String),
    /// `"query:NAME"`: query parameter `NAME`, percent-decoded (`+` is a
    /// space), as read routes decode `?key=`.
    Query(String),
}

impl KeyFrom {
    /// Parses `header:NAME` / `query:NAME`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<KeyFrom, String> {
        let (kind, name) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} names no source"))?;
        if name.is_empty() {
            return Err(format!("{text:?} has an empty name"));
        }
        let token = |extra: &str| {
            name.chars()
                .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)))
                .map(|c| format!("{text:?}: {c:?} is not allowed in the name"))
        };
        match kind {
            "header" => match token("-_") {
                Some(e) => Err(e),
                None => Ok(KeyFrom::Header(name.to_string())),
            },
            "query" => match token("-_.~") {
                Some(e) => Err(e),
                None => Ok(KeyFrom::Query(name.to_string())),
            },
            other => Err(format!("unknown key source {other:?}")),
        }
    }
}

impl KeyFrom {
    /// The header's or parameter's name.
    pub fn name(&self) -> &str {
        match self {
            KeyFrom::Header(n) | KeyFrom::Query(n) => n,
        }
    }
}

impl fmt::Display for KeyFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyFrom::Header(n) => write!(f, "header:{n}"),
            KeyFrom::Query(n) => write!(f, "query:{n}"),
        }
    }
}

/// One request field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldConfig {
    /// Name, type and nullability.
    pub column: Column,
    /// The span of the field's name in `request`.
    pub span: Span,
}

/// The `[route.reply]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyConfig {
    /// The columns of the reply object, in order (no duplicates); `None`
    /// means every visible column.
    pub columns: Option<Vec<Spanned<String>>>,
    /// An int64 column giving the response status.
    pub status: Option<Spanned<String>>,
}

/// One output of an `aggregate` step: `name = "spec"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateOutput {
    /// The output column's name.
    pub name: Spanned<String>,
    /// The aggregate function as written, e.g. `sum(amount)` (parsed by the
    /// state module).
    pub spec: Spanned<String>,
}

/// One `[[route.step]]`: exactly one operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepConfig {
    /// `with_column = { name, expr }`: adds (or shadows) column `name`.
    WithColumn {
        /// The new column's name (non-empty).
        name: Spanned<String>,
        /// Its expression (non-empty).
        expr: Spanned<String>,
    },
    /// `filter = { expr, status, message }`: answers `status` with `message`
    /// unless `expr` is true.
    Filter {
        /// The predicate (non-empty).
        expr: Spanned<String>,
        /// 400..=599; default 400.
        status: u16,
        /// Default `filtered: <expr>`.
        message: String,
    },
    /// `select = { columns }`: keeps only these columns, in this order.
    Select {
        /// At least one, no duplicates.
        columns: Vec<Spanned<String>>,
    },
    /// `aggregate = { name, key, outputs }`: keyed running aggregates.
    Aggregate {
        /// The state's name, unique among the service's keyed states.
        name: Spanned<String>,
        /// The key column.
        key: Spanned<String>,
        /// The outputs, in order (at least one).
        outputs: Vec<AggregateOutput>,
    },
    /// `changed = { name, key, value, output }`: whether `value` differs from
    /// the key's last one.
    Changed {
        /// The state's name, unique among the service's keyed states.
        name: Spanned<String>,
        /// The key column.
        key: Spanned<String>,
        /// The expression whose changes are tracked.
        value: Spanned<String>,
        /// The output column's name.
        output: Spanned<String>,
    },
}

impl StepConfig {
    /// The operator's key in the file (`with_column`, `filter`, ...), for
    /// [`step_key`].
    pub fn kind(&self) -> &'static str {
        match self {
            StepConfig::WithColumn { .. } => "with_column",
            StepConfig::Filter { .. } => "filter",
            StepConfig::Select { .. } => "select",
            StepConfig::Aggregate { .. } => "aggregate",
            StepConfig::Changed { .. } => "changed",
        }
    }
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<ServiceConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::file(path, format!("cannot read the configuration file: {e}")))?;
    parse(Source::new(path, text))
}

/// Parses and validates a configuration from its text.
pub fn parse(source: Source) -> Result<ServiceConfig, ConfigError> {
    parse_with_cores(source, &available_cores())
}

/// The ids of the cores this process may run on.
fn available_cores() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|c| c.id).collect(),
        _ => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

fn parse_with_cores(source: Source, cores: &[usize]) -> Result<ServiceConfig, ConfigError> {
    let raw: RawConfig =
        toml::from_str(&source.text).map_err(|e| ConfigError::from_toml(&source, &e))?;
    let v = Validator { source: &source };
    let service = v.service(raw.service, cores)?;
    let limits = match raw.limits {
        Some(limits) => v.limits(limits.into_inner())?,
        None => Limits::default(),
    };
    let checkpoint = raw.checkpoint.map(|c| v.checkpoint(c)).transpose()?;
    let routes = v.routes(raw.route)?;
    Ok(ServiceConfig {
        source,
        service,
        limits,
        checkpoint,
        routes,
    })
}

// ---------------------------------------------------------------------------
// Phase one: the file as serde sees it.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    service: TomlSpanned<RawService>,
    limits: Option<TomlSpanned<RawLimits>>,
    checkpoint: Option<TomlSpanned<RawCheckpoint>>,
    #[serde(default)]
    route: Vec<TomlSpanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: TomlSpanned<String>,
    host: Option<TomlSpanned<String>>,
    base_port: TomlSpanned<i64>,
    shards: Option<TomlSpanned<RawShards>>,
    cores: Option<TomlSpanned<Vec<TomlSpanned<i64>>>>,
    admin_port: Option<TomlSpanned<i64>>,
    spin_before_park: Option<TomlSpanned<RawDuration>>,
    log_format: Option<TomlSpanned<String>>,
    access_log: Option<TomlSpanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_header_bytes: Option<TomlSpanned<i64>>,
    max_body_bytes: Option<TomlSpanned<i64>>,
    max_headers: Option<TomlSpanned<i64>>,
    header_timeout: Option<TomlSpanned<RawDuration>>,
    body_timeout: Option<TomlSpanned<RawDuration>>,
    idle_timeout: Option<TomlSpanned<RawDuration>>,
    max_connections: Option<TomlSpanned<i64>>,
    drain_timeout: Option<TomlSpanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpoint {
    dir: TomlSpanned<String>,
    interval: Option<TomlSpanned<RawDuration>>,
    retain: Option<TomlSpanned<i64>>,
    full_every: Option<TomlSpanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: Option<TomlSpanned<String>>,
    path: TomlSpanned<String>,
    request: Option<TomlSpanned<Ordered<RawType>>>,
    read: Option<TomlSpanned<String>>,
    key_from: Option<TomlSpanned<String>>,
    #[serde(default)]
    step: Vec<TomlSpanned<RawStep>>,
    reply: Option<TomlSpanned<RawReply>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    with_column: Option<TomlSpanned<RawWithColumn>>,
    filter: Option<TomlSpanned<RawFilter>>,
    select: Option<TomlSpanned<RawSelect>>,
    aggregate: Option<TomlSpanned<RawAggregate>>,
    changed: Option<TomlSpanned<RawChanged>>,
}

const STEP_KINDS: &str = "with_column, filter, select, aggregate, changed";

/// The one operator of a step, once the step is known to have exactly one.
enum RawOperator {
    WithColumn(RawWithColumn),
    Filter(RawFilter),
    Select(RawSelect),
    Aggregate(RawAggregate),
    Changed(RawChanged),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWithColumn {
    name: TomlSpanned<String>,
    expr: TomlSpanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    expr: TomlSpanned<String>,
    status: Option<TomlSpanned<i64>>,
    message: Option<TomlSpanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelect {
    columns: TomlSpanned<Vec<TomlSpanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAggregate {
    name: TomlSpanned<String>,
    key: TomlSpanned<String>,
    outputs: TomlSpanned<Ordered<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChanged {
    name: TomlSpanned<String>,
    key: TomlSpanned<String>,
    value: TomlSpanned<String>,
    output: TomlSpanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReply {
    columns: Option<TomlSpanned<Vec<TomlSpanned<String>>>>,
    status: Option<TomlSpanned<String>>,
}

/// `shards`: an integer or `"auto"`.
enum RawShards {
    Count(i64),
    Auto,
}

impl<'de> Deserialize<'de> for RawShards {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawShards, D::Error> {
        struct ShardsVisitor;
        impl Visitor<'_> for ShardsVisitor {
            type Value = RawShards;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer >= 1 or \"auto\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawShards, E> {
                Ok(RawShards::Count(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawShards, E> {
                if v == "auto" {
                    Ok(RawShards::Auto)
                } else {
                    Err(E::invalid_value(Unexpected::Str(v), &self))
                }
            }
        }
        deserializer.deserialize_any(ShardsVisitor)
    }
}

const DURATION_EXPECTED: &str = "a duration such as \"50us\", \"250ms\", \"10s\", \"2m\", \"1h\" or an integer number of seconds";

/// A duration: `"50us"`, `"250ms"`, `"10s"`, `"2m"`, `"1h"` or an integer of seconds.
struct RawDuration(Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawDuration, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                u64::try_from(v)
                    .map(|s| RawDuration(Duration::from_secs(s)))
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                parse_duration(v)
                    .map(RawDuration)
                    .ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Parses `"50us"`, `"250ms"`, `"10s"`, `"2m"`, `"1h"` or `"10"` (seconds).
fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = text[..digits].parse().ok()?;
    match &text[digits..] {
        "us" => Some(Duration::from_micros(n)),
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// A request field's type: `"int64"` or `{ type = "int64", nullable = true }`.
enum RawType {
    Name(String),
    Table(RawTypeTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTypeTable {
    #[serde(rename = "type")]
    ty: TomlSpanned<String>,
    #[serde(default)]
    nullable: bool,
}

impl<'de> Deserialize<'de> for RawType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawType, D::Error> {
        struct TypeVisitor;
        impl<'de> Visitor<'de> for TypeVisitor {
            type Value = RawType;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a type (utf8, int64, float64, bool) or a table like { type = \"int64\", nullable = true }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawType, E> {
                Ok(RawType::Name(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawType, A::Error> {
                RawTypeTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawType::Table)
            }
        }
        deserializer.deserialize_any(TypeVisitor)
    }
}

/// A TOML table read in document order (requires toml's `preserve_order`).
struct Ordered<V>(Vec<(TomlSpanned<String>, TomlSpanned<V>)>);

impl<'de, V: DeserializeOwned> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ordered<V>, D::Error> {
        struct OrderedVisitor<V>(PhantomData<V>);
        impl<'de, V: DeserializeOwned> Visitor<'de> for OrderedVisitor<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<TomlSpanned<String>>()? {
                    entries.push((key, map.next_value::<TomlSpanned<V>>()?));
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

/// Rewrites serde's data-model words into TOML's: a map or a `struct RawX`
/// is a table, a sequence an array, `i64` an integer.
fn in_toml_terms(text: &str) -> String {
    match text {
        "i64" | "u64" | "u16" | "usize" => "an integer".to_owned(),
        "a map" => "a table".to_owned(),
        "a sequence" => "an array".to_owned(),
        t if t.starts_with("struct Raw") => "a table".to_owned(),
        t => t
            .strip_suffix(": map")
            .map(|head| format!("{head}: table"))
            .or_else(|| {
                t.strip_suffix(": sequence")
                    .map(|head| format!("{head}: array"))
            })
            .unwrap_or_else(|| t.to_owned()),
    }
}

/// The dotted key path of the innermost key or value whose span holds
/// `offset`, and the path of the last key written at or before `offset`;
/// found by re-reading the document as a spanned tree (only done when
/// reporting a serde error, whose own key path toml keeps private).
fn key_path_at(text: &str, offset: usize) -> (String, String) {
    use toml::de::{DeTable, DeValue};

    struct Best {
        depth: usize,
        len: usize,
        path: String,
    }
    fn holds(span: &Span, offset: usize) -> bool {
        span.contains(&offset) || (span.is_empty() && span.start == offset)
    }
    fn consider(best: &mut Option<Best>, depth: usize, span: &Span, path: &str) {
        let better = match best {
            None => true,
            Some(b) => depth > b.depth || (depth == b.depth && span.len() < b.len),
        };
        if better {
            *best = Some(Best {
                depth,
                len: span.len(),
                path: path.to_owned(),
            });
        }
    }
    struct Found {
        best: Option<Best>,
        preceding: Option<(usize, String)>,
    }
    fn walk_table(t: &DeTable<'_>, prefix: &str, depth: usize, offset: usize, found: &mut Found) {
        for (key, value) in t.iter() {
            let name = key.get_ref();
            let bare = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            let path = match (prefix.is_empty(), bare) {
                (true, true) => name.to_string(),
                (true, false) => format!("{name:?}"),
                (false, true) => format!("{prefix}.{name}"),
                (false, false) => format!("{prefix}.{name:?}"),
            };
            for span in [key.span(), value.span()] {
                if holds(&span, offset) {
                    consider(&mut found.best, depth, &span, &path);
                }
            }
            let start = key.span().start;
            if start <= offset && found.preceding.as_ref().is_none_or(|(s, _)| start >= *s) {
                found.preceding = Some((start, path.clone()));
            }
            walk_value(value.get_ref(), &path, depth + 1, offset, found);
        }
    }
    fn walk_value(v: &DeValue<'_>, path: &str, depth: usize, offset: usize, found: &mut Found) {
        match v {
            DeValue::Table(t) => walk_table(t, path, depth, offset, found),
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    if holds(&item.span(), offset) {
                        consider(&mut found.best, depth, &item.span(), &path);
                    }
                    walk_value(item.get_ref(), &path, depth + 1, offset, found);
                }
            }
            _ => {}
        }
    }

    let (root, _) = DeTable::parse_recoverable(text);
    let mut found = Found {
        best: None,
        preceding: None,
    };
    walk_table(root.get_ref(), "", 0, offset, &mut found);
    (
        found.best.map(|b| b.path).unwrap_or_default(),
        found.preceding.map(|(_, p)| p).unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------
// Phase two: structural validation into the plain structs.

struct Validator<'a> {
    source: &'a Source,
}

type Checked<T> = Result<T, ConfigError>;

impl Validator<'_> {
    fn err(&self, span: Span, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::at(self.source, span, key, message)
    }

    /// A string that must not be empty (after trimming).
    fn non_empty(
        &self,
        value: TomlSpanned<String>,
        key: &str,
        what: &str,
    ) -> Checked<Spanned<String>> {
        if value.get_ref().trim().is_empty() {
            return Err(self
                .err(value.span(), key, format!("{what} is empty"))
                .with_expected(format!("a non-empty {what}")));
        }
        Ok(Spanned::from_toml(value))
    }

    /// An integer in `min..=max`, as a `usize`.
    fn int(&self, value: &TomlSpanned<i64>, key: &str, min: i64, max: i64) -> Checked<usize> {
        let v = *value.get_ref();
        if v < min || v > max {
            let name = key.rsplit('.').next().unwrap_or(key);
            let expected = if max == i64::MAX {
                format!("an integer >= {min}")
            } else {
                format!("an integer in {min}..={max}")
            };
            return Err(self
                .err(value.span(), key, format!("{name} = {v} is out of range"))
                .with_expected(expected));
        }
        // min >= 0 at every call site, so the value fits.
        Ok(v as usize)
    }

    fn port(&self, value: &TomlSpanned<i64>, key: &str) -> Checked<u16> {
        Ok(self.int(value, key, 0, u16::MAX.into())? as u16)
    }

    fn service(&self, raw: TomlSpanned<RawService>, cores: &[usize]) -> Checked<Service> {
        let raw = raw.into_inner();
        let name = self
            .non_empty(raw.name, "service.name", "service name")?
            .value;
        let host = match raw.host {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(host) => host.get_ref().parse().map_err(|_| {
                self.err(
                    host.span(),
                    "service.host",
                    format!("invalid IP address {:?}", host.get_ref()),
                )
                .with_expected("an IP address such as 127.0.0.1, 0.0.0.0 or ::1")
            })?,
        };
        let base_port = self.port(&raw.base_port, "service.base_port")?;

        let pinned = match &raw.cores {
            None => None,
            Some(list) => Some(self.cores(list, cores)?),
        };
        let (shards, shards_auto) = match raw.shards.as_ref().map(|s| (s.get_ref(), s.span())) {
            None | Some((RawShards::Auto, _)) => {
                (pinned.as_ref().map_or(cores.len(), Vec::len), true)
            }
            Some((&RawShards::Count(n), span)) => {
                if n < 1 {
                    return Err(self
                        .err(
                            span,
                            "service.shards",
                            format!("shards = {n} is out of range"),
                        )
                        .with_expected("an integer >= 1 or \"auto\""));
                }
                let available = cores.len();
                if n as u64 > available as u64 {
                    return Err(self.err(
                        span,
                        "service.shards",
                        format!(
                            "shards = {n} but this machine has {available} available cores; use shards = \"auto\" or at most {available}"
                        ),
                    ));
                }
                let n = n as usize;
                if let (Some(list), Some(raw_list)) = (&pinned, &raw.cores)
                    && list.len() != n
                {
                    return Err(self
                        .err(
                            raw_list.span(),
                            "service.cores",
                            format!("{} core ids for {n} shards", list.len()),
                        )
                        .with_expected(format!("one core id per shard ({n})")));
                }
                (n, false)
            }
        };

        if base_port != 0 && usize::from(base_port) + shards - 1 > usize::from(u16::MAX) {
            return Err(self
                .err(
                    raw.base_port.span(),
                    "service.base_port",
                    format!(
                        "shard ports {base_port}..={} go past 65535 ({shards} shards)",
                        usize::from(base_port) + shards - 1
                    ),
                )
                .with_expected(format!(
                    "base_port <= {}",
                    usize::from(u16::MAX) + 1 - shards
                )));
        }
        let admin_port = match &raw.admin_port {
            None => None,
            Some(p) => {
                let port = self.port(p, "service.admin_port")?;
                if port != 0 && base_port != 0 {
                    let last = usize::from(base_port) + shards - 1;
                    if (usize::from(base_port)..=last).contains(&usize::from(port)) {
                        return Err(self
                            .err(
                                p.span(),
                                "service.admin_port",
                                format!(
                                    "admin_port {port} is also the port of shard {} (base_port {base_port} + {})",
                                    port - base_port,
                                    port - base_port
                                ),
                            )
                            .with_expected(format!("a port outside {base_port}..={last}")));
                    }
                }
                Some(port)
            }
        };
        let log_format = match &raw.log_format {
            None => LogFormat::Text,
            Some(f) => LogFormat::parse(f.get_ref()).ok_or_else(|| {
                self.err(
                    f.span(),
                    "service.log_format",
                    format!("unknown log format {:?}", f.get_ref()),
                )
                .with_expected("\"text\" or \"json\"")
            })?,
        };
        let access_log = match &raw.access_log {
            None => crate::access_log::Mode::default(),
            Some(m) => crate::access_log::Mode::parse(m.get_ref()).ok_or_else(|| {
                self.err(
                    m.span(),
                    "service.access_log",
                    format!("unknown access log mode {:?}", m.get_ref()),
                )
                .with_expected("\"off\", \"errors\" or \"all\"")
            })?,
        };
        Ok(Service {
            name,
            host,
            base_port,
            shards,
            shards_auto,
            cores: pinned,
            admin_port,
            spin_before_park: raw
                .spin_before_park
                .map(|d| d.into_inner().0)
                .unwrap_or(Duration::ZERO),
            log_format,
            access_log,
        })
    }

    fn cores(
        &self,
        list: &TomlSpanned<Vec<TomlSpanned<i64>>>,
        available: &[usize],
    ) -> Checked<Vec<usize>> {
        let expected = || {
            let ids: Vec<String> = available.iter().map(usize::to_string).collect();
            format!("one of the available core ids: {}", ids.join(", "))
        };
        if list.get_ref().is_empty() {
            return Err(self
                .err(list.span(), "service.cores", "cores is empty")
                .with_expected("one core id per shard, or no cores key"));
        }
        let mut ids = Vec::with_capacity(list.get_ref().len());
        for (i, id) in list.get_ref().iter().enumerate() {
            let key = format!("service.cores[{i}]");
            let v = *id.get_ref();
            let Some(core) = usize::try_from(v).ok().filter(|c| available.contains(c)) else {
                return Err(self
                    .err(
                        id.span(),
                        &key,
                        format!("core {v} is not available on this machine"),
                    )
                    .with_expected(expected()));
            };
            if let Some(first) = ids.iter().position(|&c| c == core) {
                return Err(self.err(
                    id.span(),
                    &key,
                    format!("core {core} is listed twice (also service.cores[{first}]); two shards on one core would share it"),
                ));
            }
            ids.push(core);
        }
        Ok(ids)
    }

    fn limits(&self, raw: RawLimits) -> Checked<Limits> {
        let mut limits = Limits::default();
        let int = |v: &Option<TomlSpanned<i64>>,
                   name: &str,
                   min: i64,
                   max: i64,
                   slot: &mut usize|
         -> Checked<()> {
            if let Some(v) = v {
                *slot = self.int(v, &format!("limits.{name}"), min, max)?;
            }
            Ok(())
        };
        int(
            &raw.max_header_bytes,
            "max_header_bytes",
            1,
            i64::MAX,
            &mut limits.max_header_bytes,
        )?;
        int(
            &raw.max_body_bytes,
            "max_body_bytes",
            0,
            i64::MAX,
            &mut limits.max_body_bytes,
        )?;
        int(
            &raw.max_headers,
            "max_headers",
            1,
            64,
            &mut limits.max_headers,
        )?;
        int(
            &raw.max_connections,
            "max_connections",
            1,
            i64::MAX,
            &mut limits.max_connections,
        )?;
        let duration = |v: Option<TomlSpanned<RawDuration>>,
                        name: &str,
                        allow_zero: bool,
                        slot: &mut Duration|
         -> Checked<()> {
            if let Some(v) = v {
                let d = v.get_ref().0;
                if d.is_zero() && !allow_zero {
                    return Err(self
                        .err(
                            v.span(),
                            &format!("limits.{name}"),
                            format!("{name} is zero"),
                        )
                        .with_expected("a duration greater than zero"));
                }
                *slot = d;
            }
            Ok(())
        };
        duration(
            raw.header_timeout,
            "header_timeout",
            false,
            &mut limits.header_timeout,
        )?;
        duration(
            raw.body_timeout,
            "body_timeout",
            false,
            &mut limits.body_timeout,
        )?;
        duration(
            raw.idle_timeout,
            "idle_timeout",
            false,
            &mut limits.idle_timeout,
        )?;
        duration(
            raw.drain_timeout,
            "drain_timeout",
            true,
            &mut limits.drain_timeout,
        )?;
        Ok(limits)
    }

    fn checkpoint(&self, raw: TomlSpanned<RawCheckpoint>) -> Checked<CheckpointConfig> {
        let raw = raw.into_inner();
        let dir = self.non_empty(raw.dir, "checkpoint.dir", "checkpoint directory")?;
        let base = self.source.path.parent().unwrap_or(Path::new(""));
        let dir = base.join(&dir.value);
        let interval = match raw.interval {
            None => Duration::from_secs(1),
            Some(v) if v.get_ref().0.is_zero() => {
                return Err(self
                    .err(v.span(), "checkpoint.interval", "interval is zero")
                    .with_expected("a duration greater than zero"));
            }
            Some(v) => v.into_inner().0,
        };
        let retain = match &raw.retain {
            None => 3,
            Some(v) => self.int(v, "checkpoint.retain", 1, i64::MAX)?,
        };
        let full_every = match &raw.full_every {
            None => 10,
            Some(v) => self.int(v, "checkpoint.full_every", 1, i64::MAX)?,
        };
        Ok(CheckpointConfig {
            dir,
            interval,
            retain,
            full_every,
            discard_state: false,
        })
    }

    fn routes(&self, raw: Vec<TomlSpanned<RawRoute>>) -> Checked<Vec<RouteConfig>> {
        if raw.is_empty() {
            let end = self.source.text.len();
            return Err(self
                .err(end..end, "route", "no routes")
                .with_expected("at least one [[route]] table"));
        }
        let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.len());
        // Keyed state names, service-wide: name -> key of its definition.
        let mut states: Vec<(String, String)> = Vec::new();
        for (index, route) in raw.into_iter().enumerate() {
            let route = self.route(index, route, &mut states)?;
            if let Some(first) = routes
                .iter()
                .position(|r| r.method == route.method && r.path == route.path)
            {
                return Err(self.err(
                    route.path_span.clone(),
                    &route_key(index, "path"),
                    format!(
                        "route clashes with route[{first}] ({} {})",
                        route.method, route.path
                    ),
                ));
            }
            routes.push(route);
        }
        for (index, route) in routes.iter().enumerate() {
            if let Some(read) = &route.read
                && !states.iter().any(|(name, _)| *name == read.value)
            {
                let err = self.err(
                    read.span.clone(),
                    &route_key(index, "read"),
                    format!("unknown keyed state {:?}", read.value),
                );
                return Err(if states.is_empty() {
                    err.with_expected(
                        "the name of an aggregate or changed step (this service has none)",
                    )
                } else {
                    let names: Vec<&str> = states.iter().map(|(n, _)| n.as_str()).collect();
                    err.with_expected(format!("one of: {}", names.join(", ")))
                });
            }
        }
        Ok(routes)
    }

    fn route(
        &self,
        index: usize,
        raw: TomlSpanned<RawRoute>,
        states: &mut Vec<(String, String)>,
    ) -> Checked<RouteConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let method = match &raw.method {
            None => Method::Post,
            Some(m) => Method::parse(m.get_ref()).ok_or_else(|| {
                self.err(
                    m.span(),
                    &route_key(index, "method"),
                    format!("unknown method {:?}", m.get_ref()),
                )
                .with_expected("one of: GET, POST, PUT, PATCH, DELETE")
            })?,
        };
        let path_span = raw.path.span();
        let path = raw.path.into_inner();
        let path_key = route_key(index, "path");
        let path_error = |message: String| {
            self.err(path_span.clone(), &path_key, message)
                .with_expected(
                    "a path such as \"/my_api\": starting with '/', without '?', '#' or whitespace",
                )
        };
        if path.is_empty() {
            return Err(path_error("path is empty".into()));
        }
        if !path.starts_with('/') {
            return Err(path_error(format!("path {path:?} does not start with '/'")));
        }
        if let Some(c) = path
            .chars()
            .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
        {
            return Err(path_error(format!("path {path:?} contains {c:?}")));
        }

        let request = match raw.request {
            None if method != Method::Get => {
                return Err(self
                    .err(span, &route_key(index, ""), format!("{method} route has no request"))
                    .with_expected("a request table such as request = { foo = \"utf8\" } (only GET routes may omit it)"));
            }
            None => Vec::new(),
            Some(fields) => self.request(index, fields.into_inner())?,
        };

        let read = raw.read.map(Spanned::from_toml);
        if let Some(read) = &read {
            let key = route_key(index, "read");
            if method != Method::Get {
                return Err(self
                    .err(read.span.clone(), &key, format!("read on a {method} route"))
                    .with_expected("read only on GET routes"));
            }
            if let Some(step) = raw.step.first() {
                return Err(self
                    .err(
                        step.span(),
                        &step_key(index, 0, ""),
                        "a read route cannot have steps",
                    )
                    .with_expected("either read or steps and reply"));
            }
            if let Some(reply) = &raw.reply {
                return Err(self
                    .err(
                        reply.span(),
                        &route_key(index, "reply"),
                        "a read route cannot have a reply table",
                    )
                    .with_expected("either read or steps and reply"));
            }
        }

        let mut steps = Vec::with_capacity(raw.step.len());
        for (i, step) in raw.step.into_iter().enumerate() {
            steps.push(self.step(index, i, step, states)?);
        }
        let reply = match raw.reply {
            None => ReplyConfig::default(),
            Some(reply) => self.reply(index, reply.into_inner())?,
        };
        let key_from = match raw.key_from {
            None => None,
            Some(k) => {
                let span = k.span();
                let at = route_key(index, "key_from");
                let expected = "\"header:NAME\" or \"query:NAME\" (a header or query parameter \
                                that carries the key of the route's keyed step)";
                if read.is_some() {
                    return Err(self
                        .err(span, &at, "a read route takes its key from ?key= already")
                        .with_expected(
                            "key_from only on routes with an aggregate or changed step",
                        ));
                }
                if !steps
                    .iter()
                    .any(|s| matches!(s, StepConfig::Aggregate { .. } | StepConfig::Changed { .. }))
                {
                    return Err(self
                        .err(span, &at, "key_from on a route without a keyed step")
                        .with_expected(
                            "key_from only on routes with an aggregate or changed step",
                        ));
                }
                let value = KeyFrom::parse(k.get_ref())
                    .map_err(|m| self.err(span.clone(), &at, m).with_expected(expected))?;
                Some(Spanned { value, span })
            }
        };
        Ok(RouteConfig {
            method,
            path,
            span,
            path_span,
            request,
            read,
            key_from,
            steps,
            reply,
        })
    }

    fn request(&self, route: usize, raw: Ordered<RawType>) -> Checked<Vec<FieldConfig>> {
        let mut fields = Vec::with_capacity(raw.0.len());
        for (name, ty) in raw.0 {
            let key = route_key(route, &format!("request.{}", name.get_ref()));
            if name.get_ref().is_empty() {
                return Err(self
                    .err(
                        name.span(),
                        &route_key(route, "request"),
                        "empty field name",
                    )
                    .with_expected("a non-empty field name"));
            }
            let ty_span = ty.span();
            let (type_name, type_span, nullable) = match ty.into_inner() {
                RawType::Name(n) => (n, ty_span, false),
                RawType::Table(t) => (t.ty.get_ref().clone(), t.ty.span(), t.nullable),
            };
            let Some(ty) = ColumnType::parse(&type_name) else {
                return Err(self
                    .err(type_span, &key, format!("unknown type {type_name:?}"))
                    .with_expected("one of: utf8, int64, float64, bool"));
            };
            fields.push(FieldConfig {
                column: Column {
                    name: name.get_ref().clone(),
                    ty,
                    nullable,
                },
                span: name.span(),
            });
        }
        Ok(fields)
    }

    fn step(
        &self,
        route: usize,
        index: usize,
        raw: TomlSpanned<RawStep>,
        states: &mut Vec<(String, String)>,
    ) -> Checked<StepConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let mut present: Vec<(&str, Span, RawOperator)> = Vec::with_capacity(1);
        let mut add = |kind, op: Option<(Span, RawOperator)>| {
            if let Some((span, op)) = op {
                present.push((kind, span, op));
            }
        };
        add(
            "with_column",
            raw.with_column
                .map(|o| (o.span(), RawOperator::WithColumn(o.into_inner()))),
        );
        add(
            "filter",
            raw.filter
                .map(|o| (o.span(), RawOperator::Filter(o.into_inner()))),
        );
        add(
            "select",
            raw.select
                .map(|o| (o.span(), RawOperator::Select(o.into_inner()))),
        );
        add(
            "aggregate",
            raw.aggregate
                .map(|o| (o.span(), RawOperator::Aggregate(o.into_inner()))),
        );
        add(
            "changed",
            raw.changed
                .map(|o| (o.span(), RawOperator::Changed(o.into_inner()))),
        );
        if present.len() > 1 {
            let (first, second, second_span) = (present[0].0, present[1].0, present[1].1.clone());
            let mut message = format!("step has both {first} and {second}");
            if present.len() > 2 {
                message.push_str(" (and more)");
            }
            return Err(self
                .err(second_span, &step_key(route, index, second), message)
                .with_expected(format!("exactly one of {STEP_KINDS}")));
        }
        let Some((_, _, operator)) = present.pop() else {
            return Err(self
                .err(span, &step_key(route, index, ""), "step has no operator")
                .with_expected(format!("exactly one of {STEP_KINDS}")));
        };
        let key = |field: &str| step_key(route, index, field);
        let mut unique_state = |name: &Spanned<String>, key: String| -> Checked<()> {
            if let Some((_, first)) = states.iter().find(|(n, _)| *n == name.value) {
                return Err(self
                    .err(
                        name.span.clone(),
                        &key,
                        format!("keyed state {:?} is already defined at {first}", name.value),
                    )
                    .with_expected(
                        "a name unique among the service's aggregate and changed steps",
                    ));
            }
            states.push((name.value.clone(), key));
            Ok(())
        };
        match operator {
            RawOperator::WithColumn(w) => Ok(StepConfig::WithColumn {
                name: self.non_empty(w.name, &key("with_column.name"), "column name")?,
                expr: self.non_empty(w.expr, &key("with_column.expr"), "expression")?,
            }),
            RawOperator::Filter(f) => {
                let expr = self.non_empty(f.expr, &key("filter.expr"), "expression")?;
                let status = match &f.status {
                    None => 400,
                    Some(s) => {
                        let v = *s.get_ref();
                        if !(400..=599).contains(&v) {
                            return Err(self
                                .err(
                                    s.span(),
                                    &key("filter.status"),
                                    format!("status {v} is not an error status"),
                                )
                                .with_expected("an HTTP status in 400..=599"));
                        }
                        v as u16
                    }
                };
                let message = match f.message {
                    Some(m) => m.into_inner(),
                    None => format!("filtered: {}", expr.value),
                };
                Ok(StepConfig::Filter {
                    expr,
                    status,
                    message,
                })
            }
            RawOperator::Select(s) => Ok(StepConfig::Select {
                columns: self.column_list(s.columns, &key("select.columns"), false)?,
            }),
            RawOperator::Aggregate(a) => {
                let name = self.non_empty(a.name, &key("aggregate.name"), "state name")?;
                unique_state(&name, key("aggregate.name"))?;
                let key_column = self.non_empty(a.key, &key("aggregate.key"), "key column")?;
                let outputs_span = a.outputs.span();
                let entries = a.outputs.into_inner().0;
                if entries.is_empty() {
                    return Err(self
                        .err(outputs_span, &key("aggregate.outputs"), "no outputs")
                        .with_expected("at least one output such as n = \"count()\""));
                }
                let mut outputs = Vec::with_capacity(entries.len());
                for (name, spec) in entries {
                    if name.get_ref().is_empty() {
                        return Err(self
                            .err(name.span(), &key("aggregate.outputs"), "empty output name")
                            .with_expected("a non-empty column name"));
                    }
                    let out_key = key(&format!("aggregate.outputs.{}", name.get_ref()));
                    outputs.push(AggregateOutput {
                        name: Spanned::from_toml(name),
                        spec: self.non_empty(spec, &out_key, "aggregate function")?,
                    });
                }
                Ok(StepConfig::Aggregate {
                    name,
                    key: key_column,
                    outputs,
                })
            }
            RawOperator::Changed(c) => {
                let name = self.non_empty(c.name, &key("changed.name"), "state name")?;
                unique_state(&name, key("changed.name"))?;
                Ok(StepConfig::Changed {
                    name,
                    key: self.non_empty(c.key, &key("changed.key"), "key column")?,
                    value: self.non_empty(c.value, &key("changed.value"), "expression")?,
                    output: self.non_empty(c.output, &key("changed.output"), "column name")?,
                })
            }
        }
    }

    /// A list of column names: non-empty names, no duplicates, and (unless
    /// `allow_empty`) at least one.
    fn column_list(
        &self,
        raw: TomlSpanned<Vec<TomlSpanned<String>>>,
        key: &str,
        allow_empty: bool,
    ) -> Checked<Vec<Spanned<String>>> {
        if raw.get_ref().is_empty() && !allow_empty {
            return Err(self
                .err(raw.span(), key, "no columns")
                .with_expected("at least one column name"));
        }
        let mut seen = HashSet::new();
        let mut columns = Vec::with_capacity(raw.get_ref().len());
        for (i, column) in raw.into_inner().into_iter().enumerate() {
            let item_key = format!("{key}[{i}]");
            let column = self.non_empty(column, &item_key, "column name")?;
            if !seen.insert(column.value.clone()) {
                let first = columns
                    .iter()
                    .position(|c: &Spanned<String>| c.value == column.value)
                    .unwrap_or(0);
                return Err(self.err(
                    column.span,
                    &item_key,
                    format!("duplicate column {:?} (also {key}[{first}])", column.value),
                ));
            }
            columns.push(column);
        }
        Ok(columns)
    }

    fn reply(&self, route: usize, raw: RawReply) -> Checked<ReplyConfig> {
        let columns = raw
            .columns
            .map(|c| self.column_list(c, &route_key(route, "reply.columns"), true))
            .transpose()?;
        let status = raw
            .status
            .map(|s| self.non_empty(s, &route_key(route, "reply.status"), "status column name"))
            .transpose()?;
        Ok(ReplyConfig { columns, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORES: &[usize] = &[0, 1];

    fn parse_text(text: &str) -> Result<ServiceConfig, ConfigError> {
        parse_with_cores(Source::new("configs/x.toml", text), CORES)
    }

    /// The first line of the rendered error for `text`.
    fn error(text: &str) -> String {
        let err = parse_text(text).expect_err("config should be rejected");
        err.to_string().lines().next().unwrap().to_owned()
    }

    const SERVICE: &str = "[service]\nname = \"hello\"\nbase_port = 8888\n";

    /// SERVICE followed by `rest`.
    fn with_service(rest: &str) -> String {
        format!("{SERVICE}{rest}")
    }

    const FULL: &str = r#"# a full example
[service]
name = "hello"
host = "0.0.0.0"
base_port = 8888
shards = 2
cores = [1, 0]
admin_port = 8880

[limits]
max_header_bytes = 8192
max_body_bytes = 65536
max_headers = 32
header_timeout = "250ms"
body_timeout = "2m"
idle_timeout = 90
max_connections = 500
drain_timeout = "1h"

[checkpoint]
dir = "state/hello"
interval = "500ms"
retain = 5
full_every = 4

[[route]]
method = "POST"
path = "/my_api"
request = { zed = "utf8", bar = "int64", baz = { type = "float64", nullable = true }, ok = "bool" }

  [[route.step]]
  with_column = { name = "zedLength", expr = "length(zed)" }

  [[route.step]]
  filter = { expr = "bar >= 0", status = 422, message = "bar must be >= 0" }

  [[route.step]]
  filter = { expr = "ok" }

  [[route.step]]
  aggregate = { name = "user_counts", key = "zed", outputs = { n = "count()", total = "sum(bar)", mean = "avg(baz)" } }

  [[route.step]]
  changed = { name = "flips", key = "zed", value = "bar > 0", output = "flipped" }

  [[route.step]]
  select = { columns = ["zedLength", "n", "flipped"] }

  [route.reply]
  columns = ["zedLength", "n"]
  status = "code"

[[route]]
method = "GET"
path = "/counts"
read = "user_counts"
"#;

    fn s(source: &str, value: &str, span: &Span) -> Spanned<String> {
        assert_eq!(
            &source[span.clone()],
            format!("{value:?}"),
            "span of {value}"
        );
        Spanned {
            value: value.to_owned(),
            span: span.clone(),
        }
    }

    #[test]
    fn full_file_parses_to_expected_structs() {
        let config = parse_text(FULL).unwrap();
        assert_eq!(
            config.service,
            Service {
                name: "hello".into(),
                host: "0.0.0.0".parse().unwrap(),
                base_port: 8888,
                shards: 2,
                shards_auto: false,
                cores: Some(vec![1, 0]),
                admin_port: Some(8880),
                spin_before_park: Duration::ZERO,
                log_format: LogFormat::Text,
                access_log: crate::access_log::Mode::Errors,
            }
        );
        assert_eq!(config.service.port(1), 8889);
        assert_eq!(
            config.limits,
            Limits {
                max_header_bytes: 8192,
                max_body_bytes: 65536,
                max_headers: 32,
                header_timeout: Duration::from_millis(250),
                body_timeout: Duration::from_secs(120),
                idle_timeout: Duration::from_secs(90),
                max_connections: 500,
                drain_timeout: Duration::from_secs(3600),
            }
        );
        assert_eq!(
            config.checkpoint,
            Some(CheckpointConfig {
                dir: PathBuf::from("configs/state/hello"),
                interval: Duration::from_millis(500),
                retain: 5,
                full_every: 4,
                discard_state: false,
            })
        );
        assert_eq!(config.routes.len(), 2);
        let r = &config.routes[0];
        assert_eq!((r.method, r.path.as_str()), (Method::Post, "/my_api"));
        assert_eq!(&FULL[r.span.clone()], "[[route]]");
        assert_eq!(&FULL[r.path_span.clone()], "\"/my_api\"");
        // Declaration order, not alphabetical.
        let fields: Vec<(&str, ColumnType, bool)> = r
            .request
            .iter()
            .map(|f| (f.column.name.as_str(), f.column.ty, f.column.nullable))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("zed", ColumnType::Utf8, false),
                ("bar", ColumnType::Int64, false),
                ("baz", ColumnType::Float64, true),
                ("ok", ColumnType::Boolean, false),
            ]
        );
        assert_eq!(&FULL[r.request[1].span.clone()], "bar");
        assert_eq!(r.read, None);
        assert_eq!(r.steps.len(), 6);
        let kinds: Vec<&str> = r.steps.iter().map(StepConfig::kind).collect();
        assert_eq!(
            kinds,
            [
                "with_column",
                "filter",
                "filter",
                "aggregate",
                "changed",
                "select"
            ]
        );
        let StepConfig::WithColumn { name, expr } = &r.steps[0] else {
            panic!("{:?}", r.steps[0])
        };
        assert_eq!(name, &s(FULL, "zedLength", &name.span));
        assert_eq!(expr, &s(FULL, "length(zed)", &expr.span));
        let StepConfig::Filter {
            expr,
            status,
            message,
        } = &r.steps[1]
        else {
            panic!("{:?}", r.steps[1])
        };
        assert_eq!(expr, &s(FULL, "bar >= 0", &expr.span));
        assert_eq!((*status, message.as_str()), (422, "bar must be >= 0"));
        let StepConfig::Filter {
            status, message, ..
        } = &r.steps[2]
        else {
            panic!("{:?}", r.steps[2])
        };
        assert_eq!((*status, message.as_str()), (400, "filtered: ok"));
        let StepConfig::Aggregate { name, key, outputs } = &r.steps[3] else {
            panic!("{:?}", r.steps[3])
        };
        assert_eq!(name.value, "user_counts");
        assert_eq!(key, &s(FULL, "zed", &key.span));
        let outs: Vec<(&str, &str)> = outputs
            .iter()
            .map(|o| (o.name.value.as_str(), o.spec.value.as_str()))
            .collect();
        assert_eq!(
            outs,
            [
                ("n", "count()"),
                ("total", "sum(bar)"),
                ("mean", "avg(baz)")
            ]
        );
        assert_eq!(&FULL[outputs[1].name.span.clone()], "total");
        assert_eq!(&FULL[outputs[1].spec.span.clone()], "\"sum(bar)\"");
        let StepConfig::Changed {
            name,
            key,
            value,
            output,
        } = &r.steps[4]
        else {
            panic!("{:?}", r.steps[4])
        };
        assert_eq!(
            [&name.value, &key.value, &value.value, &output.value],
            ["flips", "zed", "bar > 0", "flipped"]
        );
        let StepConfig::Select { columns } = &r.steps[5] else {
            panic!("{:?}", r.steps[5])
        };
        let names: Vec<&str> = columns.iter().map(|c| c.value.as_str()).collect();
        assert_eq!(names, ["zedLength", "n", "flipped"]);
        let reply_columns: Vec<&str> = r
            .reply
            .columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.value.as_str())
            .collect();
        assert_eq!(reply_columns, ["zedLength", "n"]);
        assert_eq!(r.reply.status.as_ref().unwrap().value, "code");

        let g = &config.routes[1];
        assert_eq!((g.method, g.path.as_str()), (Method::Get, "/counts"));
        assert!(g.request.is_empty() && g.steps.is_empty());
        assert_eq!(g.read.as_ref().unwrap().value, "user_counts");
        assert_eq!(g.reply, ReplyConfig::default());
    }

    #[test]
    fn minimal_file_gets_defaults_and_auto_shards() {
        let config = parse_text(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = { foo = \"utf8\" }\n",
        ))
        .unwrap();
        assert_eq!(config.service.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(config.service.shards, CORES.len());
        assert!(config.service.shards_auto);
        assert_eq!(config.service.cores, None);
        assert_eq!(config.service.admin_port, None);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.checkpoint, None);
        assert_eq!(config.routes[0].method, Method::Post);
        assert!(config.routes[0].steps.is_empty());

        let auto = parse_text(
            "[service]\nname = \"a\"\nbase_port = 0\nshards = \"auto\"\n[[route]]\nmethod = \"GET\"\npath = \"/\"\n",
        )
        .unwrap();
        assert_eq!((auto.service.shards, auto.service.shards_auto), (2, true));
        assert_eq!(auto.service.port(1), 0);

        // With explicit cores, "auto" means one shard per listed core.
        let pinned = parse_text(
            "[service]\nname = \"a\"\nbase_port = 0\ncores = [1]\n[[route]]\nmethod = \"GET\"\npath = \"/\"\n",
        )
        .unwrap();
        assert_eq!(pinned.service.shards, 1);
        assert_eq!(pinned.service.cores, Some(vec![1]));
    }

    #[test]
    fn auto_shards_use_this_machines_cores() {
        let text =
            "[service]\nname = \"a\"\nbase_port = 0\n[[route]]\nmethod = \"GET\"\npath = \"/\"\n";
        let config = parse(Source::new("a.toml", text)).unwrap();
        assert!(config.service.shards_auto);
        assert_eq!(config.service.shards, available_cores().len());
        assert!(config.service.shards >= 1);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in [
            "",
            "s",
            "1.5s",
            "10x",
            "-1s",
            " 1s",
            "1 s",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(
            error(&with_service("[limits]\nbody_timeout = \"10x\"\n")),
            "configs/x.toml:5:16: limits.body_timeout: invalid value: string \"10x\"; \
             expected a duration such as \"50us\", \"250ms\", \"10s\", \"2m\", \"1h\" or an integer number of seconds"
        );
        assert_eq!(
            error(&with_service("[limits]\nidle_timeout = -3\n")),
            "configs/x.toml:5:16: limits.idle_timeout: invalid value: integer `-3`; \
             expected a duration such as \"50us\", \"250ms\", \"10s\", \"2m\", \"1h\" or an integer number of seconds"
        );
        assert_eq!(
            error(&with_service("[limits]\nheader_timeout = \"0ms\"\n")),
            "configs/x.toml:5:18: limits.header_timeout: header_timeout is zero; expected a duration greater than zero"
        );
    }

    #[test]
    fn spin_before_park_takes_microseconds() {
        let text = "[service]\nname = \"x\"\nbase_port = 1\nshards = 1\nspin_before_park = \"50us\"\n[[route]]\npath = \"/a\"\nrequest = { a = \"utf8\" }\n";
        let config = parse_text(text).unwrap();
        assert_eq!(config.service.spin_before_park, Duration::from_micros(50));
        let text = text.replace("spin_before_park = \"50us\"\n", "");
        assert_eq!(
            parse_text(&text).unwrap().service.spin_before_park,
            Duration::ZERO
        );
    }

    #[test]
    fn unknown_keys_anywhere() {
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 1\nbogus = 1\n"),
            "configs/x.toml:4:1: service.bogus: unknown field `bogus`; \
             expected one of `name`, `host`, `base_port`, `shards`, `cores`, `admin_port`, `spin_before_park`, `log_format`, `access_log`"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = {}\n[[route.step]]\nfilter = { expr = \"a\", stat = 3 }\n"
            )),
            "configs/x.toml:8:24: route[0].step[0].filter.stat: unknown field `stat`; \
             expected one of `expr`, `status`, `message`"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = {}\n[[route]]\npath = \"/b\"\nrequest = {}\n[[route.step]]\nfiltr = { expr = \"a\" }\n"
            )),
            "configs/x.toml:11:1: route[1].step[0].filtr: unknown field `filtr`; \
             expected one of `with_column`, `filter`, `select`, `aggregate`, `changed`"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = { a = { type = \"utf8\", null = true } }\n"
            )),
            "configs/x.toml:6:34: route[0].request.a.null: unknown field `null`; expected `type` or `nullable`"
        );
        assert_eq!(
            error(&with_service("[extra]\n")),
            "configs/x.toml:4:2: extra: unknown field `extra`; expected one of `service`, `limits`, `checkpoint`, `route`"
        );
    }

    #[test]
    fn wrong_types_and_missing_fields() {
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = \"8\"\n"),
            "configs/x.toml:3:13: service.base_port: invalid type: string \"8\"; expected an integer"
        );
        assert_eq!(
            error("[service]\nname = \"x\"\n"),
            "configs/x.toml:1:1: service: missing field `base_port`"
        );
        assert_eq!(
            error("service = 3\n"),
            "configs/x.toml:1:11: service: invalid type: integer `3`; expected a table"
        );
        assert_eq!(
            error(&format!("route = [1]\n{SERVICE}")),
            "configs/x.toml:1:10: route[0]: invalid type: integer `1`; expected a table"
        );
        assert_eq!(
            error(&with_service("[route]\npath = \"/\"\n")),
            "configs/x.toml:4:1: route: invalid type: table; expected an array"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = { a = 3 }\n"
            )),
            "configs/x.toml:6:17: route[0].request.a: invalid type: integer `3`; \
             expected a type (utf8, int64, float64, bool) or a table like { type = \"int64\", nullable = true }"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = { a = { nullable = true } }\n"
            )),
            "configs/x.toml:6:17: route[0].request.a: missing field `type`"
        );
        assert_eq!(
            error(&with_service("[[route]]\nrequest = {}\n")),
            "configs/x.toml:4:1: route[0]: missing field `path`"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = {}\n[[route.step]]\nselect = { columns = \"a\" }\n"
            )),
            "configs/x.toml:8:22: route[0].step[0].select.columns: invalid type: string \"a\"; expected an array"
        );
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 8\nshards = [2]\n"),
            "configs/x.toml:4:10: service.shards: invalid type: array; expected an integer >= 1 or \"auto\""
        );
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 8\nshards = \"two\"\n"),
            "configs/x.toml:4:10: service.shards: invalid value: string \"two\"; expected an integer >= 1 or \"auto\""
        );
        assert_eq!(
            error("[[route]]\npath = \"/\"\n"),
            "configs/x.toml:1:1: missing field `service`"
        );
    }

    #[test]
    fn toml_syntax_errors_have_positions() {
        assert_eq!(
            error("[service]\nname = \"x\"\nname = \"y\"\n"),
            "configs/x.toml:3:1: service.name: duplicate key"
        );
        let e = error("[service]\nname = \"x\nbase_port = 8\n");
        assert!(e.starts_with("configs/x.toml:2:"), "{e}");
    }

    #[test]
    fn service_values() {
        assert_eq!(
            error("[service]\nname = \" \"\nbase_port = 1\n"),
            "configs/x.toml:2:8: service.name: service name is empty; expected a non-empty service name"
        );
        assert_eq!(
            error("[service]\nname = \"x\"\nhost = \"localhost\"\nbase_port = 1\n"),
            "configs/x.toml:3:8: service.host: invalid IP address \"localhost\"; \
             expected an IP address such as 127.0.0.1, 0.0.0.0 or ::1"
        );
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 70000\n"),
            "configs/x.toml:3:13: service.base_port: base_port = 70000 is out of range; expected an integer in 0..=65535"
        );
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 1\nshards = 0\n"),
            "configs/x.toml:4:10: service.shards: shards = 0 is out of range; expected an integer >= 1 or \"auto\""
        );
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 1\nshards = 4\n"),
            "configs/x.toml:4:10: service.shards: shards = 4 but this machine has 2 available cores; \
             use shards = \"auto\" or at most 2"
        );
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 1\nshards = 2\ncores = [0]\n"),
            "configs/x.toml:5:9: service.cores: 1 core ids for 2 shards; expected one core id per shard (2)"
        );
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 1\ncores = [0, 7]\n"),
            "configs/x.toml:4:13: service.cores[1]: core 7 is not available on this machine; \
             expected one of the available core ids: 0, 1"
        );
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 1\ncores = [1, 1]\n"),
            "configs/x.toml:4:13: service.cores[1]: core 1 is listed twice (also service.cores[0]); \
             two shards on one core would share it"
        );
    }

    #[test]
    fn ports_do_not_collide_or_overflow() {
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 8888\nshards = 2\nadmin_port = 8889\n"),
            "configs/x.toml:5:14: service.admin_port: admin_port 8889 is also the port of shard 1 \
             (base_port 8888 + 1); expected a port outside 8888..=8889"
        );
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 65535\nshards = 2\n"),
            "configs/x.toml:3:13: service.base_port: shard ports 65535..=65536 go past 65535 (2 shards); \
             expected base_port <= 65534"
        );
        assert_eq!(
            error("[service]\nname = \"x\"\nbase_port = 1\nadmin_port = -1\n"),
            "configs/x.toml:4:14: service.admin_port: admin_port = -1 is out of range; expected an integer in 0..=65535"
        );
        // OS-assigned ports never collide.
        let ok = "[service]\nname = \"x\"\nbase_port = 0\nadmin_port = 0\n[[route]]\nmethod = \"GET\"\npath = \"/\"\n";
        assert_eq!(parse_text(ok).unwrap().service.admin_port, Some(0));
    }

    #[test]
    fn limits_and_checkpoint_values() {
        assert_eq!(
            error(&with_service("[limits]\nmax_headers = 65\n")),
            "configs/x.toml:5:15: limits.max_headers: max_headers = 65 is out of range; expected an integer in 1..=64"
        );
        assert_eq!(
            error(&with_service("[checkpoint]\ndir = \"\"\n")),
            "configs/x.toml:5:7: checkpoint.dir: checkpoint directory is empty; expected a non-empty checkpoint directory"
        );
        assert_eq!(
            error(&with_service("[checkpoint]\ndir = \"d\"\nretain = 0\n")),
            "configs/x.toml:6:10: checkpoint.retain: retain = 0 is out of range; expected an integer >= 1"
        );
        assert_eq!(
            error(&with_service("[checkpoint]\nretain = 2\n")),
            "configs/x.toml:4:1: checkpoint: missing field `dir`"
        );
        let text = with_service(
            "[checkpoint]\ndir = \"/abs/dir\"\n[[route]]\nmethod = \"GET\"\npath = \"/\"\n",
        );
        let c = parse_text(&text).unwrap().checkpoint.unwrap();
        assert_eq!(c.dir, PathBuf::from("/abs/dir"));
        assert_eq!(
            (c.interval, c.retain, c.full_every),
            (Duration::from_secs(1), 3, 10)
        );
    }

    #[test]
    fn steps_need_exactly_one_operator() {
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = {}\n[[route.step]]\n"
            )),
            "configs/x.toml:7:1: route[0].step[0]: step has no operator; \
             expected exactly one of with_column, filter, select, aggregate, changed"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = {}\n[[route.step]]\nfilter = { expr = \"a\" }\nselect = { columns = [\"a\"] }\n"
            )),
            "configs/x.toml:9:10: route[0].step[0].select: step has both filter and select; \
             expected exactly one of with_column, filter, select, aggregate, changed"
        );
    }

    #[test]
    fn step_values() {
        let route = "[[route]]\npath = \"/a\"\nrequest = {}\n[[route.step]]\n";
        assert_eq!(
            error(&with_service(&format!(
                "{route}filter = {{ expr = \"a\", status = 200 }}\n"
            ))),
            "configs/x.toml:8:33: route[0].step[0].filter.status: status 200 is not an error status; \
             expected an HTTP status in 400..=599"
        );
        assert_eq!(
            error(&with_service(&format!(
                "{route}with_column = {{ name = \"\", expr = \"1\" }}\n"
            ))),
            "configs/x.toml:8:24: route[0].step[0].with_column.name: column name is empty; expected a non-empty column name"
        );
        assert_eq!(
            error(&with_service(&format!(
                "{route}select = {{ columns = [\"a\", \"b\", \"a\"] }}\n"
            ))),
            "configs/x.toml:8:33: route[0].step[0].select.columns[2]: duplicate column \"a\" (also route[0].step[0].select.columns[0])"
        );
        assert_eq!(
            error(&with_service(&format!(
                "{route}select = {{ columns = [] }}\n"
            ))),
            "configs/x.toml:8:22: route[0].step[0].select.columns: no columns; expected at least one column name"
        );
        assert_eq!(
            error(&with_service(&format!(
                "{route}aggregate = {{ name = \"s\", key = \"k\", outputs = {{}} }}\n"
            ))),
            "configs/x.toml:8:48: route[0].step[0].aggregate.outputs: no outputs; \
             expected at least one output such as n = \"count()\""
        );
        assert_eq!(
            error(&with_service(&format!(
                "{route}aggregate = {{ name = \"s\", key = \"k\", outputs = {{ n = \"\" }} }}\n"
            ))),
            "configs/x.toml:8:54: route[0].step[0].aggregate.outputs.n: aggregate function is empty; \
             expected a non-empty aggregate function"
        );
        assert_eq!(
            error(&with_service(&format!(
                "{route}changed = {{ name = \"s\", key = \"k\", value = \"v\" }}\n"
            ))),
            "configs/x.toml:8:11: route[0].step[0].changed: missing field `output`"
        );
    }

    #[test]
    fn duplicate_state_names() {
        let text = with_service(
            "[[route]]\npath = \"/a\"\nrequest = {}\n\
             [[route.step]]\naggregate = { name = \"s\", key = \"k\", outputs = { n = \"count()\" } }\n\
             [[route]]\npath = \"/b\"\nrequest = {}\n\
             [[route.step]]\nchanged = { name = \"s\", key = \"k\", value = \"v\", output = \"o\" }\n",
        );
        assert_eq!(
            error(&text),
            "configs/x.toml:13:20: route[1].step[0].changed.name: keyed state \"s\" is already defined at \
             route[0].step[0].aggregate.name; expected a name unique among the service's aggregate and changed steps"
        );
    }

    #[test]
    fn key_from() {
        let keyed = |key_from: &str| {
            with_service(&format!(
                "[[route]]\npath = \"/e\"\nrequest = {{ u = \"utf8\" }}\nkey_from = {key_from}\n\
                 [[route.step]]\naggregate = {{ name = \"c\", key = \"u\", outputs = {{ n = \"count()\" }} }}\n"
            ))
        };
        let c = parse_text(&keyed("\"header:X-User\"")).unwrap();
        assert_eq!(
            c.routes[0].key_from.as_ref().unwrap().value,
            KeyFrom::Header("X-User".into())
        );
        let c = parse_text(&keyed("\"query:user_id\"")).unwrap();
        assert_eq!(
            c.routes[0].key_from.as_ref().unwrap().value.to_string(),
            "query:user_id"
        );
        let expected = "expected \"header:NAME\" or \"query:NAME\" (a header or query parameter \
                        that carries the key of the route's keyed step)";
        for (text, message) in [
            ("\"X-User\"", "\"X-User\" names no source"),
            ("\"cookie:u\"", "unknown key source \"cookie\""),
            ("\"header:\"", "\"header:\" has an empty name"),
            (
                "\"header:X User\"",
                "\"header:X User\": ' ' is not allowed in the name",
            ),
            (
                "\"query:a&b\"",
                "\"query:a&b\": '&' is not allowed in the name",
            ),
        ] {
            assert_eq!(
                error(&keyed(text)),
                format!("configs/x.toml:7:12: route[0].key_from: {message}; {expected}")
            );
        }
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = { u = \"utf8\" }\nkey_from = \"header:X\"\n"
            )),
            "configs/x.toml:7:12: route[0].key_from: key_from on a route without a keyed step; \
             expected key_from only on routes with an aggregate or changed step"
        );
    }

    #[test]
    fn routes() {
        assert_eq!(
            error(SERVICE),
            "configs/x.toml:4:1: route: no routes; expected at least one [[route]] table"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/my_api\"\nrequest = {}\n[[route]]\nmethod = \"POST\"\npath = \"/my_api\"\nrequest = {}\n"
            )),
            "configs/x.toml:9:8: route[1].path: route clashes with route[0] (POST /my_api)"
        );
        // Same path, different method: fine.
        parse_text(&with_service(
            "[[route]]\npath = \"/x\"\nrequest = {}\n[[route]]\nmethod = \"GET\"\npath = \"/x\"\n",
        ))
        .unwrap();
        assert_eq!(
            error(&with_service("[[route]]\nmethod = \"get\"\npath = \"/\"\n")),
            "configs/x.toml:5:10: route[0].method: unknown method \"get\"; expected one of: GET, POST, PUT, PATCH, DELETE"
        );
        let path_expected = "expected a path such as \"/my_api\": starting with '/', without '?', '#' or whitespace";
        for (path, message) in [
            ("", "path is empty"),
            ("my_api", "path \"my_api\" does not start with '/'"),
            ("/a?b=1", "path \"/a?b=1\" contains '?'"),
            ("/a b", "path \"/a b\" contains ' '"),
        ] {
            assert_eq!(
                error(&with_service(&format!(
                    "[[route]]\npath = \"{path}\"\nrequest = {{}}\n"
                ))),
                format!("configs/x.toml:5:8: route[0].path: {message}; {path_expected}")
            );
        }
        assert_eq!(
            error(&with_service(
                "[[route]]\nmethod = \"PUT\"\npath = \"/a\"\n"
            )),
            "configs/x.toml:4:1: route[0]: PUT route has no request; expected a request table such as \
             request = { foo = \"utf8\" } (only GET routes may omit it)"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = { a = \"text\" }\n"
            )),
            "configs/x.toml:6:17: route[0].request.a: unknown type \"text\"; expected one of: utf8, int64, float64, bool"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = { a = \"utf8\", a = \"int64\" }\n"
            )),
            "configs/x.toml:6:25: route[0].request.a: duplicate key"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\npath = \"/a\"\nrequest = {}\n[route.reply]\ncolumns = [\"a\", \"a\"]\n"
            )),
            "configs/x.toml:8:17: route[0].reply.columns[1]: duplicate column \"a\" (also route[0].reply.columns[0])"
        );
    }

    #[test]
    fn read_routes() {
        let agg = "[[route]]\npath = \"/a\"\nrequest = {}\n\
                   [[route.step]]\naggregate = { name = \"counts\", key = \"k\", outputs = { n = \"count()\" } }\n";
        assert_eq!(
            error(&with_service(&format!(
                "{agg}[[route]]\nmethod = \"POST\"\npath = \"/r\"\nrequest = {{}}\nread = \"counts\"\n"
            ))),
            "configs/x.toml:13:8: route[1].read: read on a POST route; expected read only on GET routes"
        );
        assert_eq!(
            error(&with_service(&format!(
                "{agg}[[route]]\nmethod = \"GET\"\npath = \"/r\"\nread = \"counts\"\n[[route.step]]\nselect = {{ columns = [\"n\"] }}\n"
            ))),
            "configs/x.toml:13:1: route[1].step[0]: a read route cannot have steps; expected either read or steps and reply"
        );
        assert_eq!(
            error(&with_service(&format!(
                "{agg}[[route]]\nmethod = \"GET\"\npath = \"/r\"\nread = \"nope\"\n"
            ))),
            "configs/x.toml:12:8: route[1].read: unknown keyed state \"nope\"; expected one of: counts"
        );
        assert_eq!(
            error(&with_service(
                "[[route]]\nmethod = \"GET\"\npath = \"/r\"\nread = \"x\"\n"
            )),
            "configs/x.toml:7:8: route[0].read: unknown keyed state \"x\"; \
             expected the name of an aggregate or changed step (this service has none)"
        );
    }

    #[test]
    fn rendering_quotes_the_line_with_a_caret() {
        let text = with_service("[[route]]\npath = \"/a\"\nrequest = { a = \"text\" }\n");
        let err = parse_text(&text).unwrap_err();
        assert_eq!((err.line(), err.column(), err.width()), (6, 17, 6));
        assert_eq!(err.key(), "route[0].request.a");
        assert_eq!(err.message(), "unknown type \"text\"");
        assert_eq!(err.expected(), Some("one of: utf8, int64, float64, bool"));
        assert_eq!(
            err.to_string(),
            "configs/x.toml:6:17: route[0].request.a: unknown type \"text\"; \
             expected one of: utf8, int64, float64, bool\n \
             6 | request = { a = \"text\" }\n   \
               |                 ^^^^^^"
        );
    }

    #[test]
    fn lead_errors_and_subspans() {
        let config = parse_text(FULL).unwrap();
        let StepConfig::Filter { expr, .. } = &config.routes[0].steps[1] else {
            panic!()
        };
        // Point at `>=` inside "bar >= 0".
        let span = expr.subspan(&config.source, 4..6);
        assert_eq!(&FULL[span.clone()], ">=");
        let err = config
            .error(
                span,
                &step_key(0, 1, "filter.expr"),
                "unknown column \"baz\"",
            )
            .with_expected("one of: foo, bar");
        assert_eq!(
            err.to_string().lines().next().unwrap(),
            "configs/x.toml:35:26: route[0].step[1].filter.expr: unknown column \"baz\"; expected one of: foo, bar"
        );
        assert_eq!(route_key(2, ""), "route[2]");
        assert_eq!(route_key(2, "reply.status"), "route[2].reply.status");
        assert_eq!(step_key(0, 3, ""), "route[0].step[3]");
    }

    #[test]
    fn unreadable_file_is_named() {
        let err = load(Path::new("/nonexistent/coreline.toml")).unwrap_err();
        assert_eq!((err.line(), err.column(), err.key()), (0, 0, ""));
        let text = err.to_string();
        assert!(
            text.starts_with("/nonexistent/coreline.toml: cannot read the configuration file: "),
            "{text}"
        );
    }
}
