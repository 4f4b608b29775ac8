//! One route on one shard at run time: the request into the row, the
//! operators in order, the reply.
//!
//! A route owns a reusable [`Row`] and its operators' scratch state. Every
//! route runs the same way: its input (a JSON body, or a read route's `key`
//! query parameter) fills the row, each operator runs on it, and the reply
//! encoder writes the reply columns. A keyed step whose key another shard
//! owns stops the run with [`Outcome::Forward`]; the connection then takes
//! the row with it ([`Route::take_row`]) while it waits, and brings it back
//! with the owner's reply ([`Route::resume`]).

use std::time::{Duration, Instant};

use crate::forward::{KeyedOp, KeyedReply};
use crate::http::{Method, Request, header_name_is};
use crate::metrics::StepMetrics;
use crate::operator::{Ctx, Flow, KeyQuery, Operator, Step};
use crate::reply::{ReplyEncoder, write_error_json};
use crate::row::{Row, Scalar, Val};
use crate::schema::RequestSchema;

use super::{HeaderPlan, RouteInput, RoutePlan};

/// Where a route's row comes from.
#[derive(Debug)]
enum Input {
    /// The JSON body.
    Body(RequestSchema),
    /// A read route's key.
    Key(KeyQuery),
}

impl Input {
    /// Fills the row from the request; on bad input writes the error body
    /// and returns its status.
    #[inline]
    fn decode(
        &mut self,
        request: &Request<'_>,
        row: &mut Row,
        body: &mut Vec<u8>,
    ) -> Result<(), u16> {
        match self {
            Input::Body(schema) => schema.decode(request.body, row).map_err(|e| {
                e.write_json(body);
                e.status
            }),
            Input::Key(key) => key.decode(request.query, row, body),
        }
    }
}

/// One route on one shard, with its reusable row.
#[derive(Debug)]
pub struct Route {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) name: String,
    input: Input,
    row: Row,
    ops: Vec<Operator>,
    /// Latency of `ops[i]`, recorded after each run (no allocation).
    step_metrics: Vec<StepMetrics>,
    reply: ReplyEncoder,
    status_column: Option<usize>,
    /// Header columns, filled after the body is decoded.
    headers: Vec<HeaderColumn>,
    /// Where each header column's value is in the request head, found in
    /// one pass over its header lines; reused from request to request.
    header_values: Vec<Option<(usize, usize)>>,
}

/// A request header read into a typed column (`headers = { x_user = "utf8" }`).
#[derive(Debug, Clone)]
struct HeaderColumn {
    /// The column name (`x_user`), also the header name it matches (see
    /// [`header_name_is`]).
    name: String,
    /// Its row slot.
    slot: usize,
    ty: Scalar,
    nullable: bool,
    /// Error messages, built once: `missing header X-User`, and
    /// `header X-User is not a valid int64`.
    missing: String,
    invalid: String,
}

impl HeaderColumn {
    fn new(plan: &HeaderPlan, slot: usize) -> HeaderColumn {
        let column = &plan.column;
        // x_user -> X-User, for messages.
        let header: Vec<String> = column
            .name
            .split('_')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or(String::new(), |c| {
                    c.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect();
        let header = header.join("-");
        HeaderColumn {
            name: column.name.clone(),
            slot,
            ty: plan.ty,
            nullable: column.nullable,
            missing: format!("missing header {header}"),
            invalid: format!("header {header} is not a valid {}", column.ty),
        }
    }

    /// Reads the header's value (`None`: absent) into the row; the 400
    /// message if it cannot.
    #[inline]
    fn fill(&self, value: Option<&[u8]>, row: &mut Row) -> Result<(), &str> {
        let slot = row.slot_mut(self.slot);
        let Some(raw) = value else {
            if self.nullable {
                slot.set_null();
                return Ok(());
            }
            return Err(&self.missing);
        };
        let text = std::str::from_utf8(raw).map_err(|_| self.invalid.as_str())?;
        let value = match self.ty {
            Scalar::Utf8 => Val::Str(text),
            Scalar::Int64 => Val::Int(text.parse().map_err(|_| self.invalid.as_str())?),
            Scalar::Float64 => Val::Float(text.parse().map_err(|_| self.invalid.as_str())?),
            Scalar::Boolean => match text {
                "true" => Val::Bool(true),
                "false" => Val::Bool(false),
                _ => return Err(&self.invalid),
            },
        };
        slot.set(value);
        Ok(())
    }
}

/// What running a request through a route came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answered: the status; the body is written.
    Done(u16),
    /// Step `step` needs the key's owner shard `owner` to run `op`; resume
    /// with [`Router::resume`](super::Router::resume) once the reply is back.
    Forward {
        /// The keyed step's index among the route's operators.
        step: usize,
        /// Owner shard.
        owner: usize,
        /// What the owner must run.
        op: KeyedOp,
    },
}

impl RoutePlan {
    /// Builds this shard's own copy of the route.
    pub fn build(&self) -> Route {
        let input = match self.input {
            RouteInput::Body => Input::Body(RequestSchema::with_lengths(
                self.request.clone(),
                self.request_lengths.clone(),
            )),
            RouteInput::QueryKey(key_type) => Input::Key(KeyQuery::new(key_type)),
        };
        Route {
            method: self.method,
            path: self.path.clone(),
            name: self.name.clone(),
            input,
            row: Row::with_width(self.columns.len()),
            ops: self.steps.iter().filter(|s| s.runs()).cloned().collect(),
            // Labelled `<index>:<kind>` with the index `coreline check`
            // prints, so a slow step in Grafana is found in the plan.
            step_metrics: self
                .steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.runs())
                .map(|(i, s)| StepMetrics::new(self.name.clone(), format!("{i}:{}", s.kind())))
                .collect(),
            reply: ReplyEncoder::new(&self.reply),
            status_column: self.status_column,
            headers: self
                .headers
                .iter()
                .enumerate()
                .map(|(i, c)| HeaderColumn::new(c, self.request.len() + i))
                .collect(),
            header_values: vec![None; self.headers.len()],
        }
    }
}

