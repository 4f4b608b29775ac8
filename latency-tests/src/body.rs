//! Request bodies and the pool of pre-built requests a run sends.
//!
//! A body template is literal text with placeholders:
//! - `{str:A..B}` a random `[A-Za-z0-9]` string whose length is in `A..B`
//!   (half-open; `A..=B` is inclusive),
//! - `{int:A..B}` a random integer in `A..B` (or `A..=B`),
//! - `{pick:x|y|z}` one of the listed literals,
//! - `{seq}` the index of the body in the pool.
//!
//! Any other `{` is literal, so JSON templates need no escaping:
//! `{"foo":"{str:8..32}","bar":{int:0..1000}}`.
//!
//! Invariant: every request is rendered, framed and stored before the run
//! starts; the hot loop only copies bytes out of the pool.

use crate::schedule::Rng;
use std::fmt;

/// A template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Byte offset of the offending placeholder in the template.
    pub at: usize,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "body template, byte {}: {}", self.at, self.message)
    }
}

impl std::error::Error for TemplateError {}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Str { min: i64, max: i64 },
    Int { min: i64, max: i64 },
    Pick(Vec<String>),
    Seq,
}

/// A parsed body template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// Parses `A..B` (half-open) or `A..=B` into inclusive bounds.
fn parse_range(spec: &str, at: usize) -> Result<(i64, i64), TemplateError> {
    let err = |message: String| TemplateError { at, message };
    let (lo, hi, inclusive) = if let Some((lo, hi)) = spec.split_once("..=") {
        (lo, hi, true)
    } else if let Some((lo, hi)) = spec.split_once("..") {
        (lo, hi, false)
    } else {
        return Err(err(format!("range `{spec}` must look like A..B or A..=B")));
    };
    let lo: i64 = lo
        .trim()
        .parse()
        .map_err(|_| err(format!("range start `{lo}` is not an integer")))?;
    let hi: i64 = hi
        .trim()
        .parse()
        .map_err(|_| err(format!("range end `{hi}` is not an integer")))?;
    let max = if inclusive { hi } else { hi - 1 };
    if max < lo {
        return Err(err(format!("range `{spec}` is empty")));
    }
    Ok((lo, max))
}

impl Template {
    /// Parses a template (see the module docs for the syntax).
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let kind = ["str:", "int:", "pick:", "seq}"]
                .into_iter()
                .find(|k| after.starts_with(k));
            let Some(kind) = kind else {
                lit.push_str(&rest[..=open]);
                offset += open + 1;
                rest = after;
                continue;
            };
            lit.push_str(&rest[..open]);
            let at = offset + open;
            let close = after.find('}').ok_or_else(|| TemplateError {
                at,
                message: "placeholder is not closed by `}`".into(),
            })?;
            let spec = &after[kind.len().min(close)..close];
            let part = match kind {
                "str:" => {
                    let (min, max) = parse_range(spec, at)?;
                    if min < 0 {
                        return Err(TemplateError {
                            at,
                            message: format!("string length range `{spec}` is negative"),
                        });
                    }
                    Part::Str { min, max }
                }
                "int:" => {
                    let (min, max) = parse_range(spec, at)?;
                    Part::Int { min, max }
                }
                "pick:" => Part::Pick(spec.split('|').map(str::to_owned).collect()),
                _ => Part::Seq,
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(part);
            offset += open + 1 + close + 1;
            rest = &after[close + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// True if the template uses `{seq}`.
    pub fn has_seq(&self) -> bool {
        self.parts.contains(&Part::Seq)
    }

    /// Appends one rendering of the template to `out`.
    pub fn render(&self, rng: &mut Rng, seq: u64, out: &mut Vec<u8>) {
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Part::Str { min, max } => {
                    let len = rng.between(*min, *max);
                    for _ in 0..len {
                        out.push(ALNUM[(rng.next_u64() % ALNUM.len() as u64) as usize]);
                    }
                }
                Part::Int { min, max } => {
                    out.extend_from_slice(rng.between(*min, *max).to_string().as_bytes())
                }
                Part::Pick(options) => {
                    let i = (rng.next_u64() % options.len() as u64) as usize;
                    out.extend_from_slice(options[i].as_bytes());
                }
                Part::Seq => out.extend_from_slice(seq.to_string().as_bytes()),
            }
        }
    }
}

