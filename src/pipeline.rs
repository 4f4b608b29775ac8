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

use crate::config::{ConfigError, RouteConfig, ServiceConfig, Spanned, StepConfig, step_key};
use crate::expr::{self, Expr};
use crate::http::{Method, Request};
use crate::operator::{Filter, Flow, Operator, WithColumn};
use crate::reply::{ReplyEncoder, write_error_json};
use crate::row::{Column, ColumnType, Columns, Row};
use crate::schema::RequestSchema;

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
    let mut routes = Vec::with_capacity(config.routes.len());
    for (ri, route) in config.routes.iter().enumerate() {
        routes.push(plan_route(&config, ri, route)?);
    }
    Ok(Plan { config, routes })
}

fn plan_route(
    config: &ServiceConfig,
    ri: usize,
    route: &RouteConfig,
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
    if let Some(read) = &route.read {
        return Err(ConfigError::at(
            source,
            read.span.clone(),
            &format!("route[{ri}].read"),
            "read routes need keyed state, which this build does not support yet",
        ));
    }
    let mut columns = Columns::new();
    let request: Vec<Column> = route.request.iter().map(|f| f.column.clone()).collect();
    for c in &request {
        columns.push(c.clone());
    }
    let mut steps = Vec::with_capacity(route.steps.len());
    for (si, step) in route.steps.iter().enumerate() {
        let key = |field: &str| step_key(ri, si, field);
        match step {
            StepConfig::WithColumn { name, expr } => {
                let name = &name.value;
                let compiled = compile_at(source, &columns, expr, &key("with_column.expr"))?;
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
                let compiled = compile_at(source, &columns, expr, &key("filter.expr"))?;
                if compiled.ty() != ColumnType::Boolean {
                    return Err(ConfigError::at(
                        source,
                        expr.span.clone(),
                        &key("filter.expr"),
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
                                &key("select.columns"),
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
            StepConfig::Aggregate { name, .. } | StepConfig::Changed { name, .. } => {
                return Err(ConfigError::at(
                    source,
                    name.span.clone(),
                    &format!("route[{ri}].step[{si}]"),
                    "keyed state steps (aggregate, changed) are not supported by this build yet",
                ));
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
    })
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
        for r in &self.routes {
            let _ = writeln!(s, "route {}", r.name);
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

impl RoutePlan {
    /// Builds this shard's own copy of the route.
    pub fn build(&self) -> Route {
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
            })
            .collect();
        Route {
            method: self.method,
            path: self.path.clone(),
            name: self.name.clone(),
            schema: RequestSchema::new(self.request.clone()),
            row: Row::with_width(self.columns.len()),
            ops,
            reply: ReplyEncoder::new(&self.reply),
            status_column: self.status_column,
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
    reply: ReplyEncoder,
    status_column: Option<usize>,
}

impl Route {
    /// Runs one request body through the route: decode, steps, reply. Writes
    /// the JSON response body into `body` and returns the status.
    pub fn handle(&mut self, request_body: &[u8], body: &mut Vec<u8>) -> u16 {
        if let Err(e) = self.schema.decode(request_body, &mut self.row) {
            e.write_json(body);
            return e.status;
        }
        for op in &mut self.ops {
            if let Flow::Reply(status) = op.apply(&mut self.row, body) {
                return status;
            }
        }
        self.reply.encode(&self.row, body);
        match self.status_column {
            None => 200,
            Some(i) => match self.row.get(i) {
                crate::row::Val::Int(s) if (200..=599).contains(&s) => s as u16,
                crate::row::Val::Null => 200,
                other => {
                    body.clear();
                    let message = format!(
                        "status column \"{}\" holds {other:?}, not an HTTP status 200..599",
                        self.name
                    );
                    write_error_json(body, &message, None);
                    500
                }
            },
        }
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
        Router::new(plan.routes.iter().map(RoutePlan::build).collect())
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

    /// Runs route `i` on a request; panics inside the pipeline become a 500
    /// for this request while the shard keeps serving.
    pub fn handle(&mut self, i: usize, request: &Request<'_>, body: &mut Vec<u8>) -> u16 {
        let route = &mut self.routes[i];
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| route.handle(request.body, body)));
        match result {
            Ok(status) => status,
            Err(_) => {
                body.clear();
                write_error_json(body, "internal error while running the route's steps", None);
                tracing::error!(route = %route.name, "a step panicked; answered 500");
                500
            }
        }
    }
}
