//! SQL `LIKE` patterns: `%` matches any run of characters, `_` exactly one
//! character (newlines included), and the escape character (default `\`)
//! makes the next `%`, `_` or escape character literal. As in Spark, an
//! escape followed by anything else, or a pattern ending in the escape
//! character, is invalid.
//!
//! Constant patterns are compiled once into a [`Matcher`], which recognises
//! the common shapes (`abc`, `abc%`, `%abc`, `%abc%`) and compares bytes
//! directly; other patterns run a backtracking wildcard matcher over
//! [`LikeTok`]s that needs no allocation and is linear in practice.

/// One element of a tokenized pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LikeTok {
    /// A character that must match itself.
    Lit(char),
    /// `_`: any one character.
    One,
    /// `%`: any run of characters, possibly empty.
    Many,
}

/// Why a pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PatternError {
    /// The escape character precedes something other than `%`, `_` or
    /// itself.
    BadEscape(char),
    /// The pattern ends with the escape character.
    TrailingEscape,
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PatternError::BadEscape(c) => {
                write!(
                    f,
                    "the escape character may only precede '%', '_' or itself, not '{c}'"
                )
            }
            PatternError::TrailingEscape => {
                f.write_str("the pattern ends with the escape character")
            }
        }
    }
}

/// Tokenizes `pattern` into `out` (cleared first; reused buffers do not
/// allocate once large enough). Consecutive `%` collapse into one.
pub(crate) fn tokenize_into(
    pattern: &str,
    escape: char,
    out: &mut Vec<LikeTok>,
) -> Result<(), PatternError> {
    out.clear();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let tok = if c == escape {
            match chars.next() {
                Some(n) if n == '%' || n == '_' || n == escape => LikeTok::Lit(n),
                Some(n) => return Err(PatternError::BadEscape(n)),
                None => return Err(PatternError::TrailingEscape),
            }
        } else if c == '%' {
            LikeTok::Many
        } else if c == '_' {
            LikeTok::One
        } else {
            LikeTok::Lit(c)
        };
        if !(tok == LikeTok::Many && out.last() == Some(&LikeTok::Many)) {
            out.push(tok);
        }
    }
    Ok(())
}

/// Matches `s` against a tokenized pattern.
///
/// The classic greedy algorithm for `*`/`?` wildcards: on a mismatch, retry
/// from the last `%` with it swallowing one more character. One backtrack
/// point suffices because a later `%` subsumes every earlier choice.
pub(crate) fn match_tokens(toks: &[LikeTok], s: &str) -> bool {
    let (mut ti, mut si) = (0usize, 0usize);
    // (token index after the last `%`, subject index it resumes from)
    let mut retry: Option<(usize, usize)> = None;
    loop {
        if let Some(&tok) = toks.get(ti) {
            let next = s[si..].chars().next();
            match (tok, next) {
                (LikeTok::Many, _) => {
                    ti += 1;
                    retry = Some((ti, si));
                    continue;
                }
                (LikeTok::One, Some(c)) => {
                    ti += 1;
                    si += c.len_utf8();
                    continue;
                }
                (LikeTok::Lit(l), Some(c)) if l == c => {
                    ti += 1;
                    si += c.len_utf8();
                    continue;
                }
                _ => {}
            }
        } else if si == s.len() {
            return true;
        }
        match retry {
            Some((rt, rs)) => match s[rs..].chars().next() {
                Some(c) => {
                    let rs = rs + c.len_utf8();
                    retry = Some((rt, rs));
                    ti = rt;
                    si = rs;
                }
                None => return false,
            },
            None => return false,
        }
    }
}

/// A compiled constant pattern.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// `%`: any string.
    Any,
    /// No wildcard: equality.
    Exact(String),
    /// `abc%`.
    Prefix(String),
    /// `%abc`.
    Suffix(String),
    /// `%abc%`.
    Contains(String),
    /// Anything else.
    General(Vec<LikeTok>),
}

