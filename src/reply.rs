//! Reply encoding: row columns to a JSON object, and JSON error bodies.
//!
//! A [`ReplyEncoder`] is built once per route from the reply's column names
//! and slot indexes. It pre-renders every `{"name":` / `,"name":` fragment
//! (escaped at build time), so encoding a row is a sequence of byte copies
//! and number formatting into the caller's buffer: no allocation beyond the
//! growth of that buffer, no name lookups.
//!
//! Values: null is `null`; booleans `true`/`false`; integers through `itoa`;
//! floats through `ryu` (shortest round-trip form, integral floats keep their
//! `.0`, e.g. `11.0`); non-finite floats (NaN, ±inf), which JSON cannot
//! express, become `null`; text is escaped by [`write_json_string`].

use crate::row::{Row, Val};

/// Encodes chosen columns of a [`Row`] as one JSON object.
#[derive(Debug, Clone)]
pub struct ReplyEncoder {
    /// `{"name":` for the first column, `,"name":` for the others, each with
    /// the slot index it reads.
    fields: Vec<(Box<[u8]>, usize)>,
}

impl ReplyEncoder {
    /// An encoder writing `columns` (output name, row slot index) in order.
    pub fn new(columns: &[(String, usize)]) -> ReplyEncoder {
        let fields = columns
            .iter()
            .enumerate()
            .map(|(i, (name, slot))| {
                let mut prefix = Vec::with_capacity(name.len() + 4);
                prefix.push(if i == 0 { b'{' } else { b',' });
                write_json_string(&mut prefix, name);
                prefix.push(b':');
                (prefix.into_boxed_slice(), *slot)
            })
            .collect();
        ReplyEncoder { fields }
    }

    /// Appends the JSON object for `row` to `out`, e.g. `{"fooLength":11}`.
    pub fn encode(&self, row: &Row, out: &mut Vec<u8>) {
        if self.fields.is_empty() {
            out.extend_from_slice(b"{}");
            return;
        }
        for (prefix, slot) in &self.fields {
            out.extend_from_slice(prefix);
            write_json_value(out, row.get(*slot));
        }
        out.push(b'}');
    }
}

/// Appends one value as JSON (see the module docs for the rules).
pub fn write_json_value(out: &mut Vec<u8>, value: Val<'_>) {
    match value {
        Val::Null => out.extend_from_slice(b"null"),
        Val::Bool(true) => out.extend_from_slice(b"true"),
        Val::Bool(false) => out.extend_from_slice(b"false"),
        Val::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
        Val::Float(f) if f.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes())
        }
        Val::Float(_) => out.extend_from_slice(b"null"),
        Val::Str(s) => write_json_string(out, s),
    }
}

/// How a byte is written inside a JSON string.
enum Escape {
    /// Copied as is.
    None,
    /// A two-byte escape such as `\n`.
    Short(&'static [u8]),
    /// A control character without a short escape: `\u00XX`.
    Unicode,
}

#[inline]
fn escape(b: u8) -> Escape {
    match b {
        b'"' => Escape::Short(b"\\\""),
        b'\\' => Escape::Short(b"\\\\"),
        b'\n' => Escape::Short(b"\\n"),
        b'\r' => Escape::Short(b"\\r"),
        b'\t' => Escape::Short(b"\\t"),
        0x08 => Escape::Short(b"\\b"),
        0x0c => Escape::Short(b"\\f"),
        0x00..=0x1f => Escape::Unicode,
        _ => Escape::None,
    }
}

/// The length of `s` written by [`write_json_string`], quotes included (for
/// a `Content-Length` written before the body).
pub fn json_string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match escape(b) {
            Escape::None => 1,
            Escape::Short(e) => e.len(),
            Escape::Unicode => 6,
        })
        .sum::<usize>()
}

