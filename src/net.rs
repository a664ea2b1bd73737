//! The one network layer of outbound calls.
//!
//! - [`url`]: the one URL type ([`Url`], [`Origin`]);
//! - [`h1`]: HTTP/1.1 responses sans-IO: the head and the body's framing,
//!   shared by the engine client ([`crate::upstream`]) and [`blocking`];
//! - [`blocking`]: the blocking client downloads, the HuggingFace API and
//!   LoRA engine calls use;
//! - [`retry`]: the one backoff policy;
//! - [`outbound`]: the decisions every outbound connection obeys (TLS
//!   trust, route).
//!
//! Domains (downloads, LoRA, the KV bridge) build on this module; nothing
//! here knows about them.

pub mod blocking;
pub mod h1;
pub mod outbound;
pub mod retry;
pub mod url;

pub use blocking::{HttpClient, Response};
pub use retry::RetryPolicy;
pub use url::{Origin, Url, UrlError};
