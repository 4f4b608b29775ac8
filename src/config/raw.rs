//! Phase one: the file as serde sees it. Every struct mirrors one TOML
//! table (`deny_unknown_fields`, values wrapped in [`toml::Spanned`]); a
//! `[[route.step]]` table is dispatched to its kind's own `Raw<Kind>` by its
//! key ([`RawStep`]).

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Unexpected, Visitor};
use toml::Spanned as TomlSpanned;

use super::Span;
use crate::operator::{RawStepKind, STEP_KINDS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) service: TomlSpanned<RawService>,
    pub(crate) limits: Option<TomlSpanned<RawLimits>>,
    pub(crate) checkpoint: Option<TomlSpanned<RawCheckpoint>>,
    pub(crate) fleet: Option<TomlSpanned<RawFleet>>,
    #[serde(default)]
    pub(crate) route: Vec<TomlSpanned<RawRoute>>,
    #[serde(default)]
    pub(crate) table: Vec<TomlSpanned<super::table::RawTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) name: TomlSpanned<String>,
    pub(crate) host: Option<TomlSpanned<String>>,
    pub(crate) base_port: TomlSpanned<i64>,
    pub(crate) shards: Option<TomlSpanned<RawShards>>,
    pub(crate) cores: Option<TomlSpanned<Vec<TomlSpanned<i64>>>>,
    pub(crate) admin_port: Option<TomlSpanned<i64>>,
    pub(crate) admin_host: Option<TomlSpanned<String>>,
    pub(crate) spin_before_park: Option<TomlSpanned<RawDuration>>,
    pub(crate) lame_duck: Option<TomlSpanned<RawDuration>>,
    pub(crate) log_format: Option<TomlSpanned<String>>,
    pub(crate) access_log: Option<TomlSpanned<String>>,
    pub(crate) admin_token_file: Option<TomlSpanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) max_header_bytes: Option<TomlSpanned<i64>>,
    pub(crate) max_body_bytes: Option<TomlSpanned<i64>>,
    pub(crate) max_headers: Option<TomlSpanned<i64>>,
    pub(crate) header_timeout: Option<TomlSpanned<RawDuration>>,
    pub(crate) body_timeout: Option<TomlSpanned<RawDuration>>,
    pub(crate) idle_timeout: Option<TomlSpanned<RawDuration>>,
    pub(crate) max_connections: Option<TomlSpanned<i64>>,
    pub(crate) drain_timeout: Option<TomlSpanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheckpoint {
    pub(crate) dir: TomlSpanned<String>,
    pub(crate) interval: Option<TomlSpanned<RawDuration>>,
    pub(crate) retain: Option<TomlSpanned<i64>>,
    pub(crate) full_every: Option<TomlSpanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleet {
    pub(crate) instances: TomlSpanned<Vec<TomlSpanned<String>>>,
    pub(crate) index: Option<TomlSpanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) method: Option<TomlSpanned<String>>,
    pub(crate) path: TomlSpanned<String>,
    pub(crate) request: Option<TomlSpanned<Ordered<RawType>>>,
    pub(crate) headers: Option<TomlSpanned<Ordered<RawType>>>,
    pub(crate) read: Option<TomlSpanned<String>>,
    pub(crate) key_from: Option<TomlSpanned<String>>,
    #[serde(default)]
    pub(crate) step: Vec<TomlSpanned<RawStep>>,
    pub(crate) reply: Option<TomlSpanned<RawReply>>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReply {
    pub(crate) columns: Option<TomlSpanned<Vec<TomlSpanned<String>>>>,
    pub(crate) status: Option<TomlSpanned<String>>,
}

/// `shards`: an integer or `"auto"`.
pub(crate) enum RawShards {
    Count(i64),
    Auto,
}

impl<'de> Deserialize<'de> for RawShards {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawShards, D::Error> {
        struct ShardsVisitor;
        impl Visitor<'_> for ShardsVisitor {
            type Value = RawShards;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer >= 1 or \"auto\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawShards, E> {
                Ok(RawShards::Count(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawShards, E> {
                if v == "auto" {
                    Ok(RawShards::Auto)
                } else {
                    Err(E::invalid_value(Unexpected::Str(v), &self))
                }
            }
        }
        deserializer.deserialize_any(ShardsVisitor)
    }
}

pub(crate) const DURATION_EXPECTED: &str = "a duration such as \"50us\", \"250ms\", \"10s\", \"2m\", \"1h\" or an integer number of seconds";

/// A duration: `"50us"`, `"250ms"`, `"10s"`, `"2m"`, `"1h"` or an integer of seconds.
pub(crate) struct RawDuration(pub(crate) Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawDuration, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                u64::try_from(v)
                    .map(|s| RawDuration(Duration::from_secs(s)))
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                parse_duration(v)
                    .map(RawDuration)
                    .ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Parses `"50us"`, `"250ms"`, `"10s"`, `"2m"`, `"1h"` or `"10"` (seconds).
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = text[..digits].parse().ok()?;
    match &text[digits..] {
        "us" => Some(Duration::from_micros(n)),
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// A request field's type: `"int64"` or `{ type = "int64", nullable = true }`.
pub(crate) enum RawType {
    Name(String),
    Table(RawTypeTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTypeTable {
    #[serde(rename = "type")]
    pub(crate) ty: TomlSpanned<String>,
    #[serde(default)]
    pub(crate) nullable: bool,
    pub(crate) len: Option<TomlSpanned<i64>>,
}

impl<'de> Deserialize<'de> for RawType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawType, D::Error> {
        struct TypeVisitor;
        impl<'de> Visitor<'de> for TypeVisitor {
            type Value = RawType;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a type (utf8, int64, float64, bool, array<float64>, array<float32>, array<int64>) or a table like { type = \"int64\", nullable = true }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawType, E> {
                Ok(RawType::Name(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawType, A::Error> {
                RawTypeTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawType::Table)
            }
        }
        deserializer.deserialize_any(TypeVisitor)
    }
}

/// A TOML table read in document order (requires toml's `preserve_order`).
pub(crate) struct Ordered<V>(pub(crate) Vec<(TomlSpanned<String>, TomlSpanned<V>)>);

impl<'de, V: DeserializeOwned> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ordered<V>, D::Error> {
        struct OrderedVisitor<V>(PhantomData<V>);
        impl<'de, V: DeserializeOwned> Visitor<'de> for OrderedVisitor<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<TomlSpanned<String>>()? {
                    entries.push((key, map.next_value::<TomlSpanned<V>>()?));
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

/// One `[[route.step]]`: every step-kind key present, with the span of its
/// value and its kind's raw table, in registry order ([`STEP_KINDS`]). The
/// validator insists on exactly one.
pub(crate) struct RawStep(pub(crate) Vec<(&'static str, Span, RawStepKind)>);

/// A step table's key, checked against the registry as it is read, so that
/// an unknown kind is reported at the key with the list of known kinds.
struct KindKey(&'static str);

impl<'de> Deserialize<'de> for KindKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KindKey, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KindKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a step kind")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KindKey, E> {
                match STEP_KINDS.iter().find(|k| **k == v) {
                    Some(kind) => Ok(KindKey(kind)),
                    None => Err(E::unknown_field(v, STEP_KINDS)),
                }
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for RawStep {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RawStep, D::Error> {
        struct StepVisitor;
        impl<'de> Visitor<'de> for StepVisitor {
            type Value = RawStep;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("struct RawStep")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawStep, A::Error> {
                let mut kinds: Vec<(&'static str, Span, RawStepKind)> = Vec::with_capacity(1);
                while let Some(KindKey(kind)) = map.next_key()? {
                    let (span, raw) = RawStepKind::next_value(kind, &mut map)?;
                    kinds.push((kind, span, raw));
                }
                kinds.sort_by_key(|(kind, ..)| STEP_KINDS.iter().position(|k| k == kind));
                Ok(RawStep(kinds))
            }
        }
        deserializer.deserialize_struct("RawStep", STEP_KINDS, StepVisitor)
    }
}
