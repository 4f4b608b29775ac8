//! [`Plan::describe`]: what `coreline check` prints. Each step describes
//! itself ([`Step::describe`]).

use std::fmt::Write as _;

use super::{Plan, RouteInput};
use crate::operator::Step;

impl Plan {
    /// A human-readable description of the plan (`coreline check`).
    pub fn describe(&self, cores: &[usize]) -> String {
        let svc = &self.config.service;
        let mut s = String::new();
        let _ = writeln!(s, "service {}", svc.name);
        let _ = writeln!(
            s,
            "  shards: {}{}",
            svc.shards,
            if svc.shards_auto {
                " (auto: one per available core)"
            } else {
                ""
            }
        );
        for i in 0..svc.shards {
            let port = if svc.base_port == 0 {
                "OS-assigned".to_string()
            } else {
                (svc.base_port as usize + i).to_string()
            };
            let _ = writeln!(
                s,
                "    shard {i}: core {}, listens on {}:{port}",
                cores.get(i).copied().unwrap_or(i),
                svc.host
            );
        }
        match svc.admin_port {
            Some(p) => {
                let _ = writeln!(
                    s,
                    "  admin: {}:{p} (/metrics, /stats, /health, /ready)",
                    svc.host
                );
            }
            None => {
                let _ = writeln!(s, "  admin: disabled (no admin_port)");
            }
        }
        let l = &self.config.limits;
        let _ = writeln!(
            s,
            "  limits: header {} B, body {} B, {} headers, header timeout {:?}, body timeout {:?}, idle timeout {:?}, {} connections/shard, drain {:?}",
            l.max_header_bytes,
            l.max_body_bytes,
            l.max_headers,
            l.header_timeout,
            l.body_timeout,
            l.idle_timeout,
            l.max_connections,
            l.drain_timeout
        );
        if let Some(cp) = &self.config.checkpoint {
            let _ = writeln!(
                s,
                "  checkpoints: {} every {:?}, keep {}, full snapshot every {} epochs",
                cp.dir.display(),
                cp.interval,
                cp.retain,
                cp.full_every
            );
        }
        for r in &self.routes {
            let _ = writeln!(s, "route {}", r.name);
            if let RouteInput::QueryKey(_) = r.input {
                for step in &r.steps {
                    let _ = writeln!(s, "  {}", step.describe(&r.columns, &self.tables));
                }
                continue;
            }
            let fields: Vec<String> = r
                .request
                .iter()
                .map(|c| {
                    format!(
                        "{}: {}{}",
                        c.name,
                        c.ty,
                        if c.nullable { " (nullable)" } else { "" }
                    )
                })
                .collect();
            let _ = writeln!(s, "  request: {{{}}}", fields.join(", "));
            for (i, step) in r.steps.iter().enumerate() {
                let _ = writeln!(s, "  step {i}: {}", step.describe(&r.columns, &self.tables));
            }
            let reply: Vec<String> = r
                .reply
                .iter()
                .map(|(n, i)| format!("{n}: {}", r.columns.get(*i).ty))
                .collect();
            let _ = write!(s, "  reply: {{{}}}", reply.join(", "));
            if let Some(i) = r.status_column {
                let _ = write!(s, ", status from {}", r.columns.get(i).name);
            }
            s.push('\n');
        }
        s
    }
}
