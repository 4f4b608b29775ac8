//! The OpenAPI 3.1 document of a plan: what `coreline openapi CONFIG` prints
//! and what `GET /openapi.json` on the admin port serves.
//!
//! Everything comes from the compiled [`Plan`], never from a second
//! description that could drift: each route's request schema (its declared
//! fields; a missing nullable field is null, undeclared fields are ignored),
//! its reply object (the reply columns with the types the planner inferred),
//! and the error bodies the runtime writes (`{"error": …, "field": …}`) with
//! the statuses that can answer them. Types map as utf8 → `string`, int64 →
//! `integer`/`int64`, float64 → `number`/`double`, bool → `boolean`;
//! nullable columns are `[type, "null"]` (JSON Schema 2020-12, which 3.1
//! uses).
//!
//! The module also writes the route lines `coreline run` prints, with a
//! ready-to-paste curl line built from the same example values.

use std::net::SocketAddr;

use serde_json::{Map, Value, json};

use crate::config::{RouteConfig, StepConfig};
use crate::http::Method;
use crate::pipeline::{HEALTH_PATH, Plan, RouteInput, RoutePlan};
use crate::row::{Column, ColumnType, Scalar, Shape};

/// The JSON Schema of one column type.
fn type_schema(ty: ColumnType, nullable: bool) -> Value {
    let scalar = match ty.shape() {
        Shape::Scalar(scalar) => scalar,
        Shape::Vector { element } => {
            // A JSON array; float elements may be null (NaN, missing).
            let item = type_schema(element.into(), element == Scalar::Float64);
            let mut s = Map::new();
            s.insert(
                "type".into(),
                if nullable {
                    json!(["array", "null"])
                } else {
                    json!("array")
                },
            );
            s.insert("items".into(), item);
            s.insert("x-coreline-type".into(), json!(ty.name()));
            return Value::Object(s);
        }
    };
    let (name, format) = match scalar {
        Scalar::Utf8 => ("string", None),
        Scalar::Int64 => ("integer", Some("int64")),
        Scalar::Float64 => ("number", Some("double")),
        Scalar::Boolean => ("boolean", None),
    };
    let mut s = Map::new();
    s.insert(
        "type".into(),
        if nullable {
            json!([name, "null"])
        } else {
            json!(name)
        },
    );
    if let Some(f) = format {
        s.insert("format".into(), json!(f));
    }
    s.insert("x-coreline-type".into(), json!(ty.name()));
    Value::Object(s)
}

/// An example value of a type, for the curl line and the document.
fn example(ty: ColumnType) -> Value {
    match ty {
        ColumnType::Utf8 => json!("text"),
        ColumnType::Int64 => json!(1),
        ColumnType::Float64 => json!(1.5),
        ColumnType::Boolean => json!(true),
        ColumnType::Float64Array | ColumnType::Float32Array => json!([0.5, 1.5]),
        ColumnType::Int64Array => json!([1, 2]),
    }
}

/// The `properties` and `required` members of a JSON Schema object.
fn object_parts(object: &mut Map<String, Value>) -> (&mut Map<String, Value>, &mut Vec<Value>) {
    let mut props = None;
    let mut required = None;
    for (k, v) in object.iter_mut() {
        match k.as_str() {
            "properties" => props = v.as_object_mut(),
            "required" => required = v.as_array_mut(),
            _ => {}
        }
    }
    (
        props.expect("an object schema has properties"),
        required.expect("an object schema has required"),
    )
}

