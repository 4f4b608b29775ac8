//! Compiled routes: the validated [`Plan`] built once at start-up, and the
//! per-shard [`Router`] of [`Route`]s built from it.
//!
//! [`plan`] is the second, semantic phase of configuration: it walks each
//! route's steps in order, tracking the columns visible at each point,
//! compiles every expression against them (so type errors and unknown
//! columns are reported with file, line and column before anything starts),
//! and resolves every column name to a slot index. A shard then clones the
//! compiled plan into its own [`Router`]: nothing in a route is shared
//! between threads, and nothing is looked up by name per request.

use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use crate::config::{ConfigError, RouteConfig, ServiceConfig, Spanned, StepConfig, step_key};
use crate::expr::{self, Expr};
use crate::forward::{KeyedOp, KeyedReply, Owned};
use crate::http::{Method, Request};
use crate::metrics::StepMetrics;
use crate::operator::{
    Aggregate, Changed, Ctx, Filter, Flow, Keyed, Operator, WithColumn, read_state,
};
use crate::reply::{ReplyEncoder, write_error_json, write_json_string, write_json_value};
use crate::row::{Column, ColumnType, Columns, Row, Slot, Val};
use crate::schema::RequestSchema;
use crate::state::{AggOutput, TableKind, TableSpec, owner_shard};

/// The path every shard answers for load-balancer health checks.
pub const HEALTH_PATH: &str = "/health";

/// A configuration compiled and checked: what `coreline check` prints and
/// what every shard builds its routes from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The validated configuration.
    pub config: ServiceConfig,
    /// One compiled route per `[[route]]`, in file order.
    pub routes: Vec<RoutePlan>,
    /// Keyed state tables, in the order their steps appear; a table's
    /// index is its state id.
    pub tables: Vec<TableSpec>,
}

/// One route, compiled.
#[derive(Debug, Clone)]
pub struct RoutePlan {
    /// HTTP method.
    pub method: Method,
    /// Exact path.
    pub path: String,
    /// `METHOD /path`, the route's name in metrics and logs.
    pub name: String,
    /// Request fields: slots `0..request.len()` of the row.
    pub request: Vec<Column>,
    /// Every column the row holds (request fields, then step outputs).
    pub columns: Columns,
    /// The steps, compiled.
    pub steps: Vec<StepPlan>,
    /// Reply columns: JSON name and slot.
    pub reply: Vec<(String, usize)>,
    /// Slot of the int64 column that gives the HTTP status, if any.
    pub status_column: Option<usize>,
    /// For a `read` route: the table it reads.
    pub read: Option<ReadPlan>,
}

/// A `read` route: `GET path?key=…` answers a key's state.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    /// State table id.
    pub table: usize,
    /// Table name.
    pub name: String,
    /// Type of the table's key column.
    pub key_type: ColumnType,
    /// Names of the values a key's state holds (aggregate outputs, or
    /// `value` for a `changed` table).
    pub values: Vec<String>,
}

/// One compiled step.
#[derive(Debug, Clone)]
pub enum StepPlan {
    /// `with_column`: evaluate into slot `out`.
    WithColumn {
        /// Output column name.
        name: String,
        /// Output slot.
        out: usize,
        /// The expression.
        expr: Expr,
    },
    /// `filter`: answer `status` with `message` unless the predicate holds.
    Filter {
        /// Boolean predicate.
        predicate: Expr,
        /// Status when rejected.
        status: u16,
        /// Error message when rejected.
        message: String,
    },
    /// `select`: only these columns stay visible (compile time only).
    Select {
        /// The kept columns.
        columns: Vec<String>,
    },
    /// `aggregate` or `changed`: a keyed state update.
    Keyed(Keyed),
}

fn http_method(m: crate::config::Method) -> Method {
    use crate::config::Method as C;
    match m {
        C::Get => Method::Get,
        C::Post => Method::Post,
        C::Put => Method::Put,
        C::Patch => Method::Patch,
        C::Delete => Method::Delete,
    }
}

