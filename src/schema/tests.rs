use super::*;
use crate::row::{ArrayRef, ColumnType, Val};
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
