//! Unit tests of the configuration format.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::parse_duration;
use super::*;
use crate::operator::{
    AggregateConfig, ChangedConfig, FilterConfig, SelectConfig, WithColumnConfig,
};
use crate::row::ColumnType;

const CORES: &[usize] = &[0, 1];

fn parse_text(text: &str) -> Result<ServiceConfig, ConfigError> {
    parse_with_cores(Source::new("configs/x.toml", text), CORES)
}

/// The first line of the rendered error for `text`.
fn error(text: &str) -> String {
    let err = parse_text(text).expect_err("config should be rejected");
    err.to_string().lines().next().unwrap().to_owned()
}

const SERVICE: &str = "[service]\nname = \"hello\"\nbase_port = 8888\n";

/// SERVICE followed by `rest`.
fn with_service(rest: &str) -> String {
    format!("{SERVICE}{rest}")
}

const FULL: &str = r#"# a full example
[service]
name = "hello"
host = "0.0.0.0"
base_port = 8888
shards = 2
cores = [1, 0]
admin_port = 8880

[limits]
max_header_bytes = 8192
max_body_bytes = 65536
max_headers = 32
header_timeout = "250ms"
body_timeout = "2m"
idle_timeout = 90
max_connections = 500
drain_timeout = "1h"

[checkpoint]
dir = "state/hello"
interval = "500ms"
retain = 5
full_every = 4

[[route]]
method = "POST"
path = "/my_api"
request = { zed = "utf8", bar = "int64", baz = { type = "float64", nullable = true }, ok = "bool" }

  [[route.step]]
  with_column = { name = "zedLength", expr = "length(zed)" }

  [[route.step]]
  filter = { expr = "bar >= 0", status = 422, message = "bar must be >= 0" }

  [[route.step]]
  filter = { expr = "ok" }

  [[route.step]]
  aggregate = { name = "user_counts", key = "zed", outputs = { n = "count()", total = "sum(bar)", mean = "avg(baz)" } }

  [[route.step]]
  changed = { name = "flips", key = "zed", value = "bar > 0", output = "flipped" }

  [[route.step]]
  select = { columns = ["zedLength", "n", "flipped"] }

  [route.reply]
  columns = ["zedLength", "n"]
  status = "code"

[[route]]
method = "GET"
path = "/counts"
read = "user_counts"
"#;

fn s(source: &str, value: &str, span: &Span) -> Spanned<String> {
    assert_eq!(
        &source[span.clone()],
        format!("{value:?}"),
        "span of {value}"
    );
    Spanned {
        value: value.to_owned(),
        span: span.clone(),
    }
}

