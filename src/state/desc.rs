//! How a keyed table is recorded in a checkpoint manifest (and in each
//! shard file's schema metadata): [`TableDesc`], one per table, and its
//! conversion to and from a [`TableSpec`]. Fields are optional per kind, so
//! manifests written before a kind existed read back unchanged.

use serde::{Deserialize, Serialize};

use super::{AggOutput, DeclaredSpec, Scope, TableKind, TableSpec};
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
    /// `"aggregate"` or `"changed"`.
    pub kind: String,
    /// Aggregate outputs in declared order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputDesc>,
    /// For `changed`: the watched value's type.
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
        match &spec.kind {
            TableKind::Aggregate(outputs) => TableDesc {
                name: spec.name.clone(),
                kind: "aggregate".into(),
                outputs: outputs
                    .iter()
                    .map(|o| OutputDesc {
                        name: o.name.clone(),
                        spec: o.spec(),
                        input_type: o.input_type.map(|t| t.name().to_string()),
                        output_type: o.output_type().name().to_string(),
                    })
                    .collect(),
                ..TableDesc::named(&spec.name, "aggregate")
            },
            TableKind::Changed { value_type } => TableDesc {
                value_type: Some(value_type.name().to_string()),
                ..TableDesc::named(&spec.name, "changed")
            },
            TableKind::Declared(d) => TableDesc {
                key: Some(ColumnDesc {
                    name: d.key.clone(),
                    ty: d.key_type.name().to_string(),
                }),
                columns: d
                    .columns
                    .iter()
                    .map(|(name, ty)| ColumnDesc {
                        name: name.clone(),
                        ty: ty.name().to_string(),
                    })
                    .collect(),
                scope: Some(d.scope.name().to_string()),
                ..TableDesc::named(&spec.name, "table")
            },
        }
    }

    fn named(name: &str, kind: &str) -> TableDesc {
        TableDesc {
            name: name.to_string(),
            kind: kind.to_string(),
            outputs: Vec::new(),
            value_type: None,
            key: None,
            columns: Vec::new(),
            scope: None,
        }
    }

    /// The table spec this description records, or why it is unreadable.
    pub fn to_spec(&self) -> Result<TableSpec, String> {
        let ty = |t: &str| {
            ColumnType::parse(t).ok_or_else(|| format!("table `{}`: unknown type `{t}`", self.name))
        };
        match self.kind.as_str() {
            "aggregate" => {
                let mut outputs = Vec::with_capacity(self.outputs.len());
                for o in &self.outputs {
                    let input = match &o.input_type {
                        Some(t) => Some(ty(t)?),
                        None => None,
                    };
                    let out = AggOutput::parse(o.name.clone(), &o.spec, |_| input)
                        .map_err(|e| format!("table `{}`: {e}", self.name))?;
                    outputs.push(out);
                }
                Ok(TableSpec::aggregate(self.name.clone(), outputs))
            }
            "changed" => {
                let t = self
                    .value_type
                    .as_deref()
                    .ok_or_else(|| format!("changed table `{}` has no value_type", self.name))?;
                Ok(TableSpec::changed(self.name.clone(), ty(t)?))
            }
            "table" => {
                let key = self
                    .key
                    .as_ref()
                    .ok_or_else(|| format!("table `{}` has no key", self.name))?;
                let mut columns = Vec::with_capacity(self.columns.len());
                for c in &self.columns {
                    columns.push((c.name.clone(), ty(&c.ty)?));
                }
                let scope = self.scope.as_deref().unwrap_or("partitioned");
                let scope = Scope::parse(scope)
                    .ok_or_else(|| format!("table `{}` has unknown scope `{scope}`", self.name))?;
                Ok(TableSpec::declared(
                    self.name.clone(),
                    DeclaredSpec {
                        key: key.name.clone(),
                        key_type: ty(&key.ty)?,
                        columns,
                        scope,
                    },
                ))
            }
            k => Err(format!("table `{}` has unknown kind `{k}`", self.name)),
        }
    }
}
