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

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::config::KeyFrom;
use crate::operator::Operator;
use crate::pipeline::{HEALTH_PATH, Plan, RouteInput};
use crate::row::ColumnType;

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

/// A string for inside nginx double quotes.
fn nginx_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
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

fn nginx(fleet: &Fleet, keyed: &[KeyedRoute], listen: &str, script: &Path) -> String {
    let mut o = String::new();
    fleet.header(&mut o, "nginx", "#", keyed);
    o.push_str(
        "# Health: open-source nginx has only passive checks (max_fails/fail_timeout);\n\
         # active checks of GET /health (`health_check`) are nginx Plus only.\n\
         # Check with: nginx -t -c THIS_FILE\n",
    );
    if !keyed.is_empty() {
        o.push_str(
            "# Key affinity needs the njs module (Debian: libnginx-mod-http-js).\n\
             load_module /usr/lib/nginx/modules/ngx_http_js_module.so;\n",
        );
    }
    o.push_str("worker_processes auto;\n\nevents {\n    worker_connections 4096;\n}\n\nhttp {\n");
    let name = &fleet.name;
    let server_line = |o: &mut String, addr: &str, backup: bool| {
        let _ = writeln!(
            o,
            "        server {addr} max_fails=1 fail_timeout=2s{};",
            if backup { " backup" } else { "" }
        );
    };
    let _ = writeln!(o, "    upstream {name} {{");
    for (_, addr) in fleet.servers() {
        server_line(&mut o, &addr, false);
    }
    o.push_str("        keepalive 32;\n    }\n");
    if !keyed.is_empty() {
        let _ = writeln!(
            o,
            "\n    js_import coreline from {};\n    js_set $coreline_upstream coreline.upstream;",
            script.display()
        );
        // One upstream per slot: its owner first, every other port as a
        // backup for when the owner is down.
        let servers: Vec<(String, String)> = fleet.servers().collect();
        for (slot, (server, addr)) in servers.iter().enumerate() {
            let _ = writeln!(o, "    upstream {name}_slot{slot} {{  # {server}");
            server_line(&mut o, addr, false);
            for (_, other) in servers.iter().filter(|(s, _)| s != server) {
                server_line(&mut o, other, true);
            }
            o.push_str("        keepalive 8;\n    }\n");
        }
        // The key's source per method and path, for the script.
        let spec: Vec<String> = keyed.iter().map(KeyedRoute::spec).collect();
        let names: Vec<String> = keyed.iter().map(|k| k.from.name().to_string()).collect();
        for (var, values) in [("coreline_key_spec", spec), ("coreline_key_name", names)] {
            let _ = writeln!(
                o,
                "    map \"$request_method $uri\" ${var} {{\n        default \"\";"
            );
            for (k, value) in keyed.iter().zip(values) {
                let _ = writeln!(
                    o,
                    "        \"{} {}\" \"{value}\";",
                    k.method,
                    nginx_escape(&k.path)
                );
            }
            o.push_str("    }\n");
        }
    }
    let _ = writeln!(
        o,
        "\n    server {{\n        listen {listen};\n        \
         proxy_http_version 1.1;\n        \
         proxy_set_header Connection \"\";\n        \
         proxy_set_header Host $host;\n        \
         proxy_connect_timeout 1s;\n        \
         # Retry on another port: connection failures for every method,\n        \
         # errors after the request was sent for idempotent methods only\n        \
         # (nginx's rule without `non_idempotent`).\n        \
         proxy_next_upstream error timeout http_502 http_503 http_504;\n        \
         proxy_next_upstream_tries 3;"
    );
    let mut paths: Vec<&str> = keyed.iter().map(|k| k.path.as_str()).collect();
    paths.dedup();
    paths.sort_unstable();
    paths.dedup();
    for path in paths {
        let _ = writeln!(o, "\n        location = \"{}\" {{", nginx_escape(path));
        let _ = writeln!(o, "            set $coreline_upstream_any {name};");
        let _ = writeln!(o, "            set $coreline_slots {};", fleet.slots());
        let _ = writeln!(
            o,
            "            proxy_pass http://$coreline_upstream;\n        }}"
        );
    }
    let _ = writeln!(
        o,
        "\n        location / {{\n            proxy_pass http://{name};\n        }}\n    }}\n}}"
    );
    o
}

