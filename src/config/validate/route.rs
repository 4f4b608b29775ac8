//! The `[[route]]` tables: method and path (no two routes alike), the
//! typed request and header fields, `read` (naming a keyed state that
//! exists), `key_from`, each `[[route.step]]` handed to its kind's `check`,
//! and the reply.

use toml::Spanned as TomlSpanned;

use super::{Checked, StepChecker, Validator};
use crate::config::model::*;
use crate::config::raw::*;
use crate::config::{Spanned, TableConfig, route_key, step_key};
use crate::operator::{STEP_KINDS, StepConfig};
use crate::row::{Column, ColumnType};

impl Validator<'_> {
    pub(crate) fn routes(
        &self,
        raw: Vec<TomlSpanned<RawRoute>>,
        tables: &[TableConfig],
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
