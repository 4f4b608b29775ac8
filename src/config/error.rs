//! Where a configuration value was written and what was wrong with it:
//! spans, the [`Source`] text, [`ConfigError`] with its rendering, and the
//! dotted keys errors name.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned as TomlSpanned;

/// A byte range into the configuration text.
pub type Span = Range<usize>;

/// A value and the byte range of the configuration text it came from.
///
/// For strings the span covers the literal including its quotes; use
/// [`Spanned::subspan`] to point at part of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    pub(crate) fn from_toml(value: TomlSpanned<T>) -> Spanned<T> {
        let span = value.span();
        Spanned {
            value: value.into_inner(),
            span,
        }
    }
}

impl Spanned<String> {
    /// The source span of the bytes `within` of the string's value (say, one
    /// identifier of an expression), when the value is written verbatim in the
    /// source (no escape sequences). Otherwise the span of the whole literal.
    pub fn subspan(&self, source: &Source, within: Range<usize>) -> Span {
        let Some(raw) = source.text.get(self.span.clone()) else {
            return self.span.clone();
        };
        match raw.find(self.value.as_str()) {
            Some(at) if within.start <= within.end && within.end <= self.value.len() => {
                let start = self.span.start + at;
                start + within.start..start + within.end
            }
            _ => self.span.clone(),
        }
    }
}

/// A configuration file: where it came from and its text. Spans index `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The path the text was read from (as given; used in error messages and
    /// to resolve relative paths in the file).
    pub path: PathBuf,
    /// The file's contents.
    pub text: String,
}

impl Source {
    /// A source from a path and its text.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Source {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }

    /// The 1-based line and column (in characters) of a byte offset, and the
    /// text of that line. Offsets past the end point just after the last byte.
    fn locate(&self, offset: usize) -> (usize, usize, &str) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line = self.text[..line_start].matches('\n').count() + 1;
        let column = self.text[line_start..offset].chars().count() + 1;
        let text = self.text[line_start..line_end].trim_end_matches('\r');
        (line, column, text)
    }
}

/// An error in a configuration file: where (file, line, column, dotted key),
/// what was wrong and what was expected.
///
/// Rendered as `path:line:column: key: message; expected ...` and, when the
/// position is known, a second and third line quoting the source line with a
/// caret under the offending span. Boxed: it is built once, at start-up, and
/// keeps `Result<_, ConfigError>` one pointer wide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(Box<Detail>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Detail {
    path: PathBuf,
    line: usize,
    column: usize,
    key: String,
    message: String,
    expected: Option<String>,
    source_line: Option<String>,
    width: usize,
}

impl ConfigError {
    /// An error at `span` of `source`, for the value at dotted `key` (see
    /// [`route_key`] and [`step_key`]).
    pub fn at(source: &Source, span: Span, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column, text) = source.locate(span.start);
        let (end_line, end_column, _) = source.locate(span.end);
        let width = if end_line == line && end_column > column {
            end_column - column
        } else {
            // A span running past its line: mark to the end of the line.
            text.chars().count().saturating_sub(column - 1)
        };
        ConfigError(Box::new(Detail {
            path: source.path.clone(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
            expected: None,
            source_line: Some(text.to_owned()),
            width: width.max(1),
        }))
    }

    /// An error about the whole file (it cannot be read, say).
    pub fn file(path: &Path, message: impl Into<String>) -> ConfigError {
        ConfigError(Box::new(Detail {
            path: path.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message: message.into(),
            expected: None,
            source_line: None,
            width: 0,
        }))
    }

