//! A fleet: several instances of one service, each key owned by exactly one
//! (instance, shard) pair over the whole fleet.
//!
//! ```toml
//! [fleet]
//! instances = ["10.0.0.1:8900", "10.0.0.2:8900"]  # HOST:BASE_PORT of each instance, in a fixed order
//! index = 0       # this instance's position; or `coreline run --instance-index N`
//! ```
//!
//! # Ownership (a contract shared with `coreline lb`)
//!
//! With `N` instances of `S` shards, a key's slot is `key_hash(key) % (N·S)`;
//! its owner instance is `slot / S` and its owner shard `slot % S`. Because
//! `S` divides `N·S`, the owner shard is also `key_hash(key) % S`, the
//! single-instance owner: inside an instance, keys are spread and
//! checkpointed exactly as without a fleet.
//!
//! # A key that reaches another instance: 421
//!
//! A keyed step (or `read`) whose key another instance owns answers
//! `421 Misdirected Request` and names the owner:
//! `{"error": "...", "owner": "10.0.0.2:8901", "owner_instance": 1,
//! "owner_shard": 1}`. Each key's state therefore lives in exactly one
//! instance, and nothing travels between instances: the balancer's key
//! affinity (`coreline lb`, which reads `[fleet]`) sends every keyed request
//! to its owner, and a client that meets a 421 (a balancer without
//! affinity, a stale fleet list) retries at the named owner. Proxying the
//! request instead would hide a misconfigured balancer behind an extra hop
//! per request and tie the instances' availability together; a 421 is
//! visible in the access log and in metrics, and costs nothing when the
//! balancer is right.
//!
//! # Checkpoints
//!
//! Each instance checkpoints its own keys into `dir/instance-<index>`, so
//! instances started from one file on one machine never share a directory.

use std::fmt::Write as _;

use crate::config::{ConfigError, ServiceConfig, Span};
use crate::reply::write_json_string;
use crate::row::Val;
use crate::state::key_hash;

/// One instance of the fleet: where its shard 0 listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Host name or IP address.
    pub host: String,
    /// Port of its shard 0; shard `i` is on `base_port + i`.
    pub base_port: u16,
}

impl Member {
    /// `host:port` of shard `shard` (IPv6 addresses in brackets).
    pub fn addr(&self, shard: usize) -> String {
        let port = self.base_port as usize + shard;
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }

    /// `HOST:BASE_PORT`, as the fleet list writes it.
    pub fn text(&self) -> String {
        self.addr(0)
    }
}

/// The `[fleet]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Every instance, in the fleet's fixed order.
    pub instances: Vec<Member>,
    /// This instance's position: from the file's `index`, replaced by
    /// `--instance-index` ([`settle`]). `None` until known.
    pub index: Option<usize>,
    /// Where `[fleet]` is, for errors.
    pub span: Span,
    /// Where `index` is, when the file sets it.
    pub index_span: Option<Span>,
}

/// Parses `HOST:PORT` (`[v6]:PORT` for IPv6).
pub fn parse_member(text: &str) -> Result<Member, String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| format!("{text:?} is not [IPV6]:PORT"))?;
        (host, port)
    } else {
        text.rsplit_once(':')
            .ok_or_else(|| format!("{text:?} has no port"))?
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{text:?} has no valid host"));
    }
    let base_port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{text:?}: port {port:?} is not in 1..=65535"))?;
    Ok(Member {
        host: host.to_string(),
        base_port,
    })
}

/// Settles this instance's place in its fleet, once the environment
/// overrides are applied: `index` (from `--instance-index`) replaces the
/// file's; the index must name an instance whose base port is this
/// process's `base_port`; checkpoints move to `dir/instance-<index>`.
/// Without an index (neither in the file nor given), `required` decides:
/// `coreline run` needs one, `coreline check` and `coreline lb` do not.
pub fn settle(
    config: &mut ServiceConfig,
    index: Option<usize>,
    required: bool,
) -> Result<(), ConfigError> {
    let Some(fleet) = config.fleet.as_mut() else {
        if index.is_some() {
            return Err(ConfigError::file(
                &config.source.path,
                "--instance-index is given but the file has no [fleet] table",
            ));
        }
        return Ok(());
    };
    let index = index.or(fleet.index);
    let span = fleet.index_span.clone().unwrap_or(fleet.span.clone());
    let Some(index) = index else {
        if required {
            return Err(ConfigError::at(
                &config.source,
                fleet.span.clone(),
                "fleet.index",
                "this instance's place in the fleet is not set",
            )
            .with_expected(format!(
                "index = N in [fleet] or --instance-index N, with N in 0..{}",
                fleet.instances.len()
            )));
        }
        return Ok(());
    };
    let Some(me) = fleet.instances.get(index) else {
        return Err(ConfigError::at(
            &config.source,
            span,
            "fleet.index",
            format!(
                "index {index} is past the fleet's {} instances",
                fleet.instances.len()
            ),
        )
        .with_expected(format!("an index in 0..{}", fleet.instances.len())));
    };
    let base_port = config.service.base_port;
    if me.base_port != base_port {
        return Err(ConfigError::at(
            &config.source,
            span,
            "fleet.index",
            format!(
                "instance {index} of the fleet is {} but this process listens on base_port {base_port}",
                me.text()
            ),
        )
        .with_expected(format!(
            "the index of the [fleet] instance with port {base_port} (set CORELINE_BASE_PORT, or fix the list)"
        )));
    }
    fleet.index = Some(index);
    if let Some(cp) = config.checkpoint.as_mut() {
        cp.dir = cp.dir.join(format!("instance-{index}"));
    }
    Ok(())
}