/// Compiles and checks a configuration.
pub fn plan(config: ServiceConfig) -> Result<Plan, ConfigError> {
    // Pipelines first, collecting keyed tables; read routes may name a
    // table declared by a later route.
    let mut tables: Vec<(TableSpec, ColumnType)> = Vec::new();
    let mut routes: Vec<Option<RoutePlan>> = Vec::with_capacity(config.routes.len());
    for (ri, route) in config.routes.iter().enumerate() {
        routes.push(match route.read {
            None => Some(plan_route(&config, ri, route, &mut tables)?),
            Some(_) => None,
        });
    }
    for (ri, route) in config.routes.iter().enumerate() {
        if let Some(read) = &route.read {
            let Some(table) = tables.iter().position(|(t, _)| t.name == read.value) else {
                let names: Vec<&str> = tables.iter().map(|(t, _)| t.name.as_str()).collect();
                return Err(ConfigError::at(
                    &config.source,
                    read.span.clone(),
                    &format!("route[{ri}].read"),
                    format!(
                        "no keyed step is named \"{}\"; expected one of: {}",
                        read.value,
                        names.join(", ")
                    ),
                ));
            };
            let (spec, key_type) = &tables[table];
            let values = match &spec.kind {
                TableKind::Aggregate(outputs) => outputs.iter().map(|o| o.name.clone()).collect(),
                TableKind::Changed { .. } => vec!["value".to_string()],
            };
            routes[ri] = Some(RoutePlan {
                method: http_method(route.method),
                path: route.path.clone(),
                name: format!("{} {}", route.method, route.path),
                request: Vec::new(),
                columns: Columns::new(),
                steps: Vec::new(),
                reply: Vec::new(),
                status_column: None,
                read: Some(ReadPlan {
                    table,
                    name: spec.name.clone(),
                    key_type: *key_type,
                    values,
                }),
            });
        }
    }
    Ok(Plan {
        config,
        routes: routes
            .into_iter()
            .map(|r| r.expect("every route planned"))
            .collect(),
        tables: tables.into_iter().map(|(t, _)| t).collect(),
    })
}

