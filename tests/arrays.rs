//! Vector and nested request fields over real sockets: decoding
//! `array<...>` fields (fixed length, `null` as NaN) and dotted names,
//! the 422s that name the field, arrays in replies and expressions, arrays
//! carried across a forwarded keyed step, the config errors, and JSON `-0`
//! in an int64 field.

mod common;

use common::{Client, admin_get, start};
use coreline::config::{Source, parse};
use coreline::pipeline::plan;
use coreline::row::Val;
use coreline::state::owner_shard;

const VECTORS: &str = r#"
[service]
name = "vectors"
base_port = 0
shards = 1

[[route]]
path = "/score"
  [route.request]
  features = { type = "array<float64>", len = 4 }
  weights = { type = "array<float32>", nullable = true }
  ids = "array<int64>"
  "user.age" = "int64"
  "user.address.zip" = { type = "utf8", nullable = true }
  "user.name" = "utf8"
  [[route.step]]
  with_column = { name = "n", expr = "size(ids)" }
  [[route.step]]
  with_column = { name = "first", expr = "element_at(features, 1)" }
  [[route.step]]
  with_column = { name = "last_id", expr = "element_at(ids, -1)" }
  [[route.step]]
  with_column = { name = "out_of_range", expr = "element_at(ids, 99)" }
  [[route.step]]
  with_column = { name = "built", expr = "array(\"user.age\", first * 2, element_at(weights, 1))" }
  [[route.step]]
  filter = { expr = "size(ids) > 0", status = 422, message = "ids must not be empty" }
  [route.reply]
  columns = ["features", "weights", "ids", "n", "first", "last_id", "out_of_range", "built", "user.age", "user.name", "user.address.zip"]
"#;

#[test]
fn check_describes_vector_and_nested_fields() {
    let config = parse(Source {
        path: "vectors.toml".into(),
        text: VECTORS.to_owned(),
    })
    .unwrap();
    let text = plan(config).unwrap().describe(&[0]);
    assert!(
        text.contains(
            "request: {features: array<float64> (len 4), weights: array<float32> (nullable), \
             ids: array<int64>, user.age: int64, user.address.zip: utf8 (nullable), user.name: utf8}"
        ),
        "{text}"
    );
    assert!(
        text.contains("with_column built = array(\"user.age\", first * 2, element_at(weights, 1))  -> built: array<float64>"),
        "{text}"
    );
}

