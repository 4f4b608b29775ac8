//! The per-request path of `configs/hello.toml`, in memory: each stage alone
//! and the whole path (HTTP parse → JSON decode → expression → reply encode →
//! response head), the way a shard runs it between a read and a write.
//!
//! `cargo bench --bench request_path`

use std::hint::black_box;
use std::time::SystemTime;

use coreline::expr;
use coreline::http::{
    ContentType, Decoded, Decoder, HttpDate, Limits, ResponseOptions, write_response,
};
use coreline::operator::Ctx;
use coreline::pipeline::{Match, Outcome, Router, plan};
use coreline::reply::ReplyEncoder;
use coreline::row::{Column, ColumnType, Columns, Row};
use coreline::schema::RequestSchema;
use coreline::state::ShardState;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BODY: &[u8] = br#"{"foo":"hello world","bar":42}"#;
const REQUEST: &[u8] = b"POST /my_api HTTP/1.1\r\nHost: localhost:8888\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n{\"foo\":\"hello world\",\"bar\":42}";

fn hello_columns() -> Vec<Column> {
    vec![
        Column {
            name: "foo".into(),
            ty: ColumnType::Utf8,
            nullable: false,
        },
        Column {
            name: "bar".into(),
            ty: ColumnType::Int64,
            nullable: false,
        },
    ]
}

fn hello_router() -> Router {
    let cfg = coreline::config::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/hello.toml"
    )))
    .expect("hello.toml loads");
    Router::from_plan(&plan(cfg).expect("hello.toml plans"))
}

fn stages(c: &mut Criterion) {
    let mut g = c.benchmark_group("stage");
    g.throughput(Throughput::Elements(1));
    let limits = Limits::default();

    // What per-step latency costs: one clock read per step (plus one per
    // request), see `Route::run_from`.
    g.bench_function("step_clock_read", |b| b.iter(std::time::Instant::now));

    let mut decoder = Decoder::new();
    g.bench_function("http_parse", |b| {
        b.iter(|| match decoder.decode(black_box(REQUEST), &limits) {
            Ok(Decoded::Request { consumed, .. }) => consumed,
            _ => unreachable!(),
        })
    });

    let mut schema = RequestSchema::new(hello_columns());
    let mut row = Row::with_width(3);
    g.bench_function("body_decode", |b| {
        b.iter(|| schema.decode(black_box(BODY), &mut row).is_ok())
    });

    let mut columns = Columns::new();
    for c in hello_columns() {
        columns.push(c);
    }
    let mut length = expr::compile("length(foo)", &columns).unwrap();
    g.bench_function("expr_length", |b| {
        b.iter(|| matches!(black_box(length.eval(&row)), coreline::row::Val::Int(11)))
    });
    let mut richer = expr::compile(
        "CASE WHEN bar > 10 AND lower(foo) LIKE 'hello%' THEN round(bar * 1.5, 1) ELSE 0.0 END",
        &columns,
    )
    .unwrap();
    g.bench_function("expr_case_like_round", |b| {
        b.iter(|| !black_box(richer.eval(&row)).is_null())
    });

    row.slot_mut(2).set(coreline::row::Val::Int(11));
    let reply = ReplyEncoder::new(&[("fooLength".to_string(), 2)]);
    let mut out = Vec::with_capacity(256);
    g.bench_function("reply_encode", |b| {
        b.iter(|| {
            out.clear();
            reply.encode(black_box(&row), &mut out);
            out.len()
        })
    });

    let date = HttpDate::new(SystemTime::now());
    g.bench_function("response_head", |b| {
        b.iter(|| {
            out.clear();
            write_response(
                &mut out,
                &date,
                200,
                ContentType::Json,
                black_box(br#"{"fooLength":11}"#),
                ResponseOptions {
                    keep_alive: true,
                    ..ResponseOptions::default()
                },
            );
            out.len()
        })
    });
    g.finish();
}

/// Vector and nested request fields: a 16-element `array<float64>` feature
/// vector (with a missing value) and two nested fields, decoded into warm
/// row buffers; then a 16-element vector alone, for the per-element cost.
fn arrays(c: &mut Criterion) {
    let mut g = c.benchmark_group("arrays");
    g.throughput(Throughput::Elements(1));
    let column = |name: &str, ty| Column {
        name: name.into(),
        ty,
        nullable: false,
    };
    let mut schema = RequestSchema::with_lengths(
        vec![
            column("features", ColumnType::Float64Array),
            column("user.age", ColumnType::Int64),
            column("user.country", ColumnType::Utf8),
        ],
        vec![Some(16), None, None],
    );
    let body = br#"{"features":[0.5,1.25,-3.0,4,null,6.5,7.125,8,9.75,10,11.5,12,13.25,14,15.5,16],"user":{"age":31,"country":"FR"}}"#;
    let mut row = Row::with_width(3);
    assert!(schema.decode(body, &mut row).is_ok());
    g.bench_function("decode_vector16_nested2", |b| {
        b.iter(|| schema.decode(black_box(body), &mut row).is_ok())
    });
    let mut vector = RequestSchema::new(vec![column("features", ColumnType::Float64Array)]);
    let body =
        br#"{"features":[0.5,1.25,-3.0,4,null,6.5,7.125,8,9.75,10,11.5,12,13.25,14,15.5,16]}"#;
    g.bench_function("decode_vector16", |b| {
        b.iter(|| vector.decode(black_box(body), &mut row).is_ok())
    });
    g.finish();
}

fn whole_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("whole");
    let limits = Limits::default();
    let date = HttpDate::new(SystemTime::now());
    let mut router = hello_router();
    let mut decoder = Decoder::new();
    let mut out = Vec::with_capacity(4096);
    let mut body = Vec::with_capacity(256);

    let mut state = ShardState::without_checkpoints(&[]).unwrap();
    let mut serve = |input: &[u8], out: &mut Vec<u8>| {
        let mut ctx = Ctx::new(&mut state, 0, 1);
        let mut start = 0;
        out.clear();
        while start < input.len() {
            let Ok(Decoded::Request { request, consumed }) =
                decoder.decode(&input[start..], &limits)
            else {
                unreachable!()
            };
            body.clear();
            let status = match router.find(request.method, request.path) {
                Match::Route(i) => match router.handle(i, &request, &mut ctx, &mut body) {
                    Outcome::Done(status) => status,
                    _ => unreachable!(),
                },
                _ => unreachable!(),
            };
            write_response(
                out,
                &date,
                status,
                ContentType::Json,
                &body,
                ResponseOptions::for_request(&request),
            );
            start += consumed;
        }
    };

    g.throughput(Throughput::Elements(1));
    g.bench_function("hello_request", |b| {
        b.iter(|| {
            serve(black_box(REQUEST), &mut out);
            out.len()
        })
    });
    let pipelined: Vec<u8> = REQUEST.repeat(16);
    g.throughput(Throughput::Elements(16));
    g.bench_function("hello_pipelined_16", |b| {
        b.iter(|| {
            serve(black_box(&pipelined), &mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, stages, arrays, whole_path);
criterion_main!(benches);
