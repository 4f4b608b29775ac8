//! Load-balancer configurations: what `coreline lb nginx|haproxy` prints.
//!
//! A service is one or more *instances* (processes started from the same
//! file, on one host each), each with `shards` ports `base_port + i`. The
//! generated configuration balances over every shard port of every instance
//! and has:
//!
//! - **health checks**: haproxy checks each port with `GET /health` every
//!   second (down after 2 failures, up after 2 successes). Open-source nginx
//!   (Debian's `nginx-light` included) has no active health checks — the
//!   `health_check` directive is nginx Plus only — so nginx uses *passive*
//!   checks: a port that refuses a connection or answers 502/503/504 is taken
//!   out for `fail_timeout` (`max_fails=1 fail_timeout=2s`) and the request
//!   goes to the next one.
//! - **keep-alive** to the upstreams (nginx `keepalive` with HTTP/1.1,
//!   haproxy's default keep-alive with `http-reuse safe`).
//! - **passive retry of idempotent requests only**: a connection that could
//!   not be established is retried on another port for any method (nothing
//!   was sent); a request that was sent (empty response, timeout, 502/503/504)
//!   is retried only for GET, HEAD, PUT, DELETE and OPTIONS (nginx's default
//!   `proxy_next_upstream` rule without `non_idempotent`; haproxy
//!   `retry-on` plus `disable-l7-retry` for the other methods).
//! - **key affinity**: a route that declares `key_from` (and every `read`
//!   route, keyed by `?key=`) goes straight to the port that owns its key, so
//!   coreline does not forward it between shards. The owner is computed by
//!   the same function as [`crate::state::owner_shard`] — `key_hash` is a
//!   documented contract — in Lua for haproxy ([`HAPROXY_LUA`]) and in njs
//!   for nginx ([`NGINX_JS`]).
//!
//! # Owner over several instances
//!
//! With `N` instances of `S` shards, the balancer numbers the ports
//! instance-major (`slot = instance · S + shard`) and sends a key to slot
//! `key_hash(key) % (N·S)`. Because `S` divides `N·S`, that slot's shard is
//! `key_hash(key) % S`: the key's owner shard inside the instance, so no
//! forwarding happens there either, and every key is always sent to the same
//! instance. (Instances do not share state: without the balancer's affinity,
//! each instance keeps its own counts for a key.)
//!
//! A request without the key (no header, no parameter, a value that is not
//! of the key's type) is balanced round-robin; coreline then forwards it
//! inside the instance. A port that is down is skipped: haproxy ignores a
//! `use-server` rule whose server is down; nginx's per-slot upstream lists
//! the other ports as `backup`.

mod haproxy;
mod nginx;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::config::KeyFrom;
use crate::operator::Operator;
use crate::pipeline::{Plan, RouteInput};
use crate::row::ColumnType;
pub use haproxy::HAPROXY_LUA;
use haproxy::haproxy;
pub use nginx::NGINX_JS;
use nginx::nginx;

/// The balancers `coreline lb` writes configurations for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancer {
    /// nginx (open source, with the njs module for key affinity).
    Nginx,
    /// haproxy 2.2 or later, built with Lua for key affinity.
    Haproxy,
}

impl Balancer {
    /// The name of the configuration file `--out` writes.
    pub fn config_file(self) -> &'static str {
        match self {
            Balancer::Nginx => "nginx.conf",
            Balancer::Haproxy => "haproxy.cfg",
        }
    }

    /// The name of the key-affinity script.
    pub fn script_file(self) -> &'static str {
        match self {
            Balancer::Nginx => "coreline_owner.js",
            Balancer::Haproxy => "coreline_owner.lua",
        }
    }

    /// Where the configuration loads the script from unless told otherwise.
    pub fn default_script_path(self) -> PathBuf {
        match self {
            Balancer::Nginx => "/etc/nginx/coreline_owner.js".into(),
            Balancer::Haproxy => "/etc/haproxy/coreline_owner.lua".into(),
        }
    }

    /// The key-affinity script's text (the same for every service: the
    /// configuration passes the slot count and key source to it).
    pub fn script(self) -> &'static str {
        match self {
            Balancer::Nginx => NGINX_JS,
            Balancer::Haproxy => HAPROXY_LUA,
        }
    }
}

/// One instance of the service: a host and the port of its shard 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Host name or IP address the balancer connects to.
    pub host: String,
    /// Port of shard 0; shard `i` is on `base_port + i`.
    pub base_port: u16,
}

