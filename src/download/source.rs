//! A download's `source` field: which kind of source, and where in it.
//! Every spelling the control planes send parses here: HuggingFace ids
//! bare or as `hf://` / `huggingface://` (with `@revision`, and
//! `datasets/`), ModelScope's `ms://`, `s3://`, `obs://` and `pvc://`.

use std::path::PathBuf;

/// Where the model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A HuggingFace repository: `namespace/name` (or a bare name),
    /// `hf://namespace/name[@revision]`, `huggingface://…`, and
    /// `hf://datasets/namespace/name` for a dataset.
    HuggingFace {
        /// The repository id, without `datasets/`.
        repo: String,
        /// The revision the source names (`@revision`); it beats
        /// `hf_revision`.
        revision: Option<String>,
        /// A dataset repository rather than a model.
        dataset: bool,
    },
    /// A ModelScope model repository: `ms://owner/name[@revision]`.
    ModelScope {
        /// `owner/name`.
        repo: String,
        /// The revision the source names (`@revision`); it beats
        /// `ms_revision`.
        revision: Option<String>,
    },
    /// An S3 bucket and key prefix.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix, possibly empty.
        prefix: String,
    },
    /// Huawei OBS: the S3 protocol against the OBS endpoint.
    Obs {
        /// The bucket.
        bucket: String,
        /// The key prefix, possibly empty.
        prefix: String,
    },
    /// A mounted volume: `pvc://models` is `/models`.
    Pvc {
        /// The absolute path.
        path: PathBuf,
    },
}

/// A `source` field that names no source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// `s3://` or `obs://` without a bucket.
    #[error("the bucket name is missing")]
    NoBucket,
    /// A `pvc://` path that is empty or climbs out with `..`.
    #[error("{0:?} is not a usable pvc:// path")]
    PvcPath(String),
    /// A scheme we do not download from.
    #[error(
        "unsupported scheme {0}://; use hf://, huggingface://, ms://, s3://, obs://, pvc:// or a HuggingFace repo id (namespace/name)"
    )]
    Scheme(String),
    /// `hf://` (or `huggingface://`) without a usable repository id or
    /// revision.
    #[error(
        "{0:?} is not a HuggingFace repository: use hf://namespace/name, hf://namespace/name@revision or hf://datasets/namespace/name"
    )]
    HuggingFace(String),
    /// `ms://` without a usable `owner/name` or revision.
    #[error(
        "{0:?} is not a ModelScope repository: use ms://owner/name or ms://owner/name@revision"
    )]
    ModelScope(String),
    /// Neither a URL-like source nor a repository id.
    #[error(
        "{0:?} is neither hf://, huggingface://, ms://, s3://, obs://, pvc:// nor a HuggingFace repo id (namespace/name)"
    )]
    Unrecognized(String),
}

impl Source {
    /// Parses a `source` field.
    pub fn parse(source: &str) -> Result<Source, SourceError> {
        if let Some(rest) = source
            .strip_prefix("hf://")
            .or_else(|| source.strip_prefix("huggingface://"))
        {
            return huggingface(rest).ok_or_else(|| SourceError::HuggingFace(source.to_owned()));
        }
        if let Some(rest) = source.strip_prefix("ms://") {
            return modelscope(rest).ok_or_else(|| SourceError::ModelScope(source.to_owned()));
        }
        if let Some(rest) = source.strip_prefix("s3://") {
            let (bucket, prefix) = bucket_and_prefix(rest)?;
            return Ok(Source::S3 { bucket, prefix });
        }
        if let Some(rest) = source.strip_prefix("obs://") {
            let (bucket, prefix) = bucket_and_prefix(rest)?;
            return Ok(Source::Obs { bucket, prefix });
        }
        if let Some(rest) = source.strip_prefix("pvc://") {
            let path = rest.trim_start_matches('/');
            if path.is_empty() || path.split('/').any(|part| part == "..") {
                return Err(SourceError::PvcPath(source.to_owned()));
            }
            return Ok(Source::Pvc {
                path: PathBuf::from("/").join(path),
            });
        }
        if let Some((scheme, _)) = source.split_once("://") {
            return Err(SourceError::Scheme(scheme.to_owned()));
        }
        if is_repo_id(source) {
            return Ok(Source::HuggingFace {
                repo: source.to_owned(),
                revision: None,
                dataset: false,
            });
        }
        Err(SourceError::Unrecognized(source.to_owned()))
    }

