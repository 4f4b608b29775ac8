//! A model's version: the content hash of its file, and the model formats a
//! `PUT /models` body may be in.
//!
//! The version is the XXH3-128 hash of the file's bytes as 32 hex digits:
//! the same bytes always give the same version (on every shard, across
//! restarts), and the checkpoint keeps the file under that name
//! (`<dir>/models/<version>.<ext>`). XXH3 is not a cryptographic hash: it
//! names versions, it does not authenticate them (the admin port's guard
//! does that).

use twox_hash::XxHash3_128;

/// The version of a model file: XXH3-128 of its bytes, 32 lower-case hex
/// digits.
pub fn content_version(bytes: &[u8]) -> String {
    format!("{:032x}", XxHash3_128::oneshot(bytes))
}

/// A model file format, as [`super::Model::load`] tells them apart by
/// extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// ONNX protobuf (`.onnx`).
    Onnx,
    /// XGBoost `save_model("m.json")` (`.json`).
    XGBoost,
    /// LightGBM `save_model("m.txt")` (`.txt`).
    LightGbm,
    /// A linear model as JSON (`.linear`).
    Linear,
}

/// The names `?format=` accepts, for error messages.
pub const FORMAT_NAMES: &str = "onnx, xgboost, lightgbm, linear";

impl Format {
    /// The format named by `?format=` (`onnx`, `xgboost`, `lightgbm`,
    /// `linear`).
    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name.to_ascii_lowercase().as_str() {
            "onnx" => Format::Onnx,
            "xgboost" | "xgb" => Format::XGBoost,
            "lightgbm" | "lgbm" => Format::LightGbm,
            "linear" => Format::Linear,
            _ => return None,
        })
    }

    /// The format a `Content-Type` names, if it names one:
    /// `application/onnx` / `application/x-onnx`, or
    /// `application/vnd.coreline.<format>`.
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match ct.as_str() {
            "application/onnx" | "application/x-onnx" => Some(Format::Onnx),
            _ => ct
                .strip_prefix("application/vnd.coreline.")
                .and_then(Format::from_name),
        }
    }

    /// Guesses the format from the first bytes: a JSON object with a
    /// `"learner"` key is XGBoost, one with `"weights"` a linear model; a
    /// text starting `tree` or `version=` is LightGBM; bytes starting with
    /// protobuf field 1 as a varint (`0x08`, an ONNX `ir_version`) are ONNX.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        let text = bytes.trim_ascii_start();
        if text.first() == Some(&b'{') {
            let head = &text[..text.len().min(4096)];
            let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
            if has(b"\"learner\"") {
                return Some(Format::XGBoost);
            }
            if has(b"\"weights\"") {
                return Some(Format::Linear);
            }
            return None;
        }
        if text.starts_with(b"tree\n") || text.starts_with(b"version=") {
            return Some(Format::LightGbm);
        }
        if bytes.first() == Some(&0x08) {
            return Some(Format::Onnx);
        }
        None
    }

    /// The file extension [`super::Model::load`] reads this format from.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Onnx => "onnx",
            Format::XGBoost => "json",
            Format::LightGbm => "txt",
            Format::Linear => "linear",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_content_hashes() {
        assert_eq!(content_version(b"abc"), content_version(b"abc"));
        assert_ne!(content_version(b"abc"), content_version(b"abd"));
        assert_eq!(content_version(b"").len(), 32);
    }

    #[test]
    fn sniffs_each_format() {
        assert_eq!(Format::sniff(b" {\"learner\": {}}"), Some(Format::XGBoost));
        assert_eq!(Format::sniff(b"{\"weights\": [1]}"), Some(Format::Linear));
        assert_eq!(Format::sniff(b"tree\nversion=v4\n"), Some(Format::LightGbm));
        assert_eq!(Format::sniff(&[0x08, 0x07, 0x12]), Some(Format::Onnx));
        assert_eq!(Format::sniff(b"{\"other\": 1}"), None);
        assert_eq!(Format::sniff(b"hello"), None);
        assert_eq!(
            Format::from_content_type("application/vnd.coreline.lightgbm; x=1"),
            Some(Format::LightGbm)
        );
        assert_eq!(Format::from_name("ONNX"), Some(Format::Onnx));
    }
}
