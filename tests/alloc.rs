//! Zero allocations per warm request on the hello path: HTTP decode, route
//! match, JSON decode, expression, reply encode and response head — the
//! whole per-request path a shard runs between its read and its write.

#[path = "common/counting.rs"]
mod counting;

use coreline::http::{
    ContentType, Decoded, Decoder, HttpDate, Limits, ResponseOptions, write_response,
};
use coreline::operator::Ctx;
use coreline::pipeline::{Match, Outcome, Router, plan};
use coreline::state::ShardState;

fn hello_router() -> Router {
    let cfg = coreline::config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/hello.toml"
    )))
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

#[test]
fn warm_hello_path_does_not_allocate() {
    let mut router = hello_router();
    let mut decoder = Decoder::new();
    let limits = Limits::default();
    let date = HttpDate::new(std::time::SystemTime::now());
    let mut out = Vec::with_capacity(4096);
    let mut body = Vec::with_capacity(256);
    let mut input = Vec::new();
    for i in 0..8 {
        let json = format!(r#"{{"foo":"hello world {i}","bar":{i}}}"#);
        input.extend_from_slice(
            format!(
                "POST /my_api HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            )
            .as_bytes(),
        );
    }
    // Warm up: buffers reach their working sizes.
    for _ in 0..10 {
        serve(
            &mut router,
            &mut decoder,
            &limits,
            &date,
            &input,
            &mut out,
            &mut body,
        );
    }
    assert!(
        out.windows(16)
            .any(|w| w == br#"{"fooLength":13}"#.as_slice())
    );

    let before = counting::thread_allocations();
    let mut answered = 0;
    for _ in 0..1000 {
        answered += serve(
            &mut router,
            &mut decoder,
            &limits,
            &date,
            &input,
            &mut out,
            &mut body,
        );
    }
    let allocations = counting::thread_allocations() - before;
    assert_eq!(answered, 8000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in {answered} warm requests"
    );

    // The access log's part of an answer: a record copied from the request
    // and offered to the shard's bounded channel, dropped when full. The
    // logger thread formats lines (and may allocate); the shard's thread,
    // counted here, must not.
    let (logger, logs) = coreline::access_log::Logger::start(coreline::access_log::Mode::All, 1);
    let log = &logs[0];
    let path = "/my_api/".repeat(40); // longer than a record keeps
    // Warm up: the logger thread has drained a first record.
    for status in [200, 500] {
        if let Some(r) = log.line_for(0, status, coreline::http::Method::Post, &path, "abc") {
            log.offer(r);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = counting::thread_allocations();
    let mut offered = 0;
    for i in 0..20_000u32 {
        let line = log.line_for(
            0,
            200 + (i % 400) as u16,
            coreline::http::Method::Post,
            &path,
            "req-1",
        );
        let asker = log.asker(coreline::http::Method::Get, "/counts", "");
        let forwarded = log.line(0, 500, asker);
        for mut r in [line, forwarded].into_iter().flatten() {
            r.latency = std::time::Duration::from_micros(u64::from(i));
            log.offer(r);
            offered += 1;
        }
    }
    let allocations = counting::thread_allocations() - before;
    assert_eq!(offered, 40_000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations for {offered} access-log records"
    );
    drop(logs);
    logger.expect("a logger runs in mode all").stop();
}

/// Header columns are found in one pass over the head into a reused vector
/// of ranges: no allocation either, present, absent (nullable) or repeated.
#[test]
fn warm_header_columns_do_not_allocate() {
    let cfg = coreline::config::parse(coreline::config::Source::new(
        "headers.toml",
        r#"
[service]
name = "h"
base_port = 0
shards = 1

[[route]]
path = "/whoami"
request = { n = "int64" }
headers = { x_user = "utf8", x_count = { type = "int64", nullable = true }, x_vip = { type = "bool", nullable = true } }
  [[route.step]]
  with_column = { name = "total", expr = "n + coalesce(x_count, 0)" }
  [route.reply]
  columns = ["x_user", "total", "x_vip"]
"#,
    ))
    .unwrap();
    let mut router = Router::from_plan(&plan(cfg).unwrap());
    let mut decoder = Decoder::new();
    let limits = Limits::default();
    let date = HttpDate::new(std::time::SystemTime::now());
    let mut out = Vec::with_capacity(4096);
    let mut body = Vec::with_capacity(256);
    let mut input = Vec::new();
    for i in 0..8 {
        let json = format!(r#"{{"n":{i}}}"#);
        let extra = if i % 2 == 0 {
            "X-Count: 40\r\nX-Vip: true\r\nX-User: again\r\n"
        } else {
            ""
        };
        input.extend_from_slice(
            format!(
                "POST /whoami HTTP/1.1\r\nHost: x\r\nX-User: ann\r\n{extra}Content-Length: {}\r\n\r\n{json}",
                json.len()
            )
            .as_bytes(),
        );
    }
    for _ in 0..10 {
        serve(
            &mut router,
            &mut decoder,
            &limits,
            &date,
            &input,
            &mut out,
            &mut body,
        );
    }
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains(r#"{"x_user":"ann","total":40,"x_vip":true}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"{"x_user":"ann","total":1,"x_vip":null}"#),
        "{text}"
    );

    let before = counting::thread_allocations();
    let mut answered = 0;
    for _ in 0..1000 {
        answered += serve(
            &mut router,
            &mut decoder,
            &limits,
            &date,
            &input,
            &mut out,
            &mut body,
        );
    }
    let allocations = counting::thread_allocations() - before;
    assert_eq!(answered, 8000);
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in {answered} warm requests"
    );
}