fn request_schema(request: &[Column]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    let mut ex = Map::new();
    for c in request {
        // `user.age` is field `age` of the JSON object `user`.
        let mut parts: Vec<&str> = c.name.split('.').collect();
        let leaf = parts.pop().unwrap_or_default();
        let (mut props, mut required, mut ex) = (&mut props, &mut required, &mut ex);
        for part in parts {
            if !props.contains_key(part) {
                props.insert(
                    part.to_string(),
                    json!({"type": "object", "properties": {}, "required": []}),
                );
                ex.insert(part.to_string(), json!({}));
            }
            let object = props
                .get_mut(part)
                .and_then(Value::as_object_mut)
                .expect("object");
            // Named once, even when other fields come between its own.
            if !c.nullable && !required.contains(&json!(part)) {
                required.push(json!(part));
            }
            let (p, r) = object_parts(object);
            props = p;
            required = r;
            ex = ex
                .get_mut(part)
                .and_then(Value::as_object_mut)
                .expect("object example");
        }
        props.insert(leaf.to_string(), type_schema(c.ty, c.nullable));
        if !c.nullable {
            required.push(json!(leaf));
        }
        ex.insert(leaf.to_string(), example(c.ty));
    }
    json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": true,
        "description": "Fields the route declares. A missing nullable field is null; undeclared fields are ignored.",
        "examples": [ex],
    })
}

fn reply_schema(route: &RoutePlan) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (name, slot) in &route.reply {
        let c = route.columns.get(*slot);
        props.insert(name.clone(), type_schema(c.ty, c.nullable));
        required.push(json!(name));
    }
    json!({"type": "object", "properties": props, "required": required})
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

fn operation(route: &RoutePlan, config: &RouteConfig, index: usize) -> Value {
    let mut responses = Map::new();
    let ok = if route.status_column.is_some() {
        "The reply object; the status comes from the route's status column."
    } else {
        "The reply object."
    };
    responses.insert(
        "200".into(),
        json!({"description": ok, "content": {"application/json": {"schema": reply_schema(route)}}}),
    );
    let mut op = Map::new();
    op.insert("operationId".into(), json!(format!("route{index}")));
    op.insert("summary".into(), json!(route.name));
    let mut errors: Vec<(u16, String)> = Vec::new();
    if let RouteInput::QueryKey(key_type) = route.input {
        let table = config.read.as_ref().map_or("", |t| t.value.as_str());
        op.insert(
            "parameters".into(),
            json!([{
                "name": "key",
                "in": "query",
                "required": true,
                "description": format!("Key of table `{table}` (percent-encoded; `+` is a space)."),
                "schema": type_schema(key_type, false),
            }]),
        );
        errors.push((
            400,
            "The key is missing, not percent-encoded UTF-8, or not of the key's type.".into(),
        ));
        errors.push((404, "No state for this key.".into()));
    } else {
        if !route.request.is_empty() {
            op.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "content": {"application/json": {"schema": request_schema(&route.request)}},
                }),
            );
        }
        errors.push((
            400,
            "Empty body or invalid JSON (the message gives the byte offset).".into(),
        ));
        errors.push((
            422,
            "Valid JSON that does not fit the request schema (`field` names the field), a null key, or a filter's rejection.".into(),
        ));
        for step in &config.steps {
            if let StepConfig::Filter(f) = step
                && !errors.iter().any(|(s, _)| *s == f.status)
            {
                errors.push((f.status, format!("Rejected by a filter: {}", f.message)));
            }
        }
    }
    errors.push((
        413,
        "The body is larger than `[limits] max_body_bytes`.".into(),
    ));
    errors.push((
        431,
        "The request head is larger than `[limits] max_header_bytes`.".into(),
    ));
    errors.push((
        500,
        "A step failed for this request; the shard keeps serving.".into(),
    ));
    errors.push((503, "The shard is at `max_connections` or draining.".into()));
    errors.sort_by_key(|e| e.0);
    for (status, why) in errors {
        responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(&why));
    }
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

fn method_key(m: Method) -> &'static str {
    match m {
        Method::Get => "get",
        Method::Head => "head",
        Method::Post => "post",
        Method::Put => "put",
        Method::Patch => "patch",
        Method::Delete => "delete",
        Method::Options => "options",
        // No route can declare another method (the configuration refuses it).
        Method::Other => "x-other",
    }
}

