//! The decode pass: serde visitors that write a JSON body straight into a
//! [`Row`]'s slots as serde_json parses it, and the messages for bodies
//! that are not JSON. [`RequestSchema::decode`](super::RequestSchema::decode)
//! drives one pass (or two, for a literal `-0`; see [`NegZero`]) and owns the
//! rules listed in the module docs of [`crate::schema`].

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{DecodeError, NegZero, Node, Seen};
use crate::row::{ArrayBuf, Column, ColumnType, Row, Val};

/// True when the number that ends where `error` points is the literal `-0`.
pub(super) fn literal_is_neg_zero(body: &[u8], error: &serde_json::Error) -> bool {
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
pub(super) fn syntax_error(body: &[u8], error: &serde_json::Error) -> DecodeError {
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
pub(super) struct Decoding<'s> {
    pub(super) fields: &'s [Column],
    pub(super) lengths: &'s [Option<usize>],
    pub(super) nodes: &'s [Node],
    pub(super) seen: &'s mut [Seen],
    pub(super) row: &'s mut Row,
    /// The error that stopped the parse (serde_json only sees a
    /// placeholder).
    pub(super) failure: Option<DecodeError>,
    pub(super) neg_zero: &'s mut NegZero,
    /// The failure is an int64 `-0.0` that may be a literal `-0`.
    pub(super) stopped_at_neg_zero: bool,
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
pub(super) struct ObjectSeed<'d, 's> {
    pub(super) d: &'d mut Decoding<'s>,
    pub(super) node: usize,
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
pub(super) struct Skip;

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
