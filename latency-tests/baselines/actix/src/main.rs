//! actix-web baseline for the coreline latency suite: the hello workload with
//! `workers(1)` on actix's single-threaded tokio system, pinned to one core.
//!
//! `POST /my_api` with `{"foo": string, "bar": int}` answers
//! `{"fooLength": <chars in foo>}`; invalid JSON is 400, a missing or mistyped
//! field is 422 (actix answers 400 for both by default, so the `JsonConfig`
//! error handler splits them the way axum and coreline do), an unknown path is
//! 404, `GET /health` is 200.

use actix_web::error::{InternalError, JsonPayloadError};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
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

async fn my_api(hello: web::Json<Hello>) -> HttpResponse {
    HttpResponse::Ok().json(Reply {
        foo_length: hello.foo.chars().count(),
    })
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

/// 422 for well-formed JSON of the wrong shape, 400 for everything else.
fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let status = match &err {
        JsonPayloadError::Deserialize(e) if e.classify() == serde_json::error::Category::Data => {
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => actix_web::http::StatusCode::BAD_REQUEST,
    };
    let body = err.to_string();
    InternalError::from_response(err, HttpResponse::build(status).body(body)).into()
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

fn main() -> std::io::Result<()> {
    let (port, core) = parse_args().unwrap_or_else(|e| {
        eprintln!("baseline-actix: {e}");
        std::process::exit(2)
    });
    // Threads inherit the affinity of their creator: the accept thread and the
    // single worker actix starts both end up on `core`.
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        eprintln!("baseline-actix: cannot pin to core {core}");
        std::process::exit(2)
    }
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| {
            App::new()
                .app_data(web::JsonConfig::default().error_handler(json_error))
                .route("/my_api", web::post().to(my_api))
                .route("/health", web::get().to(health))
        })
        .workers(1)
        .shutdown_timeout(1)
        .bind(("127.0.0.1", port))?;
        eprintln!("baseline-actix listening on 127.0.0.1:{port}, core {core}");
        server.run().await
    })
}