fn plan_route(
    config: &ServiceConfig,
    ri: usize,
    route: &RouteConfig,
    tables: &mut Vec<(TableSpec, ColumnType)>,
) -> Result<RoutePlan, ConfigError> {
    let source = &config.source;
    if route.path == HEALTH_PATH {
        return Err(ConfigError::at(
            source,
            route.path_span.clone(),
            &format!("route[{ri}].path"),
            format!(
                "{HEALTH_PATH} is reserved for load-balancer health checks; choose another path"
            ),
        ));
    }
    let mut columns = Columns::new();
    let request: Vec<Column> = route.request.iter().map(|f| f.column.clone()).collect();
    for c in &request {
        columns.push(c.clone());
    }
    let mut steps = Vec::with_capacity(route.steps.len());
    for (si, step) in route.steps.iter().enumerate() {
        let at = |field: &str| step_key(ri, si, field);
        match step {
            StepConfig::WithColumn { name, expr } => {
                let name = &name.value;
                let compiled = compile_at(source, &columns, expr, &at("with_column.expr"))?;
                let out = columns.push(Column {
                    name: name.clone(),
                    ty: compiled.ty(),
                    nullable: compiled.nullable(),
                });
                steps.push(StepPlan::WithColumn {
                    name: name.clone(),
                    out,
                    expr: compiled,
                });
            }
            StepConfig::Filter {
                expr,
                status,
                message,
            } => {
                let compiled = compile_at(source, &columns, expr, &at("filter.expr"))?;
                if compiled.ty() != ColumnType::Boolean {
                    return Err(ConfigError::at(
                        source,
                        expr.span.clone(),
                        &at("filter.expr"),
                        format!("a filter needs a bool expression, found {}", compiled.ty()),
                    ));
                }
                steps.push(StepPlan::Filter {
                    predicate: compiled,
                    status: *status,
                    message: message.clone(),
                });
            }
            StepConfig::Select { columns: keep } => {
                let mut kept = Vec::with_capacity(keep.len());
                for Spanned { value: name, span } in keep {
                    match columns.index_of(name) {
                        Some(i) => kept.push(i),
                        None => {
                            return Err(unknown_column(
                                source,
                                span,
                                &at("select.columns"),
                                name,
                                &columns,
                            ));
                        }
                    }
                }
                for i in 0..columns.len() {
                    if !kept.contains(&i) {
                        columns.hide(i);
                    }
                }
                steps.push(StepPlan::Select {
                    columns: keep.iter().map(|c| c.value.clone()).collect(),
                });
            }
            StepConfig::Aggregate { name, key, outputs } => {
                let (key_slot, key_type) = key_column(source, &columns, key, &at("aggregate.key"))?;
                let mut specs = Vec::with_capacity(outputs.len());
                let mut inputs = Vec::with_capacity(outputs.len());
                for o in outputs {
                    let spec = AggOutput::parse(o.name.value.clone(), &o.spec.value, |col| {
                        columns.index_of(col).map(|i| columns.get(i).ty)
                    })
                    .map_err(|e| {
                        ConfigError::at(
                            source,
                            o.spec.span.clone(),
                            &at(&format!("aggregate.outputs.{}", o.name.value)),
                            e.to_string(),
                        )
                    })?;
                    inputs.push(spec.input.as_ref().and_then(|c| columns.index_of(c)));
                    specs.push(spec);
                }
                let outs = specs
                    .iter()
                    .map(|o| {
                        columns.push(Column {
                            name: o.name.clone(),
                            ty: o.output_type(),
                            nullable: true,
                        })
                    })
                    .collect();
                let table = add_table(
                    source,
                    tables,
                    TableSpec::aggregate(name.value.clone(), specs),
                    key_type,
                    name,
                    &at("aggregate.name"),
                )?;
                steps.push(StepPlan::Keyed(Keyed::Aggregate(Aggregate {
                    table,
                    key: key_slot,
                    key_name: key.value.clone(),
                    inputs,
                    outs,
                })));
            }
            StepConfig::Changed {
                name,
                key,
                value,
                output,
            } => {
                let (key_slot, key_type) = key_column(source, &columns, key, &at("changed.key"))?;
                let compiled = compile_at(source, &columns, value, &at("changed.value"))?;
                let table = add_table(
                    source,
                    tables,
                    TableSpec::changed(name.value.clone(), compiled.ty()),
                    key_type,
                    name,
                    &at("changed.name"),
                )?;
                let out = columns.push(Column {
                    name: output.value.clone(),
                    ty: ColumnType::Boolean,
                    nullable: false,
                });
                steps.push(StepPlan::Keyed(Keyed::Changed(Changed {
                    table,
                    key: key_slot,
                    key_name: key.value.clone(),
                    value: compiled,
                    out,
                    scratch: Slot::default(),
                })));
            }
        }
    }
    let mut reply = Vec::new();
    match &route.reply.columns {
        Some(names) => {
            for Spanned { value: name, span } in names {
                match columns.index_of(name) {
                    Some(i) => reply.push((name.clone(), i)),
                    None => {
                        return Err(unknown_column(
                            source,
                            span,
                            &format!("route[{ri}].reply.columns"),
                            name,
                            &columns,
                        ));
                    }
                }
            }
        }
        None => {
            for i in (0..columns.len()).filter(|&i| columns.is_visible(i)) {
                reply.push((columns.get(i).name.clone(), i));
            }
        }
    }
    let status_column = match &route.reply.status {
        None => None,
        Some(Spanned { value: name, span }) => {
            let key = format!("route[{ri}].reply.status");
            let Some(i) = columns.index_of(name) else {
                return Err(unknown_column(source, span, &key, name, &columns));
            };
            if columns.get(i).ty != ColumnType::Int64 {
                return Err(ConfigError::at(
                    source,
                    span.clone(),
                    &key,
                    format!(
                        "the status column must be int64, but \"{name}\" is {}",
                        columns.get(i).ty
                    ),
                ));
            }
            Some(i)
        }
    };
    let method = http_method(route.method);
    Ok(RoutePlan {
        method,
        path: route.path.clone(),
        name: format!("{} {}", route.method, route.path),
        request,
        columns,
        steps,
        reply,
        status_column,
        read: None,
    })
}