impl Route {
    /// The `score` step called `name`, if this route has it.
    pub(super) fn score_step_mut(&mut self, name: &str) -> Option<&mut crate::operator::Score> {
        self.ops.iter_mut().find_map(|op| match op {
            crate::operator::Operator::Score(score) if score.name() == name => Some(score),
            _ => None,
        })
    }
}

impl Route {
    /// Runs one request through the route: input, steps, reply. Writes the
    /// JSON response body into `body`.
    pub fn handle(
        &mut self,
        request: &Request<'_>,
        ctx: &mut Ctx<'_>,
        body: &mut Vec<u8>,
    ) -> Outcome {
        if let Err(status) = self.input.decode(request, &mut self.row, body) {
            return Outcome::Done(status);
        }
        if !self.headers.is_empty() {
            // One pass over the head for all header columns (the first line
            // of each name counts), then the columns in declaration order, so
            // the first column in error is the one reported.
            self.header_values.fill(None);
            for (sent, value) in request.header_lines() {
                for (h, found) in self.headers.iter().zip(&mut self.header_values) {
                    if found.is_none() && header_name_is(sent, &h.name) {
                        *found = Some(value);
                    }
                }
            }
            for (h, found) in self.headers.iter().zip(&self.header_values) {
                let value = found.map(|(from, to)| &request.head[from..to]);
                if let Err(message) = h.fill(value, &mut self.row) {
                    write_error_json(body, message, Some(&h.name));
                    return Outcome::Done(400);
                }
            }
        }
        self.run_from(0, ctx, body)
    }

    /// After [`Outcome::Forward`]: gives the request's row to the caller,
    /// which keeps it while the request waits for its owner shard, and takes
    /// `spare` as the row for this route's next requests. Swaps, no copy.
    pub fn take_row(&mut self, spare: &mut Row) {
        std::mem::swap(&mut self.row, spare);
        self.row.set_width(spare.width());
    }

    /// Takes the request's `row` back (giving the route's current one in
    /// exchange), applies the owner's reply for operator `step`, and goes on
    /// with the steps after it.
    pub fn resume(
        &mut self,
        row: &mut Row,
        step: usize,
        reply: KeyedReply,
        ctx: &mut Ctx<'_>,
        body: &mut Vec<u8>,
    ) -> Outcome {
        std::mem::swap(&mut self.row, row);
        match self.ops[step].accept(&mut self.row, reply, body) {
            Flow::Continue => self.run_from(step + 1, ctx, body),
            Flow::Reply(status) => Outcome::Done(status),
            Flow::Forward(_) => Outcome::Done(500),
        }
    }

    /// Records the forwarding round trip of operator `step`.
    pub fn record_step(&mut self, step: usize, took: Duration) {
        if let Some(m) = self.step_metrics.get_mut(step) {
            m.record(took);
        }
    }

    /// The per-step latency metrics, in operator order.
    pub fn step_metrics(&self) -> &[StepMetrics] {
        &self.step_metrics
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
                    let op = self.ops[step]
                        .forward_op(&self.row, ctx.now_ms())
                        .expect("only keyed steps forward");
                    return Outcome::Forward { step, owner, op };
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
}
