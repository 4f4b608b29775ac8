//! axum baseline for the coreline latency suite: the hello workload on one
//! tokio `current_thread` runtime, pinned to one core.
//!
//! `POST /my_api` with `{"foo": string, "bar": int}` answers
//! `{"fooLength": <chars in foo>}`; invalid JSON is 400, a missing or mistyped
//! field is 422 (axum's `Json` extractor rejections), an unknown path is 404,
//! `GET /health` is 200. This is the code a user would write with axum.

use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// The hello request body.
#[derive(Deserialize)]
struct Hello {
    foo: String,
    /// Required and type-checked, but unused by the reply.
    #[serde(rename = "bar")]
    _bar: i64,
}

/// The hello reply body.
#[derive(Serialize)]
struct Reply {
    #[serde(rename = "fooLength")]
    foo_length: usize,
}

async fn my_api(Json(hello): Json<Hello>) -> Json<Reply> {
    Json(Reply {
        foo_length: hello.foo.chars().count(),
    })
}

async fn health() -> &'static str {
    "ok"
}

/// `--port P --core C`, both required.
fn parse_args() -> Result<(u16, usize), String> {
    let mut port = None;
    let mut core = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = Some(value.parse().map_err(|e| format!("--port {value}: {e}"))?),
            "--core" => core = Some(value.parse().map_err(|e| format!("--core {value}: {e}"))?),
            other => return Err(format!("unknown flag {other}; expected --port P --core C")),
        }
    }
    Ok((
        port.ok_or("missing --port P")?,
        core.ok_or("missing --core C")?,
    ))
}

fn main() {
    let (port, core) = parse_args().unwrap_or_else(|e| {
        eprintln!("baseline-axum: {e}");
        std::process::exit(2)
    });
    // Threads inherit the affinity of their creator, so pinning before the
    // runtime exists pins everything the runtime might start.
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        eprintln!("baseline-axum: cannot pin to core {core}");
        std::process::exit(2)
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let app = Router::new()
        .route("/my_api", post(my_api))
        .route("/health", get(health));
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| {
                eprintln!("baseline-axum: bind 127.0.0.1:{port}: {e}");
                std::process::exit(1)
            });
        eprintln!("baseline-axum listening on 127.0.0.1:{port}, core {core}");
        axum::serve(listener, app).await.expect("axum::serve");
    });
}