fn key_column(
    source: &crate::config::Source,
    columns: &Columns,
    key: &Spanned<String>,
    at: &str,
) -> Result<(usize, ColumnType), ConfigError> {
    let Some(i) = columns.index_of(&key.value) else {
        return Err(unknown_column(source, &key.span, at, &key.value, columns));
    };
    let ty = columns.get(i).ty;
    if ty == ColumnType::Float64 {
        return Err(ConfigError::at(
            source,
            key.span.clone(),
            at,
            format!(
                "key column \"{}\" is float64; keys must be utf8, int64 or bool",
                key.value
            ),
        ));
    }
    Ok((i, ty))
}

fn add_table(
    source: &crate::config::Source,
    tables: &mut Vec<(TableSpec, ColumnType)>,
    spec: TableSpec,
    key_type: ColumnType,
    name: &Spanned<String>,
    at: &str,
) -> Result<usize, ConfigError> {
    if tables.iter().any(|(t, _)| t.name == spec.name) {
        return Err(ConfigError::at(
            source,
            name.span.clone(),
            at,
            format!(
                "another keyed step is already named \"{}\"; names must be unique",
                spec.name
            ),
        ));
    }
    tables.push((spec, key_type));
    Ok(tables.len() - 1)
}

fn compile_at(
    source: &crate::config::Source,
    scope: &Columns,
    text: &Spanned<String>,
    key: &str,
) -> Result<Expr, ConfigError> {
    expr::compile(&text.value, scope).map_err(|e| {
        let at = e.offset.min(text.value.len());
        let end = (at + 1).min(text.value.len()).max(at);
        ConfigError::at(source, text.subspan(source, at..end), key, e.message)
    })
}

fn unknown_column(
    source: &crate::config::Source,
    span: &std::ops::Range<usize>,
    key: &str,
    name: &str,
    columns: &Columns,
) -> ConfigError {
    let known = columns.visible_names();
    ConfigError::at(
        source,
        span.clone(),
        key,
        format!(
            "unknown column \"{name}\"; expected one of: {}",
            known.join(", ")
        ),
    )
}

impl Plan {
    /// A human-readable description of the plan (`coreline check`).
    pub fn describe(&self, cores: &[usize]) -> String {
        let svc = &self.config.service;
        let mut s = String::new();
        let _ = writeln!(s, "service {}", svc.name);
        let _ = writeln!(
            s,
            "  shards: {}{}",
            svc.shards,
            if svc.shards_auto {
                " (auto: one per available core)"
            } else {
                ""
            }
        );
        for i in 0..svc.shards {
            let port = if svc.base_port == 0 {
                "OS-assigned".to_string()
            } else {
                (svc.base_port as usize + i).to_string()
            };
            let _ = writeln!(
                s,
                "    shard {i}: core {}, listens on {}:{port}",
                cores.get(i).copied().unwrap_or(i),
                svc.host
            );
        }
        match svc.admin_port {
            Some(p) => {
                let _ = writeln!(
                    s,
                    "  admin: {}:{p} (/metrics, /stats, /health, /ready)",
                    svc.host
                );
            }
            None => {
                let _ = writeln!(s, "  admin: disabled (no admin_port)");
            }
        }
        let l = &self.config.limits;
        let _ = writeln!(
            s,
            "  limits: header {} B, body {} B, {} headers, header timeout {:?}, body timeout {:?}, idle timeout {:?}, {} connections/shard, drain {:?}",
            l.max_header_bytes,
            l.max_body_bytes,
            l.max_headers,
            l.header_timeout,
            l.body_timeout,
            l.idle_timeout,
            l.max_connections,
            l.drain_timeout
        );
        if let Some(cp) = &self.config.checkpoint {
            let _ = writeln!(
                s,
                "  checkpoints: {} every {:?}, keep {}, full snapshot every {} epochs",
                cp.dir.display(),
                cp.interval,
                cp.retain,
                cp.full_every
            );
        }
        for r in &self.routes {
            let _ = writeln!(s, "route {}", r.name);
            if let Some(read) = &r.read {
                let _ = writeln!(
                    s,
                    "  read: {}?key=<{}> -> {{key, {}}} (from the key's owner shard)",
                    read.name,
                    read.key_type,
                    read.values.join(", ")
                );
                continue;
            }
            let fields: Vec<String> = r
                .request
                .iter()
                .map(|c| {
                    format!(
                        "{}: {}{}",
                        c.name,
                        c.ty,
                        if c.nullable { " (nullable)" } else { "" }
                    )
                })
                .collect();
            let _ = writeln!(s, "  request: {{{}}}", fields.join(", "));
            for (i, step) in r.steps.iter().enumerate() {
                match step {
                    StepPlan::WithColumn { name, out, expr } => {
                        let c = r.columns.get(*out);
                        let _ = writeln!(
                            s,
                            "  step {i}: with_column {name} = {}  -> {}: {}{}",
                            expr.source(),
                            name,
                            c.ty,
                            if c.nullable { " (nullable)" } else { "" }
                        );
                    }
                    StepPlan::Filter {
                        predicate,
                        status,
                        message,
                    } => {
                        let _ = writeln!(
                            s,
                            "  step {i}: filter {}  else {status} \"{message}\"",
                            predicate.source()
                        );
                    }
                    StepPlan::Select { columns } => {
                        let _ = writeln!(s, "  step {i}: select {}", columns.join(", "));
                    }
                    StepPlan::Keyed(Keyed::Aggregate(a)) => {
                        let table = &self.tables[a.table];
                        let outs: Vec<String> = a
                            .outs
                            .iter()
                            .map(|&o| {
                                let c = r.columns.get(o);
                                format!("{}: {}", c.name, c.ty)
                            })
                            .collect();
                        let _ = writeln!(
                            s,
                            "  step {i}: aggregate {} by {} (state on the key's owner shard)  -> {}",
                            table.name,
                            a.key_name,
                            outs.join(", ")
                        );
                    }
                    StepPlan::Keyed(Keyed::Changed(c)) => {
                        let _ = writeln!(
                            s,
                            "  step {i}: changed {} by {} on {}  -> {}: bool",
                            self.tables[c.table].name,
                            c.key_name,
                            c.value.source(),
                            r.columns.get(c.out).name
                        );
                    }
                }
            }
            let reply: Vec<String> = r
                .reply
                .iter()
                .map(|(n, i)| format!("{n}: {}", r.columns.get(*i).ty))
                .collect();
            let _ = write!(s, "  reply: {{{}}}", reply.join(", "));
            if let Some(i) = r.status_column {
                let _ = write!(s, ", status from {}", r.columns.get(i).name);
            }
            s.push('\n');
        }
        s
    }
}

