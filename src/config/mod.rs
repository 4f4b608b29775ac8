//! The service configuration: a TOML file parsed and validated into a
//! [`ServiceConfig`].
//!
//! This module owns the file format, its structural validation and the error
//! type every later stage uses to point into the file ([`ConfigError`]). It
//! works in two phases, like ripgrep's `LowArgs`/`HiArgs`: serde structs that
//! mirror the file (`deny_unknown_fields`, every value wrapped in
//! [`toml::Spanned`]) are deserialized first; then they are checked and turned
//! into the plain structs of the model, which keep a byte [`Span`] for every
//! string a later stage checks (expressions, column names, state names).
//! Invariants of a [`ServiceConfig`]: at least one route, no two routes with
//! the same method and path, no two keyed states (`aggregate`/`changed`) with
//! the same name, every `read` names one of them, every port fits in a `u16`
//! and no port is used twice, `shards` is resolved to a number.
//!
//! Each step kind owns its table (`Raw<Kind>`), its checks and its checked
//! configuration in `src/operator/<kind>.rs`; this module dispatches each
//! `[[route.step]]` to its kind by its key (the registry in
//! [`operator`](crate::operator)).
//!
//! - `error.rs`: spans, [`Source`], [`ConfigError`] and the dotted keys;
//! - `model.rs`: the validated model ([`ServiceConfig`] and its parts);
//! - `raw.rs`: the serde mirror of the file;
//! - `validate/`: the validator from the mirror to the model: the shared
//!   checks and [`StepChecker`] (`mod.rs`), the process-wide sections
//!   (`service.rs`) and the routes (`route.rs`).
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
//! lame_duck = "2s"          # optional; on SIGTERM /health answers 503 this long before draining (default 0)
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
//! [fleet]                   # optional: several instances, each key owned by one (src/fleet.rs)
//! instances = ["10.0.0.1:8900", "10.0.0.2:8900"]   # HOST:BASE_PORT, in a fixed order
//! index = 0                 # this instance; or `run --instance-index N`
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

mod error;
mod model;
pub(crate) mod raw;
mod table;
mod validate;

pub use error::{ConfigError, Source, Span, Spanned, route_key, step_key};
pub use model::{
    CheckpointConfig, FieldConfig, KeyFrom, LogFormat, Method, ReplyConfig, RouteConfig, Service,
    ServiceConfig,
};
pub use table::TableConfig;
pub use validate::StepChecker;

pub use crate::operator::{AggregateOutput, StepConfig};

use std::path::Path;

use crate::http::Limits;
use raw::RawConfig;
use validate::Validator;

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
    let v = Validator::new(&source);
    let service = v.service(raw.service, cores)?;
    let max_connections_set = raw
        .limits
        .as_ref()
        .is_some_and(|l| l.get_ref().max_connections.is_some());
    let limits = match raw.limits {
        Some(limits) => v.limits(limits.into_inner())?,
        None => Limits::default(),
    };
    let checkpoint = raw.checkpoint.map(|c| v.checkpoint(c)).transpose()?;
    let fleet = raw.fleet.map(|f| v.fleet(f)).transpose()?;
    let tables = table::check_tables(&source, raw.table)?;
    let routes = v.routes(raw.route, &tables)?;
    Ok(ServiceConfig {
        source,
        service,
        limits,
        checkpoint,
        fleet,
        routes,
        tables,
        max_connections_set,
    })
}

#[cfg(test)]
mod tests;