/// Where request bodies come from.
#[derive(Debug, Clone)]
pub enum BodySource {
    /// No body (e.g. `GET`).
    Empty,
    /// Rendered from a template, `pool` different bodies.
    Template(Template),
    /// Given bodies, one per non-empty line of a file (JSON Lines).
    Lines(Vec<String>),
}

/// Everything needed to build the request pool.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request target, e.g. `/my_api`.
    pub path: String,
    /// Value of the `Host` header.
    pub host: String,
    /// The bodies.
    pub body: BodySource,
    /// How many distinct requests to pre-build (templates only).
    pub pool: usize,
    /// JSON field whose value picks the target port (hashed), if any.
    pub key_field: Option<String>,
    /// Seed for the template's randomness.
    pub seed: u64,
}

/// Pre-built, fully framed requests, and the key hash of each.
#[derive(Debug, Clone)]
pub struct RequestPool {
    bytes: Vec<u8>,
    spans: Vec<(usize, usize)>,
    key_hashes: Vec<u64>,
}

/// FNV-1a continuing from `h`, stable across runs and platforms.
fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// FNV-1a, stable across runs and platforms (unlike `DefaultHasher`).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(0xcbf2_9ce4_8422_2325, bytes)
}

/// coreline's key hash (`src/state/key.rs`, a documented stable contract):
/// `fmix64(fnv1a(tag ++ bytes))`, so `hash % shards` is the owner shard and
/// a key-hashed request lands on its owner's port (or, with `key_port =
/// "other"`, deliberately on another).
pub fn coreline_key_hash(tag: u8, bytes: &[u8]) -> u64 {
    let mut h = fnv1a_from(fnv1a(&[tag]), bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Hash of the value of `field` in the JSON object `body`: coreline's key
/// hash for strings, integers and booleans, FNV-1a of the JSON text otherwise.
fn key_hash(body: &[u8], field: &str) -> Result<u64, String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("body is not JSON ({e}), so key field `{field}` cannot be read"))?;
    match value.get(field) {
        Some(serde_json::Value::String(s)) => Ok(coreline_key_hash(b's', s.as_bytes())),
        Some(serde_json::Value::Bool(b)) => Ok(coreline_key_hash(b'b', &[u8::from(*b)])),
        Some(serde_json::Value::Number(n)) if n.is_i64() => Ok(coreline_key_hash(
            b'i',
            &n.as_i64().unwrap_or_default().to_le_bytes(),
        )),
        Some(v) => Ok(fnv1a(v.to_string().as_bytes())),
        None => Err(format!("body has no key field `{field}`")),
    }
}

impl RequestPool {
    /// Renders and frames every request of the pool.
    pub fn build(spec: &RequestSpec) -> Result<RequestPool, String> {
        let mut rng = Rng::new(spec.seed);
        let bodies: Vec<Vec<u8>> = match &spec.body {
            BodySource::Empty => vec![Vec::new()],
            BodySource::Lines(lines) => lines.iter().map(|l| l.as_bytes().to_vec()).collect(),
            BodySource::Template(t) => (0..spec.pool.max(1))
                .map(|i| {
                    let mut out = Vec::new();
                    t.render(&mut rng, i as u64, &mut out);
                    out
                })
                .collect(),
        };
        if bodies.is_empty() {
            return Err("no request bodies (empty body file?)".into());
        }
        let mut pool = RequestPool {
            bytes: Vec::new(),
            spans: Vec::with_capacity(bodies.len()),
            key_hashes: Vec::with_capacity(bodies.len()),
        };
        for body in &bodies {
            let start = pool.bytes.len();
            let head = if matches!(spec.body, BodySource::Empty) {
                format!(
                    "{} {} HTTP/1.1\r\nHost: {}\r\n\r\n",
                    spec.method, spec.path, spec.host
                )
            } else {
                format!(
                    "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    spec.method,
                    spec.path,
                    spec.host,
                    body.len()
                )
            };
            pool.bytes.extend_from_slice(head.as_bytes());
            pool.bytes.extend_from_slice(body);
            pool.spans.push((start, pool.bytes.len() - start));
            pool.key_hashes.push(match &spec.key_field {
                Some(field) => key_hash(body, field)?,
                None => 0,
            });
        }
        Ok(pool)
    }

