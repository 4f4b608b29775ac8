//! Deployment overrides from the environment.
//!
//! A container image ships one configuration file; the platform decides the
//! address and ports. `CORELINE_HOST`, `CORELINE_BASE_PORT` and
//! `CORELINE_ADMIN_PORT`, when set, replace `[service] host`, `base_port`
//! and `admin_port` after the file is validated, and are checked by the same
//! rules (ports in range, shard ports below 65536, the admin port outside
//! the shard ports). `coreline check` and `coreline run` print each override
//! they applied, so what serves is never a surprise.

use std::net::IpAddr;

use crate::config::ServiceConfig;

/// The variable that overrides `[service] host`.
pub const HOST: &str = "CORELINE_HOST";
/// The variable that overrides `[service] base_port`.
pub const BASE_PORT: &str = "CORELINE_BASE_PORT";
/// The variable that overrides `[service] admin_port`.
pub const ADMIN_PORT: &str = "CORELINE_ADMIN_PORT";

/// One override applied: the variable, and the value it set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The environment variable's name.
    pub var: &'static str,
    /// The `[service]` key it replaced.
    pub key: &'static str,
    /// The value as written in the environment.
    pub value: String,
}

/// An override whose value is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment {var}={value:?}: {message}; expected {expected}")]
pub struct OverrideError {
    /// The environment variable's name.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong.
    pub message: String,
    /// What would be accepted.
    pub expected: String,
}

/// Applies the overrides `lookup` finds (pass `|v| std::env::var(v).ok()`)
/// to `config` and returns those applied, in the order host, base port,
/// admin port. An empty value counts as unset.
pub fn apply(
    config: &mut ServiceConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Override>, OverrideError> {
    let get = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
    let mut applied = Vec::new();
    let svc = &mut config.service;
    if let Some(value) = get(HOST) {
        svc.host = value.trim().parse::<IpAddr>().map_err(|_| OverrideError {
            var: HOST,
            value: value.clone(),
            message: "not an IP address".into(),
            expected: "an IPv4 or IPv6 address such as 0.0.0.0".into(),
        })?;
        applied.push(Override {
            var: HOST,
            key: "host",
            value,
        });
    }
    let port = |var: &'static str, value: &str| {
        value.trim().parse::<u16>().map_err(|_| OverrideError {
            var,
            value: value.to_owned(),
            message: "not a port number".into(),
            expected: "an integer in 0..=65535".into(),
        })
    };
    if let Some(value) = get(BASE_PORT) {
        let base = port(BASE_PORT, &value)?;
        let last = usize::from(base) + svc.shards - 1;
        if base != 0 && last > usize::from(u16::MAX) {
            return Err(OverrideError {
                var: BASE_PORT,
                value,
                message: format!(
                    "shard ports {base}..={last} go past 65535 ({} shards)",
                    svc.shards
                ),
                expected: format!("at most {}", usize::from(u16::MAX) + 1 - svc.shards),
            });
        }
        svc.base_port = base;
        applied.push(Override {
            var: BASE_PORT,
            key: "base_port",
            value,
        });
    }
    if let Some(value) = get(ADMIN_PORT) {
        svc.admin_port = Some(port(ADMIN_PORT, &value)?);
        applied.push(Override {
            var: ADMIN_PORT,
            key: "admin_port",
            value,
        });
    }
    if let Some(admin) = svc.admin_port
        && admin != 0
        && svc.base_port != 0
        && !applied.is_empty()
    {
        let first = usize::from(svc.base_port);
        let last = first + svc.shards - 1;
        if (first..=last).contains(&usize::from(admin)) {
            let culprit = applied
                .iter()
                .rev()
                .find(|o| o.var != HOST)
                .expect("only a port override can make ports collide");
            return Err(OverrideError {
                var: culprit.var,
                value: culprit.value.clone(),
                message: format!("admin port {admin} is also a shard port ({first}..={last})"),
                expected: "an admin port outside the shard ports".into(),
            });
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServiceConfig {
        let text = "[service]\nname = \"x\"\nbase_port = 9000\nshards = 1\nadmin_port = 9100\n[[route]]\npath = \"/a\"\nrequest = { a = \"utf8\" }\n";
        crate::config::parse(crate::config::Source::new(
            std::path::Path::new("x.toml"),
            text.to_owned(),
        ))
        .unwrap()
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn overrides_apply_in_order() {
        let mut c = config();
        let applied = apply(
            &mut c,
            env(&[(HOST, "0.0.0.0"), (BASE_PORT, "7000"), (ADMIN_PORT, "7100")]),
        )
        .unwrap();
        assert_eq!(applied.len(), 3);
        assert_eq!(c.service.host.to_string(), "0.0.0.0");
        assert_eq!(c.service.base_port, 7000);
        assert_eq!(c.service.admin_port, Some(7100));
    }

    #[test]
    fn nothing_set_changes_nothing() {
        let mut c = config();
        let before = c.service.clone();
        assert!(apply(&mut c, env(&[(HOST, "")])).unwrap().is_empty());
        assert_eq!(c.service, before);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = apply(&mut config(), env(&[(BASE_PORT, "70000")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment CORELINE_BASE_PORT=\"70000\": not a port number; expected an integer in 0..=65535"
        );
        let mut two = config();
        two.service.shards = 2;
        let e = apply(&mut two, env(&[(BASE_PORT, "65535")])).unwrap_err();
        assert!(e.to_string().contains("go past 65535"), "{e}");
        let e = apply(&mut config(), env(&[(ADMIN_PORT, "9000")])).unwrap_err();
        assert!(e.to_string().contains("is also a shard port"), "{e}");
        let e = apply(&mut config(), env(&[(HOST, "localhost")])).unwrap_err();
        assert!(
            e.to_string().starts_with("environment CORELINE_HOST"),
            "{e}"
        );
    }
}
