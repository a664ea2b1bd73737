//! Where to listen: kept as given while arguments are parsed, resolved
//! when the sidecar binds.

use std::net::{SocketAddr, ToSocketAddrs};

use super::ConfigError;

/// A listen host and port, as given: names are resolved when the sidecar
/// binds, not while arguments are parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// Host name or address (IPv6 with or without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Listen {
    /// The address to bind.
    pub fn resolve(&self) -> Result<SocketAddr, ConfigError> {
        resolve_listen(&self.host, self.port)
    }
}

/// Resolves a listen host and port.
pub fn resolve_listen(host: &str, port: u16) -> Result<SocketAddr, ConfigError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ConfigError::Invalid {
            option: "--host",
            reason: format!("cannot resolve {host:?}"),
        })
}
