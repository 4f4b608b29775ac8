//! Request decoding, steps and replies, over real sockets.

mod common;

use common::{Client, hello, start};

#[test]
fn decode_errors_name_the_field() {
    let svc = hello(1);
    let mut c = Client::connect(svc.shard_addrs()[0]);

    let r = c.post("/my_api", r#"{"foo":"x","bar":"42"}"#);
    assert_eq!(r.status, 422);
    let j = r.json();
    assert_eq!(j["field"], "bar");
    let msg = j["error"].as_str().unwrap();
    assert!(msg.contains("int64") && msg.contains("string"), "{msg}");

    let r = c.post("/my_api", r#"{"bar":42}"#);
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["field"], "foo");

    let r = c.post("/my_api", r#"{"foo":"x","bar":null}"#);
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["field"], "bar");

    let r = c.post("/my_api", r#"{"foo":"x", "bar":4"#);
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("byte"),
        "{}",
        r.text()
    );

    let r = c.post("/my_api", "[1,2]");
    assert_eq!(r.status, 422);

    let r = c.post("/my_api", "");
    assert_eq!(r.status, 400);

    // Errors keep the connection usable.
    let r = c.post(
        "/my_api",
        r#"{"foo":"héllo","bar":1,"extra":{"deep":[1,2]}}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"fooLength":5}"#);
}

const ORDERS: &str = r#"
[service]
name = "orders"
base_port = 0
shards = 1

[[route]]
path = "/score"
request = { user = "utf8", amount = "float64", items = "int64", country = "utf8", coupon = { type = "utf8", nullable = true } }
  [[route.step]]
  filter = { expr = "amount > 0 AND items > 0", status = 422, message = "amount and items must be positive" }
  [[route.step]]
  with_column = { name = "user", expr = "lower(trim(user))" }
  [[route.step]]
  with_column = { name = "unit_price", expr = "round(amount / items, 2)" }
  [[route.step]]
  with_column = { name = "risk", expr = "CASE WHEN amount > 1000 THEN 'high' WHEN country NOT IN ('DE', 'FR', 'NL') THEN 'medium' ELSE 'low' END" }
  [[route.step]]
  with_column = { name = "discount", expr = "CASE WHEN coupon IS NULL THEN 0.0 WHEN upper(coupon) LIKE 'VIP%' THEN 0.2 ELSE 0.05 END" }
  [[route.step]]
  with_column = { name = "total", expr = "round(amount * (1 - discount), 2)" }
  [[route.step]]
  with_column = { name = "code", expr = "CASE WHEN risk = 'high' THEN 202 ELSE 200 END" }
  [route.reply]
  columns = ["user", "unit_price", "risk", "discount", "total"]
  status = "code"

[[route]]
path = "/normalize"
request = { name = "utf8", tag = { type = "utf8", nullable = true } }
  [[route.step]]
  with_column = { name = "slug", expr = "concat(lower(substring(trim(name), 1, 16)), '-', coalesce(tag, 'none'))" }
  [[route.step]]
  select = { columns = ["slug"] }
"#;

#[test]
fn richer_pipeline_filters_computes_and_sets_status() {
    let svc = start(ORDERS);
    let mut c = Client::connect(svc.shard_addrs()[0]);
    let r = c.post(
        "/score",
        r#"{"user":"  Ada ","amount":120.5,"items":3,"country":"DE","coupon":"vip-2026"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"user":"ada","unit_price":40.17,"risk":"low","discount":0.2,"total":96.4}"#
    );
    let r = c.post(
        "/score",
        r#"{"user":"Bob","amount":5000,"items":1,"country":"US"}"#,
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["risk"], "high");
    assert_eq!(r.json()["discount"], 0.0);
    let r = c.post(
        "/score",
        r#"{"user":"Eve","amount":-1,"items":1,"country":"US"}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"], "amount and items must be positive");

    let r = c.post("/normalize", r#"{"name":"  A Very Long Product Name "}"#);
    assert_eq!(r.text(), r#"{"slug":"a very long prod-none"}"#);
    let r = c.post("/normalize", r#"{"name":"X","tag":"new"}"#);
    assert_eq!(r.text(), r#"{"slug":"x-new"}"#);
}

#[test]
fn a_failing_step_answers_500_and_the_shard_keeps_serving() {
    let svc = start(
        r#"
[service]
name = "status"
base_port = 0
shards = 1

[[route]]
path = "/s"
request = { n = "int64" }
  [[route.step]]
  with_column = { name = "code", expr = "CASE WHEN n > 0 THEN 201 ELSE 999 END" }
  [route.reply]
  columns = ["n"]
  status = "code"
"#,
    );
    let mut c = Client::connect(svc.shard_addrs()[0]);
    let r = c.post("/s", r#"{"n":1}"#);
    assert_eq!(r.status, 201);
    assert_eq!(r.text(), r#"{"n":1}"#);
    let r = c.post("/s", r#"{"n":0}"#);
    assert_eq!(r.status, 500);
    assert!(
        r.json()["error"].as_str().unwrap().contains("status"),
        "{}",
        r.text()
    );
    // Same connection, same shard: still serving.
    assert_eq!(c.post("/s", r#"{"n":2}"#).status, 201);
}

#[test]
fn a_get_route_without_request_fields_takes_no_body() {
    let svc = start(
        r#"
[service]
name = "constants"
base_port = 0
shards = 1

[[route]]
method = "GET"
path = "/answer"
  [[route.step]]
  with_column = { name = "answer", expr = "40 + 2" }
"#,
    );
    let mut c = Client::connect(svc.shard_addrs()[0]);
    let r = c.get("/answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"answer":42}"#);
    let r = c.post("/answer", "{}");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}
