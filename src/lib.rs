//! coreline: a declared pipeline served by pinned, per-core HTTP shards.
//!
//! A TOML file declares a service (host, ports, shard count, routes), each
//! route's request schema, its ordered steps and its reply. At start-up the
//! file is parsed and validated into a plan, every expression is compiled
//! once, and one glommio executor per shard is started, pinned to its own
//! core, listening on its own port (`base_port + i`) with its own compiled
//! copy of every route. A request is run through its route's steps the
//! moment it is parsed and answered at once.
//!
//! # Layout
//!
//! - [`config`]: raw TOML (serde) into a validated [`config::ServiceConfig`];
//!   errors carry file, line and column.
//! - [`row`]: column types, column sets and the reusable [`row::Row`].
//! - [`expr`]: SQL expressions parsed with `sqlparser`, compiled to an
//!   evaluator that does no lookup or allocation per request.
//! - [`schema`]: a route's request schema; JSON body straight into a row.
//! - [`reply`]: row columns to a JSON object.
//! - [`operator`]: the steps (`with_column`, `filter`, `select`, ...).
//! - [`pipeline`]: a compiled route: decode, steps, reply.
//! - [`http`]: the HTTP/1.1 codec over httparse, responses, limits.
//! - [`metrics`]: per-shard latency histograms and counters, and their
//!   Prometheus and JSON renderings.
//! - [`shard`]: one executor's life: serve, housekeeping, sweep, drain,
//!   accept.
//! - [`connection`]: one connection: buffers, decode, answer, the one place
//!   a response is written, forwards, timeouts.
//! - [`command`]: [`command::ShardCommand`] and asking every shard at once.
//! - [`runtime`]: start shards and the coordinator, signals, shutdown.
//! - [`admin`]: the admin HTTP endpoint (`/metrics`, `/stats`, health).
//! - [`access_log`]: one line per answer, written by a logger thread from
//!   bounded per-shard channels of fixed-size records.
//! - [`state`]: keyed operator state.
//! - [`forward`]: the peer mesh and the messages that run a keyed step on
//!   its owner shard.
//! - [`checkpoint`]: epoch snapshots, manifests and recovery.
//! - [`lb`]: nginx and haproxy configurations for the shard ports
//!   (`coreline lb`), with key affinity.
//! - [`overrides`]: `CORELINE_HOST`/`_BASE_PORT`/`_ADMIN_PORT` over the file.
//! - [`openapi`]: the OpenAPI 3.1 document of a plan's routes.
//! - [`export`]: a checkpoint's rows as JSON lines, CSV or Parquet.
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod access_log;
pub mod admin;
pub mod checkpoint;
pub mod command;
pub mod config;
pub mod connection;
pub mod export;
pub mod expr;
pub mod forward;
pub mod http;
pub mod lb;
pub mod metrics;
pub mod openapi;
pub mod operator;
pub mod overrides;
pub mod pipeline;
pub mod plan;
pub mod reply;
pub mod row;
pub mod runtime;
pub mod schema;
pub mod shard;
pub mod state;
pub mod sys;
