//! Which of a source's files a download takes: `allow_patterns` and
//! `ignore_patterns` from the request's `config`, with `huggingface_hub`'s
//! semantics (`fnmatch` on the file's path in the repository: `*` crosses
//! `/`, `?`, `[seq]`, `[!seq]`, case-sensitive; a pattern ending in `/`
//! means everything below it), and `force_download`.
//!
//! A file is taken when it matches an allow pattern (any file, without
//! them: an empty list is no filter) and no ignore pattern. An allow pattern that matches no file of
//! the source is an error naming it: a typo must not be an empty success.
//! Ignore patterns may match nothing (generic lists such as `["*.bin",
//! "*.pt"]` are common).

use glob::{MatchOptions, Pattern};
use serde_json::{Map, Value};

use super::DownloadError;
use super::fetch::RemoteFile;

/// `fnmatch` semantics.
const FNMATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

/// The request's choice of files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Patterns a file must match one of (none: every file).
    pub allow: Vec<String>,
    /// Patterns a file must match none of.
    pub ignore: Vec<String>,
    /// Fetch again what is present and verified.
    pub force: bool,
}

/// A `config` value that cannot select files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// Not a pattern or a list of them.
    #[error("config.{0} must be a glob pattern or a list of them")]
    NotPatterns(&'static str),
    /// A pattern that does not parse.
    #[error("config.{key}: {pattern:?} is not a glob pattern ({reason})")]
    BadPattern {
        /// The key.
        key: &'static str,
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
    /// `force_download` that is not a boolean.
    #[error("config.force_download must be true or false")]
    Force,
}

impl Selection {
    /// Reads `allow_patterns`, `ignore_patterns` and `force_download`
    /// from a request's `config` (a list of strings or one string; a
    /// boolean, or `"true"`/`"false"` as string-only configs send it).
    pub fn from_config(config: &Map<String, Value>) -> Result<Selection, SelectionError> {
        let force = match config.get("force_download") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") || s.is_empty() => false,
            Some(_) => return Err(SelectionError::Force),
        };
        Ok(Selection {
            allow: patterns(config, "allow_patterns")?,
            ignore: patterns(config, "ignore_patterns")?,
            force,
        })
    }

    /// Keeps the files the patterns select, in order.
    pub fn apply(&self, files: Vec<RemoteFile>) -> Result<Vec<RemoteFile>, DownloadError> {
        if self.allow.is_empty() && self.ignore.is_empty() {
            return Ok(files);
        }
        let compile = |list: &[String]| -> Vec<Pattern> {
            // Checked when the request was read.
            list.iter()
                .filter_map(|p| Pattern::new(&widen(p)).ok())
                .collect()
        };
        let (allow, ignore) = (compile(&self.allow), compile(&self.ignore));
        let mut matched = vec![false; allow.len()];
        let mut kept = Vec::with_capacity(files.len());
        for file in files {
            let mut allowed = allow.is_empty();
            for (i, pattern) in allow.iter().enumerate() {
                if pattern.matches_with(&file.rel, FNMATCH) {
                    matched[i] = true;
                    allowed = true;
                }
            }
            if allowed && !ignore.iter().any(|p| p.matches_with(&file.rel, FNMATCH)) {
                kept.push(file);
            }
        }
        let unmatched: Vec<&str> = self
            .allow
            .iter()
            .zip(&matched)
            .filter(|(_, m)| !**m)
            .map(|(p, _)| p.as_str())
            .collect();
        if !unmatched.is_empty() {
            return Err(DownloadError::NotFound(format!(
                "allow_patterns {unmatched:?} match no file of the source"
            )));
        }
        if kept.is_empty() {
            return Err(DownloadError::NotFound(
                "allow_patterns and ignore_patterns leave no file to download".into(),
            ));
        }
        Ok(kept)
    }
}

/// `dir/` means everything below `dir`, as `huggingface_hub` reads it;
/// `**` is fnmatch's `*` (the glob crate would read it as "any
/// directories, or none").
fn widen(pattern: &str) -> String {
    let mut pattern = pattern.to_owned();
    while pattern.contains("**") {
        pattern = pattern.replace("**", "*");
    }
    if pattern.ends_with('/') {
        pattern.push('*');
    }
    pattern
}

