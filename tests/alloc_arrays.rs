//! Zero allocations per warm request on routes with vector and nested
//! request fields: HTTP decode, route match, JSON decode into the row's
//! reusable vector buffers, `size`/`element_at`/`array` expressions, a
//! filter, reply encode (JSON arrays) and response head.
//!
//! Counted per thread by the shared allocator in `tests/common/counting.rs`
//! (the tests run in parallel, each counts its own).

#[path = "common/counting.rs"]
mod counting;

use coreline::http::{
    ContentType, Decoded, Decoder, HttpDate, Limits, ResponseOptions, write_response,
};
use coreline::operator::Ctx;
use coreline::pipeline::{Match, Outcome, Router, plan};
use coreline::state::ShardState;

fn allocations() -> u64 {
    counting::thread_allocations()
}

const CONFIG: &str = r#"
[service]
name = "alloc_arrays"
base_port = 0
shards = 1

[[route]]
path = "/vec"
request = { features = { type = "array<float64>", len = 8 }, weights = "array<float32>", ids = { type = "array<int64>", nullable = true }, bias = "float64" }
  [[route.step]]
  with_column = { name = "n", expr = "size(ids)" }
  [[route.step]]
  with_column = { name = "f2", expr = "element_at(features, 2) + element_at(weights, -1)" }
  [[route.step]]
  with_column = { name = "v", expr = "array(bias, f2, element_at(ids, 1), n)" }
  [[route.step]]
  filter = { expr = "size(features) = 8", status = 422, message = "unreachable" }
  [route.reply]
  columns = ["features", "weights", "ids", "n", "v"]

[[route]]
path = "/nested"
request = { "user.age" = "int64", "user.name" = "utf8", "user.address.city" = { type = "utf8", nullable = true }, "order.total" = "float64", "order.items" = "array<int64>" }
  [[route.step]]
  with_column = { name = "older", expr = "\"user.age\" + 1" }
  [route.reply]
  columns = ["user.name", "older", "user.address.city", "order.items"]
"#;

fn router() -> Router {
    let cfg = coreline::config::parse(coreline::config::Source {
        path: "alloc_arrays.toml".into(),
        text: CONFIG.to_owned(),
    })
    .unwrap();
    Router::from_plan(&plan(cfg).unwrap())
}

/// Runs one pipelined buffer of requests through the in-memory path.
fn serve(
    router: &mut Router,
    decoder: &mut Decoder,
    limits: &Limits,
    date: &HttpDate,
    input: &[u8],
    out: &mut Vec<u8>,
    body: &mut Vec<u8>,
) -> usize {
    let mut start = 0;
    let mut answered = 0;
    let mut state = ShardState::without_checkpoints(&[]).unwrap();
    let mut ctx = Ctx::new(&mut state, 0, 1);
    out.clear();
    while start < input.len() {
        match decoder.decode(&input[start..], limits).unwrap() {
            Decoded::Request { request, consumed } => {
                body.clear();
                let status = match router.find(request.method, request.path) {
                    Match::Route(i) => match router.handle(i, &request, &mut ctx, body) {
                        Outcome::Done(status) => status,
                        other => panic!("unexpected {other:?}"),
                    },
                    other => panic!("unexpected {other:?}"),
                };
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(body));
                write_response(
                    out,
                    date,
                    status,
                    ContentType::Json,
                    body,
                    ResponseOptions::for_request(&request),
                );
                start += consumed;
                answered += 1;
            }
            Decoded::Incomplete { .. } => panic!("complete input"),
        }
    }
    answered
}

fn post(path: &str, json: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    )
    .into_bytes()
}

/// Warms the route up, then counts allocations over 1000 rounds of `input`.
fn allocations_when_warm(input: &[u8], expect_in_output: &[u8]) -> (u64, usize) {
    let mut router = router();
    let mut decoder = Decoder::new();
    let limits = Limits::default();
    let date = HttpDate::new(std::time::SystemTime::now());
    let mut out = Vec::with_capacity(8192);
    let mut body = Vec::with_capacity(512);
    for _ in 0..10 {
        serve(
            &mut router,
            &mut decoder,
            &limits,
            &date,
            input,
            &mut out,
            &mut body,
        );
    }
    assert!(
        out.windows(expect_in_output.len())
            .any(|w| w == expect_in_output),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let before = allocations();
    let mut answered = 0;
    for _ in 0..1000 {
        answered += serve(
            &mut router,
            &mut decoder,
            &limits,
            &date,
            input,
            &mut out,
            &mut body,
        );
    }
    (allocations() - before, answered)
}

#[test]
fn warm_vector_route_does_not_allocate() {
    let mut input = Vec::new();
    for i in 0..8 {
        // Vectors of varying lengths (ids) and with missing elements.
        let ids: Vec<String> = (0..=i % 5).map(|k| (k * 10 + i).to_string()).collect();
        let ids = if i == 3 {
            "null".to_owned()
        } else {
            format!("[{}]", ids.join(","))
        };
        let json = format!(
            r#"{{"features":[{i},0.5,null,3,4,5,6,7.25],"weights":[0.5,{i}.25],"ids":{ids},"bias":1.5,"unused":[1,[2,{{"x":3}}]]}}"#
        );
        input.extend_from_slice(&post("/vec", &json));
    }
    let (allocations, answered) = allocations_when_warm(
        &input,
        br#"{"features":[1.0,0.5,null,3.0,4.0,5.0,6.0,7.25],"weights":[0.5,1.25],"ids":[1,11],"n":2,"v":[1.5,1.75,1.0,2.0]}"#,
    );
    assert_eq!(answered, 8000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in {answered} warm requests"
    );
}

#[test]
fn warm_nested_route_does_not_allocate() {
    let mut input = Vec::new();
    for i in 0..8 {
        let city = if i % 2 == 0 {
            r#","address":{"city":"Paris","zip":"75001"}"#
        } else {
            ""
        };
        let json = format!(
            r#"{{"order":{{"items":[{i},2,3],"total":{i}.5}},"user":{{"name":"user {i}","age":{}{city},"tags":["a"]}}}}"#,
            30 + i
        );
        input.extend_from_slice(&post("/nested", &json));
    }
    let (allocations, answered) = allocations_when_warm(
        &input,
        br#"{"user.name":"user 2","older":33,"user.address.city":"Paris","order.items":[2,2,3]}"#,
    );
    assert_eq!(answered, 8000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in {answered} warm requests"
    );
}