#[test]
fn full_file_parses_to_expected_structs() {
    let config = parse_text(FULL).unwrap();
    assert_eq!(
        config.service,
        Service {
            name: "hello".into(),
            host: "0.0.0.0".parse().unwrap(),
            base_port: 8888,
            shards: 2,
            shards_auto: false,
            cores: Some(vec![1, 0]),
            admin_port: Some(8880),
            admin_host: "127.0.0.1".parse().unwrap(),
            spin_before_park: Duration::ZERO,
            lame_duck: Duration::ZERO,
            log_format: LogFormat::Text,
            access_log: crate::access_log::Mode::Errors,
            admin_token: None,
        }
    );
    assert_eq!(config.service.port(1), 8889);
    assert_eq!(
        config.limits,
        Limits {
            max_header_bytes: 8192,
            max_body_bytes: 65536,
            max_headers: 32,
            header_timeout: Duration::from_millis(250),
            body_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(90),
            max_connections: 500,
            drain_timeout: Duration::from_secs(3600),
        }
    );
    assert_eq!(
        config.checkpoint,
        Some(CheckpointConfig {
            dir: PathBuf::from("configs/state/hello"),
            interval: Duration::from_millis(500),
            retain: 5,
            full_every: 4,
            discard_state: false,
        })
    );
    assert_eq!(config.routes.len(), 2);
    let r = &config.routes[0];
    assert_eq!((r.method, r.path.as_str()), (Method::Post, "/my_api"));
    assert_eq!(&FULL[r.span.clone()], "[[route]]");
    assert_eq!(&FULL[r.path_span.clone()], "\"/my_api\"");
    // Declaration order, not alphabetical.
    let fields: Vec<(&str, ColumnType, bool)> = r
        .request
        .iter()
        .map(|f| (f.column.name.as_str(), f.column.ty, f.column.nullable))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("zed", ColumnType::Utf8, false),
            ("bar", ColumnType::Int64, false),
            ("baz", ColumnType::Float64, true),
            ("ok", ColumnType::Boolean, false),
        ]
    );
    assert_eq!(&FULL[r.request[1].span.clone()], "bar");
    assert_eq!(r.read, None);
    assert_eq!(r.steps.len(), 6);
    let kinds: Vec<&str> = r.steps.iter().map(StepConfig::kind).collect();
    assert_eq!(
        kinds,
        [
            "with_column",
            "filter",
            "filter",
            "aggregate",
            "changed",
            "select"
        ]
    );
    let StepConfig::WithColumn(WithColumnConfig { name, expr }) = &r.steps[0] else {
        panic!("{:?}", r.steps[0])
    };
    assert_eq!(name, &s(FULL, "zedLength", &name.span));
    assert_eq!(expr, &s(FULL, "length(zed)", &expr.span));
    let StepConfig::Filter(FilterConfig {
        expr,
        status,
        message,
    }) = &r.steps[1]
    else {
        panic!("{:?}", r.steps[1])
    };
    assert_eq!(expr, &s(FULL, "bar >= 0", &expr.span));
    assert_eq!((*status, message.as_str()), (422, "bar must be >= 0"));
    let StepConfig::Filter(FilterConfig {
        status, message, ..
    }) = &r.steps[2]
    else {
        panic!("{:?}", r.steps[2])
    };
    assert_eq!((*status, message.as_str()), (400, "filtered: ok"));
    let StepConfig::Aggregate(AggregateConfig { name, key, outputs }) = &r.steps[3] else {
        panic!("{:?}", r.steps[3])
    };
    assert_eq!(name.value, "user_counts");
    assert_eq!(key, &s(FULL, "zed", &key.span));
    let outs: Vec<(&str, &str)> = outputs
        .iter()
        .map(|o| (o.name.value.as_str(), o.spec.value.as_str()))
        .collect();
    assert_eq!(
        outs,
        [
            ("n", "count()"),
            ("total", "sum(bar)"),
            ("mean", "avg(baz)")
        ]
    );
    assert_eq!(&FULL[outputs[1].name.span.clone()], "total");
    assert_eq!(&FULL[outputs[1].spec.span.clone()], "\"sum(bar)\"");
    let StepConfig::Changed(ChangedConfig {
        name,
        key,
        value,
        output,
    }) = &r.steps[4]
    else {
        panic!("{:?}", r.steps[4])
    };
    assert_eq!(
        [&name.value, &key.value, &value.value, &output.value],
        ["flips", "zed", "bar > 0", "flipped"]
    );
    let StepConfig::Select(SelectConfig { columns }) = &r.steps[5] else {
        panic!("{:?}", r.steps[5])
    };
    let names: Vec<&str> = columns.iter().map(|c| c.value.as_str()).collect();
    assert_eq!(names, ["zedLength", "n", "flipped"]);
    let reply_columns: Vec<&str> = r
        .reply
        .columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.value.as_str())
        .collect();
    assert_eq!(reply_columns, ["zedLength", "n"]);
    assert_eq!(r.reply.status.as_ref().unwrap().value, "code");

    let g = &config.routes[1];
    assert_eq!((g.method, g.path.as_str()), (Method::Get, "/counts"));
    assert!(g.request.is_empty() && g.steps.is_empty());
    assert_eq!(g.read.as_ref().unwrap().value, "user_counts");
    assert_eq!(g.reply, ReplyConfig::default());
}

