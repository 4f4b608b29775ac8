//! A shard's [`Router`]: a request's method and path to one of its routes,
//! and the boundary that turns a panicking step into a 500.

use std::panic::AssertUnwindSafe;

use super::{HEALTH_PATH, Outcome, Plan, Route, RoutePlan};
use crate::forward::KeyedReply;
use crate::http::{Method, Request};
use crate::operator::Ctx;
use crate::reply::write_error_json;
use crate::row::Row;

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

    /// Records the forwarding round trip of step `step` of route `i`.
    pub fn record_step(&mut self, i: usize, step: usize, took: std::time::Duration) {
        self.routes[i].record_step(step, took);
    }

    /// A copy of every route's step metrics, for a metrics snapshot.
    pub fn step_metrics(&self) -> Vec<crate::metrics::StepMetrics> {
        self.routes
            .iter()
            .flat_map(|r| r.step_metrics().iter().cloned())
            .collect()
    }

    /// Installs a checked model in the `score` step it names; false if no
    /// step has that name. Called between two requests.
    pub fn install_model(&mut self, swap: crate::operator::ModelSwap) -> bool {
        for route in &mut self.routes {
            if let Some(score) = route.score_step_mut(&swap.step) {
                score.install(swap);
                return true;
            }
        }
        false
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

    /// Resumes route `i` after a forward with the request's `row` (see
    /// [`Route::resume`]).
    pub fn resume(
        &mut self,
        i: usize,
        row: &mut Row,
        step: usize,
        reply: KeyedReply,
        ctx: &mut Ctx<'_>,
        body: &mut Vec<u8>,
    ) -> Outcome {
        let route = &mut self.routes[i];
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            route.resume(row, step, reply, ctx, body)
        }));
        contain(result, &route.name, body)
    }

    /// Hands route `i`'s row (the request that just asked for a forward) to
    /// the caller in exchange for `spare` (see [`Route::take_row`]).
    pub fn take_row(&mut self, i: usize, spare: &mut Row) {
        self.routes[i].take_row(spare);
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
