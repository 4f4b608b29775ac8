//! A route's request schema, and decoding a JSON body straight into a [`Row`].
//!
//! [`RequestSchema`] owns the ordered request fields of one route: field `i`
//! goes into row slot `i`. [`RequestSchema::decode`] runs serde_json's
//! deserializer with a visitor that writes each value into its slot as it is
//! parsed: no `serde_json::Value`, no intermediate struct, and field names are
//! matched by a short byte comparison loop (routes have few fields).
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
//!   numbers with a fraction or an exponent and numbers out of range;
//!   `float64` fields accept integers; `bool` takes only `true`/`false`;
//! - a field given twice is `422 duplicate field "foo"`;
//! - a missing non-nullable field is `422 missing field "foo" (expected utf8)`;
//!   a missing nullable field is null;
//! - fields the schema does not declare are skipped, whatever their value
//!   (nested objects and arrays included, as long as it is valid JSON), so
//!   clients may send more than a route reads.
//!
//! Invariant: once the row's string buffers are warm, decoding a body whose
//! strings contain no escape sequences allocates nothing, skipped fields
//! included (checked with a counting allocator: 0 allocations over 100 warm
//! decodes + encodes). serde_json unescapes `\n`, `\"`, `\u00e9`... through a
//! scratch buffer owned by its `Deserializer`, which is created per body, so
//! a body with escaped strings costs one or two allocations; the slot's own
//! buffer is still reused. Errors allocate their message.

use std::fmt;

use arrow_schema::Schema;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::reply::write_error_json;
use crate::row::{Column, ColumnType, Row, Slot, Val};

/// The ordered fields of a route's request body.
#[derive(Debug, Clone)]
pub struct RequestSchema {
    fields: Vec<Column>,
    /// Which fields the body being decoded has set; reused across requests.
    seen: Vec<bool>,
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
    fn new(status: u16, message: String, field: Option<&Column>) -> DecodeError {
        DecodeError {
            status,
            message,
            field: field.map(|c| c.name.clone()),
        }
    }

    /// Appends the JSON error body `{"error":"...","field":"..."}` (no
    /// `field` member when there is no field).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        write_error_json(out, &self.message, self.field.as_deref());
    }
}

impl RequestSchema {
    /// A schema whose field `i` is decoded into row slot `i`.
    pub fn new(fields: Vec<Column>) -> RequestSchema {
        let seen = vec![false; fields.len()];
        RequestSchema { fields, seen }
    }

    /// The fields, in slot order.
    pub fn fields(&self) -> &[Column] {
        &self.fields
    }

    /// The arrow schema of the request fields.
    pub fn to_arrow(&self) -> Schema {
        Schema::new(self.fields.iter().map(Column::to_field).collect::<Vec<_>>())
    }

    /// Decodes `body` into slots `0..fields().len()` of `row` (which must be
    /// at least that wide); other slots are left alone. On error the
    /// request's slots hold partial values and must not be used.
    /// Allocation-free once the row's string buffers are warm (see the
    /// module docs for the one exception).
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
        self.seen.fill(false);
        let mut failure = None;
        let mut de = serde_json::Deserializer::from_slice(body);
        let seed = ObjectSeed {
            fields: &self.fields,
            seen: &mut self.seen,
            row,
            failure: &mut failure,
        };
        if let Err(error) = seed.deserialize(&mut de).and_then(|()| de.end()) {
            // Our own errors are parked in `failure`; serde_json only sees a
            // placeholder. Anything else is malformed JSON. A schema error
            // stops the parse, so the rest of the body is checked before
            // answering 422: malformed JSON is a 400 wherever it is.
            return Err(match failure {
                Some(failure) => match serde_json::from_slice::<de::IgnoredAny>(body) {
                    Ok(_) => failure,
                    Err(error) => syntax_error(body, &error),
                },
                None => syntax_error(body, &error),
            });
        }
        for (i, column) in self.fields.iter().enumerate() {
            if !self.seen[i] {
                if !column.nullable {
                    return Err(DecodeError::new(
                        422,
                        format!("missing field {:?} (expected {})", column.name, column.ty),
                        Some(column),
                    ));
                }
                row.slot_mut(i).set_null();
            }
        }
        Ok(())
    }
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