/// This process's place in its fleet: what keyed steps consult to find a
/// key's owner instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// This instance's index.
    pub index: usize,
    /// Every instance.
    pub members: Vec<Member>,
    /// Shards per instance.
    pub shards: usize,
}

impl Place {
    /// The place a settled configuration gives (none without `[fleet]`).
    pub fn of(config: &ServiceConfig) -> Option<Place> {
        let fleet = config.fleet.as_ref()?;
        Some(Place {
            index: fleet.index?,
            members: fleet.instances.clone(),
            shards: config.service.shards,
        })
    }

    /// The owner of `key`: (instance, shard).
    #[inline]
    pub fn owner(&self, key: Val<'_>) -> (usize, usize) {
        let slot = key_hash(key) % (self.members.len() * self.shards) as u64;
        let slot = slot as usize;
        (slot / self.shards, slot % self.shards)
    }

    /// Writes the 421 body naming the owner of a key (field `key_name`)
    /// that this instance does not own, and returns 421.
    pub fn misdirected(
        &self,
        body: &mut Vec<u8>,
        key_name: &str,
        instance: usize,
        shard: usize,
    ) -> u16 {
        let owner = self.members[instance].addr(shard);
        let mut message = String::new();
        let _ = write!(
            message,
            "the key in \"{key_name}\" belongs to instance {instance} of the fleet ({owner}, shard {shard}), not to this instance ({}); send it there",
            self.index
        );
        body.clear();
        body.extend_from_slice(b"{\"error\":");
        write_json_string(body, &message);
        body.extend_from_slice(b",\"field\":");
        write_json_string(body, key_name);
        body.extend_from_slice(b",\"owner\":");
        write_json_string(body, &owner);
        let _ = write!(
            Utf8Out(body),
            ",\"owner_instance\":{instance},\"owner_shard\":{shard}}}"
        );
        421
    }
}

/// `fmt::Write` into a byte buffer.
struct Utf8Out<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8Out<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::owner_shard;

    #[test]
    fn members_parse() {
        assert_eq!(
            parse_member("10.0.0.1:8900").unwrap(),
            Member {
                host: "10.0.0.1".into(),
                base_port: 8900
            }
        );
        assert_eq!(
            parse_member("coreline-1.coreline:8900").unwrap().host,
            "coreline-1.coreline"
        );
        assert_eq!(parse_member("[::1]:8900").unwrap().addr(2), "[::1]:8902");
        assert!(parse_member("10.0.0.1").is_err());
        assert!(parse_member("10.0.0.1:0").is_err());
        assert!(parse_member(":80").is_err());
    }

    #[test]
    fn the_owner_shard_is_the_single_instance_owner() {
        let place = Place {
            index: 0,
            members: vec![
                parse_member("a:1").unwrap(),
                parse_member("b:1").unwrap(),
                parse_member("c:1").unwrap(),
            ],
            shards: 4,
        };
        let mut per_instance = [0usize; 3];
        for i in 0..3000 {
            let key = format!("user-{i}");
            let (instance, shard) = place.owner(Val::Str(&key));
            assert_eq!(shard, owner_shard(Val::Str(&key), 4));
            per_instance[instance] += 1;
        }
        assert!(per_instance.iter().all(|&n| n > 800), "{per_instance:?}");
    }

    #[test]
    fn misdirected_names_the_owner() {
        let place = Place {
            index: 0,
            members: vec![
                parse_member("h0:9000").unwrap(),
                parse_member("h1:9100").unwrap(),
            ],
            shards: 2,
        };
        let mut body = Vec::new();
        assert_eq!(place.misdirected(&mut body, "user", 1, 1), 421);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["owner"], "h1:9101");
        assert_eq!(json["owner_instance"], 1);
        assert_eq!(json["owner_shard"], 1);
        assert_eq!(json["field"], "user");
        assert!(json["error"].as_str().unwrap().contains("instance 1"));
    }
}