fn patterns(config: &Map<String, Value>, key: &'static str) -> Result<Vec<String>, SelectionError> {
    let list = match config.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(SelectionError::NotPatterns(key))?,
        Some(_) => return Err(SelectionError::NotPatterns(key)),
    };
    for pattern in &list {
        Pattern::new(&widen(pattern)).map_err(|e| SelectionError::BadPattern {
            key,
            pattern: pattern.clone(),
            reason: e.msg.to_owned(),
        })?;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::verify::Expect;

    fn files(names: &[&str]) -> Vec<RemoteFile> {
        names
            .iter()
            .map(|name| RemoteFile {
                rel: (*name).to_owned(),
                locator: (*name).to_owned(),
                size: 1,
                expect: Expect::SizeOnly,
                version: String::new(),
            })
            .collect()
    }

    fn select(config: Value, names: &[&str]) -> Result<Vec<String>, String> {
        let Value::Object(config) = config else {
            unreachable!()
        };
        let selection = Selection::from_config(&config).map_err(|e| e.to_string())?;
        selection
            .apply(files(names))
            .map(|kept| kept.into_iter().map(|f| f.rel).collect())
            .map_err(|e| e.to_string())
    }

    const REPO: &[&str] = &[
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "pytorch_model.bin",
        "original/consolidated.pth",
        "original/params.json",
        "README.md",
    ];

    #[test]
    fn huggingface_hub_semantics() {
        use serde_json::json;
        assert_eq!(
            select(
                json!({ "allow_patterns": ["*.json", "*.safetensors"] }),
                REPO
            )
            .unwrap(),
            [
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "original/params.json"
            ]
        );
        // `*` crosses `/`; a trailing `/` means the whole directory.
        assert_eq!(
            select(
                json!({ "ignore_patterns": ["original/", "*.bin", "*.md"] }),
                REPO
            )
            .unwrap(),
            [
                "config.json",
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        assert_eq!(
            select(json!({ "allow_patterns": "model-0000?-of-*.safetensors", "ignore_patterns": "model-00002-*" }), REPO)
                .unwrap(),
            ["model-00001-of-00002.safetensors"]
        );
        assert_eq!(
            select(json!({ "allow_patterns": ["[Rr]EADME.md"] }), REPO).unwrap(),
            ["README.md"]
        );
        // `**` is `*`: `**/*.json` needs a `/`, as fnmatch reads it.
        assert_eq!(
            select(json!({ "allow_patterns": ["**/*.json"] }), REPO).unwrap(),
            ["original/params.json"]
        );
        // Case-sensitive, as fnmatch on Linux.
        assert!(select(json!({ "allow_patterns": ["readme.md"] }), REPO).is_err());
        // Ignore patterns may match nothing.
        assert_eq!(
            select(json!({ "ignore_patterns": ["*.pt"] }), REPO)
                .unwrap()
                .len(),
            REPO.len()
        );
        assert_eq!(select(json!({}), REPO).unwrap().len(), REPO.len());
    }

    #[test]
    fn patterns_that_select_nothing_are_errors_naming_them() {
        use serde_json::json;
        let error = select(
            json!({ "allow_patterns": ["*.json", "*.gguf", "tokenizer*"] }),
            REPO,
        )
        .unwrap_err();
        assert!(error.contains(r#"["*.gguf", "tokenizer*"]"#), "{error}");
        assert!(!error.contains(r#""*.json""#), "{error}");
        let error = select(json!({ "ignore_patterns": ["*"] }), REPO).unwrap_err();
        assert!(error.contains("no file"), "{error}");
    }

    #[test]
    fn config_values() {
        use serde_json::json;
        for (config, expected) in [
            (json!({ "allow_patterns": 3 }), "allow_patterns must be"),
            (
                json!({ "ignore_patterns": ["ok", 1] }),
                "ignore_patterns must be",
            ),
            (
                json!({ "allow_patterns": ["[unclosed"] }),
                "not a glob pattern",
            ),
            (json!({ "force_download": "yes" }), "force_download"),
        ] {
            let error = select(config, REPO).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        let Value::Object(config) = json!({ "force_download": "true", "allow_patterns": [] })
        else {
            unreachable!()
        };
        let selection = Selection::from_config(&config).unwrap();
        assert!(selection.force && selection.allow.is_empty());
    }
}
