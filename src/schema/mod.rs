//! A route's request schema, and decoding a JSON body straight into a [`Row`].
//!
//! [`RequestSchema`] owns the ordered request fields of one route: field `i`
//! goes into row slot `i`. [`RequestSchema::decode`] runs serde_json's
//! deserializer with a visitor that writes each value into its slot as it is
//! parsed: no `serde_json::Value`, no intermediate struct, and field names are
//! matched by a short byte comparison loop (routes have few fields).
//!
//! A dotted field name `user.age` reads key `age` of the object at key `user`
//! (at any depth): the schema keeps the names as a small tree of object keys,
//! built once, and the visitor descends into the objects it names.
//!
//! Rules, in the order they are checked:
//!
//! - an empty (or all-whitespace) body is `400 empty body; expected a JSON object`,
//!   except for a schema without fields (a GET route), which takes no body;
//! - invalid JSON, or anything after the object, is `400 invalid JSON at byte N: ...`
//!   where `N` is the 0-based byte offset of the offending byte;
//! - a body that is not an object is `422 expected a JSON object, found ...`;
//! - a value of the wrong type, or `null` in a non-nullable field, is
//!   `422 field "bar": expected int64, found string`; `int64` fields reject
//!   numbers with a fraction or an exponent and numbers out of range, but
//!   take `-0` as 0 (see `NegZero`); `float64` fields accept integers;
//!   `bool` takes only `true`/`false`;
//! - vector fields (`array<float64>`, `array<float32>`, `array<int64>`) take
//!   a JSON array of numbers, decoded into the slot's reused element buffer;
//!   `null` elements of float vectors are NaN (a missing value); a wrong
//!   length (`len`), or an element that does not fit, is
//!   `422 field "v": expected array<int64>, found 2.5 (not an integer) at index 1`
//!   or `... expected array<float64> of length 4, found 3 elements`;
//! - the object holding a dotted field must be an object (`422 field "user":
//!   expected an object (holding "user.age"), found string`); `null` or
//!   absent, its fields are missing;
//! - a field (or object of fields) given twice is `422 duplicate field "foo"`;
//! - a missing non-nullable field is `422 missing field "foo" (expected utf8)`,
//!   or for a nested one `... (expected int64; found no key "age" in object
//!   "user")`; a missing nullable field is null;
//! - fields the schema does not declare are skipped, whatever their value
//!   (nested objects and arrays included, as long as it is valid JSON), so
//!   clients may send more than a route reads.
//!
//! Invariant: once the row's string and vector buffers are warm, decoding a
//! body whose strings contain no escape sequences allocates nothing, skipped
//! fields included (checked with a counting allocator in tests/alloc.rs and
//! tests/alloc_arrays.rs). serde_json unescapes `\n`, `\"`, `\u00e9`... through a
//! scratch buffer owned by its `Deserializer`, which is created per body, so
//! a body with escaped strings costs one or two allocations; the slot's own
//! buffer is still reused. A vector longer than any before grows its buffer
//! once. Errors allocate their message, and so does an int64 `-0` (one
//! message per `-0`, for the second pass).

mod decode;
#[cfg(test)]
mod tests;

use arrow_schema::Schema;
use serde::de::DeserializeSeed;

use crate::reply::write_error_json;
use crate::row::{Column, Row};
use decode::{Decoding, ObjectSeed, Skip, literal_is_neg_zero, syntax_error};

/// The ordered fields of a route's request body.
#[derive(Debug, Clone)]
pub struct RequestSchema {
    fields: Vec<Column>,
    /// The fixed length of each field, for vectors declared with `len`.
    lengths: Vec<Option<usize>>,
    /// The objects and keys the body is read through: node 0 is the body,
    /// a dotted name `a.b` is key `b` of the object at key `a`.
    nodes: Vec<Node>,
    /// The node that reads each field.
    leaves: Vec<usize>,
    /// What the body being decoded held at each node; reused across
    /// requests.
    seen: Vec<Seen>,
    /// How many `-0` integers this decode accepts (see [`NegZero`]).
    neg_zero: NegZero,
}

/// One key of the body's object tree.
#[derive(Debug, Clone)]
struct Node {
    /// The key in its parent object (the last part of a dotted name).
    key: Box<str>,
    /// The dotted path from the body, for messages.
    path: Box<str>,
    /// The parent node (0, the body, for top-level keys and for itself).
    parent: usize,
    /// The request field read here, or `None` for an object of fields.
    field: Option<usize>,
    /// For an object: its keys (node indexes).
    children: Vec<usize>,
}

/// What a decode found at a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Absent,
    Present,
    /// An object of fields given as `null`: its fields are missing.
    Null,
}