/// The OpenAPI 3.1 document of `plan`'s routes.
pub fn document(plan: &Plan) -> Value {
    let svc = &plan.config.service;
    let mut paths = Map::new();
    // Plan routes are the configuration's, in file order.
    for (i, (route, config)) in plan.routes.iter().zip(&plan.config.routes).enumerate() {
        let item = paths
            .entry(route.path.clone())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path items are objects");
        item.insert(method_key(route.method).into(), operation(route, config, i));
    }
    paths.entry(HEALTH_PATH.to_owned()).or_insert_with(|| {
        json!({"get": {
            "operationId": "health",
            "summary": "Shard health for load balancers",
            "responses": {
                "200": {"description": "Serving.", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]}}}},
                "503": {"description": "Draining: move traffic away.", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"status": {"const": "draining"}}, "required": ["status"]}}}},
            },
        }})
    });
    let host = display_host(svc.host);
    let servers: Vec<Value> = (0..svc.shards)
        .map(|i| {
            json!({
                "url": format!("http://{host}:{}", svc.port(i)),
                "description": format!("shard {i}"),
            })
        })
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": svc.name,
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Routes of the coreline service `{}`, generated from {}. Every shard port serves every route.",
                svc.name,
                plan.config.source.path.display()
            ),
        },
        "servers": servers,
        "paths": paths,
        "components": {"schemas": {"Error": {
            "type": "object",
            "properties": {
                "error": {"type": "string", "description": "What was wrong."},
                "field": {"type": "string", "description": "The request field or query parameter at fault, when there is one."},
            },
            "required": ["error"],
        }}},
    })
}

/// [`document`] as pretty-printed JSON.
pub fn document_text(plan: &Plan) -> String {
    serde_json::to_string_pretty(&document(plan)).expect("json values serialize")
}