/// A step's label in metrics: `<index>:<kind>[:<name>]`, the index being the
/// step's position in the file (so two filters stay apart).
fn step_label(index: usize, step: &StepPlan, tables: &[TableSpec]) -> String {
    match step {
        StepPlan::WithColumn { name, .. } => format!("{index}:with_column:{name}"),
        StepPlan::Filter { .. } => format!("{index}:filter"),
        StepPlan::Select { .. } => format!("{index}:select"),
        StepPlan::Keyed(k) => {
            let (kind, table) = match k {
                Keyed::Aggregate(a) => ("aggregate", a.table),
                Keyed::Changed(c) => ("changed", c.table),
            };
            let name = tables.get(table).map_or("?", |t| t.name.as_str());
            format!("{index}:{kind}:{name}")
        }
    }
}

impl RoutePlan {
    /// Builds this shard's own copy of the route; `tables` are the plan's
    /// (they name keyed steps in metrics).
    pub fn build(&self, tables: &[TableSpec]) -> Route {
        let step_metrics = self
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s, StepPlan::Select { .. }))
            .map(|(i, s)| StepMetrics::new(self.name.clone(), step_label(i, s, tables)))
            .collect();
        let ops = self
            .steps
            .iter()
            .filter_map(|step| match step {
                StepPlan::WithColumn { out, expr, .. } => {
                    Some(Operator::WithColumn(WithColumn::new(expr.clone(), *out)))
                }
                StepPlan::Filter {
                    predicate,
                    status,
                    message,
                } => Some(Operator::Filter(Filter::new(
                    predicate.clone(),
                    *status,
                    message,
                ))),
                StepPlan::Select { .. } => None,
                StepPlan::Keyed(k) => Some(Operator::Keyed(k.clone())),
            })
            .collect();
        Route {
            method: self.method,
            path: self.path.clone(),
            name: self.name.clone(),
            schema: RequestSchema::new(self.request.clone()),
            row: Row::with_width(self.columns.len()),
            ops,
            step_metrics,
            reply: ReplyEncoder::new(&self.reply),
            status_column: self.status_column,
            read: self.read.clone(),
            key_text: String::new(),
        }
    }
}