fn haproxy(fleet: &Fleet, keyed: &[KeyedRoute], listen: &str, script: &Path) -> String {
    let mut o = String::new();
    fleet.header(&mut o, "haproxy", "#", keyed);
    o.push_str("# Check with: haproxy -c -f THIS_FILE\nglobal\n");
    if !keyed.is_empty() {
        let _ = writeln!(o, "    lua-load {}", script.display());
    }
    let name = &fleet.name;
    // Host names (a StatefulSet's pods) are re-resolved at run time, and a
    // name that does not resolve yet leaves its server down instead of
    // stopping haproxy from starting.
    let names_hosts = fleet
        .instances
        .iter()
        .any(|i| i.host.parse::<IpAddr>().is_err());
    let dns = if names_hosts {
        " resolvers system init-addr last,libc,none"
    } else {
        ""
    };
    if names_hosts {
        o.push_str("\nresolvers system\n    parse-resolv-conf\n    hold valid 10s\n");
    }
    let _ = write!(
        o,
        "
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    # keep-alive to the shards, idle connections shared safely
    option http-keep-alive
    http-reuse safe
    # passive retry: connection failures for every method (nothing was
    # sent), empty responses and timeouts for idempotent methods only
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend {name}
    bind {listen}
    default_backend {name}

backend {name}
    balance roundrobin
    http-request disable-l7-retry unless {{ method GET HEAD PUT DELETE OPTIONS }}
    # active health checks on every shard port
    option httpchk
    http-check send meth GET uri {HEALTH_PATH}
    http-check expect status 200
    default-server check inter 1s fall 2 rise 2{dns}
"
    );
    if !keyed.is_empty() {
        o.push_str("    # key affinity: the owner slot of the route's key\n");
        for k in keyed {
            let fetch = match &k.from {
                KeyFrom::Header(n) => format!("req.fhdr({n},1)"),
                KeyFrom::Query(n) => format!("url_param({n})"),
            };
            let cond = format!("if {{ method {} }} {{ path {} }}", k.method, k.path);
            let _ = writeln!(
                o,
                "    http-request set-var(txn.coreline_key) {fetch} {cond}\n    \
                 http-request set-var(txn.coreline_spec) str({}) {cond}",
                k.spec()
            );
        }
        let _ = writeln!(
            o,
            "    http-request set-var(txn.coreline_slot) lua.coreline_slot({}) if {{ var(txn.coreline_spec) -m found }}",
            fleet.slots()
        );
        for (slot, (server, _)) in fleet.servers().enumerate() {
            let _ = writeln!(
                o,
                "    use-server {server} if {{ var(txn.coreline_slot) -m int {slot} }}"
            );
        }
    }
    for (server, addr) in fleet.servers() {
        let _ = writeln!(o, "    server {server} {addr}");
    }
    o
}

/// haproxy's key-affinity script (Lua 5.3, haproxy 2.x): the fetch
/// `lua.coreline_slot(<slots>)` computes coreline's owner hash of the key in
/// `txn.coreline_key` (spec in `txn.coreline_spec`), or -1.
pub const HAPROXY_LUA: &str = r#"-- coreline key affinity for haproxy (generated by `coreline lb haproxy`).
-- slot = key_hash(key) % slots, where key_hash is coreline's documented owner
-- hash (src/state/key.rs): fmix64(fnv1a64(tag .. bytes)).
-- Lua 5.3 integers are 64-bit and wrap; `>>` is a logical shift.

local function key_hash(s)
  local h = 0xcbf29ce484222325   -- hex literals wrap to 64-bit integers
  for i = 1, #s do
    h = (h ~ s:byte(i)) * 0x100000001b3
  end
  h = (h ~ (h >> 33)) * 0xff51afd7ed558ccd
  h = (h ~ (h >> 33)) * 0xc4ceb9fe1a85ec53
  return h ~ (h >> 33)
