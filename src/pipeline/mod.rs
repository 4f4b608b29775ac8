//! Compiled routes: the validated [`Plan`] built once at start-up, and the
//! per-shard [`Router`] of [`Route`]s built from it.
//!
//! [`plan`] is the second, semantic phase of configuration: it walks each
//! route's steps in order with a `Planner` (`crate::plan`) that
//! tracks the columns visible at each point; each step kind compiles itself
//! against them (so type errors and unknown columns are reported with file,
//! line and column before anything starts) and resolves every column name to
//! a slot index. A shard then clones the compiled plan into its own
//! [`Router`]: nothing in a route is shared between threads, and nothing is
//! looked up by name per request.
//!
//! - this file: [`Plan`], [`RoutePlan`] and [`plan`] (planning);
//! - `describe.rs`: [`Plan::describe`], what `coreline check` prints;
//! - `route.rs`: the run-time [`Route`] and its [`Outcome`];
//! - `router.rs`: a shard's [`Router`]: method and path to a route.

mod describe;
mod route;
mod router;

pub use route::{Outcome, Route};
pub use router::{Match, Router};

use crate::config::{ConfigError, RouteConfig, ServiceConfig, Spanned, route_key};
use crate::http::Method;
use crate::operator::{Operator, Read};
use crate::plan::Planner;
use crate::row::{Column, ColumnType, Columns, Scalar};
use crate::state::TableSpec;

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
    /// The key type of each table, in the order of `tables`.
    pub table_keys: Vec<ColumnType>,
}

/// Where a route's row comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteInput {
    /// The JSON body, into the request fields (slots `0..request.len()`).
    Body,
    /// A `read` route: the `key` query parameter, of this type, into slot 0.
    QueryKey(ColumnType),
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
    /// Where the row comes from.
    pub input: RouteInput,
    /// Request fields: slots `0..request.len()` of the row.
    pub request: Vec<Column>,
    /// The fixed length of each request field (`len` on a vector field).
    pub request_lengths: Vec<Option<usize>>,
    /// Header columns (`headers = {...}`): slots right after the request
    /// fields, in declaration order.
    pub headers: Vec<HeaderPlan>,
    /// Every column the row holds (request fields, then step outputs).
    pub columns: Columns,
    /// The steps, compiled.
    pub steps: Vec<Operator>,
    /// Reply columns: JSON name and slot.
    pub reply: Vec<(String, usize)>,
    /// Slot of the int64 column that gives the HTTP status, if any.
    pub status_column: Option<usize>,
}

/// A header column (`headers = { x_user = "utf8" }`). Planning checks that
/// its type is a scalar (the configuration refuses vectors first, with the
/// same message), so reading it per request has no vector case.
#[derive(Debug, Clone)]
pub struct HeaderPlan {
    /// Its name, type and nullability.
    pub column: Column,
    /// Its type, a scalar.
    pub ty: Scalar,
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
    // Declared [[table]]s first: their state ids are their file order.
    let mut tables: Vec<(TableSpec, ColumnType)> = config
        .tables
        .iter()
        .map(|t| (t.table_spec(), t.spec.key_type))
        .collect();
    let mut routes: Vec<Option<RoutePlan>> = Vec::with_capacity(config.routes.len());
    for (ri, route) in config.routes.iter().enumerate() {
        routes.push(match route.read {
            None => Some(plan_route(&config, ri, route, &mut tables)?),
            Some(_) => None,
        });
    }
    for (ri, route) in config.routes.iter().enumerate() {
        if let Some(read) = &route.read {
            routes[ri] = Some(plan_read(route, read, &tables));
        }
    }
    // `PUT /models/<name>` and `model_version('<name>')` find a score step
    // by name: names are unique in the service.
    let mut names: Vec<&str> = Vec::new();
    for (ri, route) in routes.iter().enumerate() {
        let Some(route) = route else { continue };
        for (si, step) in route.steps.iter().enumerate() {
            if let Operator::Score(score) = step {
                if names.contains(&score.name()) {
                    return Err(ConfigError::at(
                        &config.source,
                        score.name_span(),
                        &crate::config::step_key(ri, si, "score.name"),
                        format!("another score step is already called \"{}\"", score.name()),
                    )
                    .with_expected("a unique `name = \"...\"` for each score step"));
                }
                names.push(score.name());
            }
        }
    }
    Ok(Plan {
        config,
        routes: routes
            .into_iter()
            .map(|r| r.expect("every route planned"))
            .collect(),
        table_keys: tables.iter().map(|(_, k)| *k).collect(),
        tables: tables.into_iter().map(|(t, _)| t).collect(),
    })
}

