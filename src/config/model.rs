//! The validated model: what a [`ServiceConfig`] holds once the file has
//! passed structural validation. Spans are kept for every string a later
//! stage checks (expressions, column names, state names).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Source, Span, Spanned};
use crate::http::Limits;
use crate::operator::StepConfig;
use crate::row::Column;

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
    /// The `[fleet]` table, if present.
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// The routes, in file order (at least one).
    pub routes: Vec<RouteConfig>,
    /// The declared `[[table]]`s, in file order; their state ids come
    /// first, before the keyed steps' tables.
    pub tables: Vec<super::TableConfig>,
    /// Whether `[limits] max_connections` was given in the file. When it
    /// was not, start-up may lower the default to fit `RLIMIT_NOFILE`; an
    /// explicit value that does not fit is refused.
    pub max_connections_set: bool,
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
    /// Address the admin endpoint listens on. Default 127.0.0.1, also when
    /// `host` is 0.0.0.0: `/checkpoint` and `/stats` are for operators, not
    /// for the network the shards serve.
    pub admin_host: IpAddr,
    /// How long an idle shard busy-polls for new work before it sleeps in
    /// the kernel. Default 0 (sleep at once). A few tens of microseconds
    /// trade CPU for latency on machines where waking a sleeping thread is
    /// slow (virtual machines), at the cost of a busier core.
    pub spin_before_park: Duration,
    /// `lame_duck = "2s"`: on SIGTERM, how long every shard's `/health`
    /// answers 503 while requests are still served (with `Connection:
    /// close`), so that load balancers move traffic away before the shards
    /// stop accepting and drain. Default 0 (drain at once).
    pub lame_duck: Duration,
    /// `admin_token_file = "admin.token"` (relative to the config file):
    /// the bearer token mutating admin requests (`POST /checkpoint`) must
    /// carry as `Authorization: Bearer <token>`. Without it they are open
    /// (with the `X-Coreline-Admin` header) only when `admin_host` is a
    /// loopback address.
    pub admin_token: Option<crate::admin::AdminToken>,
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
    /// `headers = { x_user = "utf8" }`: request headers as typed columns,
    /// after the body's fields (`x_user` is header `X-User`: `_` for `-`,
    /// case-insensitive).
    pub headers: Vec<FieldConfig>,
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
    /// `len = n` on a vector field: it must have exactly `n` elements.
    pub len: Option<usize>,
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