    /// The kind of source, for metrics and logs.
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::HuggingFace { .. } => SourceKind::HuggingFace,
            Source::ModelScope { .. } => SourceKind::ModelScope,
            Source::S3 { .. } => SourceKind::S3,
            Source::Obs { .. } => SourceKind::Obs,
            Source::Pvc { .. } => SourceKind::Pvc,
        }
    }
}

/// The kinds of source, as counted (the `source` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A HuggingFace repository.
    HuggingFace,
    /// A ModelScope repository.
    ModelScope,
    /// An S3 prefix.
    S3,
    /// An OBS prefix.
    Obs,
    /// A mounted directory.
    Pvc,
}

impl SourceKind {
    /// Every kind, in label order (`kind as usize` indexes it).
    pub const ALL: [SourceKind; 5] = [
        SourceKind::HuggingFace,
        SourceKind::ModelScope,
        SourceKind::S3,
        SourceKind::Obs,
        SourceKind::Pvc,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::HuggingFace => "huggingface",
            SourceKind::ModelScope => "modelscope",
            SourceKind::S3 => "s3",
            SourceKind::Obs => "obs",
            SourceKind::Pvc => "pvc",
        }
    }
}

/// A repository id as the Hub allows it: `name` or `namespace/name`, of
/// letters, digits, `-`, `_` and `.`.
fn is_repo_id(id: &str) -> bool {
    let is_part = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() <= 2 && parts.iter().all(|p| is_part(p))
}

/// `id[@revision]`; `None` if a revision is given but unusable. A
/// revision is a branch, tag or commit (`refs/pr/1` too): printable,
/// without spaces.
fn with_revision(rest: &str) -> Option<(&str, Option<&str>)> {
    let (id, revision) = match rest.split_once('@') {
        Some((id, revision)) => (id, Some(revision)),
        None => (rest, None),
    };
    if revision.is_some_and(|r| r.is_empty() || !r.bytes().all(|b| b.is_ascii_graphic())) {
        return None;
    }
    Some((id, revision))
}

/// What follows `hf://`: `[datasets/|models/]id[@revision]`.
fn huggingface(rest: &str) -> Option<Source> {
    let (id, revision) = with_revision(rest)?;
    let (dataset, id) = match (id.strip_prefix("datasets/"), id.strip_prefix("models/")) {
        (Some(id), _) => (true, id),
        (None, Some(id)) => (false, id),
        (None, None) => (false, id),
    };
    // `hf://org/repo/` as a path would be written; `hf://datasets/` stays empty.
    let id = id.strip_suffix('/').unwrap_or(id);
    is_repo_id(id).then(|| Source::HuggingFace {
        repo: id.to_owned(),
        revision: revision.map(str::to_owned),
        dataset,
    })
}

/// What follows `ms://`: `owner/name[@revision]` (ModelScope ids always
/// have an owner).
fn modelscope(rest: &str) -> Option<Source> {
    let (id, revision) = with_revision(rest)?;
    let id = id.strip_suffix('/').unwrap_or(id);
    (is_repo_id(id) && id.contains('/')).then(|| Source::ModelScope {
        repo: id.to_owned(),
        revision: revision.map(str::to_owned),
    })
}