#[test]
fn minimal_file_gets_defaults_and_auto_shards() {
    let config = parse_text(&with_service(
        "[[route]]\npath = \"/a\"\nrequest = { foo = \"utf8\" }\n",
    ))
    .unwrap();
    assert_eq!(config.service.host, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(config.service.shards, CORES.len());
    assert!(config.service.shards_auto);
    assert_eq!(config.service.cores, None);
    assert_eq!(config.service.admin_port, None);
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.checkpoint, None);
    assert_eq!(config.routes[0].method, Method::Post);
    assert!(config.routes[0].steps.is_empty());

    let auto = parse_text(
            "[service]\nname = \"a\"\nbase_port = 0\nshards = \"auto\"\n[[route]]\nmethod = \"GET\"\npath = \"/\"\n",
        )
        .unwrap();
    assert_eq!((auto.service.shards, auto.service.shards_auto), (2, true));
    assert_eq!(auto.service.port(1), 0);

    // With explicit cores, "auto" means one shard per listed core.
    let pinned = parse_text(
            "[service]\nname = \"a\"\nbase_port = 0\ncores = [1]\n[[route]]\nmethod = \"GET\"\npath = \"/\"\n",
        )
        .unwrap();
    assert_eq!(pinned.service.shards, 1);
    assert_eq!(pinned.service.cores, Some(vec![1]));
}

#[test]
fn auto_shards_use_this_machines_cores() {
    let text =
        "[service]\nname = \"a\"\nbase_port = 0\n[[route]]\nmethod = \"GET\"\npath = \"/\"\n";
    let config = parse(Source::new("a.toml", text)).unwrap();
    assert!(config.service.shards_auto);
    assert_eq!(config.service.shards, available_cores().len());
    assert!(config.service.shards >= 1);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    for bad in [
        "",
        "s",
        "1.5s",
        "10x",
        "-1s",
        " 1s",
        "1 s",
        "99999999999999999999h",
    ] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
    assert_eq!(
        error(&with_service("[limits]\nbody_timeout = \"10x\"\n")),
        "configs/x.toml:5:16: limits.body_timeout: invalid value: string \"10x\"; \
             expected a duration such as \"50us\", \"250ms\", \"10s\", \"2m\", \"1h\" or an integer number of seconds"
    );
    assert_eq!(
        error(&with_service("[limits]\nidle_timeout = -3\n")),
        "configs/x.toml:5:16: limits.idle_timeout: invalid value: integer `-3`; \
             expected a duration such as \"50us\", \"250ms\", \"10s\", \"2m\", \"1h\" or an integer number of seconds"
    );
    assert_eq!(
        error(&with_service("[limits]\nheader_timeout = \"0ms\"\n")),
        "configs/x.toml:5:18: limits.header_timeout: header_timeout is zero; expected a duration greater than zero"
    );
}

#[test]
fn lame_duck() {
    let text = "[service]\nname = \"x\"\nbase_port = 1\nshards = 1\nlame_duck = \"2s\"\n[[route]]\npath = \"/a\"\nrequest = { a = \"utf8\" }\n";
    assert_eq!(
        parse_text(text).unwrap().service.lame_duck,
        Duration::from_secs(2)
    );
    let without = text.replace("lame_duck = \"2s\"\n", "");
    assert_eq!(
        parse_text(&without).unwrap().service.lame_duck,
        Duration::ZERO
    );
    let bad = error(&text.replace("\"2s\"", "\"soon\""));
    assert!(bad.starts_with("configs/x.toml:5:13: "), "{bad}");
}

#[test]
fn spin_before_park_takes_microseconds() {
    let text = "[service]\nname = \"x\"\nbase_port = 1\nshards = 1\nspin_before_park = \"50us\"\n[[route]]\npath = \"/a\"\nrequest = { a = \"utf8\" }\n";
    let config = parse_text(text).unwrap();
    assert_eq!(config.service.spin_before_park, Duration::from_micros(50));
    let text = text.replace("spin_before_park = \"50us\"\n", "");
    assert_eq!(
        parse_text(&text).unwrap().service.spin_before_park,
        Duration::ZERO
    );
}