/// One route on one shard, with its reusable row.
#[derive(Debug)]
pub struct Route {
    method: Method,
    path: String,
    name: String,
    schema: RequestSchema,
    row: Row,
    ops: Vec<Operator>,
    /// Latency of `ops[i]`, recorded after each run (no allocation).
    step_metrics: Vec<StepMetrics>,
    reply: ReplyEncoder,
    status_column: Option<usize>,
    read: Option<ReadPlan>,
    /// The percent-decoded `key` of a read request.
    key_text: String,
}

/// What running a request through a route came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answered: the status; the body is written.
    Done(u16),
    /// Step `step` needs the key's owner shard `owner` to run `op`; resume
    /// with [`Router::resume`] once the reply is back.
    Forward {
        /// The keyed step's index among the route's operators.
        step: usize,
        /// Owner shard.
        owner: usize,
        /// What the owner must run.
        op: KeyedOp,
    },
}

impl Route {
    /// Runs one request through the route: decode, steps, reply. Writes the
    /// JSON response body into `body`.
    pub fn handle(
        &mut self,
        request: &Request<'_>,
        ctx: &mut Ctx<'_>,
        body: &mut Vec<u8>,
    ) -> Outcome {
        if self.read.is_some() {
            return self.read(request.query, ctx, body);
        }
        if let Err(e) = self.schema.decode(request.body, &mut self.row) {
            e.write_json(body);
            return Outcome::Done(e.status);
        }
        self.run_from(0, ctx, body)
    }

    /// The row being processed, to save while a forward is in flight (other
    /// requests on this shard reuse the route's row meanwhile).
    pub fn row(&self) -> &Row {
        &self.row
    }

    /// Restores a saved row, the reply of the owner for operator `step`, and
    /// goes on with the steps after it.
    pub fn resume(
        &mut self,
        saved: &Row,
        step: usize,
        reply: KeyedReply,
        ctx: &mut Ctx<'_>,
        body: &mut Vec<u8>,
    ) -> Outcome {
        if let Some(read) = &self.read {
            return match reply {
                KeyedReply::Values(Some(values)) => {
                    write_read(body, read, saved.get(0), &values);
                    Outcome::Done(200)
                }
                KeyedReply::Values(None) => {
                    not_found(body, saved.get(0));
                    Outcome::Done(404)
                }
                KeyedReply::Failed(status, message) => {
                    write_error_json(body, &message, None);
                    Outcome::Done(status)
                }
                other => {
                    write_error_json(body, &format!("unexpected reply {other:?}"), None);
                    Outcome::Done(500)
                }
            };
        }
        self.row.clone_from(saved);
        let Operator::Keyed(op) = &self.ops[step] else {
            write_error_json(body, "resumed at a step that is not keyed", None);
            return Outcome::Done(500);
        };
        match op.accept(&mut self.row, reply, body) {
            Flow::Continue => self.run_from(step + 1, ctx, body),
            Flow::Reply(status) => Outcome::Done(status),
            Flow::Forward(_) => Outcome::Done(500),
        }
    }

    fn run_from(&mut self, first: usize, ctx: &mut Ctx<'_>, body: &mut Vec<u8>) -> Outcome {
        // One clock read per step: each step's end is the next one's start.
        let mut start = Instant::now();
        for step in first..self.ops.len() {
            let flow = self.ops[step].apply(&mut self.row, ctx, body);
            if !matches!(flow, Flow::Forward(_)) {
                // A forwarded step is timed by its round trip instead
                // (`Router::record_step`).
                let end = Instant::now();
                self.step_metrics[step].record(end - start);
                start = end;
            }
            match flow {
                Flow::Continue => {}
                Flow::Reply(status) => return Outcome::Done(status),
                Flow::Forward(owner) => {
                    let Operator::Keyed(op) = &self.ops[step] else {
                        unreachable!("only keyed steps forward")
                    };
                    return Outcome::Forward {
                        step,
                        owner,
                        op: op.forward_op(&self.row, ctx.now_ms()),
                    };
                }
            }
        }
        self.reply.encode(&self.row, body);
        match self.status_column {
            None => Outcome::Done(200),
            Some(i) => match self.row.get(i) {
                Val::Int(s) if (200..=599).contains(&s) => Outcome::Done(s as u16),
                Val::Null => Outcome::Done(200),
                other => {
                    body.clear();
                    let message = format!(
                        "route {}: the status column holds {other:?}, not an HTTP status 200..599",
                        self.name
                    );
                    write_error_json(body, &message, None);
                    Outcome::Done(500)
                }
            },
        }
    }

