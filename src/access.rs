//! Who may change what: the optional API token the mutating endpoints
//! ask for, and the directories downloads and LoRA adapters may be
//! written to.
//!
//! Both are off unless configured, as in the Python sidecar; reads
//! (`/health`, `/ready`, `/metrics`, download status) stay open so that
//! probes and Prometheus need no credentials.

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use http::StatusCode;

use crate::http::Request;
pub use crate::secret::Secret;

/// The access policy of the API.
#[derive(Default)]
pub struct Access {
    token: Option<Secret>,
    roots: Vec<PathBuf>,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token)
            .field("roots", &self.roots)
            .finish()
    }
}

/// A refusal: its status and the `detail` to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// 401 or 403.
    pub status: StatusCode,
    /// Why, without any secret.
    pub detail: String,
}

impl Access {
    /// A policy asking for `token` (when set and not empty) and confining
    /// writes under `roots` (when any). Roots must exist; they are
    /// resolved, so a symlink among them counts as its target.
    pub fn new(token: Option<Secret>, roots: &[PathBuf]) -> io::Result<Access> {
        let mut resolved = Vec::with_capacity(roots.len());
        for root in roots {
            if !root.is_absolute() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("allowed root {} is not an absolute path", root.display()),
                ));
            }
            let canonical = root.canonicalize().map_err(|e| {
                io::Error::new(e.kind(), format!("allowed root {}: {e}", root.display()))
            })?;
            resolved.push(canonical);
        }
        Ok(Access {
            token: token.filter(|t| !t.is_empty()),
            roots: resolved,
        })
    }

    /// Whether the API asks for a token.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// Checks `Authorization: Bearer <token>` on a mutating request.
    pub fn authorize(&self, req: &Request) -> Result<(), Denied> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let denied = |detail: &str| Denied {
            status: StatusCode::UNAUTHORIZED,
            detail: detail.to_owned(),
        };
        let Some(header) = &req.authorization else {
            return Err(denied(
                "Missing API token: send 'Authorization: Bearer <token>'",
            ));
        };
        let presented = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) => {
                Ok(())
            }
            Some(_) => Err(denied("Invalid API token")),
            None => Err(denied(
                "Unsupported authorization scheme: send 'Authorization: Bearer <token>'",
            )),
        }
    }

    /// Checks that `dir` (absolute, without `..`, as requests are
    /// checked to be) lies under an allowed root, symlinks resolved as
    /// far as the path exists.
    pub fn confine(&self, dir: &Path) -> Result<(), Denied> {
        if self.roots.is_empty() {
            return Ok(());
        }
        let resolved = resolve_existing_prefix(dir);
        if self.roots.iter().any(|root| resolved.starts_with(root)) {
            return Ok(());
        }
        let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        Err(Denied {
            status: StatusCode::FORBIDDEN,
            detail: format!(
                "output_dir {} is outside the allowed directories ({})",
                dir.display(),
                roots.join(", ")
            ),
        })
    }
}

/// `path` with its longest existing ancestor canonicalized and the rest
/// appended: a symlink inside an allowed root that points out of it is
/// judged by where it points.
fn resolve_existing_prefix(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            let mut resolved = canonical;
            for part in rest.iter().rev() {
                resolved.push(part);
            }
            return resolved;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(Component::Normal(name))) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            // Nothing of it exists, not even `/`: judge it as written.
            _ => return path.to_owned(),
        }
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&str>) -> Request {
        let raw = match authorization {
            Some(value) => format!(
                "POST /v1/download_model HTTP/1.1\r\nhost: x\r\nauthorization: {value}\r\n\r\n"
            ),
            None => "POST /v1/download_model HTTP/1.1\r\nhost: x\r\n\r\n".to_owned(),
        };
        crate::http::request::parse_head(raw.as_bytes(), &Default::default())
            .unwrap()
            .unwrap()
            .0
    }

    #[test]
    fn the_token_is_checked_only_when_set() {
        let open = Access::new(None, &[]).unwrap();
        assert!(open.authorize(&request(None)).is_ok());
        let empty = Access::new(Some(Secret::default()), &[]).unwrap();
        assert!(!empty.requires_token());

        let token: Secret = "s3cret-token".parse().unwrap();
        assert_eq!(format!("{token:?}"), "<redacted>");
        let access = Access::new(Some(token), &[]).unwrap();
        assert!(
            access
                .authorize(&request(Some("Bearer s3cret-token")))
                .is_ok()
        );
        assert!(
            access
                .authorize(&request(Some("bearer s3cret-token")))
                .is_ok()
        );
        for wrong in [
            None,
            Some("Bearer s3cret"),
            Some("Bearer s3cret-token2"),
            Some("Basic czM="),
        ] {
            let denied = access.authorize(&request(wrong)).unwrap_err();
            assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
            assert!(!denied.detail.contains("s3cret"), "{}", denied.detail);
        }
        assert!(!format!("{access:?}").contains("s3cret"));
    }

    #[test]
    fn writes_are_confined_to_the_roots_symlinks_resolved() {
        let base = std::env::temp_dir().join(format!("mi-access-{}", std::process::id()));
        let root = base.join("models");
        let outside = base.join("elsewhere");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let _ = std::fs::remove_file(root.join("escape"));
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();

        let access = Access::new(None, std::slice::from_ref(&root)).unwrap();
        assert!(access.confine(&root.join("llama/new/dir")).is_ok());
        assert!(access.confine(&root).is_ok());
        let denied = access.confine(&outside.join("x")).unwrap_err();
        assert_eq!(denied.status, StatusCode::FORBIDDEN);
        assert!(denied.detail.contains("outside the allowed directories"));
        assert!(access.confine(&root.join("escape/x")).is_err());
        assert!(access.confine(Path::new("/etc")).is_err());
        // A sibling sharing the root's name as a prefix is not inside it.
        assert!(access.confine(&base.join("models-other/x")).is_err());

        assert!(Access::new(None, &[PathBuf::from("relative")]).is_err());
        assert!(Access::new(None, &[base.join("missing")]).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
