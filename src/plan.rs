//! The [`Planner`]: what a step needs while its route is planned.
//!
//! Planning walks a route's steps in order. The planner holds the columns
//! visible at the current step and the service's keyed tables declared so
//! far, and offers a step kind the few things it needs: compile an
//! expression with errors at the right place in the file, resolve a column
//! or the key column, add an output column, declare a table. Every error it
//! builds points into the file (`file:line:column`, dotted key).

use std::ops::Range;

use crate::config::{ConfigError, Source, Spanned, step_key};
use crate::expr::{self, Expr};
use crate::row::{Column, ColumnType, Columns};
use crate::state::{DeclaredSpec, TableKind, TableSpec};

/// The state of one route's planning, lent to each of its steps in turn.
pub struct Planner<'a> {
    source: &'a Source,
    route: usize,
    /// Index and key of the step being planned.
    step: usize,
    kind: &'static str,
    columns: Columns,
    /// The service's keyed tables so far, with the type of their key; a
    /// table's index is its state id.
    tables: &'a mut Vec<(TableSpec, ColumnType)>,
}

impl<'a> Planner<'a> {
    /// A planner for route `route`, whose row starts with `request`.
    pub(crate) fn new(
        source: &'a Source,
        route: usize,
        request: &[Column],
        tables: &'a mut Vec<(TableSpec, ColumnType)>,
    ) -> Planner<'a> {
        let mut columns = Columns::new();
        for c in request {
            columns.push(c.clone());
        }
        Planner {
            source,
            route,
            step: 0,
            kind: "",
            columns,
            tables,
        }
    }

    /// Moves on to the next step, of kind `kind` (the first call starts at
    /// step 0).
    pub(crate) fn at_step(&mut self, kind: &'static str) {
        if !self.kind.is_empty() {
            self.step += 1;
        }
        self.kind = kind;
    }

    /// The file the route comes from.
    pub fn source(&self) -> &Source {
        self.source
    }

    /// The dotted key of `field` of the current step.
    pub fn key(&self, field: &str) -> String {
        step_key(self.route, self.step, &format!("{}.{field}", self.kind))
    }

    /// An error at `span` for `field` of the current step.
    pub fn error(
        &self,
        span: Range<usize>,
        field: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::at(self.source, span, &self.key(field), message)
    }

    /// Compiles the expression `text` (the step's `field`) against the
    /// visible columns; an error points at the offending part of it.
    pub fn compile(&self, text: &Spanned<String>, field: &str) -> Result<Expr, ConfigError> {
        let source = self.source;
        expr::compile(&text.value, &self.columns).map_err(|e| {
            let at = e.offset.min(text.value.len());
            let end = (at + 1).min(text.value.len()).max(at);
            ConfigError::at(
                source,
                text.subspan(source, at..end),
                &self.key(field),
                e.message,
            )
        })
    }

    /// Hides column `index` from names (it keeps its slot): a column only
    /// a function reaches, such as the version `model_version()` reads.
    pub fn hide_column(&mut self, index: usize) {
        self.columns.hide(index);
    }

    /// The columns of the row so far (request fields, then step outputs).
    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// Adds an output column; returns its slot.
    pub fn add_column(&mut self, column: Column) -> usize {
        self.columns.push(column)
    }

    /// Hides every column not in `keep` from later steps and the reply.
    pub fn keep_only(&mut self, keep: &[usize]) {
        for i in 0..self.columns.len() {
            if !keep.contains(&i) {
                self.columns.hide(i);
            }
        }
    }

    /// The slot of the visible column `name`, or an error at its span for
    /// the dotted `key` listing the visible columns.
    pub fn column(&self, name: &Spanned<String>, key: &str) -> Result<usize, ConfigError> {
        self.columns
            .index_of(&name.value)
            .ok_or_else(|| self.unknown_column(&name.span, key, &name.value))
    }

    /// "unknown column", with the visible columns as what was expected.
    pub fn unknown_column(&self, span: &Range<usize>, key: &str, name: &str) -> ConfigError {
        let known = self.columns.visible_names();
        ConfigError::at(
            self.source,
            span.clone(),
            key,
            format!(
                "unknown column \"{name}\"; expected one of: {}",
                known.join(", ")
            ),
        )
    }

    /// Resolves the key column of a keyed step (its `field`): slot and type.
    /// Keys are utf8, int64 or bool.
    pub fn key_column(
        &self,
        key: &Spanned<String>,
        field: &str,
    ) -> Result<(usize, ColumnType), ConfigError> {
        let i = self.column(key, &self.key(field))?;
        let ty = self.columns.get(i).ty;
        if ty == ColumnType::Float64 || ty.is_array() {
            return Err(self.error(
                key.span.clone(),
                field,
                format!(
                    "key column \"{}\" is {ty}; keys must be utf8, int64 or bool",
                    key.value
                ),
            ));
        }
        Ok((i, ty))
    }

    /// Declares the keyed table of the current step; returns its state id.
    /// Names are unique per service: configuration checked that
    /// ([`StepChecker::declare_state`](crate::config::StepChecker::declare_state)).
    pub fn declare_table(&mut self, spec: TableSpec, key_type: ColumnType) -> usize {
        self.tables.push((spec, key_type));
        self.tables.len() - 1
    }

    /// A table step's `table` and `key`: the declared table (state id and
    /// spec) and the key column's slot, refused unless the key column has
    /// the table's key type.
    pub fn table_and_key(
        &self,
        table: &Spanned<String>,
        key: &Spanned<String>,
    ) -> Result<(usize, DeclaredSpec, usize), ConfigError> {
        let (id, spec) = self.declared_table(table, "table")?;
        let (slot, key_type) = self.key_column(key, "key")?;
        if key_type != spec.key_type {
            return Err(self.error(
                key.span.clone(),
                "key",
                format!(
                    "key column \"{}\" is {key_type}, but table {:?} is keyed by {}",
                    key.value, table.value, spec.key_type
                ),
            ));
        }
        Ok((id, spec, slot))
    }

    /// The declared `[[table]]` named by the step's `field`: its state id
    /// and spec, or an error listing the declared tables.
    pub fn declared_table(
        &self,
        name: &Spanned<String>,
        field: &str,
    ) -> Result<(usize, DeclaredSpec), ConfigError> {
        for (id, (spec, _)) in self.tables.iter().enumerate() {
            if let (true, TableKind::Declared(d)) = (spec.name == name.value, &spec.kind) {
                return Ok((id, d.clone()));
            }
        }
        let names: Vec<&str> = self
            .tables
            .iter()
            .filter(|(t, _)| matches!(t.kind, TableKind::Declared(_)))
            .map(|(t, _)| t.name.as_str())
            .collect();
        let err = self.error(
            name.span.clone(),
            field,
            format!("unknown table {:?}", name.value),
        );
        Err(if names.is_empty() {
            err.with_expected("the name of a [[table]] (this service declares none)")
        } else {
            err.with_expected(format!("one of: {}", names.join(", ")))
        })
    }

    /// The route's columns, once its steps are planned.
    pub(crate) fn into_columns(self) -> Columns {
        self.columns
    }
}