    /// `GET path?key=…` on a read route.
    fn read(&mut self, query: &str, ctx: &mut Ctx<'_>, body: &mut Vec<u8>) -> Outcome {
        let read = self.read.as_ref().expect("read route");
        let Some(raw) = query_param(query, "key") else {
            write_error_json(body, "missing query parameter \"key\"", Some("key"));
            return Outcome::Done(400);
        };
        if !percent_decode(raw, &mut self.key_text) {
            write_error_json(
                body,
                "query parameter \"key\" is not valid percent-encoded UTF-8",
                Some("key"),
            );
            return Outcome::Done(400);
        }
        let key = match read.key_type {
            ColumnType::Utf8 => Val::Str(&self.key_text),
            ColumnType::Int64 => match self.key_text.parse::<i64>() {
                Ok(i) => Val::Int(i),
                Err(_) => {
                    write_error_json(
                        body,
                        &format!("key must be an int64, found \"{}\"", self.key_text),
                        Some("key"),
                    );
                    return Outcome::Done(400);
                }
            },
            ColumnType::Boolean => match self.key_text.as_str() {
                "true" => Val::Bool(true),
                "false" => Val::Bool(false),
                other => {
                    write_error_json(
                        body,
                        &format!("key must be true or false, found \"{other}\""),
                        Some("key"),
                    );
                    return Outcome::Done(400);
                }
            },
            ColumnType::Float64 => unreachable!("float keys are refused by the plan"),
        };
        // The key travels in slot 0 of the route's (otherwise unused) row.
        if self.row.width() == 0 {
            self.row = Row::with_width(1);
        }
        let owner = owner_shard(key, ctx.shards);
        if owner != ctx.shard {
            let op = KeyedOp::Read {
                table: read.table,
                key: Owned::from_val(key),
            };
            self.row.slot_mut(0).set(key);
            return Outcome::Forward { step: 0, owner, op };
        }
        match read_state(ctx.state, read.table, key) {
            Some(values) => {
                write_read(body, read, key, &values);
                Outcome::Done(200)
            }
            None => {
                not_found(body, key);
                Outcome::Done(404)
            }
        }
    }
}

fn write_read(body: &mut Vec<u8>, read: &ReadPlan, key: Val<'_>, values: &[Owned]) {
    body.extend_from_slice(b"{\"key\":");
    write_json_value(body, key);
    for (name, v) in read.values.iter().zip(values) {
        body.push(b',');
        write_json_string(body, name);
        body.push(b':');
        write_json_value(body, v.as_val());
    }
    body.push(b'}');
}

fn not_found(body: &mut Vec<u8>, key: Val<'_>) {
    let mut k = Vec::new();
    write_json_value(&mut k, key);
    write_error_json(
        body,
        &format!("no state for key {}", String::from_utf8_lossy(&k)),
        Some("key"),
    );
}

/// The raw value of `name` in a query string.
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Percent-decodes `raw` (and `+` as space) into `out`; false if the result
/// is not UTF-8 or an escape is malformed.
fn percent_decode(raw: &str, out: &mut String) -> bool {
    let bytes = raw.as_bytes();
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return false;
                };
                buf.push((h * 16 + l) as u8);
                i += 3;
            }
            b'+' => {
                buf.push(b' ');
                i += 1;
            }
            b => {
                buf.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(buf) {
        Ok(s) => {
            *out = s;
            true
        }
        Err(_) => false,
    }
}

/// What a request's method and path matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// `GET /health`.
    Health,
    /// Route index.
    Route(usize),
    /// The path exists with other methods: index for [`Router::allow`].
    MethodNotAllowed(usize),
    /// No route has this path.
    NotFound,
}

