//! How a keyed table is recorded in a checkpoint manifest (and in each
//! shard file's schema metadata): [`TableDesc`], one per table, and its
//! conversion to and from a [`TableSpec`]. Fields are optional per kind, so
//! manifests written before a kind existed read back unchanged; each kind
//! fills and reads its own fields (`KindSpec::describe`/`from_desc`, in
//! its file).

use serde::{Deserialize, Serialize};

use super::{TableKind, TableSpec};
use crate::row::ColumnType;

/// One aggregate output as recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputDesc {
    /// Output name.
    pub name: String,
    /// The spec, e.g. `sum(amount)`.
    pub spec: String,
    /// Input column type, for functions that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_type: Option<String>,
    /// Output value type.
    pub output_type: String,
}

/// One keyed state table as recorded in a manifest (and in each file's
/// schema metadata under `coreline.tables`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDesc {
    /// Step name.
    pub name: String,
    /// The kind's name in the registry: `"aggregate"`, `"changed"`,
    /// `"table"`.
    pub kind: String,
    /// Aggregate outputs in declared order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputDesc>,
    /// For `changed` (and any kind keeping one value per key): the value's
    /// type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// For a declared `[[table]]`: the key column's name and type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<ColumnDesc>,
    /// For a declared `[[table]]`: its value columns in declared order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnDesc>,
    /// For a declared `[[table]]`: `partitioned` or `replicated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// A declared table's column as recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDesc {
    /// Column name.
    pub name: String,
    /// Column type.
    #[serde(rename = "type")]
    pub ty: String,
}

impl TableDesc {
    /// The description of a table spec.
    pub fn of(spec: &TableSpec) -> TableDesc {
        let mut desc = TableDesc {
            name: spec.name.clone(),
            kind: spec.kind_name().to_string(),
            outputs: Vec::new(),
            value_type: None,
            key: None,
            columns: Vec::new(),
            scope: None,
        };
        spec.kind.describe(&mut desc);
        desc
    }

    /// The table spec this description records, or why it is unreadable.
    pub fn to_spec(&self) -> Result<TableSpec, String> {
        let kind = TableKind::from_desc(self).unwrap_or_else(|| {
            Err(format!(
                "table `{}` has unknown kind `{}`",
                self.name, self.kind
            ))
        })?;
        Ok(TableSpec {
            name: self.name.clone(),
            kind,
        })
    }

    /// The column type named `t` in this record.
    pub(crate) fn column_type(&self, t: &str) -> Result<ColumnType, String> {
        ColumnType::parse(t).ok_or_else(|| format!("table `{}`: unknown type `{t}`", self.name))
    }
}