fn bucket_and_prefix(rest: &str) -> Result<(String, String), SourceError> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(SourceError::NoBucket);
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_kinds_index_their_labels() {
        for (i, kind) in SourceKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{}", kind.as_str());
        }
    }

    #[test]
    fn huggingface_spellings() {
        let hf = |repo: &str, revision: Option<&str>, dataset| {
            Ok(Source::HuggingFace {
                repo: repo.into(),
                revision: revision.map(str::to_owned),
                dataset,
            })
        };
        for spelling in [
            "Qwen/Qwen3-0.6B",
            "hf://Qwen/Qwen3-0.6B",
            "huggingface://Qwen/Qwen3-0.6B",
            "hf://models/Qwen/Qwen3-0.6B",
            "hf://Qwen/Qwen3-0.6B/",
        ] {
            assert_eq!(
                Source::parse(spelling),
                hf("Qwen/Qwen3-0.6B", None, false),
                "{spelling}"
            );
        }
        assert_eq!(Source::parse("hf://gpt2"), hf("gpt2", None, false));
        assert_eq!(
            Source::parse("hf://Qwen/Qwen3-0.6B@v1.0"),
            hf("Qwen/Qwen3-0.6B", Some("v1.0"), false)
        );
        assert_eq!(
            Source::parse("huggingface://org/m@refs/pr/1"),
            hf("org/m", Some("refs/pr/1"), false)
        );
        assert_eq!(
            Source::parse("hf://datasets/org/corpus"),
            hf("org/corpus", None, true)
        );
        assert_eq!(
            Source::parse("hf://datasets/org/corpus@main"),
            hf("org/corpus", Some("main"), true)
        );
        for bad in [
            "hf://",
            "hf://a/b/c",
            "hf://datasets/",
            "hf://org/m@",
            "hf://org/m@with space",
            "hf://../x",
            "hf://org/m b",
        ] {
            assert!(
                matches!(Source::parse(bad), Err(SourceError::HuggingFace(_))),
                "{bad}: {:?}",
                Source::parse(bad)
            );
        }
    }

    #[test]
    fn modelscope_spellings() {
        let ms = |repo: &str, revision: Option<&str>| {
            Ok(Source::ModelScope {
                repo: repo.into(),
                revision: revision.map(str::to_owned),
            })
        };
        assert_eq!(
            Source::parse("ms://Qwen/Qwen3-0.6B"),
            ms("Qwen/Qwen3-0.6B", None)
        );
        assert_eq!(
            Source::parse("ms://Qwen/Qwen3-0.6B/"),
            ms("Qwen/Qwen3-0.6B", None)
        );
        assert_eq!(
            Source::parse("ms://Qwen/Qwen3-0.6B@v1.0.0"),
            ms("Qwen/Qwen3-0.6B", Some("v1.0.0"))
        );
        for bad in [
            "ms://",
            "ms://gpt2",
            "ms://a/b/c",
            "ms://org/m@",
            "ms://../x",
            "ms://o/m b",
        ] {
            assert!(
                matches!(Source::parse(bad), Err(SourceError::ModelScope(_))),
                "{bad}: {:?}",
                Source::parse(bad)
            );
        }
    }

    #[test]
    fn sources() {
        assert_eq!(
            Source::parse("Qwen/Qwen3-0.6B"),
            Ok(Source::HuggingFace {
                repo: "Qwen/Qwen3-0.6B".into(),
                revision: None,
                dataset: false,
            })
        );
        assert_eq!(
            Source::parse("gpt2"),
            Ok(Source::HuggingFace {
                repo: "gpt2".into(),
                revision: None,
                dataset: false,
            })
        );
        assert_eq!(
            Source::parse("s3://bucket/models/llama/"),
            Ok(Source::S3 {
                bucket: "bucket".into(),
                prefix: "models/llama/".into()
            })
        );
        assert_eq!(
            Source::parse("s3://bucket"),
            Ok(Source::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            Source::parse("obs://b/p"),
            Ok(Source::Obs {
                bucket: "b".into(),
                prefix: "p".into()
            })
        );
        assert_eq!(
            Source::parse("pvc://models/llama"),
            Ok(Source::Pvc {
                path: "/models/llama".into()
            })
        );
        assert_eq!(
            Source::parse("pvc:///models"),
            Ok(Source::Pvc {
                path: "/models".into()
            })
        );
        for bad in [
            "gs://bucket/x",
            "s3://",
            "s3:///key",
            "pvc://",
            "pvc://a/../etc",
            "a/b/c",
            "../x",
            "a b/c",
            "",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Source::parse("gs://b")
                .unwrap_err()
                .to_string()
                .contains("unsupported scheme gs://")
        );
    }
}