impl Matcher {
    /// Compiles a constant pattern.
    pub(crate) fn compile(pattern: &str, escape: char) -> Result<Matcher, PatternError> {
        let mut toks = Vec::new();
        tokenize_into(pattern, escape, &mut toks)?;
        if toks.contains(&LikeTok::One) {
            return Ok(Matcher::General(toks));
        }
        // Only called on runs between `%`s, which hold literals only.
        let text = |t: &[LikeTok]| -> String {
            t.iter()
                .filter_map(|t| match t {
                    LikeTok::Lit(c) => Some(*c),
                    _ => None,
                })
                .collect()
        };
        let many: Vec<usize> = (0..toks.len())
            .filter(|&i| toks[i] == LikeTok::Many)
            .collect();
        let last = toks.len().wrapping_sub(1);
        Ok(match many.as_slice() {
            [] => Matcher::Exact(text(&toks)),
            [0] if toks.len() == 1 => Matcher::Any,
            [0] => Matcher::Suffix(text(&toks[1..])),
            [i] if *i == last => Matcher::Prefix(text(&toks[..last])),
            [0, i] if *i == last => Matcher::Contains(text(&toks[1..last])),
            _ => Matcher::General(toks),
        })
    }

    /// Whether `s` matches.
    #[inline]
    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Exact(p) => s == p,
            Matcher::Prefix(p) => s.starts_with(p.as_str()),
            Matcher::Suffix(p) => s.ends_with(p.as_str()),
            Matcher::Contains(p) => s.contains(p.as_str()),
            Matcher::General(toks) => match_tokens(toks, s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(s: &str, p: &str) -> bool {
        let m = Matcher::compile(p, '\\').unwrap();
        let mut toks = Vec::new();
        tokenize_into(p, '\\', &mut toks).unwrap();
        let general = match_tokens(&toks, s);
        assert_eq!(
            m.matches(s),
            general,
            "{s:?} LIKE {p:?}: fast path disagrees"
        );
        general
    }

    #[test]
    fn wildcards() {
        assert!(like("abc", "abc"));
        assert!(!like("abcd", "abc"));
        assert!(like("abc", "a%"));
        assert!(like("abc", "%c"));
        assert!(like("abc", "%b%"));
        assert!(like("abc", "%"));
        assert!(like("", "%"));
        assert!(!like("", "_"));
        assert!(like("abc", "a_c"));
        assert!(!like("abbc", "a_c"));
        assert!(like("abbc", "a%c"));
        assert!(like("axxbyyc", "a%b%c"));
        assert!(!like("axxbyy", "a%b%c"));
        assert!(like("mississippi", "%iss%ppi"));
        assert!(like("aaa", "%a%a%a%"));
        assert!(!like("aa", "%a%a%a%"));
        assert!(like("héllo", "h_llo"));
        assert!(like("a\nb", "a_b"));
        assert!(like("ab", "a%%b"));
        assert!(!like("ABC", "abc"));
    }

    #[test]
    fn escapes() {
        assert!(like("50%", "50\\%"));
        assert!(!like("500", "50\\%"));
        assert!(like("a_b", "a\\_b"));
        assert!(!like("axb", "a\\_b"));
        assert!(like("a\\b", "a\\\\b"));
        assert_eq!(
            Matcher::compile("a\\b", '\\').unwrap_err(),
            PatternError::BadEscape('b')
        );
        assert_eq!(
            Matcher::compile("ab\\", '\\').unwrap_err(),
            PatternError::TrailingEscape
        );
        let m = Matcher::compile("10!%%", '!').unwrap();
        assert!(m.matches("10% off"));
        assert!(!m.matches("100"));
    }

    #[test]
    fn shapes_are_recognised() {
        assert!(matches!(Matcher::compile("%", '\\'), Ok(Matcher::Any)));
        assert!(matches!(Matcher::compile("%%", '\\'), Ok(Matcher::Any)));
        assert!(matches!(
            Matcher::compile("ab", '\\'),
            Ok(Matcher::Exact(_))
        ));
        assert!(matches!(
            Matcher::compile("ab%", '\\'),
            Ok(Matcher::Prefix(_))
        ));
        assert!(matches!(
            Matcher::compile("%ab", '\\'),
            Ok(Matcher::Suffix(_))
        ));
        assert!(matches!(
            Matcher::compile("%ab%", '\\'),
            Ok(Matcher::Contains(_))
        ));
        assert!(matches!(
            Matcher::compile("a%b", '\\'),
            Ok(Matcher::General(_))
        ));
        assert!(matches!(Matcher::compile("\\%%", '\\'), Ok(Matcher::Prefix(p)) if p == "%"));
    }
}
