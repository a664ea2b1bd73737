//! HTTP/1.1 on httparse and monoio, both sides of the sidecar.
//!
//! - [`server`]: accept loop, connection loop with keep-alive, pipelining,
//!   limits and timeouts, and the [`server::Service`] trait;
//! - [`request`]: request heads, `Partial` kept apart from invalid;
//! - [`response`]: whole, JSON-error and streamed responses;
//! - [`chunked`] and [`gzip`]: body codings, used by the engine client too.

pub mod chunked;
pub mod gzip;
pub mod request;
pub mod response;
pub mod server;

pub use request::{Limits, Request};
pub use response::{BodyStream, Responder, StreamBuffers};
pub use server::{ConnectionLimit, DEFAULT_MAX_CONNECTIONS, ServerConfig, Service};