/// Routes every `visit_*` of a visitor to one `found` method. serde_json
/// calls `visit_borrowed_str` for strings without escapes and `visit_str`
/// (from its scratch buffer) for the others; both are copied into the slot.
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
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            self.found(Found::Array)
        }
    };
}

/// Parks `error` for `decode` and hands serde_json a placeholder that stops
/// the parse.
fn fail<E: de::Error>(failure: &mut Option<DecodeError>, error: DecodeError) -> Result<(), E> {
    *failure = Some(error);
    Err(E::custom("rejected by the request schema"))
}

/// The whole body: one object.
struct ObjectSeed<'s> {
    fields: &'s [Column],
    seen: &'s mut [bool],
    row: &'s mut Row,
    failure: &'s mut Option<DecodeError>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ObjectSeed<'_> {
    fn found<E: de::Error>(self, found: Found<'_>) -> Result<(), E> {
        let message = format!("expected a JSON object, found {found}");
        fail(self.failure, DecodeError::new(422, message, None))
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    visit_scalars!();

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(index) = map.next_key_seed(KeySeed(self.fields))? {
            let Some(i) = index else {
                map.next_value_seed(Skip)?;
                continue;
            };
            let column = &self.fields[i];
            if std::mem::replace(&mut self.seen[i], true) {
                let message = format!("duplicate field {:?}", column.name);
                return fail(self.failure, DecodeError::new(422, message, Some(column)));
            }
            map.next_value_seed(ValueSeed {
                column,
                slot: self.row.slot_mut(i),
                failure: self.failure,
            })?;
        }
        Ok(())
    }
}

/// A key: the index of the schema field it names, or `None` for a field the
/// schema does not declare.
struct KeySeed<'s>(&'s [Column]);

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
            .0
            .iter()
            .position(|c| c.name.as_bytes() == key.as_bytes()))
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

/// One field's value, written into its slot.
struct ValueSeed<'s> {
    column: &'s Column,
    slot: &'s mut Slot,
    failure: &'s mut Option<DecodeError>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    fn found<E: de::Error>(self, found: Found<'_>) -> Result<(), E> {
        let column = self.column;
        match (column.ty, found) {
            (_, Found::Null) if column.nullable => self.slot.set_null(),
            (ColumnType::Utf8, Found::Str(s)) => self.slot.text_mut().push_str(s),
            (ColumnType::Int64, Found::Int(i)) => self.slot.set(Val::Int(i)),
            (ColumnType::Int64, Found::UInt(u)) => match i64::try_from(u) {
                Ok(i) => self.slot.set(Val::Int(i)),
                Err(_) => return self.reject(format_args!("{u} (out of range)")),
            },
            (ColumnType::Int64, Found::Float(f)) => {
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
                return self.reject(format_args!("{number} ({why})"));
            }
            (ColumnType::Float64, Found::Float(f)) => self.slot.set(Val::Float(f)),
            (ColumnType::Float64, Found::Int(i)) => self.slot.set(Val::Float(i as f64)),
            (ColumnType::Float64, Found::UInt(u)) => self.slot.set(Val::Float(u as f64)),
            (ColumnType::Boolean, Found::Bool(b)) => self.slot.set(Val::Bool(b)),
            (_, found) => return self.reject(format_args!("{found}")),
        }
        Ok(())
    }

    fn reject<E: de::Error>(self, found: fmt::Arguments<'_>) -> Result<(), E> {
        let column = self.column;
        let message = format!(
            "field {:?}: expected {}, found {found}",
            column.name, column.ty
        );
        fail(self.failure, DecodeError::new(422, message, Some(column)))
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} value", self.column.ty)
    }

    visit_scalars!();

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.found(Found::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
