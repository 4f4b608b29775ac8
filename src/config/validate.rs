//! Phase two: structural validation of the serde mirror into the model.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned as TomlSpanned;

use super::error::ConfigError;
use super::model::*;
use super::raw::*;
use super::{Source, Span, Spanned, route_key, step_key};
use crate::http::Limits;
use crate::operator::{STEP_KINDS, StepConfig};
use crate::row::{Column, ColumnType};

pub(crate) struct Validator<'a> {
    source: &'a Source,
}

type Checked<T> = Result<T, ConfigError>;

impl<'a> Validator<'a> {
    pub(crate) fn new(source: &'a Source) -> Validator<'a> {
        Validator { source }
    }

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

    pub(crate) fn service(
        &self,
        raw: TomlSpanned<RawService>,
        cores: &[usize],
    ) -> Checked<Service> {
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
        let admin_host = match raw.admin_host {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(h) => h.get_ref().parse().map_err(|_| {
                self.err(
                    h.span(),
                    "service.admin_host",
                    format!("invalid IP address {:?}", h.get_ref()),
                )
                .with_expected("an IP address such as 127.0.0.1 or ::1")
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
            admin_host,
            spin_before_park: raw
                .spin_before_park
                .map(|d| d.into_inner().0)
                .unwrap_or(Duration::ZERO),
            lame_duck: raw
                .lame_duck
                .map(|d| d.into_inner().0)
                .unwrap_or(Duration::ZERO),
            log_format,
            access_log,
            admin_token: match raw.admin_token_file {
                None => None,
                Some(f) => Some(self.admin_token(f)?),
            },
        })
    }

    /// Reads `admin_token_file` (relative to the config file): its first
    /// line, trimmed, at least 16 characters.
    fn admin_token(&self, f: TomlSpanned<String>) -> Checked<crate::admin::AdminToken> {
        let key = "service.admin_token_file";
        let base = self.source.path.parent().unwrap_or(Path::new(""));
        let path = base.join(f.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.err(
                f.span(),
                key,
                format!("cannot read {}: {e}", path.display()),
            )
            .with_expected("a readable file holding the admin bearer token")
        })?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self
                .err(
                    f.span(),
                    key,
                    format!("{} does not hold a usable token", path.display()),
                )
                .with_expected(
                    "a first line of at least 16 printable ASCII characters, no spaces",
                ));
        }
        Ok(crate::admin::AdminToken::new(token.to_string()))
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