impl Instance {
    /// The `host:port` of shard `shard`, IPv6 addresses in brackets.
    fn addr(&self, shard: usize) -> String {
        let port = self.base_port as usize + shard;
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Options {
    /// nginx or haproxy.
    pub balancer: Balancer,
    /// `--instance HOST[:BASE_PORT]`, in order; empty means one instance
    /// at the config's host and base port.
    pub instances: Vec<String>,
    /// `--listen [HOST:]PORT`: where the balancer listens.
    pub listen: String,
    /// Where the configuration loads the key-affinity script from.
    pub script_path: PathBuf,
    /// `--no-affinity`: plain round-robin for every route (to compare).
    pub affinity: bool,
}

/// Why no configuration could be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    /// `shards = "auto"`: the count depends on the machine that serves.
    #[error(
        "{path}: service.shards is \"auto\"; the balancer needs the shard count: set shards = N"
    )]
    ShardsAuto {
        /// The config file.
        path: PathBuf,
    },
    /// `base_port = 0` and an instance without a port.
    #[error(
        "{path}: service.base_port is 0 (OS-assigned ports); give each instance's port with --instance HOST:BASE_PORT"
    )]
    NoPort {
        /// The config file.
        path: PathBuf,
    },
    /// A malformed `--instance` or `--listen` value.
    #[error("{flag} {value:?}: {message}")]
    BadArgument {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Shard ports past 65535.
    #[error("instance {instance}: {shards} shards from port {base_port} go past port 65535")]
    PortRange {
        /// The instance as given.
        instance: String,
        /// Its base port.
        base_port: u16,
        /// The shard count.
        shards: usize,
    },
}

/// Parses `HOST[:PORT]` (`[v6]:PORT` for IPv6 with a port).
pub fn parse_instance(
    text: &str,
    default_port: Option<u16>,
) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address opened with '[' is not closed")?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or("expected ':PORT' after ']'")?),
            ),
        }
    } else if text.matches(':').count() > 1 {
        (text, None) // a bare IPv6 address
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
    {
        return Err("expected a host name or an IP address".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("port {p:?} is not in 1..=65535"))?,
        ),
    };
    Ok((host.to_string(), port))
}

/// A route the balancer sends to its key's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyedRoute {
    method: &'static str,
    path: String,
    from: KeyFrom,
    key_type: ColumnType,
}

impl KeyedRoute {
    /// The spec string the scripts read: `h:` or `q:` then the key type.
    fn spec(&self) -> String {
        let t = match self.key_type {
            ColumnType::Int64 => "int64",
            ColumnType::Boolean => "bool",
            _ => "utf8",
        };
        match &self.from {
            KeyFrom::Header(_) => format!("h:{t}"),
            KeyFrom::Query(_) => format!("q:{t}"),
        }
    }
}

/// Every route with key affinity: `key_from` routes (keyed by their first
/// keyed step's key) and `read` routes (keyed by `?key=`).
fn keyed_routes(plan: &Plan) -> Vec<KeyedRoute> {
    let mut out = Vec::new();
    for (route, config) in plan.routes.iter().zip(&plan.config.routes) {
        let method = config.method.as_str();
        if let RouteInput::QueryKey(key_type) = route.input {
            out.push(KeyedRoute {
                method,
                path: route.path.clone(),
                from: KeyFrom::Query("key".into()),
                key_type,
            });
        } else if let Some(from) = &config.key_from {
            let slot = route.steps.iter().find_map(|s| match s {
                Operator::Aggregate(a) => Some(a.keyed.key),
                Operator::Changed(c) => Some(c.keyed.key),
                _ => None,
            });
            let slot = slot.expect("config checks that key_from routes have a keyed step");
            out.push(KeyedRoute {
                method,
                path: route.path.clone(),
                from: from.value.clone(),
                key_type: route.columns.get(slot).ty,
            });
        }
    }
    out
}

/// The balancer's configuration for `plan` (and whether it needs the
/// key-affinity script at `options.script_path`).
pub fn generate(plan: &Plan, options: &Options) -> Result<Generated, LbError> {
    let service = &plan.config.service;
    let path = plan.config.source.path.clone();
    if service.shards_auto {
        return Err(LbError::ShardsAuto { path });
    }
    let default_port = (service.base_port != 0).then_some(service.base_port);
    let default_host = match service.host {
        IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(a) if a.is_unspecified() => "::1".to_string(),
        ip => ip.to_string(),
    };
    let mut instances = Vec::new();
    let given: Vec<String> =
        if let (true, Some(fleet)) = (options.instances.is_empty(), &plan.config.fleet) {
            // The fleet the instances run as: the balancer's owner slots are
            // the instances' own ownership (src/fleet.rs).
            fleet
                .instances
                .iter()
                .map(crate::fleet::Member::text)
                .collect()
        } else if options.instances.is_empty() {
            vec![default_host]
        } else {
            options.instances.clone()
        };
    for text in given {
        let (host, port) =
            parse_instance(&text, default_port).map_err(|message| LbError::BadArgument {
                flag: "--instance",
                value: text.clone(),
                message: format!("{message}; expected HOST[:BASE_PORT]"),
            })?;
        let base_port = port.ok_or_else(|| LbError::NoPort { path: path.clone() })?;
        if base_port as usize + service.shards - 1 > u16::MAX as usize {
            return Err(LbError::PortRange {
                instance: text,
                base_port,
                shards: service.shards,
            });
        }
        instances.push(Instance { host, base_port });
    }
    let listen = parse_listen(&options.listen)?;
    let keyed = if options.affinity {
        keyed_routes(plan)
    } else {
        Vec::new()
    };
    let fleet = Fleet {
        name: sanitize(&service.name),
        service: service.name.clone(),
        shards: service.shards,
        instances,
    };
    let config = match options.balancer {
        Balancer::Nginx => nginx(&fleet, &keyed, &listen, &options.script_path),
        Balancer::Haproxy => haproxy(&fleet, &keyed, &listen, &options.script_path),
    };
    Ok(Generated {
        config,
        needs_script: !keyed.is_empty(),
    })
}