#[test]
fn unknown_keys_anywhere() {
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 1\nbogus = 1\n"),
        "configs/x.toml:4:1: service.bogus: unknown field `bogus`; \
             expected one of `name`, `host`, `base_port`, `shards`, `cores`, `admin_port`, `admin_host`, `spin_before_park`, `lame_duck`, `log_format`, `access_log`, `admin_token_file`"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = {}\n[[route.step]]\nfilter = { expr = \"a\", stat = 3 }\n"
        )),
        "configs/x.toml:8:24: route[0].step[0].filter.stat: unknown field `stat`; \
             expected one of `expr`, `status`, `message`"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = {}\n[[route]]\npath = \"/b\"\nrequest = {}\n[[route.step]]\nfiltr = { expr = \"a\" }\n"
        )),
        "configs/x.toml:11:1: route[1].step[0].filtr: unknown field `filtr`; \
             expected one of `with_column`, `filter`, `select`, `aggregate`, `changed`, `score`, `upsert`, `delete`, `lookup`"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = { a = { type = \"utf8\", null = true } }\n"
        )),
        "configs/x.toml:6:34: route[0].request.a.null: unknown field `null`; expected one of `type`, `nullable`, `len`"
    );
    assert_eq!(
        error(&with_service("[extra]\n")),
        "configs/x.toml:4:2: extra: unknown field `extra`; expected one of `service`, `limits`, `checkpoint`, `fleet`, `route`, `table`"
    );
}

#[test]
fn wrong_types_and_missing_fields() {
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = \"8\"\n"),
        "configs/x.toml:3:13: service.base_port: invalid type: string \"8\"; expected an integer"
    );
    assert_eq!(
        error("[service]\nname = \"x\"\n"),
        "configs/x.toml:1:1: service: missing field `base_port`"
    );
    assert_eq!(
        error("service = 3\n"),
        "configs/x.toml:1:11: service: invalid type: integer `3`; expected a table"
    );
    assert_eq!(
        error(&format!("route = [1]\n{SERVICE}")),
        "configs/x.toml:1:10: route[0]: invalid type: integer `1`; expected a table"
    );
    assert_eq!(
        error(&with_service("[route]\npath = \"/\"\n")),
        "configs/x.toml:4:1: route: invalid type: table; expected an array"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = { a = 3 }\n"
        )),
        "configs/x.toml:6:17: route[0].request.a: invalid type: integer `3`; \
             expected a type (utf8, int64, float64, bool, array<float64>, array<float32>, array<int64>) or a table like { type = \"int64\", nullable = true }"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = { a = { nullable = true } }\n"
        )),
        "configs/x.toml:6:17: route[0].request.a: missing field `type`"
    );
    assert_eq!(
        error(&with_service("[[route]]\nrequest = {}\n")),
        "configs/x.toml:4:1: route[0]: missing field `path`"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = {}\n[[route.step]]\nselect = { columns = \"a\" }\n"
        )),
        "configs/x.toml:8:22: route[0].step[0].select.columns: invalid type: string \"a\"; expected an array"
    );
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 8\nshards = [2]\n"),
        "configs/x.toml:4:10: service.shards: invalid type: array; expected an integer >= 1 or \"auto\""
    );
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 8\nshards = \"two\"\n"),
        "configs/x.toml:4:10: service.shards: invalid value: string \"two\"; expected an integer >= 1 or \"auto\""
    );
    assert_eq!(
        error("[[route]]\npath = \"/\"\n"),
        "configs/x.toml:1:1: missing field `service`"
    );
}

#[test]
fn toml_syntax_errors_have_positions() {
    assert_eq!(
        error("[service]\nname = \"x\"\nname = \"y\"\n"),
        "configs/x.toml:3:1: service.name: duplicate key"
    );
    let e = error("[service]\nname = \"x\nbase_port = 8\n");
    assert!(e.starts_with("configs/x.toml:2:"), "{e}");
}

#[test]
fn service_values() {
    assert_eq!(
        error("[service]\nname = \" \"\nbase_port = 1\n"),
        "configs/x.toml:2:8: service.name: service name is empty; expected a non-empty service name"
    );
    assert_eq!(
        error("[service]\nname = \"x\"\nhost = \"localhost\"\nbase_port = 1\n"),
        "configs/x.toml:3:8: service.host: invalid IP address \"localhost\"; \
             expected an IP address such as 127.0.0.1, 0.0.0.0 or ::1"
    );
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 70000\n"),
        "configs/x.toml:3:13: service.base_port: base_port = 70000 is out of range; expected an integer in 0..=65535"
    );
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 1\nshards = 0\n"),
        "configs/x.toml:4:10: service.shards: shards = 0 is out of range; expected an integer >= 1 or \"auto\""
    );
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 1\nshards = 4\n"),
        "configs/x.toml:4:10: service.shards: shards = 4 but this machine has 2 available cores; \
             use shards = \"auto\" or at most 2"
    );
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 1\nshards = 2\ncores = [0]\n"),
        "configs/x.toml:5:9: service.cores: 1 core ids for 2 shards; expected one core id per shard (2)"
    );
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 1\ncores = [0, 7]\n"),
        "configs/x.toml:4:13: service.cores[1]: core 7 is not available on this machine; \
             expected one of the available core ids: 0, 1"
    );
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 1\ncores = [1, 1]\n"),
        "configs/x.toml:4:13: service.cores[1]: core 1 is listed twice (also service.cores[0]); \
             two shards on one core would share it"
    );
}