/// A shard's routes.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    /// Distinct paths with their `Allow` header values. The values are
    /// leaked once per router at start-up (a few bytes per path) so that a
    /// 405 response can borrow them for `'static` without copying.
    paths: Vec<(String, &'static str)>,
}

impl Router {
    /// A router over this shard's own routes.
    pub fn new(routes: Vec<Route>) -> Router {
        let mut allows: Vec<(String, Vec<&'static str>)> = Vec::new();
        for r in &routes {
            let method = r.method.as_str().unwrap_or("GET");
            match allows.iter_mut().find(|(p, _)| *p == r.path) {
                Some((_, methods)) => methods.push(method),
                None => allows.push((r.path.clone(), vec![method])),
            }
        }
        let paths = allows
            .into_iter()
            .map(|(path, mut methods)| {
                if methods.contains(&"GET") {
                    methods.push("HEAD");
                }
                let allow: &'static str = Box::leak(methods.join(", ").into_boxed_str());
                (path, allow)
            })
            .collect();
        Router { routes, paths }
    }

    /// Builds a router from every route of a plan.
    pub fn from_plan(plan: &Plan) -> Router {
        Router::new(plan.routes.iter().map(|r| r.build(&plan.tables)).collect())
    }

    /// Records the forwarding round trip of step `step` of route `i`.
    pub fn record_step(&mut self, i: usize, step: usize, took: Duration) {
        if let Some(m) = self.routes[i].step_metrics.get_mut(step) {
            m.record(took);
        }
    }

    /// A copy of every route's step metrics, for a metrics snapshot.
    pub fn step_metrics(&self) -> Vec<StepMetrics> {
        self.routes
            .iter()
            .flat_map(|r| r.step_metrics.iter().cloned())
            .collect()
    }

    /// Number of routes (also the index metrics use for unmatched requests).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Route names in index order.
    pub fn route_names(&self) -> Vec<String> {
        self.routes.iter().map(|r| r.name.clone()).collect()
    }

    /// Finds the route for a method and path. Routes are few; comparing
    /// path bytes in a short loop is faster than hashing the path.
    #[inline]
    pub fn find(&self, method: Method, path: &str) -> Match {
        let method = if method == Method::Head {
            Method::Get
        } else {
            method
        };
        for (i, r) in self.routes.iter().enumerate() {
            if r.path == path && r.method == method {
                return Match::Route(i);
            }
        }
        if path == HEALTH_PATH && method == Method::Get {
            return Match::Health;
        }
        match self.paths.iter().position(|(p, _)| p == path) {
            Some(i) => Match::MethodNotAllowed(i),
            None => Match::NotFound,
        }
    }

    /// The `Allow` header value for a [`Match::MethodNotAllowed`] path.
    pub fn allow(&self, path: usize) -> &'static str {
        self.paths[path].1
    }

    /// Runs route `i` on a request; a panic inside the pipeline becomes a
    /// 500 for this request while the shard keeps serving.
    pub fn handle(
        &mut self,
        i: usize,
        request: &Request<'_>,
        ctx: &mut Ctx<'_>,
        body: &mut Vec<u8>,
    ) -> Outcome {
        let route = &mut self.routes[i];
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| route.handle(request, ctx, body)));
        contain(result, &route.name, body)
    }

    /// Resumes route `i` after a forward (see [`Route::resume`]).
    pub fn resume(
        &mut self,
        i: usize,
        saved: &Row,
        step: usize,
        reply: KeyedReply,
        ctx: &mut Ctx<'_>,
        body: &mut Vec<u8>,
    ) -> Outcome {
        let route = &mut self.routes[i];
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            route.resume(saved, step, reply, ctx, body)
        }));
        contain(result, &route.name, body)
    }

    /// Route `i`'s current row.
    pub fn row(&self, i: usize) -> &Row {
        self.routes[i].row()
    }
}

fn contain(result: std::thread::Result<Outcome>, route: &str, body: &mut Vec<u8>) -> Outcome {
    match result {
        Ok(outcome) => outcome,
        Err(_) => {
            body.clear();
            write_error_json(body, "internal error while running the route's steps", None);
            tracing::error!(route, "a step panicked; answered 500");
            Outcome::Done(500)
        }
    }
}