/// serde_json reads the literal `-0` as the float `-0.0`, which an int64
/// field would refuse as "not an integer". A visitor cannot tell `-0` from
/// `-0.0` (or `-0e0`), so an int64 that arrives as `-0.0` stops the decode
/// with the position where the number ends; when the literal there is
/// exactly `-0`, the body is decoded again accepting one more such value
/// (the count, not the position, since visitors do not see positions).
/// Bodies without `-0` never take this path.
#[derive(Debug, Clone, Copy, Default)]
struct NegZero {
    /// `-0.0` integers to accept in this pass (all are literal `-0`).
    allowed: usize,
    /// `-0.0` integers met so far in this pass.
    met: usize,
}

impl NegZero {
    /// True when the `-0.0` just met is a known literal `-0`.
    fn accept(&mut self) -> bool {
        self.met += 1;
        self.met <= self.allowed
    }
}

/// Why a body was rejected: the HTTP status to answer (400 for malformed
/// JSON, 422 for well-formed JSON that does not fit the schema), a message
/// for the client, and the field concerned, if any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// 400 or 422.
    pub status: u16,
    /// What was wrong, for the response body.
    pub message: String,
    /// The request field concerned, if any.
    pub field: Option<String>,
}

impl DecodeError {
    fn new(status: u16, message: String, field: Option<&str>) -> DecodeError {
        DecodeError {
            status,
            message,
            field: field.map(str::to_owned),
        }
    }

    /// Appends the JSON error body `{"error":"...","field":"..."}` (no
    /// `field` member when there is no field).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        write_error_json(out, &self.message, self.field.as_deref());
    }
}

