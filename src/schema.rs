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

use std::fmt;

use arrow_schema::Schema;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::reply::write_error_json;
use crate::row::{ArrayBuf, Column, ColumnType, Row, Val};

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

/// True when the number that ends where `error` points is the literal `-0`.
fn literal_is_neg_zero(body: &[u8], error: &serde_json::Error) -> bool {
    let line_start = if error.line() <= 1 {
        0
    } else {
        match body
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(error.line() - 2)
        {
            Some((i, _)) => i + 1,
            None => return false,
        }
    };
    let end = line_start + error.column();
    end >= 2
        && end <= body.len()
        && &body[end - 2..end] == b"-0"
        && !matches!(end.checked_sub(3).map(|i| body[i]), Some(b'e' | b'E'))
}

/// A 400 for malformed JSON, with the byte offset of the offending byte.
fn syntax_error(body: &[u8], error: &serde_json::Error) -> DecodeError {
    // serde_json reports a 1-based line and the column just past the
    // offending byte; turn that back into a byte offset.
    let line_start = if error.line() <= 1 {
        0
    } else {
        body.iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(error.line() - 2)
            .map_or(body.len(), |(i, _)| i + 1)
    };
    let offset = if error.classify() == serde_json::error::Category::Eof {
        body.len()
    } else {
        (line_start + error.column().saturating_sub(1)).min(body.len())
    };
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let what = text
        .strip_suffix(&suffix)
        .unwrap_or(&text)
        .replace('`', "'");
    DecodeError::new(400, format!("invalid JSON at byte {offset}: {what}"), None)
}

/// What a JSON value turned out to be, as the visitors see it.
#[derive(Clone, Copy)]
enum Found<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
    Array,
    Object,
}

impl fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Found::Null => "null",
            Found::Bool(_) => "boolean",
            Found::Int(_) | Found::UInt(_) | Found::Float(_) => "number",
            Found::Str(_) => "string",
            Found::Array => "array",
            Found::Object => "object",
        })
    }
}