    pub(crate) fn limits(&self, raw: RawLimits) -> Checked<Limits> {
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

    pub(crate) fn checkpoint(&self, raw: TomlSpanned<RawCheckpoint>) -> Checked<CheckpointConfig> {
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

    pub(crate) fn fleet(&self, raw: TomlSpanned<RawFleet>) -> Checked<crate::fleet::FleetConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let list_span = raw.instances.span();
        let mut instances: Vec<crate::fleet::Member> = Vec::new();
        for (i, text) in raw.instances.into_inner().into_iter().enumerate() {
            let key = format!("fleet.instances[{i}]");
            let member = crate::fleet::parse_member(text.get_ref()).map_err(|message| {
                self.err(text.span(), &key, message).with_expected(
                    "HOST:BASE_PORT, e.g. \"10.0.0.1:8900\" or \"coreline-0.coreline:8900\"",
                )
            })?;
            if let Some(first) = instances.iter().position(|m| *m == member) {
                return Err(self.err(
                    text.span(),
                    &key,
                    format!(
                        "{} is listed twice (also instances[{first}])",
                        member.text()
                    ),
                ));
            }
            instances.push(member);
        }
        if instances.is_empty() {
            return Err(self
                .err(list_span, "fleet.instances", "the fleet has no instances")
                .with_expected("at least one HOST:BASE_PORT"));
        }
        let index = match &raw.index {
            None => None,
            Some(v) => Some(self.int(v, "fleet.index", 0, instances.len() as i64 - 1)?),
        };
        Ok(crate::fleet::FleetConfig {
            instances,
            index,
            span,
            index_span: raw.index.as_ref().map(|v| v.span()),
        })
    }

    pub(crate) fn routes(
        &self,
        raw: Vec<TomlSpanned<RawRoute>>,
        tables: &[super::TableConfig],
    ) -> Checked<Vec<RouteConfig>> {
        if raw.is_empty() {
            let end = self.source.text.len();
            return Err(self
                .err(end..end, "route", "no routes")
                .with_expected("at least one [[route]] table"));
        }
        let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.len());
        // Keyed state names, service-wide: name -> key of its definition.
        let mut states: Vec<(String, String)> = tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.value.clone(), format!("table[{i}].name")))
            .collect();
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
                        "the name of an aggregate or changed step or a [[table]] (this service has none)",
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

        let headers = match raw.headers {
            None => Vec::new(),
            Some(fields) => self.fields(index, "headers", fields.into_inner())?,
        };
        for h in &headers {
            if h.column.ty.is_array() {
                return Err(self
                    .err(
                        h.span.clone(),
                        &route_key(index, &format!("headers.{}", h.column.name)),
                        format!("header column {:?} is {}", h.column.name, h.column.ty),
                    )
                    .with_expected("a scalar header type: utf8, int64, float64 or bool"));
            }
            if request.iter().any(|f| f.column.name == h.column.name) {
                return Err(self
                    .err(
                        h.span.clone(),
                        &route_key(index, &format!("headers.{}", h.column.name)),
                        format!("column {:?} is also a request field", h.column.name),
                    )
                    .with_expected("header columns named apart from the request's fields"));
            }
        }
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
                    .any(|s| matches!(s, StepConfig::Aggregate(_) | StepConfig::Changed(_)))
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
            headers,
            read,
            key_from,
            steps,
            reply,
        })
    }

    fn request(&self, route: usize, raw: Ordered<RawType>) -> Checked<Vec<FieldConfig>> {
        self.fields(route, "request", raw)
    }

    /// The typed fields of `request` or `headers` (`table`).
    fn fields(
        &self,
        route: usize,
        table: &str,
        raw: Ordered<RawType>,
    ) -> Checked<Vec<FieldConfig>> {
        let mut fields = Vec::with_capacity(raw.0.len());
        for (name, ty) in raw.0 {
            let key = route_key(route, &format!("{table}.{}", name.get_ref()));
            if name.get_ref().is_empty() {
                return Err(self
                    .err(name.span(), &route_key(route, table), "empty field name")
                    .with_expected("a non-empty field name"));
            }
            if table == "headers"
                && !name
                    .get_ref()
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(self
                    .err(
                        name.span(),
                        &key,
                        format!("{:?} cannot name a header", name.get_ref()),
                    )
                    .with_expected(
                        "letters, digits and '_' (x_user is header X-User: '_' stands for '-', \
                         case does not matter)",
                    ));
            }
            let ty_span = ty.span();
            let (type_name, type_span, nullable, len) = match ty.into_inner() {
                RawType::Name(n) => (n, ty_span, false, None),
                RawType::Table(t) => (t.ty.get_ref().clone(), t.ty.span(), t.nullable, t.len),
            };
            let Some(ty) = ColumnType::parse(&type_name) else {
                return Err(self
                    .err(type_span, &key, format!("unknown type {type_name:?}"))
                    .with_expected(
                        "one of: utf8, int64, float64, bool, array<float64>, array<float32>, array<int64>",
                    ));
            };
            let len = match len {
                None => None,
                Some(n) if !ty.is_array() => {
                    return Err(self
                        .err(
                            n.span(),
                            &format!("{key}.len"),
                            format!("len applies to arrays, and this field is {ty}"),
                        )
                        .with_expected(
                            "a type such as \"array<float64>\" to fix a vector's length",
                        ));
                }
                Some(n) => match usize::try_from(*n.get_ref()) {
                    Ok(len) if len >= 1 => Some(len),
                    _ => {
                        return Err(self
                            .err(
                                n.span(),
                                &format!("{key}.len"),
                                format!("invalid length {}", n.get_ref()),
                            )
                            .with_expected("a number of elements, at least 1"));
                    }
                },
            };
            fields.push(FieldConfig {
                column: Column {
                    name: name.get_ref().clone(),
                    ty,
                    nullable,
                },
                len,
                span: name.span(),
            });
        }
        if let Err((i, message)) =
            crate::schema::check_names(fields.iter().map(|f| f.column.name.as_str()))
        {
            let key = route_key(route, &format!("request.{}", fields[i].column.name));
            return Err(self.err(fields[i].span.clone(), &key, message));
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
        let mut present = raw.into_inner().0;
        let expected = || format!("exactly one of {}", STEP_KINDS.join(", "));
        if present.len() > 1 {
            let (first, second, second_span) = (present[0].0, present[1].0, present[1].1.clone());
            let mut message = format!("step has both {first} and {second}");
            if present.len() > 2 {
                message.push_str(" (and more)");
            }
            return Err(self
                .err(second_span, &step_key(route, index, second), message)
                .with_expected(expected()));
        }
        let Some((kind, _, raw)) = present.pop() else {
            return Err(self
                .err(span, &step_key(route, index, ""), "step has no operator")
                .with_expected(expected()));
        };
        raw.check(&mut StepChecker {
            validator: self,
            route,
            index,
            kind,
            states,
        })
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

/// What a step kind's `check` works with: the step's dotted keys, errors at
/// a span, the shared string checks, and the service-wide names of keyed
/// state (unique per service: the one place that is checked).
pub struct StepChecker<'a> {
    validator: &'a Validator<'a>,
    route: usize,
    index: usize,
    kind: &'static str,
    /// Keyed state names so far, each with the key of its definition.
    states: &'a mut Vec<(String, String)>,
}

impl StepChecker<'_> {
    /// The dotted key of `field` of this step: `route[0].step[1].kind.field`.
    pub fn key(&self, field: &str) -> String {
        step_key(self.route, self.index, &format!("{}.{field}", self.kind))
    }

    /// An error at `span` for `field` of this step.
    pub fn error(&self, span: Span, field: &str, message: impl Into<String>) -> ConfigError {
        self.validator.err(span, &self.key(field), message)
    }

    /// A string that must not be empty (after trimming).
    pub fn non_empty(
        &self,
        value: TomlSpanned<String>,
        field: &str,
        what: &str,
    ) -> Result<Spanned<String>, ConfigError> {
        self.validator.non_empty(value, &self.key(field), what)
    }

    /// A list of column names: non-empty, no duplicates, at least one.
    pub fn column_list(
        &self,
        raw: TomlSpanned<Vec<TomlSpanned<String>>>,
        field: &str,
    ) -> Result<Vec<Spanned<String>>, ConfigError> {
        self.validator.column_list(raw, &self.key(field), false)
    }

    /// Declares a keyed state named `name` (written at `field`); an error if
    /// another step of the service already declared that name.
    pub fn declare_state(
        &mut self,
        name: &Spanned<String>,
        field: &str,
    ) -> Result<(), ConfigError> {
        let key = self.key(field);
        if let Some((_, first)) = self.states.iter().find(|(n, _)| *n == name.value) {
            return Err(self
                .validator
                .err(
                    name.span.clone(),
                    &key,
                    format!("keyed state {:?} is already defined at {first}", name.value),
                )
                .with_expected("a name unique among the service's aggregate and changed steps"));
        }
        self.states.push((name.value.clone(), key));
        Ok(())
    }
}