end

-- Percent-decoding as coreline decodes query parameters (`+` is a space);
-- nil when an escape is malformed.
local function percent_decode(s)
  local out, i = {}, 1
  while i <= #s do
    local c = s:sub(i, i)
    if c == "%" then
      local hex = s:sub(i + 1, i + 2)
      if not hex:match("^%x%x$") then return nil end
      out[#out + 1] = string.char(tonumber(hex, 16))
      i = i + 3
    else
      out[#out + 1] = (c == "+") and " " or c
      i = i + 1
    end
  end
  return table.concat(out)
end

-- The hashed bytes of a key given as text, or nil if it is not of the type.
local function key_bytes(text, key_type)
  if key_type == "int64" then
    if not text:match("^[+-]?%d+$") then return nil end
    local n = math.tointeger(tonumber(text))
    if n == nil then return nil end
    return "i" .. string.pack("<i8", n)
  elseif key_type == "bool" then
    if text == "true" then return "b\1" elseif text == "false" then return "b\0" end
    return nil
  end
  return "s" .. text
end

core.register_fetches("coreline_slot", function(txn, slots)
  local key = txn:get_var("txn.coreline_key")
  local spec = txn:get_var("txn.coreline_spec")
  slots = tonumber(slots)
  if key == nil or spec == nil or slots == nil or slots < 1 then return -1 end
  local source, key_type = spec:match("^(%a):(%w+)$")
  if source == "q" then
    key = percent_decode(key)
    if key == nil then return -1 end
  end
  local bytes = key_bytes(key, key_type)
  if bytes == nil then return -1 end
  local h = key_hash(bytes)
  return ((h >> 1) % slots * 2 + (h & 1)) % slots   -- unsigned h % slots
end)
"#;

/// nginx's key-affinity script (njs 0.7+): `js_set $coreline_upstream
/// coreline.upstream` names the upstream of the key's owner slot, from the
/// variables the route's `location` sets.
pub const NGINX_JS: &str = r#"// coreline key affinity for nginx/njs (generated by `coreline lb nginx`).
// slot = key_hash(key) % slots, where key_hash is coreline's documented owner
// hash (src/state/key.rs): fmix64(fnv1a64(tag ++ bytes)). njs numbers are
// doubles, so 64-bit values are four 16-bit limbs, least significant first.

var FNV_OFFSET = [0x2325, 0x8422, 0x9ce4, 0xcbf2];
var FNV_PRIME = [0x01b3, 0x0000, 0x0100, 0x0000];
var FMIX_1 = [0x8ccd, 0xed55, 0xafd7, 0xff51];
var FMIX_2 = [0xec53, 0x1a85, 0xb9fe, 0xc4ce];

// a * b mod 2^64; every partial sum stays below 2^53.
function mul(a, b) {
    var r = [0, 0, 0, 0], carry = 0;
    for (var k = 0; k < 4; k++) {
        var s = carry;
        for (var i = 0; i <= k; i++) {
            s += a[i] * b[k - i];
        }
        r[k] = s % 65536;
        carry = Math.floor(s / 65536);
    }
    return r;
}

// h ^= h >> 33
function xorShift33(h) {
    var lo = ((h[2] >> 1) | (h[3] << 15)) & 0xffff;
    var hi = h[3] >> 1;
    return [h[0] ^ lo, h[1] ^ hi, h[2], h[3]];
}

function keyHash(bytes) {
    var h = FNV_OFFSET.slice();
    for (var i = 0; i < bytes.length; i++) {
        h[0] ^= bytes[i];
        h = mul(h, FNV_PRIME);
    }
    h = mul(xorShift33(h), FMIX_1);
    h = mul(xorShift33(h), FMIX_2);
    return xorShift33(h);
}

function mod(h, n) {
    var r = 0;
    for (var k = 3; k >= 0; k--) {
        r = (r * 65536 + h[k]) % n;
    }
    return r;
}

// Percent-decoding as coreline decodes query parameters (`+` is a space);
// null when an escape is malformed.
function percentDecode(raw) {
    var out = [];
    for (var i = 0; i < raw.length; i++) {
        var b = raw[i];
        if (b === 0x25) {
            if (i + 2 >= raw.length) {
                return null;
            }
            var hex = String.fromCharCode(raw[i + 1], raw[i + 2]);
            if (!/^[0-9a-fA-F]{2}$/.test(hex)) {
                return null;
            }
            out.push(parseInt(hex, 16));
            i += 2;
        } else if (b === 0x2b) {
            out.push(0x20);
        } else {
            out.push(b);
        }
    }
    return out;
}

// The raw bytes of query parameter `name` (first occurrence), or null.
function queryParam(raw, name) {
    if (!raw) {
        return null;
    }
    var start = 0;
    while (start <= raw.length) {
        var end = raw.indexOf(0x26, start);
        if (end < 0) {
            end = raw.length;
        }
        var eq = raw.indexOf(0x3d, start);
        var keyEnd = (eq >= 0 && eq < end) ? eq : end;
        if (latin1(raw.slice(start, keyEnd)) === name) {
            return raw.slice(keyEnd < end ? keyEnd + 1 : end, end);
        }
        start = end + 1;
    }
    return null;
}

// int64 text (Rust's i64 parsing: optional sign, digits) -> 8 bytes LE.
function int64Bytes(text) {
    var m = /^([+-]?)([0-9]+)$/.exec(text);
    if (!m) {
        return null;
    }
    var v = [0, 0, 0, 0];
    for (var i = 0; i < m[2].length; i++) {
        var carry = m[2].charCodeAt(i) - 48;
        for (var k = 0; k < 4; k++) {
            var s = v[k] * 10 + carry;
            v[k] = s % 65536;
            carry = Math.floor(s / 65536);
        }
        if (carry) {
            return null;
        }
    }
    var negative = m[1] === "-";
    if (v[3] >= 0x8000 && !(negative && v[3] === 0x8000 && !v[2] && !v[1] && !v[0])) {
        return null;
    }
    if (negative) {
        var c = 1;
        for (var j = 0; j < 4; j++) {
            var t = (v[j] ^ 0xffff) + c;
            v[j] = t % 65536;
            c = Math.floor(t / 65536);
        }
    }
    var out = [0x69];
    for (var l = 0; l < 4; l++) {
        out.push(v[l] & 0xff, v[l] >> 8);
    }
    return out;
}

function latin1(raw) {
    var s = "";
    for (var i = 0; i < raw.length; i++) {
        s += String.fromCharCode(raw[i]);
    }
    return s;
}

function keyBytes(raw, keyType) {
    if (keyType === "int64") {
        return int64Bytes(latin1(raw));
    }
    if (keyType === "bool") {
        var t = latin1(raw);
        return t === "true" ? [0x62, 1] : t === "false" ? [0x62, 0] : null;
    }
    var out = [0x73];
    for (var i = 0; i < raw.length; i++) {
        out.push(raw[i]);
    }
    return out;
}

function upstream(r) {
    var any = r.variables.coreline_upstream_any;
    var spec = r.variables.coreline_key_spec;
    var name = r.variables.coreline_key_name;
    var slots = Number(r.variables.coreline_slots);
    if (!spec || !name || !(slots >= 1)) {
        return any;
    }
    var raw;
    if (spec[0] === "h") {
        if (r.headersIn[name] === undefined) {
            return any;
        }
        raw = r.rawVariables["http_" + name.toLowerCase().replace(/-/g, "_")];
    } else {
        raw = queryParam(r.rawVariables.args, name);
        raw = raw === null ? null : percentDecode(raw);
    }
    if (raw === null || raw === undefined) {
        return any;
    }
    var bytes = keyBytes(raw, spec.slice(2));
    if (bytes === null) {
        return any;
    }
    return any + "_slot" + mod(keyHash(bytes), slots);
}

export default { upstream: upstream };
"#;

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