impl Plan {
    /// The `score` steps of every route, in file order.
    pub fn score_steps(&self) -> impl Iterator<Item = &crate::operator::Score> {
        self.routes.iter().flat_map(|r| {
            r.steps.iter().filter_map(|s| match s {
                Operator::Score(score) => Some(score),
                _ => None,
            })
        })
    }

    /// The `score` step called `name`.
    pub fn score_step_mut(&mut self, name: &str) -> Option<&mut crate::operator::Score> {
        self.routes
            .iter_mut()
            .flat_map(|r| r.steps.iter_mut())
            .find_map(|s| match s {
                Operator::Score(score) if score.name() == name => Some(score),
                _ => None,
            })
    }
}

/// A `read` route: key, then the values a key's state holds (aggregate
/// outputs, or `value` for a `changed` table), answered as one object.
fn plan_read(
    route: &RouteConfig,
    read: &Spanned<String>,
    tables: &[(TableSpec, ColumnType)],
) -> RoutePlan {
    let table = tables
        .iter()
        .position(|(t, _)| t.name == read.value)
        .expect("configuration checked that read names a keyed state");
    let (spec, key_type) = &tables[table];
    let values: Vec<(String, ColumnType)> = spec
        .read_values()
        .into_iter()
        .map(|(name, ty, _)| (name, ty))
        .collect();
    let mut columns = Columns::new();
    let mut reply = Vec::with_capacity(1 + values.len());
    for (name, ty) in std::iter::once(("key".to_string(), *key_type)).chain(values) {
        reply.push((name.clone(), columns.len()));
        columns.push(Column {
            name,
            ty,
            nullable: true,
        });
    }
    RoutePlan {
        method: http_method(route.method),
        path: route.path.clone(),
        name: format!("{} {}", route.method, route.path),
        input: RouteInput::QueryKey(*key_type),
        request: Vec::new(),
        request_lengths: Vec::new(),
        headers: Vec::new(),
        columns,
        steps: vec![Operator::Read(Read { table })],
        reply,
        status_column: None,
    }
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
            &route_key(ri, "path"),
            format!(
                "{HEALTH_PATH} is reserved for load-balancer health checks; choose another path"
            ),
        ));
    }
    let request: Vec<Column> = route.request.iter().map(|f| f.column.clone()).collect();
    let headers = route
        .headers
        .iter()
        .map(|f| match f.column.ty.scalar() {
            Some(ty) => Ok(HeaderPlan {
                column: f.column.clone(),
                ty,
            }),
            None => Err(ConfigError::at(
                source,
                f.span.clone(),
                &route_key(ri, &format!("headers.{}", f.column.name)),
                format!("header column {:?} is {}", f.column.name, f.column.ty),
            )
            .with_expected("a scalar header type: utf8, int64, float64 or bool")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let inputs: Vec<Column> = request
        .iter()
        .chain(headers.iter().map(|h| &h.column))
        .cloned()
        .collect();
    let mut planner = Planner::new(source, ri, &inputs, tables);
    let mut steps = Vec::with_capacity(route.steps.len());
    for step in &route.steps {
        steps.push(step.plan(&mut planner)?);
    }
    let mut reply = Vec::new();
    match &route.reply.columns {
        Some(names) => {
            let key = route_key(ri, "reply.columns");
            for name in names {
                reply.push((name.value.clone(), planner.column(name, &key)?));
            }
        }
        None => {
            let columns = planner.columns();
            for i in (0..columns.len()).filter(|&i| columns.is_visible(i)) {
                reply.push((columns.get(i).name.clone(), i));
            }
        }
    }
    let status_column = match &route.reply.status {
        None => None,
        Some(status) => {
            let key = route_key(ri, "reply.status");
            let i = planner.column(status, &key)?;
            let ty = planner.columns().get(i).ty;
            if ty != ColumnType::Int64 {
                return Err(ConfigError::at(
                    source,
                    status.span.clone(),
                    &key,
                    format!(
                        "the status column must be int64, but \"{}\" is {ty}",
                        status.value
                    ),
                ));
            }
            Some(i)
        }
    };
    Ok(RoutePlan {
        method: http_method(route.method),
        path: route.path.clone(),
        name: format!("{} {}", route.method, route.path),
        input: RouteInput::Body,
        request_lengths: route.request.iter().map(|f| f.len).collect(),
        request,
        headers,
        columns: planner.into_columns(),
        steps,
        reply,
        status_column,
    })
}