    /// Number of distinct requests.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// The `i`-th request (wrapping), fully framed.
    pub fn request(&self, i: usize) -> &[u8] {
        let (start, len) = self.spans[i % self.spans.len()];
        &self.bytes[start..start + len]
    }

    /// Key hash of the `i`-th request (wrapping); 0 without a key field.
    pub fn key_hash(&self, i: usize) -> u64 {
        self.key_hashes[i % self.key_hashes.len()]
    }

    /// Mean request size in bytes (head + body).
    pub fn mean_len(&self) -> usize {
        self.bytes.len() / self.spans.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, seed: u64) -> String {
        let mut out = Vec::new();
        Template::parse(t)
            .unwrap()
            .render(&mut Rng::new(seed), 7, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn coreline_key_hash_matches_the_runtime() {
        use coreline::row::Val;
        for key in ["u0", "u42", "hello world", ""] {
            assert_eq!(
                coreline_key_hash(b's', key.as_bytes()),
                coreline::state::key_hash(Val::Str(key)),
                "{key:?}"
            );
        }
        for i in [0i64, 7, -1, 1 << 40] {
            assert_eq!(
                coreline_key_hash(b'i', &i.to_le_bytes()),
                coreline::state::key_hash(Val::Int(i))
            );
        }
    }

    #[test]
    fn json_template_renders_valid_varying_json() {
        let t = r#"{"foo":"{str:8..32}","bar":{int:0..1000},"k":"{pick:a|b}","n":{seq}}"#;
        let mut distinct = std::collections::HashSet::new();
        for seed in 0..50 {
            let s = render(t, seed);
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            let foo = v["foo"].as_str().unwrap();
            assert!((8..32).contains(&foo.len()), "{foo}");
            assert!(foo.bytes().all(|b| b.is_ascii_alphanumeric()));
            assert!((0..1000).contains(&v["bar"].as_i64().unwrap()));
            assert!(["a", "b"].contains(&v["k"].as_str().unwrap()));
            assert_eq!(v["n"], 7);
            distinct.insert(s);
        }
        assert!(distinct.len() > 40);
    }

    #[test]
    fn inclusive_ranges_and_literal_braces() {
        assert_eq!(render("{int:5..=5}", 1), "5");
        assert_eq!(render("{str:3..=3}", 1).len(), 3);
        assert_eq!(render("{not a placeholder}", 1), "{not a placeholder}");
    }

    #[test]
    fn template_errors_name_the_place_and_the_problem() {
        let e = Template::parse(r#"{"a":{int:5..5}}"#).unwrap_err();
        assert_eq!(e.at, 5);
        assert!(e.message.contains("empty"), "{e}");
        let e = Template::parse("xx{str:1..x}").unwrap_err();
        assert!(e.message.contains("`x` is not an integer"), "{e}");
        let e = Template::parse("{int:1..2").unwrap_err();
        assert!(e.message.contains("not closed"), "{e}");
        assert!(Template::parse("{str:1-2}").is_err());
    }

    #[test]
    fn pool_frames_requests_and_hashes_keys() {
        let spec = RequestSpec {
            method: "POST".into(),
            path: "/my_api".into(),
            host: "127.0.0.1".into(),
            body: BodySource::Template(Template::parse(r#"{"foo":"{pick:x|y}"}"#).unwrap()),
            pool: 16,
            key_field: Some("foo".into()),
            seed: 3,
        };
        let pool = RequestPool::build(&spec).unwrap();
        assert_eq!(pool.len(), 16);
        for i in 0..16 {
            let req = pool.request(i);
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut parsed = httparse::Request::new(&mut headers);
            let head = match parsed.parse(req).unwrap() {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => panic!("partial"),
            };
            let body = &req[head..];
            let cl = parsed
                .headers
                .iter()
                .find(|h| h.name == "Content-Length")
                .unwrap();
            assert_eq!(
                std::str::from_utf8(cl.value).unwrap(),
                body.len().to_string()
            );
            let foo: serde_json::Value = serde_json::from_slice(body).unwrap();
            let want = coreline_key_hash(b's', foo["foo"].as_str().unwrap().as_bytes());
            assert_eq!(pool.key_hash(i), want);
        }
        let missing = RequestSpec {
            key_field: Some("nope".into()),
            ..spec
        };
        assert!(
            RequestPool::build(&missing)
                .unwrap_err()
                .contains("no key field `nope`")
        );
    }
}