#[test]
fn ports_do_not_collide_or_overflow() {
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 8888\nshards = 2\nadmin_port = 8889\n"),
        "configs/x.toml:5:14: service.admin_port: admin_port 8889 is also the port of shard 1 \
             (base_port 8888 + 1); expected a port outside 8888..=8889"
    );
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 65535\nshards = 2\n"),
        "configs/x.toml:3:13: service.base_port: shard ports 65535..=65536 go past 65535 (2 shards); \
             expected base_port <= 65534"
    );
    assert_eq!(
        error("[service]\nname = \"x\"\nbase_port = 1\nadmin_port = -1\n"),
        "configs/x.toml:4:14: service.admin_port: admin_port = -1 is out of range; expected an integer in 0..=65535"
    );
    // OS-assigned ports never collide.
    let ok = "[service]\nname = \"x\"\nbase_port = 0\nadmin_port = 0\n[[route]]\nmethod = \"GET\"\npath = \"/\"\n";
    assert_eq!(parse_text(ok).unwrap().service.admin_port, Some(0));
}

#[test]
fn limits_and_checkpoint_values() {
    assert_eq!(
        error(&with_service("[limits]\nmax_headers = 65\n")),
        "configs/x.toml:5:15: limits.max_headers: max_headers = 65 is out of range; expected an integer in 1..=64"
    );
    assert_eq!(
        error(&with_service("[checkpoint]\ndir = \"\"\n")),
        "configs/x.toml:5:7: checkpoint.dir: checkpoint directory is empty; expected a non-empty checkpoint directory"
    );
    assert_eq!(
        error(&with_service("[checkpoint]\ndir = \"d\"\nretain = 0\n")),
        "configs/x.toml:6:10: checkpoint.retain: retain = 0 is out of range; expected an integer >= 1"
    );
    assert_eq!(
        error(&with_service("[checkpoint]\nretain = 2\n")),
        "configs/x.toml:4:1: checkpoint: missing field `dir`"
    );
    let text = with_service(
        "[checkpoint]\ndir = \"/abs/dir\"\n[[route]]\nmethod = \"GET\"\npath = \"/\"\n",
    );
    let c = parse_text(&text).unwrap().checkpoint.unwrap();
    assert_eq!(c.dir, PathBuf::from("/abs/dir"));
    assert_eq!(
        (c.interval, c.retain, c.full_every),
        (Duration::from_secs(1), 3, 10)
    );
}

#[test]
fn steps_need_exactly_one_operator() {
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = {}\n[[route.step]]\n"
        )),
        "configs/x.toml:7:1: route[0].step[0]: step has no operator; \
             expected exactly one of with_column, filter, select, aggregate, changed, score, upsert, delete, lookup"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = {}\n[[route.step]]\nfilter = { expr = \"a\" }\nselect = { columns = [\"a\"] }\n"
        )),
        "configs/x.toml:9:10: route[0].step[0].select: step has both filter and select; \
             expected exactly one of with_column, filter, select, aggregate, changed, score, upsert, delete, lookup"
    );
}

