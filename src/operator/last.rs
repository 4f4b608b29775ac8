//! `last = { name, key, value, output }`: keeps `value`'s last value per
//! key on the key's owner shard and outputs it (a throwaway kind proving
//! that a keyed step kind is two files plus two registry lines).

use serde::Deserialize;
use toml::Spanned as TomlSpanned;

use super::{Ctx, Flow, Inputs, KeyedUpdate, Step};
use crate::config::{ConfigError, Spanned, StepChecker};
use crate::expr::Expr;
use crate::forward::{KeyedOp, KeyedReply};
use crate::plan::Planner;
use crate::row::{Column, Columns, Row, Slot};
use crate::state::{LastSpec, TableKind, TableSpec};

/// The step's table in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLast {
    name: TomlSpanned<String>,
    key: TomlSpanned<String>,
    value: TomlSpanned<String>,
    output: TomlSpanned<String>,
}

/// A checked `last` step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastConfig {
    /// The state's name.
    pub name: Spanned<String>,
    /// The key column.
    pub key: Spanned<String>,
    /// The kept expression.
    pub value: Spanned<String>,
    /// The output column's name.
    pub output: Spanned<String>,
}

impl LastConfig {
    pub(crate) fn check(raw: RawLast, c: &mut StepChecker<'_>) -> Result<LastConfig, ConfigError> {
        let name = c.non_empty(raw.name, "name", "state name")?;
        c.declare_state(&name, "name")?;
        Ok(LastConfig {
            name,
            key: c.non_empty(raw.key, "key", "key column")?,
            value: c.non_empty(raw.value, "value", "expression")?,
            output: c.non_empty(raw.output, "output", "column name")?,
        })
    }
}

/// `last { name, key, value, output }`, compiled.
#[derive(Debug, Clone)]
pub struct Last {
    keyed: KeyedUpdate,
    value: Expr,
    scratch: Slot,
}

impl Last {
    /// Compiles the value, declares the table, adds the output.
    pub fn plan(config: &LastConfig, p: &mut Planner<'_>) -> Result<Last, ConfigError> {
        let (key, key_type) = p.key_column(&config.key, "key")?;
        let value = p.compile(&config.value, "value")?;
        let value_type = value.ty();
        let spec = TableSpec {
            name: config.name.value.clone(),
            kind: TableKind::Last(LastSpec { value_type }),
        };
        let table = p.declare_table(spec, key_type);
        let name = config.output.value.clone();
        let out = p.add_column(Column {
            name,
            ty: value_type,
            nullable: true,
        });
        let key_name = config.key.value.clone();
        let keyed = KeyedUpdate {
            table,
            key,
            key_name,
            outs: vec![out],
        };
        Ok(Last {
            keyed,
            value,
            scratch: Slot::default(),
        })
    }
}

impl Step for Last {
    fn apply(&mut self, row: &mut Row, ctx: &mut Ctx<'_>, error_body: &mut Vec<u8>) -> Flow {
        self.scratch.set(self.value.eval(row));
        let inputs = Inputs::Value(self.scratch.get());
        self.keyed.apply(row, ctx, error_body, inputs)
    }

    fn describe(&self, _: &Columns, tables: &[TableSpec]) -> String {
        format!(
            "last {} by {}",
            tables[self.keyed.table].name, self.keyed.key_name
        )
    }

    fn forward_op(&self, row: &Row, now_ms: i64) -> Option<KeyedOp> {
        Some(
            self.keyed
                .forward_op(row, Inputs::Value(self.scratch.get()), now_ms),
        )
    }

    fn accept(&self, row: &mut Row, reply: KeyedReply, error_body: &mut Vec<u8>) -> Flow {
        self.keyed.accept(row, reply, error_body)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::checkpoint::{CheckpointConfig, Coordinator, recover};
    use crate::http::{Decoded, Decoder, Limits};
    use crate::operator::Ctx;
    use crate::pipeline::{Match, Outcome, Router, plan};
    use crate::row::Val;

    const CONFIG: &str = r#"
[service]
name = "last"
base_port = 18000
[[route]]
path = "/p"
request = { k = "utf8", v = "int64" }
  [[route.step]]
  last = { name = "lastv", key = "k", value = "v * 2", output = "doubled" }
  [route.reply]
  columns = ["doubled"]
"#;

    #[test]
    fn last_keeps_the_last_value_through_a_checkpoint() {
        let source = crate::config::Source::new("last.toml", CONFIG);
        let plan = plan(crate::config::parse(source).unwrap()).unwrap();
        let specs = plan.tables.clone();
        let dir = std::env::temp_dir().join(format!("coreline-last-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut state = recover(&dir, 1, &specs).unwrap().shards.remove(0);
        let mut router = Router::from_plan(&plan);
        let (mut body, mut decoder, limits) = (Vec::new(), Decoder::new(), Limits::default());
        for (v, want) in [(1, "2"), (5, "10")] {
            let json = format!(r#"{{"k":"a","v":{v}}}"#);
            let req = format!(
                "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{json}",
                json.len()
            );
            let Decoded::Request { request, .. } = decoder.decode(req.as_bytes(), &limits).unwrap()
            else {
                panic!("incomplete")
            };
            let Match::Route(i) = router.find(request.method, request.path) else {
                panic!()
            };
            let mut ctx = Ctx::new(&mut state, 0, 1);
            body.clear();
            let outcome = router.handle(i, &request, &mut ctx, &mut body);
            assert!(matches!(outcome, Outcome::Done(200)), "{outcome:?}");
            assert_eq!(
                String::from_utf8_lossy(&body),
                format!(r#"{{"doubled":{want}}}"#)
            );
        }
        let cfg = CheckpointConfig {
            interval: Duration::from_secs(3600),
            ..CheckpointConfig::new(&dir)
        };
        let (handle, endpoints) = Coordinator::start(cfg, &specs, 1, 0).unwrap();
        let done = handle.request_checkpoint();
        let epoch = loop {
            endpoints[0].poll(&mut state);
            if let Ok(r) = done.recv_timeout(Duration::from_millis(1)) {
                break r.unwrap();
            }
        };
        assert_eq!(epoch, 1);
        let restored = recover(&dir, 1, &specs).unwrap();
        let mut values = Vec::new();
        restored.shards[0].get(0, Val::Str("a"), |v| values.push(format!("{v:?}")));
        assert_eq!(values, [format!("{:?}", Val::Int(10))]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