/// Appends `s` as a quoted JSON string: `"` and `\` are escaped, `\n`, `\r`,
/// `\t`, backspace and form feed get their short escapes, other control
/// characters (below U+0020) become `\u00XX`. Everything else, including
/// non-ASCII text, is copied as UTF-8. The one JSON string escaper of the
/// crate.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Copy runs of bytes that need no escape in one go.
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let e = escape(b);
        if matches!(e, Escape::None) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match e {
            Escape::Short(short) => out.extend_from_slice(short),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends an error body: `{"error":"<message>","field":"<field>"}`, the
/// `field` member left out when `field` is `None`.
pub fn write_error_json(out: &mut Vec<u8>, message: &str, field: Option<&str>) {
    out.extend_from_slice(b"{\"error\":");
    write_json_string(out, message);
    if let Some(field) = field {
        out.extend_from_slice(b",\"field\":");
        write_json_string(out, field);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn string(s: &str) -> String {
        let mut out = Vec::new();
        write_json_string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn string_length_matches_what_is_written() {
        for s in ["", "plain", "a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}", "héllo ✓"] {
            assert_eq!(json_string_len(s), string(s).len(), "{s:?}");
        }
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(string("plain"), r#""plain""#);
        assert_eq!(string(""), r#""""#);
        assert_eq!(string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(string("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(string("\u{0}x\u{1f}"), r#""\u0000x\u001f""#);
        assert_eq!(string("é ☃ 😀 /"), "\"é ☃ 😀 /\"");
        assert_eq!(string("\u{7f}"), "\"\u{7f}\"");
        // Every control character round-trips through a real JSON parser.
        let all: String = (0u8..0x80).map(char::from).collect();
        let parsed: String = serde_json::from_str(&string(&all)).unwrap();
        assert_eq!(parsed, all);
    }

    fn row(values: &[Val<'_>]) -> Row {
        let mut row = Row::with_width(values.len());
        for (i, v) in values.iter().enumerate() {
            row.slot_mut(i).set(*v);
        }
        row
    }

    fn encode(columns: &[(&str, usize)], row: &Row) -> String {
        let columns: Vec<(String, usize)> =
            columns.iter().map(|(n, i)| (n.to_string(), *i)).collect();
        let mut out = b"prefix:".to_vec();
        ReplyEncoder::new(&columns).encode(row, &mut out);
        String::from_utf8(out)
            .unwrap()
            .strip_prefix("prefix:")
            .unwrap()
            .to_owned()
    }

    #[test]
    fn encodes_selected_columns_in_order() {
        let r = row(&[
            Val::Str("hello world"),
            Val::Int(11),
            Val::Bool(true),
            Val::Null,
        ]);
        assert_eq!(encode(&[("fooLength", 1)], &r), r#"{"fooLength":11}"#);
        assert_eq!(
            encode(&[("b", 2), ("s", 0), ("n", 3), ("again", 1)], &r),
            r#"{"b":true,"s":"hello world","n":null,"again":11}"#
        );
        assert_eq!(encode(&[], &r), "{}");
        assert_eq!(encode(&[("we\"ird\n", 1)], &r), r#"{"we\"ird\n":11}"#);
    }

    #[test]
    fn numbers() {
        let r = row(&[
            Val::Float(11.0),
            Val::Float(0.1),
            Val::Float(-2.5e-8),
            Val::Float(1e300),
            Val::Float(f64::NAN),
            Val::Float(f64::INFINITY),
            Val::Float(f64::NEG_INFINITY),
            Val::Int(i64::MIN),
            Val::Int(i64::MAX),
            Val::Bool(false),
        ]);
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let columns: Vec<(&str, usize)> = names.iter().copied().zip(0..).collect();
        let text = encode(&columns, &r);
        assert_eq!(
            text,
            r#"{"a":11.0,"b":0.1,"c":-2.5e-8,"d":1e300,"e":null,"f":null,"g":null,"h":-9223372036854775808,"i":9223372036854775807,"j":false}"#
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["c"].as_f64(), Some(-2.5e-8));
        assert_eq!(v["d"].as_f64(), Some(1e300));
        assert_eq!(v["h"].as_i64(), Some(i64::MIN));
    }

    #[test]
    fn round_trips_through_serde_json() {
        let text = "tab\there \"quoted\" back\\slash \u{1} é 😀";
        let r = row(&[Val::Str(text), Val::Float(3.25), Val::Int(-7), Val::Null]);
        let out = encode(&[("t", 0), ("f", 1), ("i", 2), ("z", 3)], &r);
        let v: Value = serde_json::from_slice(out.as_bytes()).unwrap();
        assert_eq!(v, json!({"t": text, "f": 3.25, "i": -7, "z": null}));
    }

    #[test]
    fn error_bodies() {
        let mut out = Vec::new();
        write_error_json(&mut out, "bar must be >= 0", None);
        assert_eq!(out, br#"{"error":"bar must be >= 0"}"#);
        out.clear();
        write_error_json(&mut out, "field \"bar\": expected int64", Some("bar"));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            json!({"error": "field \"bar\": expected int64", "field": "bar"})
        );
    }

    #[test]
    fn warm_encoding_does_not_reallocate() {
        let r = row(&[Val::Str("abc"), Val::Float(1.5), Val::Int(3)]);
        let enc = ReplyEncoder::new(&[("a".into(), 0), ("b".into(), 1), ("c".into(), 2)]);
        let mut out = Vec::with_capacity(256);
        enc.encode(&r, &mut out);
        let (ptr, cap) = (out.as_ptr(), out.capacity());
        for _ in 0..100 {
            out.clear();
            enc.encode(&r, &mut out);
        }
        assert_eq!((out.as_ptr(), out.capacity()), (ptr, cap));
        assert_eq!(out, br#"{"a":"abc","b":1.5,"c":3}"#);
    }
}