#[test]
fn step_values() {
    let route = "[[route]]\npath = \"/a\"\nrequest = {}\n[[route.step]]\n";
    assert_eq!(
        error(&with_service(&format!(
            "{route}filter = {{ expr = \"a\", status = 200 }}\n"
        ))),
        "configs/x.toml:8:33: route[0].step[0].filter.status: status 200 is not an error status; \
             expected an HTTP status in 400..=599"
    );
    assert_eq!(
        error(&with_service(&format!(
            "{route}with_column = {{ name = \"\", expr = \"1\" }}\n"
        ))),
        "configs/x.toml:8:24: route[0].step[0].with_column.name: column name is empty; expected a non-empty column name"
    );
    assert_eq!(
        error(&with_service(&format!(
            "{route}select = {{ columns = [\"a\", \"b\", \"a\"] }}\n"
        ))),
        "configs/x.toml:8:33: route[0].step[0].select.columns[2]: duplicate column \"a\" (also route[0].step[0].select.columns[0])"
    );
    assert_eq!(
        error(&with_service(&format!(
            "{route}select = {{ columns = [] }}\n"
        ))),
        "configs/x.toml:8:22: route[0].step[0].select.columns: no columns; expected at least one column name"
    );
    assert_eq!(
        error(&with_service(&format!(
            "{route}aggregate = {{ name = \"s\", key = \"k\", outputs = {{}} }}\n"
        ))),
        "configs/x.toml:8:48: route[0].step[0].aggregate.outputs: no outputs; \
             expected at least one output such as n = \"count()\""
    );
    assert_eq!(
        error(&with_service(&format!(
            "{route}aggregate = {{ name = \"s\", key = \"k\", outputs = {{ n = \"\" }} }}\n"
        ))),
        "configs/x.toml:8:54: route[0].step[0].aggregate.outputs.n: aggregate function is empty; \
             expected a non-empty aggregate function"
    );
    assert_eq!(
        error(&with_service(&format!(
            "{route}changed = {{ name = \"s\", key = \"k\", value = \"v\" }}\n"
        ))),
        "configs/x.toml:8:11: route[0].step[0].changed: missing field `output`"
    );
}

#[test]
fn duplicate_state_names() {
    let text = with_service(
        "[[route]]\npath = \"/a\"\nrequest = {}\n\
             [[route.step]]\naggregate = { name = \"s\", key = \"k\", outputs = { n = \"count()\" } }\n\
             [[route]]\npath = \"/b\"\nrequest = {}\n\
             [[route.step]]\nchanged = { name = \"s\", key = \"k\", value = \"v\", output = \"o\" }\n",
    );
    assert_eq!(
        error(&text),
        "configs/x.toml:13:20: route[1].step[0].changed.name: keyed state \"s\" is already defined at \
             route[0].step[0].aggregate.name; expected a name unique among the service's aggregate and changed steps"
    );
}

#[test]
fn key_from() {
    let keyed = |key_from: &str| {
        with_service(&format!(
            "[[route]]\npath = \"/e\"\nrequest = {{ u = \"utf8\" }}\nkey_from = {key_from}\n\
             [[route.step]]\naggregate = {{ name = \"c\", key = \"u\", outputs = {{ n = \"count()\" }} }}\n"
        ))
    };
    let c = parse_text(&keyed("\"header:X-User\"")).unwrap();
    assert_eq!(
        c.routes[0].key_from.as_ref().unwrap().value,
        KeyFrom::Header("X-User".into())
    );
    let c = parse_text(&keyed("\"query:user_id\"")).unwrap();
    assert_eq!(
        c.routes[0].key_from.as_ref().unwrap().value.to_string(),
        "query:user_id"
    );
    let expected = "expected \"header:NAME\" or \"query:NAME\" (a header or query parameter \
                    that carries the key of the route's keyed step)";
    for (text, message) in [
        ("\"X-User\"", "\"X-User\" names no source"),
        ("\"cookie:u\"", "unknown key source \"cookie\""),
        ("\"header:\"", "\"header:\" has an empty name"),
        (
            "\"header:X User\"",
            "\"header:X User\": ' ' is not allowed in the name",
        ),
        (
            "\"query:a&b\"",
            "\"query:a&b\": '&' is not allowed in the name",
        ),
    ] {
        assert_eq!(
            error(&keyed(text)),
            format!("configs/x.toml:7:12: route[0].key_from: {message}; {expected}")
        );
    }
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = { u = \"utf8\" }\nkey_from = \"header:X\"\n"
        )),
        "configs/x.toml:7:12: route[0].key_from: key_from on a route without a keyed step; \
         expected key_from only on routes with an aggregate or changed step"
    );
}

