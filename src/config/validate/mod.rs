//! Phase two: structural validation of the serde mirror into the model.
//!
//! [`Validator`] checks one section at a time against the [`Source`] it
//! points its errors into. This file holds the checks every section shares
//! (non-empty strings, integers in range, ports, column lists) and
//! [`StepChecker`], what a step kind's `check` is handed; the sections are
//! checked in:
//!
//! - `service.rs`: `[service]` (addresses, ports, shards and cores, the
//!   admin token file), `[limits]`, `[checkpoint]` and `[fleet]`;
//! - `route.rs`: every `[[route]]`: method, path, request and header
//!   fields, `read`, `key_from`, the dispatch of each `[[route.step]]` to
//!   its kind, and the reply.

use std::collections::HashSet;

use toml::Spanned as TomlSpanned;

use super::error::ConfigError;
use super::{Source, Span, Spanned, step_key};

mod route;
mod service;

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