    /// Adds what was expected, rendered after the message as `; expected ...`.
    pub fn with_expected(mut self, expected: impl Into<String>) -> ConfigError {
        self.0.expected = Some(expected.into());
        self
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// 1-based line; 0 when the error concerns the whole file.
    pub fn line(&self) -> usize {
        self.0.line
    }

    /// 1-based column, counted in characters; 0 when [`line`](Self::line) is 0.
    pub fn column(&self) -> usize {
        self.0.column
    }

    /// Dotted key of the offending value, like `route[0].step[1].filter.expr`;
    /// empty when there is none.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// What was wrong.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// What was expected instead, if that can be said.
    pub fn expected(&self) -> Option<&str> {
        self.0.expected.as_deref()
    }

    /// The source line holding the error, quoted under the message.
    pub fn source_line(&self) -> Option<&str> {
        self.0.source_line.as_deref()
    }

    /// How many characters of the source line the caret marks.
    pub fn width(&self) -> usize {
        self.0.width
    }

    pub(crate) fn from_toml(source: &Source, error: &toml::de::Error) -> ConfigError {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim_end();
        let key = if span == (0..0) {
            // The document itself (a missing top-level table, say).
            String::new()
        } else if message == "duplicate key" {
            // The spanned tree keeps only the first of the two keys: name
            // the duplicate after the key written just before it.
            let (_, preceding) = key_path_at(&source.text, span.start);
            let parent = preceding.rsplit_once('.').map_or("", |(parent, _)| parent);
            let name = source.text.get(span.clone()).unwrap_or("");
            match (parent.is_empty(), name.is_empty()) {
                (_, true) => preceding,
                (true, false) => name.to_owned(),
                (false, false) => format!("{parent}.{name}"),
            }
        } else {
            key_path_at(&source.text, span.start).0
        };
        // serde's messages read "<what>, expected <what>"; the last one is the
        // real separator (a quoted string value may contain the same words).
        let (message, expected) = match message.rfind(", expected ") {
            Some(at) => (&message[..at], Some(&message[at + ", expected ".len()..])),
            None => (message, None),
        };
        let error = ConfigError::at(source, span, &key, in_toml_terms(message));
        match expected {
            Some(expected) => error.with_expected(in_toml_terms(expected)),
            None => error,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &*self.0;
        write!(f, "{}", d.path.display())?;
        if d.line > 0 {
            write!(f, ":{}:{}", d.line, d.column)?;
        }
        f.write_str(": ")?;
        if !d.key.is_empty() {
            write!(f, "{}: ", d.key)?;
        }
        f.write_str(&d.message)?;
        if let Some(expected) = &d.expected {
            write!(f, "; expected {expected}")?;
        }
        if let (Some(text), true) = (&d.source_line, d.line > 0) {
            let number = d.line.to_string();
            write!(
                f,
                "\n {number} | {text}\n {:width$} | ",
                "",
                width = number.len()
            )?;
            // Keep tabs so the caret lines up under tab-indented text.
            for c in text.chars().take(d.column - 1) {
                f.write_str(if c == '\t' { "\t" } else { " " })?;
            }
            for _ in 0..d.width {
                f.write_str("^")?;
            }
        }
        Ok(())
    }
}

/// The dotted key of a route's value: `route_key(0, "path")` is
/// `route[0].path`; an empty `field` names the route itself.
pub fn route_key(route: usize, field: &str) -> String {
    if field.is_empty() {
        format!("route[{route}]")
    } else {
        format!("route[{route}].{field}")
    }
}

/// The dotted key of a step's value: `step_key(0, 1, "filter.expr")` is
/// `route[0].step[1].filter.expr`; an empty `field` names the step itself.
pub fn step_key(route: usize, step: usize, field: &str) -> String {
    if field.is_empty() {
        format!("route[{route}].step[{step}]")
    } else {
        format!("route[{route}].step[{step}].{field}")
    }
}

/// Rewrites serde's data-model words into TOML's: a map or a `struct RawX`
/// is a table, a sequence an array, `i64` an integer.
fn in_toml_terms(text: &str) -> String {
    match text {
        "i64" | "u64" | "u16" | "usize" => "an integer".to_owned(),
        "a map" => "a table".to_owned(),
        "a sequence" => "an array".to_owned(),
        t if t.starts_with("struct Raw") => "a table".to_owned(),
        t => t
            .strip_suffix(": map")
            .map(|head| format!("{head}: table"))
            .or_else(|| {
                t.strip_suffix(": sequence")
                    .map(|head| format!("{head}: array"))
            })
            .unwrap_or_else(|| t.to_owned()),
    }
}

/// The dotted key path of the innermost key or value whose span holds
/// `offset`, and the path of the last key written at or before `offset`;
/// found by re-reading the document as a spanned tree (only done when
/// reporting a serde error, whose own key path toml keeps private).
fn key_path_at(text: &str, offset: usize) -> (String, String) {
    use toml::de::{DeTable, DeValue};

    struct Best {
        depth: usize,
        len: usize,
        path: String,
    }
    fn holds(span: &Span, offset: usize) -> bool {
        span.contains(&offset) || (span.is_empty() && span.start == offset)
    }
    fn consider(best: &mut Option<Best>, depth: usize, span: &Span, path: &str) {
        let better = match best {
            None => true,
            Some(b) => depth > b.depth || (depth == b.depth && span.len() < b.len),
        };
        if better {
            *best = Some(Best {
                depth,
                len: span.len(),
                path: path.to_owned(),
            });
        }
    }
    struct Found {
        best: Option<Best>,
        preceding: Option<(usize, String)>,
    }
    fn walk_table(t: &DeTable<'_>, prefix: &str, depth: usize, offset: usize, found: &mut Found) {
        for (key, value) in t.iter() {
            let name = key.get_ref();
            let bare = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            let path = match (prefix.is_empty(), bare) {
                (true, true) => name.to_string(),
                (true, false) => format!("{name:?}"),
                (false, true) => format!("{prefix}.{name}"),
                (false, false) => format!("{prefix}.{name:?}"),
            };
            for span in [key.span(), value.span()] {
                if holds(&span, offset) {
                    consider(&mut found.best, depth, &span, &path);
                }
            }
            let start = key.span().start;
            if start <= offset && found.preceding.as_ref().is_none_or(|(s, _)| start >= *s) {
                found.preceding = Some((start, path.clone()));
            }
            walk_value(value.get_ref(), &path, depth + 1, offset, found);
        }
    }
    fn walk_value(v: &DeValue<'_>, path: &str, depth: usize, offset: usize, found: &mut Found) {
        match v {
            DeValue::Table(t) => walk_table(t, path, depth, offset, found),
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    if holds(&item.span(), offset) {
                        consider(&mut found.best, depth, &item.span(), &path);
                    }
                    walk_value(item.get_ref(), &path, depth + 1, offset, found);
                }
            }
            _ => {}
        }
    }

    let (root, _) = DeTable::parse_recoverable(text);
    let mut found = Found {
        best: None,
        preceding: None,
    };
    walk_table(root.get_ref(), "", 0, offset, &mut found);
    (
        found.best.map(|b| b.path).unwrap_or_default(),
        found.preceding.map(|(_, p)| p).unwrap_or_default(),
    )
}