/// Routes every scalar `visit_*` of a visitor to one `found` method.
/// serde_json calls `visit_borrowed_str` for strings without escapes and
/// `visit_str` (from its scratch buffer) for the others; both are copied
/// into the slot.
macro_rules! visit_scalars {
    () => {
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            self.found(Found::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<(), E> {
            self.found(Found::Null)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
            self.found(Found::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
            self.found(Found::Int(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
            self.found(Found::UInt(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
            self.found(Found::Float(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
            self.found(Found::Str(v))
        }
    };
}

/// The state of one decode pass, shared by the nested seeds.
struct Decoding<'s> {
    fields: &'s [Column],
    lengths: &'s [Option<usize>],
    nodes: &'s [Node],
    seen: &'s mut [Seen],
    row: &'s mut Row,
    /// The error that stopped the parse (serde_json only sees a
    /// placeholder).
    failure: Option<DecodeError>,
    neg_zero: &'s mut NegZero,
    /// The failure is an int64 `-0.0` that may be a literal `-0`.
    stopped_at_neg_zero: bool,
}

impl Decoding<'_> {
    /// Parks `error` for `decode` and hands serde_json a placeholder that
    /// stops the parse.
    fn fail<E: de::Error>(&mut self, error: DecodeError) -> Result<(), E> {
        self.failure = Some(error);
        Err(E::custom("rejected by the request schema"))
    }
}

/// The body (node 0) or a nested object of fields.
struct ObjectSeed<'d, 's> {
    d: &'d mut Decoding<'s>,
    node: usize,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ObjectSeed<'_, '_> {
    fn found<E: de::Error>(self, found: Found<'_>) -> Result<(), E> {
        if self.node == 0 {
            let message = format!("expected a JSON object, found {found}");
            return self.d.fail(DecodeError::new(422, message, None));
        }
        if let Found::Null = found {
            self.d.seen[self.node] = Seen::Null;
            return Ok(());
        }
        // Name the first field the object was to hold.
        let nodes = self.d.nodes;
        let node = &nodes[self.node];
        let mut first = node;
        while let Some(&c) = first.children.first() {
            first = &nodes[c];
        }
        let message = format!(
            "field {:?}: expected an object (holding {:?}), found {found}",
            &*node.path, &*first.path
        );
        self.d
            .fail(DecodeError::new(422, message, Some(&first.path)))
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    visit_scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.found(Found::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let nodes = self.d.nodes;
        let children = &nodes[self.node].children;
        while let Some(index) = map.next_key_seed(KeySeed { nodes, children })? {
            let Some(at) = index else {
                map.next_value_seed(Skip)?;
                continue;
            };
            if std::mem::replace(&mut self.d.seen[at], Seen::Present) != Seen::Absent {
                let path = &nodes[at].path;
                let message = format!("duplicate field {path:?}");
                return self.d.fail(DecodeError::new(422, message, Some(path)));
            }
            match nodes[at].field {
                Some(field) => map.next_value_seed(ValueSeed {
                    d: &mut *self.d,
                    field,
                })?,
                None => map.next_value_seed(ObjectSeed {
                    d: &mut *self.d,
                    node: at,
                })?,
            }
        }
        Ok(())
    }
}

/// A key: the node of the object's keys it names, or `None` for a key the
/// schema does not declare.
struct KeySeed<'s> {
    nodes: &'s [Node],
    children: &'s [usize],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self
            .children
            .iter()
            .copied()
            .find(|&c| self.nodes[c].key.as_bytes() == key.as_bytes()))
    }
}

/// A value the schema does not declare, parsed and dropped. Recursion
/// (bounded by serde_json's nesting limit of 128) keeps the open brackets on
/// the stack; serde_json's own `IgnoredAny` keeps them in a heap buffer that
/// is allocated per body once two containers are nested.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// An int64 from a JSON number: `Err` with what was found (for the message)
/// otherwise. `-0.0` is accepted as 0 only when `neg_zero` says the literal
/// was `-0`; else `*stop` is set so that the decoder can look.
#[inline]
fn int_of(
    found: Found<'_>,
    neg_zero: &mut NegZero,
    stop: &mut bool,
) -> Result<i64, Option<String>> {
    match found {
        Found::Int(i) => Ok(i),
        Found::UInt(u) => i64::try_from(u).map_err(|_| Some(format!("{u} (out of range)"))),
        Found::Float(f) => {
            if f == 0.0 && f.is_sign_negative() {
                if neg_zero.accept() {
                    return Ok(0);
                }
                *stop = true;
            }
            // serde_json hands over integers beyond u64 as floats too.
            let why = if f.fract() == 0.0 && f.abs() >= 9.2e18 {
                "out of range"
            } else {
                "not an integer"
            };
            let mut number = ryu::Buffer::new();
            let number = if f.is_finite() {
                number.format_finite(f)
            } else {
                "number"
            };
            Err(Some(format!("{number} ({why})")))
        }
        _ => Err(None),
    }
}

/// One field's value, written into its slot.
struct ValueSeed<'d, 's> {
    d: &'d mut Decoding<'s>,
    field: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ValueSeed<'_, '_> {
    fn found<E: de::Error>(self, found: Found<'_>) -> Result<(), E> {
        let column = &self.d.fields[self.field];
        let slot = self.d.row.slot_mut(self.field);
        match (column.ty, found) {
            (_, Found::Null) if column.nullable => slot.set_null(),
            (ColumnType::Utf8, Found::Str(s)) => slot.text_mut().push_str(s),
            (ColumnType::Int64, Found::Int(i)) => slot.set(Val::Int(i)),
            (ColumnType::Int64, Found::UInt(_) | Found::Float(_)) => {
                match int_of(found, self.d.neg_zero, &mut self.d.stopped_at_neg_zero) {
                    Ok(i) => slot.set(Val::Int(i)),
                    Err(what) => {
                        let what = what.unwrap_or_default();
                        return self.reject(format_args!("{what}"));
                    }
                }
            }
            (ColumnType::Float64, Found::Float(f)) => slot.set(Val::Float(f)),
            (ColumnType::Float64, Found::Int(i)) => slot.set(Val::Float(i as f64)),
            (ColumnType::Float64, Found::UInt(u)) => slot.set(Val::Float(u as f64)),
            (ColumnType::Boolean, Found::Bool(b)) => slot.set(Val::Bool(b)),
            (_, found) => return self.reject(format_args!("{found}")),
        }
        Ok(())
    }

    fn reject<E: de::Error>(self, found: fmt::Arguments<'_>) -> Result<(), E> {
        let column = &self.d.fields[self.field];
        let message = format!(
            "field {:?}: expected {}, found {found}",
            column.name, column.ty
        );
        let field = column.name.as_str();
        self.d.fail(DecodeError::new(422, message, Some(field)))
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} value", self.d.fields[self.field].ty)
    }

    visit_scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let field = self.field;
        let ty = self.d.fields[field].ty;
        if !ty.is_array() {
            return self.found(Found::Array);
        }
        let len = self.d.lengths[field];
        let d = self.d;
        let mut count = 0usize;
        {
            let Decoding {
                row,
                neg_zero,
                stopped_at_neg_zero,
                failure,
                fields,
                ..
            } = &mut *d;
            let buf = row.slot_mut(field).array_mut();
            let mut elements = Elements {
                buf,
                ty,
                column: &fields[field],
                failure,
                neg_zero,
                stop: stopped_at_neg_zero,
            };
            match ty {
                ColumnType::Float64Array => {
                    elements.buf.f64_mut();
                }
                ColumnType::Float32Array => {
                    elements.buf.f32_mut();
                }
                _ => {
                    elements.buf.i64_mut();
                }
            }
            loop {
                let more = if len.is_some_and(|n| count >= n) {
                    // Too long: count the rest (still valid JSON) for the
                    // message.
                    seq.next_element_seed(Skip)?.is_some()
                } else {
                    seq.next_element_seed(Element {
                        e: &mut elements,
                        index: count,
                    })?
                    .is_some()
                };
                if !more {
                    break;
                }
                count += 1;
            }
        }
        match len {
            Some(n) if n != count => {
                let column = &d.fields[field];
                let message = format!(
                    "field {:?}: expected {} of length {n}, found {count} element{}",
                    column.name,
                    column.ty,
                    if count == 1 { "" } else { "s" }
                );
                let name = column.name.as_str();
                d.fail(DecodeError::new(422, message, Some(name)))
            }
            _ => Ok(()),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.found(Found::Object)
    }
}

/// The vector being filled and what an element error needs.
struct Elements<'e> {
    buf: &'e mut ArrayBuf,
    ty: ColumnType,
    column: &'e Column,
    failure: &'e mut Option<DecodeError>,
    neg_zero: &'e mut NegZero,
    stop: &'e mut bool,
}

/// One element of a vector, appended to its buffer.
struct Element<'a, 'e> {
    e: &'a mut Elements<'e>,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for Element<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Element<'_, '_> {
    fn found<E: de::Error>(self, found: Found<'_>) -> Result<(), E> {
        let e = self.e;
        let why = match (&mut *e.buf, found) {
            (ArrayBuf::F64(v), Found::Null) => {
                v.push(f64::NAN);
                return Ok(());
            }
            (ArrayBuf::F32(v), Found::Null) => {
                v.push(f32::NAN);
                return Ok(());
            }
            (ArrayBuf::F64(v), Found::Int(i)) => {
                v.push(i as f64);
                return Ok(());
            }
            (ArrayBuf::F64(v), Found::UInt(u)) => {
                v.push(u as f64);
                return Ok(());
            }
            (ArrayBuf::F64(v), Found::Float(f)) => {
                v.push(f);
                return Ok(());
            }
            (ArrayBuf::F32(v), Found::Int(_) | Found::UInt(_) | Found::Float(_)) => {
                let f = match found {
                    Found::Int(i) => i as f64,
                    Found::UInt(u) => u as f64,
                    Found::Float(f) => f,
                    _ => 0.0,
                };
                let narrow = f as f32;
                if narrow.is_infinite() {
                    let mut number = ryu::Buffer::new();
                    Some(format!(
                        "{} (out of float32 range)",
                        number.format_finite(f)
                    ))
                } else {
                    v.push(narrow);
                    return Ok(());
                }
            }
            (ArrayBuf::I64(v), Found::Int(_) | Found::UInt(_) | Found::Float(_)) => {
                match int_of(found, e.neg_zero, e.stop) {
                    Ok(i) => {
                        v.push(i);
                        return Ok(());
                    }
                    Err(why) => why,
                }
            }
            _ => None,
        };
        let what = match why {
            Some(why) => why,
            None => found.to_string(),
        };
        let message = format!(
            "field {:?}: expected {}, found {what} at index {}",
            e.column.name, e.ty, self.index
        );
        *e.failure = Some(DecodeError::new(422, message, Some(&e.column.name)));
        Err(E::custom("rejected by the request schema"))
    }
}

impl<'de> Visitor<'de> for Element<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an element of {}", self.e.ty)
    }

    visit_scalars!();

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.found(Found::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.found(Found::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::ArrayRef;
    use serde_json::{Value, json};

    fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
        Column {
            name: name.to_owned(),
            ty,
            nullable,
        }
    }

    /// foo: utf8, bar: int64, baz: float64 (nullable), ok: bool (nullable).
    fn schema() -> RequestSchema {
        RequestSchema::new(vec![
            col("foo", ColumnType::Utf8, false),
            col("bar", ColumnType::Int64, false),
            col("baz", ColumnType::Float64, true),
            col("ok", ColumnType::Boolean, true),
        ])
    }

    fn decode(body: &str) -> Result<Vec<String>, DecodeError> {
        let mut s = schema();
        let mut row = Row::with_width(5);
        s.decode(body.as_bytes(), &mut row)?;
        Ok((0..4).map(|i| format!("{:?}", row.get(i))).collect())
    }

    fn rejected(body: &[u8]) -> (u16, String, Option<String>) {
        let mut row = Row::with_width(4);
        let e = schema().decode(body, &mut row).unwrap_err();
        (e.status, e.message, e.field)
    }

    fn err(status: u16, message: &str, field: Option<&str>) -> (u16, String, Option<String>) {
        (status, message.to_owned(), field.map(str::to_owned))
    }

    #[test]
    fn malformed_json_is_400_even_after_a_schema_error() {
        // Found by the json_schema fuzz target: the first schema error
        // stopped the parse, so a body that is not JSON at all was answered
        // 422 ("expected a JSON object, found array").
        assert_eq!(rejected(br#"[1,2e9 \"q\"",extra]"#).0, 400);
        assert_eq!(rejected(br#"{"foo":1, oops}"#).0, 400);
        assert_eq!(
            rejected(br#"{"bar":"x","foo":"y"} trailing"#),
            err(400, "invalid JSON at byte 22: trailing characters", None)
        );
        // Found next: bytes that are not UTF-8 inside a string after the
        // schema error are malformed JSON too.
        assert_eq!(rejected(b"{\"foo\":1,\"x\":\"\x87\"}").0, 400);
        // Well-formed JSON that breaks the schema is still a 422.
        assert_eq!(rejected(b"[1,2]").0, 422);
        assert_eq!(rejected(br#"{"foo":1,"bar":2}"#).0, 422);
    }

    #[test]
    fn decodes_fields_into_slots_in_schema_order() {
        assert_eq!(
            decode(r#"{"ok": true, "baz": 2.5, "bar": -3, "foo": "hello"}"#).unwrap(),
            ["Str(\"hello\")", "Int(-3)", "Float(2.5)", "Bool(true)"]
        );
        // Nullable fields: absent or null are null; floats accept integers.
        assert_eq!(
            decode(r#"{"foo": "", "bar": 9223372036854775807, "baz": null}"#).unwrap(),
            ["Str(\"\")", "Int(9223372036854775807)", "Null", "Null"]
        );
        assert_eq!(
            decode(r#" {"foo":"x","bar":0,"baz":7,"ok":false} "#).unwrap(),
            ["Str(\"x\")", "Int(0)", "Float(7.0)", "Bool(false)"]
        );
        assert_eq!(
            decode(r#"{"foo":"x","bar":-9223372036854775808,"baz":18446744073709551615}"#).unwrap()
                [1..3],
            ["Int(-9223372036854775808)", "Float(1.8446744073709552e19)"]
        );
    }

    #[test]
    fn escapes_and_unicode() {
        assert_eq!(
            decode(r#"{"foo": "a\"b\u00e9", "bar": 1}"#).unwrap()[0],
            "Str(\"a\\\"bé\")"
        );
        assert_eq!(
            decode(r#"{"foo": "tab\tnl\n\\ \/ \ud83d\ude00 ☃", "bar": 1}"#).unwrap()[0],
            format!("{:?}", Val::Str("tab\tnl\n\\ / 😀 ☃"))
        );
        // An escaped key still matches its field.
        assert_eq!(
            decode(r#"{"f\u006fo": "k", "bar": 1}"#).unwrap()[0],
            "Str(\"k\")"
        );
    }

    #[test]
    fn unknown_fields_are_ignored_however_nested() {
        // Skipped values must still be valid JSON.
        assert_eq!(
            decode(r#"{"n": [1, {"a": tru}], "foo": "x", "bar": 2}"#).map_err(|e| e.message),
            Err("invalid JSON at byte 19: expected ident".to_owned())
        );
        assert_eq!(
            decode(r#"{"extra": {"a": [1, {"b": null}], "c": "d"}, "foo": "x", "list": [[]], "bar": 2, "Foo": 3}"#)
                .unwrap(),
            ["Str(\"x\")", "Int(2)", "Null", "Null"]
        );
    }

    #[test]
    fn malformed_json_is_400_with_byte_offset() {
        assert_eq!(
            rejected(b""),
            err(400, "empty body; expected a JSON object", None)
        );
        assert_eq!(
            rejected(b" \r\n\t"),
            err(400, "empty body; expected a JSON object", None)
        );
        // The byte offsets name the offending byte (0-based).
        assert_eq!(
            rejected(br#"{"foo": "x" "bar": 1}"#),
            err(400, "invalid JSON at byte 12: expected ',' or '}'", None)
        );
        assert_eq!(
            rejected(b"{\n  \"foo\": \"x\",\n  \"bar\" 1\n}"),
            err(400, "invalid JSON at byte 24: expected ':'", None)
        );
        assert_eq!(
            rejected(br#"{"foo": "x", "bar": 1"#),
            err(
                400,
                "invalid JSON at byte 21: EOF while parsing an object",
                None
            )
        );
        assert_eq!(
            rejected(br#"{"foo": "x", "bar": 1} {}"#),
            err(400, "invalid JSON at byte 23: trailing characters", None)
        );
        assert_eq!(
            rejected(br#"{"foo": "x", "bar": 1}x"#),
            err(400, "invalid JSON at byte 22: trailing characters", None)
        );
        assert_eq!(
            rejected(b"hello"),
            err(400, "invalid JSON at byte 0: expected value", None)
        );
        // serde_json locates bad UTF-8 only roughly (near the string's end).
        let (status, message, _) = rejected(b"{\"foo\": \"\xff\", \"bar\": 1}");
        assert_eq!(status, 400);
        assert!(
            message.starts_with("invalid JSON at byte ")
                && message.ends_with(": invalid unicode code point"),
            "{message}"
        );
    }

    #[test]
    fn non_objects_are_422() {
        for (body, found) in [
            ("[1, 2]", "array"),
            ("\"text\"", "string"),
            ("3", "number"),
            ("-3.5", "number"),
            ("true", "boolean"),
            ("null", "null"),
        ] {
            assert_eq!(
                rejected(body.as_bytes()),
                err(422, &format!("expected a JSON object, found {found}"), None),
                "{body}"
            );
        }
    }

    #[test]
    fn schema_violations_are_422_naming_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{"bar": 1}"#,
                "missing field \"foo\" (expected utf8)",
                "foo",
            ),
            (
                r#"{"foo": "x"}"#,
                "missing field \"bar\" (expected int64)",
                "bar",
            ),
            (
                r#"{"foo": null, "bar": 1}"#,
                "field \"foo\": expected utf8, found null",
                "foo",
            ),
            (
                r#"{"foo": "x", "bar": "1"}"#,
                "field \"bar\": expected int64, found string",
                "bar",
            ),
            (
                r#"{"foo": 1, "bar": 1}"#,
                "field \"foo\": expected utf8, found number",
                "foo",
            ),
            (
                r#"{"foo": "x", "bar": 1.5}"#,
                "field \"bar\": expected int64, found 1.5 (not an integer)",
                "bar",
            ),
            (
                r#"{"foo": "x", "bar": 1e3}"#,
                "field \"bar\": expected int64, found 1000.0 (not an integer)",
                "bar",
            ),
            (
                r#"{"foo": "x", "bar": 2.0}"#,
                "field \"bar\": expected int64, found 2.0 (not an integer)",
                "bar",
            ),
            (
                r#"{"foo": "x", "bar": 9223372036854775808}"#,
                "field \"bar\": expected int64, found 9223372036854775808 (out of range)",
                "bar",
            ),
            (
                r#"{"foo": "x", "bar": -9223372036854775809}"#,
                "field \"bar\": expected int64, found -9.223372036854776e18 (out of range)",
                "bar",
            ),
            (
                r#"{"foo": "x", "bar": 123456789012345678901234567890}"#,
                "field \"bar\": expected int64, found 1.2345678901234568e29 (out of range)",
                "bar",
            ),
            (
                r#"{"foo": "x", "bar": null}"#,
                "field \"bar\": expected int64, found null",
                "bar",
            ),
            (
                r#"{"foo": "x", "bar": 1, "baz": "1"}"#,
                "field \"baz\": expected float64, found string",
                "baz",
            ),
            (
                r#"{"foo": "x", "bar": 1, "ok": 1}"#,
                "field \"ok\": expected bool, found number",
                "ok",
            ),
            (
                r#"{"foo": "x", "bar": 1, "ok": "true"}"#,
                "field \"ok\": expected bool, found string",
                "ok",
            ),
            (
                r#"{"foo": ["x"], "bar": 1}"#,
                "field \"foo\": expected utf8, found array",
                "foo",
            ),
            (
                r#"{"foo": {"x": 1}, "bar": 1}"#,
                "field \"foo\": expected utf8, found object",
                "foo",
            ),
            (
                r#"{"foo": "x", "bar": 1, "foo": "y"}"#,
                "duplicate field \"foo\"",
                "foo",
            ),
        ];
        for (body, message, field) in cases {
            assert_eq!(
                rejected(body.as_bytes()),
                err(422, message, Some(field)),
                "{body}"
            );
        }
    }

    #[test]
    fn warm_row_is_reused() {
        let mut s = schema();
        let mut row = Row::with_width(4);
        s.decode(
            br#"{"foo": "a fairly long string value", "bar": 1, "ok": true}"#,
            &mut row,
        )
        .unwrap();
        assert_eq!(row.get(3), Val::Bool(true));
        // A second body overwrites every request slot, including ones the
        // first body set and this one leaves out.
        s.decode(br#"{"bar": 2, "foo": "short", "baz": 0.5}"#, &mut row)
            .unwrap();
        assert_eq!(row.get(0), Val::Str("short"));
        assert_eq!(row.get(1), Val::Int(2));
        assert_eq!(row.get(2), Val::Float(0.5));
        assert_eq!(row.get(3), Val::Null);
        let Val::Str(text) = row.get(0) else { panic!() };
        let ptr = text.as_ptr();
        // A failed decode, then a good one: the schema's state is reset.
        assert!(s.decode(br#"{"foo": "x", "foo": "y"}"#, &mut row).is_err());
        s.decode(br#"{"foo": "again", "bar": 3}"#, &mut row)
            .unwrap();
        assert_eq!(row.get(0), Val::Str("again"));
        let Val::Str(text) = row.get(0) else { panic!() };
        assert_eq!(text.as_ptr(), ptr, "the slot's text buffer is reused");
        assert_eq!(row.get(2), Val::Null);
    }

    #[test]
    fn empty_schema_accepts_any_object() {
        let mut s = RequestSchema::new(Vec::new());
        let mut row = Row::default();
        s.decode(b"{}", &mut row).unwrap();
        s.decode(br#"{"a": [1, 2]}"#, &mut row).unwrap();
        assert_eq!(
            s.decode(b"[]", &mut row).unwrap_err().message,
            "expected a JSON object, found array"
        );
    }

    #[test]
    fn arrow_schema_and_error_json() {
        let arrow = schema().to_arrow();
        assert_eq!(arrow.fields().len(), 4);
        assert_eq!(arrow.field(2).name(), "baz");
        assert_eq!(arrow.field(2).data_type(), &arrow_schema::DataType::Float64);
        assert!(arrow.field(2).is_nullable() && !arrow.field(0).is_nullable());
        assert_eq!(schema().fields()[1].name, "bar");

        let mut row = Row::with_width(4);
        let e = schema()
            .decode(br#"{"foo": 1, "bar": 1}"#, &mut row)
            .unwrap_err();
        let mut out = Vec::new();
        e.write_json(&mut out);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"error": "field \"foo\": expected utf8, found number", "field": "foo"})
        );
        let e = schema().decode(b"", &mut row).unwrap_err();
        out.clear();
        e.write_json(&mut out);
        assert_eq!(out, br#"{"error":"empty body; expected a JSON object"}"#);
        assert_eq!(e.to_string(), "empty body; expected a JSON object");
    }

    #[test]
    fn dotted_names_are_checked() {
        assert_eq!(check_names(["a", "b.c", "b.d.e", "bc"]), Ok(()));
        assert_eq!(check_names(["a.b", "a"]).unwrap_err().0, 1);
        assert_eq!(check_names(["a", "x", "a.b.c"]).unwrap_err().0, 2);
        assert!(
            check_names(["a.", "b"])
                .unwrap_err()
                .1
                .contains("empty part")
        );
        assert!(check_names([".a"]).is_err() && check_names([""]).is_err());
    }

    #[test]
    fn vectors_and_nested_fields_in_slots() {
        let mut s = RequestSchema::with_lengths(
            vec![
                col("v", ColumnType::Float64Array, false),
                col("a.b.c", ColumnType::Int64, false),
                col("a.d", ColumnType::Float32Array, true),
                col("n", ColumnType::Int64Array, true),
            ],
            vec![Some(2), None, None, None],
        );
        let mut row = Row::with_width(4);
        s.decode(
            br#"{"a":{"b":{"c":-0,"z":1},"d":[0.1,null]},"v":[1,null],"n":[]}"#,
            &mut row,
        )
        .unwrap();
        let Val::Array(ArrayRef::F64(v)) = row.get(0) else {
            panic!("{:?}", row.get(0))
        };
        assert_eq!(v[0], 1.0);
        assert!(v[1].is_nan());
        assert_eq!(row.get(1), Val::Int(0));
        let Val::Array(ArrayRef::F32(d)) = row.get(2) else {
            panic!()
        };
        assert_eq!(d[0], 0.1f32);
        assert!(d[1].is_nan());
        assert_eq!(row.get(3), Val::Array(ArrayRef::I64(&[])));
        // Multi-line bodies: the `-0` check finds the literal by line and
        // column.
        s.decode(b"{\"v\":[2,3],\n \"a\":\n {\"b\": {\"c\":\n-0}}}", &mut row)
            .unwrap();
        assert_eq!(row.get(1), Val::Int(0));
        assert_eq!(row.get(2), Val::Null);
        let e = s
            .decode(
                b"{\"v\":[2,3],\n \"a\":\n {\"b\": {\"c\":\n-0.0}}}",
                &mut row,
            )
            .unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.field.as_deref()),
            (
                "field \"a.b.c\": expected int64, found -0.0 (not an integer)",
                Some("a.b.c")
            )
        );
        let e = s
            .decode(br#"{"v":[2,3],"a":{"b":{}}}"#, &mut row)
            .unwrap_err();
        assert_eq!(
            e.message,
            "missing field \"a.b.c\" (expected int64; found no key \"c\" in object \"a.b\")"
        );
        let e = s
            .decode(br#"{"v":[2,3],"a":{"b":[]}}"#, &mut row)
            .unwrap_err();
        assert_eq!(
            e.message,
            "field \"a.b\": expected an object (holding \"a.b.c\"), found array"
        );
        assert_eq!(s.length(0), Some(2));
        assert_eq!(s.length(1), None);
    }
}
