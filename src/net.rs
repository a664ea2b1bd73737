//! The one network layer of outbound calls.
//!
//! - [`url`]: the one URL type ([`Url`], [`Origin`]);
//! - [`h1`]: HTTP/1.1 responses sans-IO: the head and the body's framing,
//!   shared by the engine client ([`crate::upstream`]) and [`blocking`];
//! - [`blocking`]: the blocking client downloads, the HuggingFace API and
//!   LoRA engine calls use;
//! - [`retry`]: the one backoff policy;
//! - [`outbound`]: the decisions every outbound connection obeys (TLS
//!   trust, route);
//! - [`proxy`]: the proxy variables, read as curl reads them.
//!
//! Domains (downloads, LoRA, the KV bridge) build on this module; nothing
//! here knows about them.

pub mod blocking;
pub mod h1;
pub mod outbound;
pub mod proxy;
pub mod retry;
pub mod stream;
pub mod url;

pub use blocking::{HttpClient, Response};

/// Whether an I/O error on a pooled connection means the peer closed it
/// while it sat idle (a request sent on it again, on a fresh one, is
/// safe). rustls reports a close without `close_notify` as an unexpected
/// EOF, so that counts too.
pub fn is_stale(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
    )
}
pub use retry::RetryPolicy;

/// Whether a failed call was refused for its credentials on the way (a
/// proxy's `407`): trying again with the same ones cannot pass.
pub fn is_denied(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied
}
pub use url::{Origin, Url, UrlError};