/// A generated configuration.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The balancer's configuration file.
    pub config: String,
    /// Whether it loads the key-affinity script ([`Balancer::script`]).
    pub needs_script: bool,
}

/// `[HOST:]PORT` → `host:port` for a listen directive.
fn parse_listen(text: &str) -> Result<String, LbError> {
    let bad = |message: &str| LbError::BadArgument {
        flag: "--listen",
        value: text.to_string(),
        message: format!("{message}; expected [HOST:]PORT"),
    };
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => ("0.0.0.0", text),
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("the port is not in 1..=65535"))?;
    let ip: IpAddr = host
        .parse()
        .map_err(|_| bad("the host is not an IP address"))?;
    Ok(match ip {
        IpAddr::V6(_) => format!("[{ip}]:{port}"),
        IpAddr::V4(_) => format!("{ip}:{port}"),
    })
}

/// Names usable as nginx upstream / haproxy proxy names.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) || s.is_empty() {
        format!("s_{s}")
    } else {
        s
    }
}

struct Fleet {
    /// Sanitized service name, for upstream and backend names.
    name: String,
    /// The service's name as written.
    service: String,
    shards: usize,
    instances: Vec<Instance>,
}

impl Fleet {
    fn slots(&self) -> usize {
        self.shards * self.instances.len()
    }
    /// (server name, address) of every slot, instance-major.
    fn servers(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.instances
            .iter()
            .enumerate()
            .flat_map(move |(i, inst)| {
                (0..self.shards).map(move |s| (format!("i{i}s{s}"), inst.addr(s)))
            })
    }
    fn header(&self, out: &mut String, balancer: &str, comment: &str, keyed: &[KeyedRoute]) {
        let c = comment;
        let _ = writeln!(
            out,
            "{c} Generated by `coreline lb {balancer}` for service \"{}\": {} instance(s) x {} shard(s).",
            self.service,
            self.instances.len(),
            self.shards
        );
        for (i, inst) in self.instances.iter().enumerate() {
            let _ = writeln!(
                out,
                "{c}   instance {i}: {} (ports {}..={})",
                inst.host,
                inst.base_port,
                inst.base_port as usize + self.shards - 1
            );
        }
        if keyed.is_empty() {
            let _ = writeln!(out, "{c} Key affinity: none (every route round-robin).");
        } else {
            let _ = writeln!(
                out,
                "{c} Key affinity: slot = key_hash(key) % {} (coreline's owner hash, src/state/key.rs).",
                self.slots()
            );
            for k in keyed {
                let _ = writeln!(
                    out,
                    "{c}   {} {}: key from {} ({})",
                    k.method, k.path, k.from, k.key_type
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances() {
        assert_eq!(
            parse_instance("10.0.0.1:8900", None),
            Ok(("10.0.0.1".into(), Some(8900)))
        );
        assert_eq!(
            parse_instance("db-1.local", Some(7000)),
            Ok(("db-1.local".into(), Some(7000)))
        );
        assert_eq!(
            parse_instance("[::1]:8900", None),
            Ok(("::1".into(), Some(8900)))
        );
        assert_eq!(parse_instance("::1", Some(1)), Ok(("::1".into(), Some(1))));
        assert!(parse_instance("h:0", None).is_err());
        assert!(parse_instance("h:x", None).is_err());
        assert!(parse_instance(":80", None).is_err());
        assert!(parse_instance("a b:80", None).is_err());
    }

    #[test]
    fn listen() {
        assert_eq!(parse_listen("8000").unwrap(), "0.0.0.0:8000");
        assert_eq!(parse_listen("127.0.0.1:80").unwrap(), "127.0.0.1:80");
        assert_eq!(parse_listen("[::1]:80").unwrap(), "[::1]:80");
        assert!(parse_listen("0").is_err());
        assert!(parse_listen("host:80").is_err());
    }
}