/// Checks request field names: a dotted name `a.b` reads key `b` of the
/// object at key `a`, so no part may be empty and no name may also be the
/// object of another (`a` and `a.b`). On error, the index of the offending
/// field and what is wrong with it.
pub fn check_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), (usize, String)> {
    let names: Vec<&str> = names.into_iter().collect();
    for (i, name) in names.iter().enumerate() {
        if name.split('.').any(str::is_empty) {
            return Err((
                i,
                format!(
                    "field name {name:?} has an empty part; a dotted name such as \"user.age\" \
                     reads key \"age\" of the object at key \"user\""
                ),
            ));
        }
        for other in &names[..i] {
            let (short, long) = if other.len() < name.len() {
                (*other, *name)
            } else {
                (*name, *other)
            };
            if long.len() > short.len()
                && long.starts_with(short)
                && long.as_bytes()[short.len()] == b'.'
            {
                return Err((
                    i,
                    format!(
                        "field {name:?} conflicts with field {other:?}: {short:?} cannot be both \
                         a value and the object holding {long:?}"
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl RequestSchema {
    /// A schema whose field `i` is decoded into row slot `i`, none of them
    /// of fixed length.
    ///
    /// # Panics
    ///
    /// If the names do not pass [`check_names`] (the configuration checks
    /// them first, with a position).
    pub fn new(fields: Vec<Column>) -> RequestSchema {
        let lengths = vec![None; fields.len()];
        RequestSchema::with_lengths(fields, lengths)
    }

    /// A schema whose field `i` is decoded into row slot `i`; a vector
    /// field with `lengths[i] = Some(n)` must have exactly `n` elements.
    ///
    /// # Panics
    ///
    /// As [`RequestSchema::new`], or when `lengths` is not as long as
    /// `fields`.
    pub fn with_lengths(fields: Vec<Column>, lengths: Vec<Option<usize>>) -> RequestSchema {
        assert_eq!(fields.len(), lengths.len(), "one length per field");
        if let Err((_, message)) = check_names(fields.iter().map(|c| c.name.as_str())) {
            panic!("{message}");
        }
        let mut nodes = vec![Node {
            key: "".into(),
            path: "".into(),
            parent: 0,
            field: None,
            children: Vec::new(),
        }];
        let mut leaves = Vec::with_capacity(fields.len());
        for (i, column) in fields.iter().enumerate() {
            let mut at = 0;
            let mut path_len = 0;
            let parts: Vec<&str> = column.name.split('.').collect();
            for (depth, part) in parts.iter().enumerate() {
                path_len += part.len() + usize::from(depth > 0);
                let leaf = depth + 1 == parts.len();
                let found = nodes[at]
                    .children
                    .iter()
                    .copied()
                    .find(|&c| &*nodes[c].key == *part);
                at = match found {
                    Some(c) => c,
                    None => {
                        let node = nodes.len();
                        nodes.push(Node {
                            key: (*part).into(),
                            path: column.name[..path_len].into(),
                            parent: at,
                            field: leaf.then_some(i),
                            children: Vec::new(),
                        });
                        nodes[at].children.push(node);
                        node
                    }
                };
            }
            leaves.push(at);
        }
        let seen = vec![Seen::Absent; nodes.len()];
        RequestSchema {
            fields,
            lengths,
            nodes,
            leaves,
            seen,
            neg_zero: NegZero::default(),
        }
    }

    /// The fields, in slot order.
    pub fn fields(&self) -> &[Column] {
        &self.fields
    }

    /// The fixed length of field `i`, if it is a vector declared with one.
    pub fn length(&self, i: usize) -> Option<usize> {
        self.lengths[i]
    }

    /// The arrow schema of the request fields.
    pub fn to_arrow(&self) -> Schema {
        Schema::new(self.fields.iter().map(Column::to_field).collect::<Vec<_>>())
    }

    /// Decodes `body` into slots `0..fields().len()` of `row` (which must be
    /// at least that wide); other slots are left alone. On error the
    /// request's slots hold partial values and must not be used.
    /// Allocation-free once the row's string and vector buffers are warm
    /// (see the module docs for the one exception).
    pub fn decode(&mut self, body: &[u8], row: &mut Row) -> Result<(), DecodeError> {
        assert!(
            row.width() >= self.fields.len(),
            "row of width {} for {} request fields",
            row.width(),
            self.fields.len()
        );
        if body
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            // A schema without fields (a GET route) takes no body.
            if self.fields.is_empty() {
                return Ok(());
            }
            return Err(DecodeError::new(
                400,
                "empty body; expected a JSON object".to_owned(),
                None,
            ));
        }
        self.neg_zero = NegZero::default();
        loop {
            self.seen.fill(Seen::Absent);
            let mut d = Decoding {
                fields: &self.fields,
                lengths: &self.lengths,
                nodes: &self.nodes,
                seen: &mut self.seen,
                row: &mut *row,
                failure: None,
                neg_zero: &mut self.neg_zero,
                stopped_at_neg_zero: false,
            };
            let mut de = serde_json::Deserializer::from_slice(body);
            let result = ObjectSeed { d: &mut d, node: 0 }
                .deserialize(&mut de)
                .and_then(|()| de.end());
            let Err(error) = result else { break };
            // Our own errors are parked in `failure`; serde_json only sees a
            // placeholder. Anything else is malformed JSON. A schema error
            // stops the parse, so the rest of the body is checked before
            // answering 422: malformed JSON is a 400 wherever it is.
            let Some(failure) = d.failure else {
                return Err(syntax_error(body, &error));
            };
            if d.stopped_at_neg_zero && literal_is_neg_zero(body, &error) {
                self.neg_zero.allowed += 1;
                self.neg_zero.met = 0;
                continue;
            }
            // `-0.0` or `-0e0` has a fraction or exponent: refused like `2.0`.
            // `Skip`, not `IgnoredAny`: it checks that strings are UTF-8.
            let mut de = serde_json::Deserializer::from_slice(body);
            return Err(match Skip.deserialize(&mut de).and_then(|()| de.end()) {
                Ok(()) => failure,
                Err(error) => syntax_error(body, &error),
            });
        }
        self.check_missing(row)
    }

    /// After a decode: nulls for the nullable fields the body left out, an
    /// error for the first other one.
    fn check_missing(&self, row: &mut Row) -> Result<(), DecodeError> {
        for (i, (column, &leaf)) in self.fields.iter().zip(&self.leaves).enumerate() {
            if self.seen[leaf] == Seen::Present {
                continue;
            }
            if column.nullable {
                row.slot_mut(i).set_null();
                continue;
            }
            // The outermost object or key that is not there.
            let mut top = leaf;
            let mut at = leaf;
            while at != 0 {
                if self.seen[at] != Seen::Present {
                    top = at;
                }
                at = self.nodes[at].parent;
            }
            let node = &self.nodes[top];
            let message = if top == leaf && node.parent == 0 {
                format!("missing field {:?} (expected {})", column.name, column.ty)
            } else if self.seen[top] == Seen::Null {
                format!(
                    "missing field {:?} (expected {}; found {:?}: null)",
                    column.name, column.ty, node.path
                )
            } else if node.parent == 0 {
                format!(
                    "missing field {:?} (expected {}; found no key {:?} in the body)",
                    column.name, column.ty, node.key
                )
            } else {
                format!(
                    "missing field {:?} (expected {}; found no key {:?} in object {:?})",
                    column.name, column.ty, node.key, self.nodes[node.parent].path
                )
            };
            return Err(DecodeError::new(422, message, Some(&column.name)));
        }
        Ok(())
    }
}
