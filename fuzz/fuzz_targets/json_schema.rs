//! A route's JSON body decoder (`coreline::schema::RequestSchema::decode`)
//! against a schema, on arbitrary bytes.
//!
//! Input: byte 0 picks the schema, the rest is the body. The outcome is
//! checked against serde_json's own `Value` parse of the same body and the
//! rules in the `schema` module docs:
//!
//! - malformed JSON (or an empty body) is a 400, and a 400 means malformed;
//! - well-formed JSON is decoded exactly when it is an object whose declared
//!   fields are each given at most once, have the declared type (int64: an
//!   integer in range; float64: any number; null only where nullable) and
//!   are present unless nullable; then every slot holds the value serde_json
//!   parsed (floats bit for bit), absent nullable fields null;
//! - otherwise it is a 422; every error renders as valid JSON.
//!
//! The row is pre-filled with stale values, as a reused row is.
#![no_main]

use coreline::row::{Column, ColumnType, Row, Val};
use coreline::schema::RequestSchema;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column {
        name: name.to_owned(),
        ty,
        nullable,
    }
}

fn schema(pick: u8) -> Vec<Column> {
    let all = [
        col("s", ColumnType::Utf8, false),
        col("i", ColumnType::Int64, false),
        col("f", ColumnType::Float64, false),
        col("b", ColumnType::Boolean, false),
        col("ns", ColumnType::Utf8, true),
        col("ni", ColumnType::Int64, true),
        col("nf", ColumnType::Float64, true),
        col("nb", ColumnType::Boolean, true),
    ];
    // Each bit keeps one field; 0 is the field-less schema of a GET route.
    all.into_iter()
        .enumerate()
        .filter(|(i, _)| pick & (1 << i) != 0)
        .map(|(_, c)| c)
        .collect()
}

/// An object's members in order, duplicates kept.
struct Pairs(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        d.deserialize_map(V)
    }
}

/// What a declared field must decode to.
enum Want {
    /// This value.
    Val(Val<'static>),
    /// The string serde_json parsed.
    Str,
    /// `-0` or `-0.0` in an int64 field: both reach us as the float -0.0;
    /// `-0` is an integer (issue 13 asks for it to be accepted as 0),
    /// `-0.0` is not, so either 0 or a refusal is allowed.
    ZeroOrRefusal,
}

/// What a declared field must decode to, or `None` if it must be refused.
fn expected(column: &Column, value: Option<&Value>) -> Option<Want> {
    let owned = |v: Val<'static>| Some(Want::Val(v));
    match (column.ty, value) {
        (_, None) | (_, Some(Value::Null)) => column.nullable.then_some(Want::Val(Val::Null)),
        (ColumnType::Utf8, Some(Value::String(_))) => Some(Want::Str),
        (ColumnType::Int64, Some(Value::Number(n))) => {
            if let Some(i) = n.as_i64() {
                owned(Val::Int(i))
            } else if n.is_u64() {
                None
            } else if n.as_f64() == Some(0.0) {
                Some(Want::ZeroOrRefusal)
            } else {
                None
            }
        }
        (ColumnType::Float64, Some(Value::Number(n))) => owned(Val::Float(n.as_f64()?)),
        (ColumnType::Boolean, Some(Value::Bool(b))) => owned(Val::Bool(*b)),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let fields = schema(pick);
    let width = fields.len() + 1;
    let mut schema = RequestSchema::new(fields.clone());
    let mut row = Row::with_width(width);
    for i in 0..width {
        row.slot_mut(i).set(if i % 2 == 0 {
            Val::Str("stale")
        } else {
            Val::Int(7)
        });
    }
    let outcome = schema.decode(body, &mut row);
    if let Err(e) = &outcome {
        let mut out = Vec::new();
        e.write_json(&mut out);
        let rendered: Value = serde_json::from_slice(&out).expect("error body is not JSON");
        assert!(rendered.get("error").is_some_and(Value::is_string));
        assert!(e.status == 400 || e.status == 422, "status {}", e.status);
    }

    let blank = body
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if blank {
        assert_eq!(
            outcome.is_ok(),
            fields.is_empty(),
            "blank body: {outcome:?}"
        );
        if let Err(e) = outcome {
            assert_eq!(e.status, 400);
        }
        return;
    }
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    let Ok(value) = parsed else {
        let e = outcome.expect_err("malformed JSON decoded");
        assert_eq!(e.status, 400, "malformed JSON answered {e:?}");
        return;
    };
    if let Err(e) = &outcome {
        assert_eq!(e.status, 422, "well-formed JSON {value} answered {e:?}");
    }
    if !value.is_object() {
        assert!(outcome.is_err(), "{value} is not an object but was decoded");
        return;
    }
    let Pairs(pairs) = serde_json::from_slice(body).expect("an object parses as pairs");
    let mut want = Vec::with_capacity(fields.len());
    let mut acceptable = true;
    for c in &fields {
        let mut given = pairs.iter().filter(|(k, _)| *k == c.name);
        let first = given.next().map(|(_, v)| v);
        if given.next().is_some() {
            acceptable = false; // duplicate declared field
        }
        match expected(c, first) {
            Some(v) => want.push((v, first)),
            None => acceptable = false,
        }
    }
    match outcome {
        Ok(()) => {
            assert!(acceptable, "{value} decoded against {fields:?}");
            for (i, (want, given)) in want.iter().enumerate() {
                let got = row.get(i);
                let name = &fields[i].name;
                match (want, got) {
                    (Want::Val(Val::Float(w)), Val::Float(g)) => {
                        assert_eq!(w.to_bits(), g.to_bits(), "field {name}")
                    }
                    (Want::Val(w), g) => assert_eq!(*w, g, "field {name}"),
                    (Want::Str, g) => {
                        assert_eq!(
                            given.and_then(|v| v.as_str()).map(Val::Str),
                            Some(g),
                            "field {name}"
                        )
                    }
                    (Want::ZeroOrRefusal, g) => assert_eq!(g, Val::Int(0), "field {name}"),
                }
            }
        }
        Err(e) => {
            // `-0` may be refused as well as accepted.
            let zero = want.iter().any(|(w, _)| matches!(w, Want::ZeroOrRefusal));
            assert!(!acceptable || zero, "{value} refused: {e:?}");
        }
    }
});
