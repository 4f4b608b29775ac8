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
//! One noun per module, top to bottom in the order a request meets them.
//!
//! - [`runtime`]: start-up (cores, `RLIMIT_MEMLOCK`, listeners bound without
//!   `SO_REUSEPORT`), one pinned thread per shard, signals, drain, stop.
//! - [`shard`]: one shard's life: pin, executor, `serve`, `control`
//!   (commands and checkpoint barriers, woken through [`sys::Wake`]),
//!   housekeeping (`Date`, the timeout sweep), accept, drain.
//! - [`connection`]: one connection: reused buffers, read, decode every
//!   pipelined request, answer, write; `Buffers::respond` is the one place a
//!   response is written; forwards; timeouts; lingering close.
//! - [`http`]: the HTTP/1.1 codec (sans-IO decoder over httparse), limits,
//!   response heads, the cached `Date`.
//! - [`pipeline`]: the [`pipeline::Plan`] (planning every route), its
//!   description for `coreline check`, the run-time [`pipeline::Route`] and a
//!   shard's [`pipeline::Router`].
//! - [`plan`]: the [`plan::Planner`] a step plans itself with.
//! - [`operator`]: the step kinds, one file each, and their registry.
//! - [`schema`]: a route's request schema; JSON body straight into a row.
//! - [`expr`]: SQL expressions parsed with `sqlparser`, compiled to an
//!   evaluator that does no lookup or allocation per request (the typed
//!   nodes in `expr/node/`).
//! - [`row`]: column types, column sets and the reusable [`row::Row`].
//! - [`reply`]: row columns to a JSON object; the one JSON string escaper.
//! - [`state`]: keyed tables (slot index, delta logs), owner hashing.
//! - [`fleet`]: several instances, each key owned by one (instance,
//!   shard) pair; 421 naming the owner for a key of another instance.
//! - [`forward`]: the peer mesh between shards and the messages that run a
//!   keyed step on its key's owner shard.
//! - [`checkpoint`]: epochs, barriers, the writer, shard files, manifests,
//!   recovery.
//! - [`command`]: [`command::ShardCommand`], the main thread's channel to a
//!   shard, and asking every shard at once.
//! - [`reload`]: hot reload (`SIGHUP`, `POST /reload`): re-read, check,
//!   compile off the shards, swap on every shard between two requests.
//! - [`admin`]: the admin HTTP endpoint (`/metrics`, `/stats`, `/health`,
//!   `/ready`, `/checkpoint`, `/reload`, `/models`): its thread and handle
//!   (`mod.rs`), who may mutate (`guard.rs`), the `poll(2)` loop and one
//!   connection (`connection.rs`), what each path answers (`endpoints.rs`).
//! - [`metrics`]: per-shard latency histograms and counters (`mod.rs`), and
//!   their Prometheus (`prometheus.rs`) and JSON (`stats.rs`) renderings;
//!   the `process_*` figures (`process.rs`).
//! - [`model`]: trained models (XGBoost, LightGBM, ONNX, linear) scored
//!   per row with reusable buffers (the `score` step).
//! - [`model_control`]: models as control data: `PUT /models/<step>` swaps
//!   a score step's model on every shard between requests, `GET /models`,
//!   and the models a checkpoint restores.
//! - [`lb`]: nginx and haproxy configurations for the shard ports
//!   (`coreline lb`), with key affinity.
//! - [`access_log`]: one line per answer, written by a logger thread from
//!   bounded per-shard channels of fixed-size records.
//! - [`overrides`]: `CORELINE_HOST`/`_BASE_PORT`/`_ADMIN_PORT` over the file.
//! - [`openapi`]: the OpenAPI 3.1 document of a plan's routes.
//! - [`export`]: a checkpoint's rows as JSON lines, CSV or Parquet
//!   (`coreline state`).
//! - [`config`]: the TOML file into a validated [`config::ServiceConfig`]
//!   (serde mirror in `raw.rs`, checks in `validate/`); errors carry file,
//!   line and column.
//! - [`sys`]: the few system calls made directly; the only `unsafe`.
//!
//! # Where to look
//!
//! | question | file |
//! |---|---|
//! | where is a request parsed? | `src/http/codec.rs` (`Decoder::decode`) |
//! | where is it routed? | `src/pipeline/router.rs` (`Router::find`) |
//! | where does it run? | `src/pipeline/route.rs` (`Route::handle`) |
//! | where does a keyed step go to its owner shard? | `src/connection.rs` (`run_forward`) over `src/forward.rs` (`Mesh`, `inbox`) |
//! | where is it answered? | `src/connection.rs` (`Buffers::respond`) |
//! | where does a step kind live? | `src/operator/<kind>.rs`, one registry line in `src/operator/mod.rs` |
//! | where is a step kind's configuration checked? | `src/operator/<kind>.rs` (`<Kind>Config::check`), dispatched from `src/config/raw.rs` (`RawStep`) |
//! | where is the per-key update of a keyed step? | `src/operator/keyed.rs` (`update_on_owner`) and the table kind in `src/state/` |
//! | where is an epoch taken? | `src/shard.rs` (`take_orders`, run by the `control` task when the coordinator wakes the shard, polls `ShardCheckpoint`), `src/state/mod.rs` (`ShardState::capture`) |
//! | where is an epoch committed? | `src/checkpoint/coordinator.rs` |
//! | where is a config error rendered? | `src/config/error.rs` |
//! | where is `[service]`, `[limits]`, `[checkpoint]` or `[fleet]` checked? | `src/config/validate/service.rs` |
//! | where is a `[[route]]` checked? | `src/config/validate/route.rs` (`Validator::route`) |
//! | where is an expression evaluated? | `src/expr/node/mod.rs` (`Eval`), with comparisons in `predicate.rs` and `CASE`/`coalesce` in `choice.rs` |
//! | where is an admin path answered? | `src/admin/endpoints.rs` (`Admin::route`); its socket in `src/admin/connection.rs` |
//! | who may call a mutating admin endpoint? | `src/admin/guard.rs` (`Guard::check`) |
//! | where is `/metrics` rendered? | `src/metrics/prometheus.rs` (`Scrape`); `/stats` in `src/metrics/stats.rs` |
//! | where is a declared `[[table]]` read and written? | `src/operator/{upsert,delete,lookup}.rs` over `src/state/declared.rs`; replicated writes through `forward::sequencer` |
//! | where does a table kind live? | `src/state/<kind>.rs` (`KindSpec`, `KeyedTable`, `StepTable`), one registry line in `src/state/mod.rs` (`table_kinds!`, `src/state/kind.rs`) |
//! | how does a table kind reach the checkpoint? | `src/state/mod.rs` (`KeyedTable`, `TableSpec::state_columns`), `src/state/log.rs` (`DeltaLog`) |
//! | where is a model scored? | `src/operator/score.rs` over `src/model/` |
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
pub mod fleet;
pub mod forward;
pub mod http;
pub mod lb;
pub mod metrics;
pub mod model;
pub mod model_control;
pub mod openapi;
pub mod operator;
pub mod overrides;
pub mod pipeline;
pub mod plan;
pub mod reload;
pub mod reply;
pub mod row;
pub mod runtime;
pub mod schema;
pub mod shard;
pub mod state;
pub mod sys;