#[test]
fn vectors_and_nested_fields_decode_compute_and_reply() {
    let svc = start(VECTORS);
    let mut c = Client::connect(svc.shard_addrs()[0]);

    let r = c.post(
        "/score",
        r#"{"features":[1.5,null,3,-0.25],"weights":[0.1,null],"ids":[7,-0,9],
            "user":{"name":"ann","age":31,"address":{"zip":"75001"},"extra":[1,{"x":2}]},"other":3}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"features":[1.5,null,3.0,-0.25],"weights":[0.1,null],"ids":[7,0,9],"n":3,"first":1.5,"last_id":9,"out_of_range":null,"built":[31.0,3.0,0.10000000149011612],"user.age":31,"user.name":"ann","user.address.zip":"75001"}"#
    );

    // Nullable fields and objects: absent or null; an absent array is null.
    let r = c.post(
        "/score",
        r#"{"user":{"age":1,"name":"b","address":null},"ids":[1],"features":[0,0,0,0],"weights":null}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["weights"], serde_json::Value::Null);
    assert_eq!(j["user.address.zip"], serde_json::Value::Null);
    assert_eq!(j["built"], serde_json::json!([1.0, 0.0, null]));

    // The filter reads the vector.
    let r = c.post(
        "/score",
        r#"{"user":{"age":1,"name":"b"},"ids":[],"features":[0,0,0,0]}"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"], "ids must not be empty");

    // Every rejection names the field, what was expected and what was found.
    let good_user = r#""user":{"age":1,"name":"b"}"#;
    let cases: &[(&str, &str, &str)] = &[
        (
            r#""features":[1,2,3],"ids":[1]"#,
            "field \"features\": expected array<float64> of length 4, found 3 elements",
            "features",
        ),
        (
            r#""features":[1,2,3,4,5,6],"ids":[1]"#,
            "field \"features\": expected array<float64> of length 4, found 6 elements",
            "features",
        ),
        (
            r#""features":[1,"2",3,4],"ids":[1]"#,
            "field \"features\": expected array<float64>, found string at index 1",
            "features",
        ),
        (
            r#""features":[1,2,3,[4]],"ids":[1]"#,
            "field \"features\": expected array<float64>, found array at index 3",
            "features",
        ),
        (
            r#""features":4,"ids":[1]"#,
            "field \"features\": expected array<float64>, found number",
            "features",
        ),
        (
            r#""features":[1,2,3,4],"ids":[1,null]"#,
            "field \"ids\": expected array<int64>, found null at index 1",
            "ids",
        ),
        (
            r#""features":[1,2,3,4],"ids":[1,2.5]"#,
            "field \"ids\": expected array<int64>, found 2.5 (not an integer) at index 1",
            "ids",
        ),
        (
            r#""features":[1,2,3,4],"ids":[1,-0.0]"#,
            "field \"ids\": expected array<int64>, found -0.0 (not an integer) at index 1",
            "ids",
        ),
        (
            r#""features":[1,2,3,4],"ids":[1],"weights":[1e300]"#,
            "field \"weights\": expected array<float32>, found 1e300 (out of float32 range) at index 0",
            "weights",
        ),
        (
            r#""features":[1,2,3,4]"#,
            "missing field \"ids\" (expected array<int64>)",
            "ids",
        ),
    ];
    for (fields, message, field) in cases {
        let body = format!("{{{fields},{good_user}}}");
        let r = c.post("/score", &body);
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        let j = r.json();
        assert_eq!(j["error"], *message, "{body}");
        assert_eq!(j["field"], *field, "{body}");
    }
    let vectors = r#""features":[1,2,3,4],"ids":[1]"#;
    let nested: &[(&str, &str, &str)] = &[
        (
            r#""user":{"name":"b"}"#,
            "missing field \"user.age\" (expected int64; found no key \"age\" in object \"user\")",
            "user.age",
        ),
        (
            r#""other":{"age":1}"#,
            "missing field \"user.age\" (expected int64; found no key \"user\" in the body)",
            "user.age",
        ),
        (
            r#""user":null"#,
            "missing field \"user.age\" (expected int64; found \"user\": null)",
            "user.age",
        ),
        (
            r#""user":"ann""#,
            "field \"user\": expected an object (holding \"user.age\"), found string",
            "user.age",
        ),
        (
            r#""user":{"age":1,"name":"b","address":[1]}"#,
            "field \"user.address\": expected an object (holding \"user.address.zip\"), found array",
            "user.address.zip",
        ),
        (
            r#""user":{"age":"1","name":"b"}"#,
            "field \"user.age\": expected int64, found string",
            "user.age",
        ),
        (
            r#""user":{"age":1,"name":"b"},"user":{"age":1,"name":"b"}"#,
            "duplicate field \"user\"",
            "user",
        ),
        (
            r#""user":{"age":1,"name":"b","age":2}"#,
            "duplicate field \"user.age\"",
            "user.age",
        ),
    ];
    for (user, message, field) in nested {
        let body = format!("{{{vectors},{user}}}");
        let r = c.post("/score", &body);
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        let j = r.json();
        assert_eq!(j["error"], *message, "{body}");
        assert_eq!(j["field"], *field, "{body}");
    }
    // A literal dotted key is not the nested field.
    let r = c.post(
        "/score",
        r#"{"features":[1,2,3,4],"ids":[1],"user.age":3,"user":{"name":"b"}}"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());

    // Errors kept the connection usable, and buffers are reused: a shorter
    // vector after a longer one holds only its own elements.
    let r = c.post(
        "/score",
        r#"{"features":[4,3,2,1],"ids":[5],"user":{"age":2,"name":"c"}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ids"], serde_json::json!([5]));
    assert_eq!(r.json()["n"], 1);
}

#[test]
fn negative_zero_is_an_int64_zero() {
    let svc = start(
        r#"
[service]
name = "zero"
base_port = 0
shards = 1

[[route]]
path = "/z"
request = { a = "int64", b = { type = "int64", nullable = true }, f = { type = "float64", nullable = true } }
"#,
    );
    let mut c = Client::connect(svc.shard_addrs()[0]);
    // JSON `-0` is an integer (RFC 8259's int production allows the minus).
    let r = c.post("/z", r#"{"a": -0}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"a":0,"b":null,"f":null}"#);
    let r = c.post("/z", "{\"b\":-0,\n\"a\":\n-0, \"f\": -0}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"a":0,"b":0,"f":-0.0}"#);
    // With a fraction or an exponent it is not an integer, like 2.0.
    for (text, shown) in [("-0.0", "-0.0"), ("-0e0", "-0.0"), ("-0E+1", "-0.0")] {
        let r = c.post("/z", &format!(r#"{{"a": {text}}}"#));
        assert_eq!(r.status, 422, "{text}: {}", r.text());
        assert_eq!(
            r.json()["error"],
            format!("field \"a\": expected int64, found {shown} (not an integer)")
        );
    }
    // `-0` accepted earlier in the body, then a real `-0.0`: still refused.
    let r = c.post("/z", r#"{"a": -0, "b": -0.0}"#);
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["field"], "b");
    let r = c.post("/z", r#"{"a": 0}"#);
    assert_eq!(r.text(), r#"{"a":0,"b":null,"f":null}"#);
}

/// `n` distinct card ids owned by `shard` of 2.
fn cards_owned_by(shard: usize, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("card-{i}"))
        .filter(|k| owner_shard(Val::Str(k), 2) == shard)
        .take(n)
        .collect()
}

#[test]
fn array_columns_survive_a_forwarded_keyed_step() {
    let svc = start(
        r#"
[service]
name = "fwd"
base_port = 0
shards = 2
admin_port = 0

[[route]]
path = "/tx"
request = { card = "utf8", amount = "float64", "meta.features" = { type = "array<float64>", len = 3 }, tags = "array<int64>" }
  [[route.step]]
  with_column = { name = "scaled", expr = "array(amount, element_at(\"meta.features\", 2), size(tags))" }
  [[route.step]]
  aggregate = { name = "per_card", key = "card", outputs = { n = "count()", total = "sum(amount)" } }
  [[route.step]]
  with_column = { name = "after", expr = "element_at(scaled, 1) + total" }
  [route.reply]
  columns = ["card", "meta.features", "tags", "scaled", "n", "total", "after"]
"#,
    );
    let addrs = svc.shard_addrs();
    let mut clients: Vec<Client> = addrs.iter().map(|a| Client::connect(*a)).collect();
    for owner in 0..2 {
        for card in cards_owned_by(owner, 3) {
            for (i, port) in [owner, 1 - owner, 1 - owner].into_iter().enumerate() {
                let body = format!(
                    r#"{{"card":"{card}","amount":{}.5,"meta":{{"features":[{i},null,2.5]}},"tags":[{i},{owner},9]}}"#,
                    i + 1
                );
                let r = clients[port].post("/tx", &body);
                assert_eq!(r.status, 200, "{body}: {}", r.text());
                let n = i + 1;
                let total: f64 = (1..=n).map(|k| k as f64 + 0.5).sum();
                let expected = serde_json::json!({
                    "card": card,
                    "meta.features": [i as f64, null, 2.5],
                    "tags": [i, owner, 9],
                    "scaled": [n as f64 + 0.5, null, 3.0],
                    "n": n,
                    "total": total,
                    "after": n as f64 + 0.5 + total,
                });
                assert_eq!(r.json(), expected, "port {port}: {body}");
            }
        }
    }
    let stats = admin_get(&svc, "/stats").json();
    for shard in 0..2 {
        assert!(
            stats["shards"][shard]["forwarded_requests"]
                .as_u64()
                .unwrap()
                >= 3,
            "shard {shard} forwarded too little: {stats}"
        );
    }
}

fn config_error(route: &str) -> String {
    let text = format!(
        "[service]\nname = \"x\"\nbase_port = 0\nshards = 1\n\n[[route]]\npath = \"/a\"\n{route}"
    );
    let config = parse(Source {
        path: "configs/x.toml".into(),
        text,
    });
    match config {
        Err(e) => e.to_string(),
        Ok(c) => match plan(c) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {route}"),
        },
    }
}

#[test]
fn bad_vector_and_nested_configs_are_refused_with_positions() {
    let first_line = |e: String| e.lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        first_line(config_error(
            "request = { v = { type = \"array<float64>\", len = 0 } }\n"
        )),
        "configs/x.toml:8:50: route[0].request.v.len: invalid length 0; expected a number of elements, at least 1"
    );
    assert_eq!(
        first_line(config_error(
            "request = { v = { type = \"float64\", len = 3 } }\n"
        )),
        "configs/x.toml:8:43: route[0].request.v.len: len applies to arrays, and this field is float64; expected a type such as \"array<float64>\" to fix a vector's length"
    );
    assert_eq!(
        first_line(config_error("request = { v = \"array<text>\" }\n")),
        "configs/x.toml:8:17: route[0].request.v: unknown type \"array<text>\"; expected one of: utf8, int64, float64, bool, array<float64>, array<float32>, array<int64>"
    );
    assert_eq!(
        first_line(config_error(
            "request = { user = \"utf8\", \"user.age\" = \"int64\" }\n"
        )),
        "configs/x.toml:8:28: route[0].request.user.age: field \"user.age\" conflicts with field \"user\": \"user\" cannot be both a value and the object holding \"user.age\""
    );
    assert!(
        first_line(config_error("request = { \"user..age\" = \"int64\" }\n"))
            .starts_with("configs/x.toml:8:13: route[0].request.user..age: field name \"user..age\" has an empty part"),
    );
    // Keyed state does not hold vectors: refused at config time.
    let e = config_error(
        "request = { v = \"array<int64>\" }\n[[route.step]]\naggregate = { name = \"t\", key = \"v\", outputs = { n = \"count()\" } }\n",
    );
    assert!(
        e.contains("key column \"v\" is array<int64>; keys must be utf8, int64 or bool"),
        "{e}"
    );
    let e = config_error(
        "request = { k = \"utf8\", v = \"array<float64>\" }\n[[route.step]]\naggregate = { name = \"t\", key = \"k\", outputs = { s = \"sum(v)\" } }\n",
    );
    assert!(
        e.contains("sum(v) needs an int64 or float64 column; `v` is array<float64>"),
        "{e}"
    );
    let e = config_error(
        "request = { k = \"utf8\", v = \"array<float64>\" }\n[[route.step]]\nchanged = { name = \"t\", key = \"k\", value = \"v\", output = \"c\" }\n",
    );
    assert!(
        e.contains("`v` is array<float64>; keyed state does not store arrays"),
        "{e}"
    );
    // Expression type errors keep their file:line:column.
    let e = config_error(
        "request = { v = \"array<float64>\" }\n[[route.step]]\nwith_column = { name = \"y\", expr = \"v + 1\" }\n",
    );
    assert!(
        e.starts_with("configs/x.toml:10:")
            && e.contains("+ expects numbers, found array<float64> (column \"v\")"),
        "{e}"
    );
}