fn display_host(host: std::net::IpAddr) -> String {
    if host.is_unspecified() {
        // 0.0.0.0 / :: listen everywhere; a client reaches them locally.
        return "127.0.0.1".into();
    }
    match host {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The lines `coreline run` prints after listening on `first` (shard 0):
/// `route METHOD /path` per route, then a curl command for the first route
/// with an example body built from its request schema.
pub fn route_lines(plan: &Plan, first: SocketAddr) -> Vec<String> {
    let mut lines: Vec<String> = plan
        .routes
        .iter()
        .map(|r| format!("route {}", r.name))
        .collect();
    let Some(route) = plan.routes.first() else {
        return lines;
    };
    let base = format!("http://{}:{}", display_host(first.ip()), first.port());
    let curl = if let RouteInput::QueryKey(key_type) = route.input {
        let key = match example(key_type) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        format!("curl -s '{base}{}?key={key}'", route.path)
    } else if route.request.is_empty() {
        format!(
            "curl -s -X {} '{base}{}'",
            method_key(route.method).to_uppercase(),
            route.path
        )
    } else {
        let body: Map<String, Value> = route
            .request
            .iter()
            .map(|c| (c.name.clone(), example(c.ty)))
            .collect();
        let body = Value::Object(body).to_string().replace('\'', "'\\''");
        format!(
            "curl -s -X {} '{base}{}' -H 'content-type: application/json' -d '{body}'",
            method_key(route.method).to_uppercase(),
            route.path
        )
    };
    lines.push(format!("try: {curl}"));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        let config = crate::config::parse(crate::config::Source::new("t.toml", text)).unwrap();
        crate::pipeline::plan(config).unwrap()
    }

    const TEXT: &str = r#"
[service]
name = "api"
base_port = 9000
shards = 1

[[route]]
path = "/score"
request = { foo = "utf8", bar = "int64", w = { type = "float64", nullable = true } }

  [[route.step]]
  with_column = { name = "n", expr = "length(foo)" }

  [[route.step]]
  filter = { expr = "bar >= 0", status = 418, message = "bar must be >= 0" }

  [route.reply]
  columns = ["n", "w"]
"#;

    #[test]
    fn routes_have_request_reply_and_errors() {
        let doc = document(&plan(TEXT));
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "api");
        assert_eq!(doc["servers"][0]["url"], "http://127.0.0.1:9000");
        let op = &doc["paths"]["/score"]["post"];
        let req = &op["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(req["properties"]["foo"]["type"], "string");
        assert_eq!(req["properties"]["bar"]["format"], "int64");
        assert_eq!(req["properties"]["w"]["type"], json!(["number", "null"]));
        assert_eq!(req["required"], json!(["foo", "bar"]));
        let reply = &op["responses"]["200"]["content"]["application/json"]["schema"];
        assert_eq!(reply["properties"]["n"]["type"], "integer");
        assert_eq!(reply["required"], json!(["n", "w"]));
        for status in ["400", "413", "418", "422", "431", "500", "503"] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/Error",
                "status {status}"
            );
        }
        assert!(
            op["responses"]["418"]["description"]
                .as_str()
                .unwrap()
                .contains("bar must be >= 0")
        );
        assert_eq!(
            doc["components"]["schemas"]["Error"]["required"],
            json!(["error"])
        );
        assert!(doc["paths"]["/health"]["get"].is_object());
    }

    #[test]
    fn run_prints_routes_and_a_curl_line() {
        let lines = route_lines(&plan(TEXT), "0.0.0.0:9000".parse().unwrap());
        assert_eq!(lines[0], "route POST /score");
        assert_eq!(
            lines[1],
            r#"try: curl -s -X POST 'http://127.0.0.1:9000/score' -H 'content-type: application/json' -d '{"foo":"text","bar":1,"w":1.5}'"#
        );
    }

    #[test]
    fn vector_and_nested_fields() {
        let doc = document(&plan(
            r#"
[service]
name = "api"
base_port = 9000
shards = 1

[[route]]
path = "/v"
request = { v = { type = "array<float64>", len = 3 }, f = { type = "array<float32>", nullable = true }, ids = "array<int64>", "user.age" = "int64", x = "utf8", "user.name" = "utf8", "user.addr.zip" = { type = "utf8", nullable = true }, "opt.note" = { type = "utf8", nullable = true } }

  [route.reply]
  columns = ["v", "ids", "user.age"]
"#,
        ));
        let op = &doc["paths"]["/v"]["post"];
        let req = &op["requestBody"]["content"]["application/json"]["schema"];
        let props = &req["properties"];
        // Vectors: JSON arrays; float elements may be null (a missing value).
        assert_eq!(
            props["v"],
            json!({
                "type": "array",
                "items": {"type": ["number", "null"], "format": "double", "x-coreline-type": "float64"},
                "x-coreline-type": "array<float64>",
            })
        );
        assert_eq!(props["f"]["type"], json!(["array", "null"]));
        assert_eq!(props["f"]["items"]["type"], json!(["number", "null"]));
        assert_eq!(props["f"]["x-coreline-type"], "array<float32>");
        assert_eq!(
            props["ids"]["items"],
            json!({"type": "integer", "format": "int64", "x-coreline-type": "int64"})
        );
        // Dotted names: nested objects, required when a non-nullable field
        // is inside, each named once whatever the order of the fields.
        assert_eq!(props["user"]["type"], "object");
        assert_eq!(props["user"]["properties"]["age"]["format"], "int64");
        assert_eq!(props["user"]["properties"]["name"]["type"], "string");
        assert_eq!(props["user"]["required"], json!(["age", "name"]));
        let addr = &props["user"]["properties"]["addr"];
        assert_eq!(addr["properties"]["zip"]["type"], json!(["string", "null"]));
        assert_eq!(addr["required"], json!([]));
        assert_eq!(props["opt"]["required"], json!([]));
        assert_eq!(req["required"], json!(["v", "ids", "user", "x"]));
        // The example has the same shape.
        assert_eq!(
            req["examples"][0],
            json!({
                "v": [0.5, 1.5], "f": [0.5, 1.5], "ids": [1, 2],
                "user": {"age": 1, "name": "text", "addr": {"zip": "text"}},
                "x": "text", "opt": {"note": "text"},
            })
        );
        // Reply: a vector column and a nested field by its dotted name.
        let reply = &op["responses"]["200"]["content"]["application/json"]["schema"];
        assert_eq!(
            reply["properties"]["v"]["x-coreline-type"],
            "array<float64>"
        );
        assert_eq!(reply["properties"]["ids"]["items"]["type"], "integer");
        assert_eq!(reply["properties"]["user.age"]["type"], "integer");
    }
}
