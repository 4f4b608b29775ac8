//! `[[table]]`: declared keyed tables, written by `upsert`/`delete` steps
//! and read by `lookup` steps and `read` routes. The serde mirror, the
//! checked [`TableConfig`] and its validation, in one place.
//!
//! ```toml
//! [[table]]
//! name = "settings"
//! key = { sensor_id = "int64" }
//! columns = { desired = "float64", up_delta = "float64" }
//! scope = "replicated"   # or "partitioned" (the default)
//! ```

use serde::Deserialize;
use toml::Spanned as TomlSpanned;

use super::error::{ConfigError, Source, Spanned};
use super::raw::Ordered;
use crate::row::ColumnType;
use crate::state::{DeclaredSpec, Scope, TableSpec};

/// One `[[table]]` as serde reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTable {
    name: TomlSpanned<String>,
    key: TomlSpanned<Ordered<String>>,
    columns: TomlSpanned<Ordered<String>>,
    scope: Option<TomlSpanned<String>>,
}

/// A checked `[[table]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TableConfig {
    /// The table's name, unique among the service's keyed states.
    pub name: Spanned<String>,
    /// What it holds.
    pub spec: DeclaredSpec,
}

impl TableConfig {
    /// The state spec of this table.
    pub fn table_spec(&self) -> TableSpec {
        TableSpec::declared(self.name.value.clone(), self.spec.clone())
    }
}

const TYPES: &str = "one of: utf8, int64, float64, bool";

fn ident_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks every `[[table]]`: names non-empty and unique, exactly one key
/// column of type utf8/int64/bool, at least one value column of a scalar
/// type, a known scope.
pub(crate) fn check_tables(
    source: &Source,
    raw: Vec<TomlSpanned<RawTable>>,
) -> Result<Vec<TableConfig>, ConfigError> {
    let mut out: Vec<TableConfig> = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let span = t.span();
        let t = t.into_inner();
        let key_of = |field: &str| format!("table[{i}].{field}");
        let err =
            |span, field: &str, msg: String| ConfigError::at(source, span, &key_of(field), msg);
        let name = Spanned::from_toml(t.name);
        if !ident_ok(&name.value) {
            return Err(err(
                name.span.clone(),
                "name",
                format!("{:?} is not a table name", name.value),
            )
            .with_expected("letters, digits and '_', not starting with a digit"));
        }
        if let Some(first) = out.iter().position(|o| o.name.value == name.value) {
            return Err(err(
                name.span.clone(),
                "name",
                format!(
                    "table {:?} is already declared by table[{first}]",
                    name.value
                ),
            )
            .with_expected("a unique table name"));
        }
        let ty_of =
            |field: &str, col: &TomlSpanned<String>, ty: &TomlSpanned<String>, key: bool| {
                let path = format!("{field}.{}", col.get_ref());
                if !ident_ok(col.get_ref()) {
                    return Err(err(
                        col.span(),
                        &path,
                        format!("{:?} is not a column name", col.get_ref()),
                    )
                    .with_expected("letters, digits and '_', not starting with a digit"));
                }
                match ColumnType::parse(ty.get_ref()) {
                    Some(t)
                        if key
                            && matches!(
                                t,
                                ColumnType::Utf8 | ColumnType::Int64 | ColumnType::Boolean
                            ) =>
                    {
                        Ok(t)
                    }
                    Some(t) if !key && !t.is_array() => Ok(t),
                    _ => Err(err(
                        ty.span(),
                        &path,
                        format!("unknown or unsupported type {:?}", ty.get_ref()),
                    )
                    .with_expected(if key {
                        "one of: utf8, int64, bool (keys are not floats)"
                    } else {
                        TYPES
                    })),
                }
            };
        let key_span = t.key.span();
        let keys = t.key.into_inner().0;
        if keys.len() != 1 {
            return Err(err(key_span, "key", format!("{} key columns", keys.len()))
                .with_expected("exactly one key column, e.g. key = { sensor_id = \"int64\" }"));
        }
        let (kname, kty) = &keys[0];
        let key_type = ty_of("key", kname, kty, true)?;
        let cols_span = t.columns.span();
        let mut columns: Vec<(String, ColumnType)> = Vec::new();
        for (c, ty) in &t.columns.into_inner().0 {
            let cty = ty_of("columns", c, ty, false)?;
            if c.get_ref() == kname.get_ref() || columns.iter().any(|(n, _)| n == c.get_ref()) {
                return Err(err(
                    c.span(),
                    &format!("columns.{}", c.get_ref()),
                    format!("column {:?} is declared twice (or is the key)", c.get_ref()),
                ));
            }
            columns.push((c.get_ref().clone(), cty));
        }
        if columns.is_empty() {
            return Err(err(cols_span, "columns", "no columns".into())
                .with_expected("at least one column, e.g. columns = { desired = \"float64\" }"));
        }
        let scope = match t.scope {
            None => Scope::Partitioned,
            Some(s) => Scope::parse(s.get_ref()).ok_or_else(|| {
                err(
                    s.span(),
                    "scope",
                    format!("unknown scope {:?}", s.get_ref()),
                )
                .with_expected("\"partitioned\" or \"replicated\"")
            })?,
        };
        let _ = span;
        out.push(TableConfig {
            name,
            spec: DeclaredSpec {
                key: kname.get_ref().clone(),
                key_type,
                columns,
                scope,
            },
        });
    }
    Ok(out)
}
