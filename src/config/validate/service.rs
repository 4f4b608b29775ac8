//! The process-wide sections: `[service]` (addresses, ports, shards and
//! the cores they are pinned to, log and access-log modes, the admin token
//! file), `[limits]`, `[checkpoint]` and `[fleet]`.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned as TomlSpanned;

use super::{Checked, Validator};
use crate::config::model::*;
use crate::config::raw::*;
use crate::http::Limits;

impl Validator<'_> {
    pub(crate) fn service(
        &self,
        raw: TomlSpanned<RawService>,
        cores: &[usize],
    ) -> Checked<Service> {
        let raw = raw.into_inner();
        let name = self
            .non_empty(raw.name, "service.name", "service name")?
            .value;
        let host = self.ip(
            raw.host,
            "service.host",
            "an IP address such as 127.0.0.1, 0.0.0.0 or ::1",
        )?;
        let admin_host = self.ip(
            raw.admin_host,
            "service.admin_host",
            "an IP address such as 127.0.0.1 or ::1",
        )?;
        let base_port = self.port(&raw.base_port, "service.base_port")?;

        let pinned = match &raw.cores {
            None => None,
            Some(list) => Some(self.cores(list, cores)?),
        };
        let (shards, shards_auto) = match raw.shards.as_ref().map(|s| (s.get_ref(), s.span())) {
            None | Some((RawShards::Auto, _)) => {
                (pinned.as_ref().map_or(cores.len(), Vec::len), true)
            }
            Some((&RawShards::Count(n), span)) => {
                if n < 1 {
                    return Err(self
                        .err(
                            span,
                            "service.shards",
                            format!("shards = {n} is out of range"),
                        )
                        .with_expected("an integer >= 1 or \"auto\""));
                }
                let available = cores.len();
                if n as u64 > available as u64 {
                    return Err(self.err(
                        span,
                        "service.shards",
                        format!(
                            "shards = {n} but this machine has {available} available cores; use shards = \"auto\" or at most {available}"
                        ),
                    ));
                }
                let n = n as usize;
                if let (Some(list), Some(raw_list)) = (&pinned, &raw.cores)
                    && list.len() != n
                {
                    return Err(self
                        .err(
                            raw_list.span(),
                            "service.cores",
                            format!("{} core ids for {n} shards", list.len()),
                        )
                        .with_expected(format!("one core id per shard ({n})")));
                }
                (n, false)
            }
        };

        if base_port != 0 && usize::from(base_port) + shards - 1 > usize::from(u16::MAX) {
            return Err(self
                .err(
                    raw.base_port.span(),
                    "service.base_port",
                    format!(
                        "shard ports {base_port}..={} go past 65535 ({shards} shards)",
                        usize::from(base_port) + shards - 1
                    ),
                )
                .with_expected(format!(
                    "base_port <= {}",
                    usize::from(u16::MAX) + 1 - shards
                )));
        }
        let admin_port = match &raw.admin_port {
            None => None,
            Some(p) => {
                let port = self.port(p, "service.admin_port")?;
                if port != 0 && base_port != 0 {
                    let last = usize::from(base_port) + shards - 1;
                    if (usize::from(base_port)..=last).contains(&usize::from(port)) {
                        return Err(self
                            .err(
                                p.span(),
                                "service.admin_port",
                                format!(
                                    "admin_port {port} is also the port of shard {} (base_port {base_port} + {})",
                                    port - base_port,
                                    port - base_port
                                ),
                            )
                            .with_expected(format!("a port outside {base_port}..={last}")));
                    }
                }
                Some(port)
            }
        };
        let log_format = match &raw.log_format {
            None => LogFormat::Text,
            Some(f) => LogFormat::parse(f.get_ref()).ok_or_else(|| {
                self.err(
                    f.span(),
                    "service.log_format",
                    format!("unknown log format {:?}", f.get_ref()),
                )
                .with_expected("\"text\" or \"json\"")
            })?,
        };
        let access_log = match &raw.access_log {
            None => crate::access_log::Mode::default(),
            Some(m) => crate::access_log::Mode::parse(m.get_ref()).ok_or_else(|| {
                self.err(
                    m.span(),
                    "service.access_log",
                    format!("unknown access log mode {:?}", m.get_ref()),
                )
                .with_expected("\"off\", \"errors\" or \"all\"")
            })?,
        };
        Ok(Service {
            name,
            host,
            base_port,
            shards,
            shards_auto,
            cores: pinned,
            admin_port,
            admin_host,
            spin_before_park: raw
                .spin_before_park
                .map(|d| d.into_inner().0)
                .unwrap_or(Duration::ZERO),
            lame_duck: raw
                .lame_duck
                .map(|d| d.into_inner().0)
                .unwrap_or(Duration::ZERO),
            log_format,
            access_log,
            admin_token: match raw.admin_token_file {
                None => None,
                Some(f) => Some(self.admin_token(f)?),
            },
        })
    }

    /// An IP address (`host`, `admin_host`); 127.0.0.1 when absent.
    fn ip(&self, value: Option<TomlSpanned<String>>, key: &str, expected: &str) -> Checked<IpAddr> {
        match value {
            None => Ok(IpAddr::from([127, 0, 0, 1])),
            Some(v) => v.get_ref().parse().map_err(|_| {
                self.err(
                    v.span(),
                    key,
                    format!("invalid IP address {:?}", v.get_ref()),
                )
                .with_expected(expected)
            }),
        }
    }

    /// Reads `admin_token_file` (relative to the config file): its first
    /// line, trimmed, at least 16 characters.
    fn admin_token(&self, f: TomlSpanned<String>) -> Checked<crate::admin::AdminToken> {
        let key = "service.admin_token_file";
        let base = self.source.path.parent().unwrap_or(Path::new(""));
        let path = base.join(f.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.err(
                f.span(),
                key,
                format!("cannot read {}: {e}", path.display()),
            )
            .with_expected("a readable file holding the admin bearer token")
        })?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self
                .err(
                    f.span(),
                    key,
                    format!("{} does not hold a usable token", path.display()),
                )
                .with_expected(
                    "a first line of at least 16 printable ASCII characters, no spaces",
                ));
        }
        Ok(crate::admin::AdminToken::new(token.to_string()))
    }

    fn cores(
        &self,
        list: &TomlSpanned<Vec<TomlSpanned<i64>>>,
        available: &[usize],
    ) -> Checked<Vec<usize>> {
        let expected = || {
            let ids: Vec<String> = available.iter().map(usize::to_string).collect();
            format!("one of the available core ids: {}", ids.join(", "))
        };
        if list.get_ref().is_empty() {
            return Err(self
                .err(list.span(), "service.cores", "cores is empty")
                .with_expected("one core id per shard, or no cores key"));
        }
        let mut ids = Vec::with_capacity(list.get_ref().len());
        for (i, id) in list.get_ref().iter().enumerate() {
            let key = format!("service.cores[{i}]");
            let v = *id.get_ref();
            let Some(core) = usize::try_from(v).ok().filter(|c| available.contains(c)) else {
                return Err(self
                    .err(
                        id.span(),
                        &key,
                        format!("core {v} is not available on this machine"),
                    )
                    .with_expected(expected()));
            };
            if let Some(first) = ids.iter().position(|&c| c == core) {
                return Err(self.err(
                    id.span(),
                    &key,
                    format!("core {core} is listed twice (also service.cores[{first}]); two shards on one core would share it"),
                ));
            }
            ids.push(core);
        }
        Ok(ids)
    }

    pub(crate) fn limits(&self, raw: RawLimits) -> Checked<Limits> {
        let mut limits = Limits::default();
        let int = |v: &Option<TomlSpanned<i64>>,
                   name: &str,
                   min: i64,
                   max: i64,
                   slot: &mut usize|
         -> Checked<()> {
            if let Some(v) = v {
                *slot = self.int(v, &format!("limits.{name}"), min, max)?;
            }
            Ok(())
        };
        int(
            &raw.max_header_bytes,
            "max_header_bytes",
            1,
            i64::MAX,
            &mut limits.max_header_bytes,
        )?;
        int(
            &raw.max_body_bytes,
            "max_body_bytes",
            0,
            i64::MAX,
            &mut limits.max_body_bytes,
        )?;
        int(
            &raw.max_headers,
            "max_headers",
            1,
            64,
            &mut limits.max_headers,
        )?;
        int(
            &raw.max_connections,
            "max_connections",
            1,
            i64::MAX,
            &mut limits.max_connections,
        )?;
        let duration = |v: Option<TomlSpanned<RawDuration>>,
                        name: &str,
                        allow_zero: bool,
                        slot: &mut Duration|
         -> Checked<()> {
            if let Some(v) = v {
                let d = v.get_ref().0;
                if d.is_zero() && !allow_zero {
                    return Err(self
                        .err(
                            v.span(),
                            &format!("limits.{name}"),
                            format!("{name} is zero"),
                        )
                        .with_expected("a duration greater than zero"));
                }
                *slot = d;
            }
            Ok(())
        };
        duration(
            raw.header_timeout,
            "header_timeout",
            false,
            &mut limits.header_timeout,
        )?;
        duration(
            raw.body_timeout,
            "body_timeout",
            false,
            &mut limits.body_timeout,
        )?;
        duration(
            raw.idle_timeout,
            "idle_timeout",
            false,
            &mut limits.idle_timeout,
        )?;
        duration(
            raw.drain_timeout,
            "drain_timeout",
            true,
            &mut limits.drain_timeout,
        )?;
        Ok(limits)
    }

    pub(crate) fn checkpoint(&self, raw: TomlSpanned<RawCheckpoint>) -> Checked<CheckpointConfig> {
        let raw = raw.into_inner();
        let dir = self.non_empty(raw.dir, "checkpoint.dir", "checkpoint directory")?;
        let base = self.source.path.parent().unwrap_or(Path::new(""));
        let dir = base.join(&dir.value);
        let interval = match raw.interval {
            None => Duration::from_secs(1),
            Some(v) if v.get_ref().0.is_zero() => {
                return Err(self
                    .err(v.span(), "checkpoint.interval", "interval is zero")
                    .with_expected("a duration greater than zero"));
            }
            Some(v) => v.into_inner().0,
        };
        let retain = match &raw.retain {
            None => 3,
            Some(v) => self.int(v, "checkpoint.retain", 1, i64::MAX)?,
        };
        let full_every = match &raw.full_every {
            None => 10,
            Some(v) => self.int(v, "checkpoint.full_every", 1, i64::MAX)?,
        };
        Ok(CheckpointConfig {
            dir,
            interval,
            retain,
            full_every,
            discard_state: false,
        })
    }

    pub(crate) fn fleet(&self, raw: TomlSpanned<RawFleet>) -> Checked<crate::fleet::FleetConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let list_span = raw.instances.span();
        let mut instances: Vec<crate::fleet::Member> = Vec::new();
        for (i, text) in raw.instances.into_inner().into_iter().enumerate() {
            let key = format!("fleet.instances[{i}]");
            let member = crate::fleet::parse_member(text.get_ref()).map_err(|message| {
                self.err(text.span(), &key, message).with_expected(
                    "HOST:BASE_PORT, e.g. \"10.0.0.1:8900\" or \"coreline-0.coreline:8900\"",
                )
            })?;
            if let Some(first) = instances.iter().position(|m| *m == member) {
                return Err(self.err(
                    text.span(),
                    &key,
                    format!(
                        "{} is listed twice (also instances[{first}])",
                        member.text()
                    ),
                ));
            }
            instances.push(member);
        }
        if instances.is_empty() {
            return Err(self
                .err(list_span, "fleet.instances", "the fleet has no instances")
                .with_expected("at least one HOST:BASE_PORT"));
        }
        let index = match &raw.index {
            None => None,
            Some(v) => Some(self.int(v, "fleet.index", 0, instances.len() as i64 - 1)?),
        };
        Ok(crate::fleet::FleetConfig {
            instances,
            index,
            span,
            index_span: raw.index.as_ref().map(|v| v.span()),
        })
    }
}