#[test]
fn routes() {
    assert_eq!(
        error(SERVICE),
        "configs/x.toml:4:1: route: no routes; expected at least one [[route]] table"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/my_api\"\nrequest = {}\n[[route]]\nmethod = \"POST\"\npath = \"/my_api\"\nrequest = {}\n"
        )),
        "configs/x.toml:9:8: route[1].path: route clashes with route[0] (POST /my_api)"
    );
    // Same path, different method: fine.
    parse_text(&with_service(
        "[[route]]\npath = \"/x\"\nrequest = {}\n[[route]]\nmethod = \"GET\"\npath = \"/x\"\n",
    ))
    .unwrap();
    assert_eq!(
        error(&with_service("[[route]]\nmethod = \"get\"\npath = \"/\"\n")),
        "configs/x.toml:5:10: route[0].method: unknown method \"get\"; expected one of: GET, POST, PUT, PATCH, DELETE"
    );
    let path_expected =
        "expected a path such as \"/my_api\": starting with '/', without '?', '#' or whitespace";
    for (path, message) in [
        ("", "path is empty"),
        ("my_api", "path \"my_api\" does not start with '/'"),
        ("/a?b=1", "path \"/a?b=1\" contains '?'"),
        ("/a b", "path \"/a b\" contains ' '"),
    ] {
        assert_eq!(
            error(&with_service(&format!(
                "[[route]]\npath = \"{path}\"\nrequest = {{}}\n"
            ))),
            format!("configs/x.toml:5:8: route[0].path: {message}; {path_expected}")
        );
    }
    assert_eq!(
        error(&with_service(
            "[[route]]\nmethod = \"PUT\"\npath = \"/a\"\n"
        )),
        "configs/x.toml:4:1: route[0]: PUT route has no request; expected a request table such as \
             request = { foo = \"utf8\" } (only GET routes may omit it)"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = { a = \"text\" }\n"
        )),
        "configs/x.toml:6:17: route[0].request.a: unknown type \"text\"; expected one of: utf8, int64, float64, bool, array<float64>, array<float32>, array<int64>"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = { a = \"utf8\", a = \"int64\" }\n"
        )),
        "configs/x.toml:6:25: route[0].request.a: duplicate key"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\npath = \"/a\"\nrequest = {}\n[route.reply]\ncolumns = [\"a\", \"a\"]\n"
        )),
        "configs/x.toml:8:17: route[0].reply.columns[1]: duplicate column \"a\" (also route[0].reply.columns[0])"
    );
}

#[test]
fn read_routes() {
    let agg = "[[route]]\npath = \"/a\"\nrequest = {}\n\
                   [[route.step]]\naggregate = { name = \"counts\", key = \"k\", outputs = { n = \"count()\" } }\n";
    assert_eq!(
        error(&with_service(&format!(
            "{agg}[[route]]\nmethod = \"POST\"\npath = \"/r\"\nrequest = {{}}\nread = \"counts\"\n"
        ))),
        "configs/x.toml:13:8: route[1].read: read on a POST route; expected read only on GET routes"
    );
    assert_eq!(
        error(&with_service(&format!(
            "{agg}[[route]]\nmethod = \"GET\"\npath = \"/r\"\nread = \"counts\"\n[[route.step]]\nselect = {{ columns = [\"n\"] }}\n"
        ))),
        "configs/x.toml:13:1: route[1].step[0]: a read route cannot have steps; expected either read or steps and reply"
    );
    assert_eq!(
        error(&with_service(&format!(
            "{agg}[[route]]\nmethod = \"GET\"\npath = \"/r\"\nread = \"nope\"\n"
        ))),
        "configs/x.toml:12:8: route[1].read: unknown keyed state \"nope\"; expected one of: counts"
    );
    assert_eq!(
        error(&with_service(
            "[[route]]\nmethod = \"GET\"\npath = \"/r\"\nread = \"x\"\n"
        )),
        "configs/x.toml:7:8: route[0].read: unknown keyed state \"x\"; \
             expected the name of an aggregate or changed step or a [[table]] (this service has none)"
    );
}

#[test]
fn rendering_quotes_the_line_with_a_caret() {
    let text = with_service("[[route]]\npath = \"/a\"\nrequest = { a = \"text\" }\n");
    let err = parse_text(&text).unwrap_err();
    assert_eq!((err.line(), err.column(), err.width()), (6, 17, 6));
    assert_eq!(err.key(), "route[0].request.a");
    assert_eq!(err.message(), "unknown type \"text\"");
    assert_eq!(
        err.expected(),
        Some("one of: utf8, int64, float64, bool, array<float64>, array<float32>, array<int64>")
    );
    assert_eq!(
        err.to_string(),
        "configs/x.toml:6:17: route[0].request.a: unknown type \"text\"; \
             expected one of: utf8, int64, float64, bool, array<float64>, array<float32>, \
             array<int64>\n \
             6 | request = { a = \"text\" }\n   \
               |                 ^^^^^^"
    );
}

#[test]
fn lead_errors_and_subspans() {
    let config = parse_text(FULL).unwrap();
    let StepConfig::Filter(FilterConfig { expr, .. }) = &config.routes[0].steps[1] else {
        panic!()
    };
    // Point at `>=` inside "bar >= 0".
    let span = expr.subspan(&config.source, 4..6);
    assert_eq!(&FULL[span.clone()], ">=");
    let err = config
        .error(
            span,
            &step_key(0, 1, "filter.expr"),
            "unknown column \"baz\"",
        )
        .with_expected("one of: foo, bar");
    assert_eq!(
        err.to_string().lines().next().unwrap(),
        "configs/x.toml:35:26: route[0].step[1].filter.expr: unknown column \"baz\"; expected one of: foo, bar"
    );
    assert_eq!(route_key(2, ""), "route[2]");
    assert_eq!(route_key(2, "reply.status"), "route[2].reply.status");
    assert_eq!(step_key(0, 3, ""), "route[0].step[3]");
}

#[test]
fn unreadable_file_is_named() {
    let err = load(Path::new("/nonexistent/coreline.toml")).unwrap_err();
    assert_eq!((err.line(), err.column(), err.key()), (0, 0, ""));
    let text = err.to_string();
    assert!(
        text.starts_with("/nonexistent/coreline.toml: cannot read the configuration file: "),
        "{text}"
    );
}

#[test]
fn fleet_errors_point_at_the_entry() {
    const ROUTE: &str = "[[route]]\npath = \"/a\"\nrequest = { a = \"utf8\" }\n";
    assert_eq!(
        error(&with_service(&format!(
            "[fleet]\ninstances = [\"10.0.0.1:8888\", \"10.0.0.2\"]\n{ROUTE}"
        ))),
        "configs/x.toml:5:31: fleet.instances[1]: \"10.0.0.2\" has no port; expected HOST:BASE_PORT, e.g. \"10.0.0.1:8900\" or \"coreline-0.coreline:8900\""
    );
    assert_eq!(
        error(&with_service(&format!(
            "[fleet]\ninstances = [\"h:8888\", \"h:8888\"]\n{ROUTE}"
        ))),
        "configs/x.toml:5:24: fleet.instances[1]: h:8888 is listed twice (also instances[0])"
    );
    assert_eq!(
        error(&with_service(&format!(
            "[fleet]\ninstances = [\"h:8888\"]\nindex = 1\n{ROUTE}"
        ))),
        "configs/x.toml:6:9: fleet.index: index = 1 is out of range; expected an integer in 0..=0"
    );
    assert_eq!(
        error(&with_service(&format!("[fleet]\ninstances = []\n{ROUTE}"))),
        "configs/x.toml:5:13: fleet.instances: the fleet has no instances; expected at least one HOST:BASE_PORT"
    );
    let mut config = parse_text(&with_service(&format!(
        "[checkpoint]\ndir = \"cp\"\n[fleet]\ninstances = [\"h0:8888\", \"h1:9999\"]\n{ROUTE}"
    )))
    .unwrap();
    let mut missing = config.clone();
    let err = crate::fleet::settle(&mut missing, None, true).unwrap_err();
    assert!(
        err.to_string()
            .contains("fleet.index: this instance's place in the fleet is not set"),
        "{err}"
    );
    let err = crate::fleet::settle(&mut config.clone(), Some(1), true).unwrap_err();
    assert!(
        err.to_string().contains(
            "instance 1 of the fleet is h1:9999 but this process listens on base_port 8888"
        ),
        "{err}"
    );
    crate::fleet::settle(&mut config, Some(0), true).unwrap();
    assert_eq!(config.fleet.as_ref().unwrap().index, Some(0));
    assert!(
        config
            .checkpoint
            .as_ref()
            .unwrap()
            .dir
            .ends_with("cp/instance-0"),
        "checkpoints per instance"
    );
}
