//! Where the engine is: its base URL, parsed once, and its addresses,
//! resolved at start (never while parsing arguments) and again on a
//! connection attempt while the name has never resolved.

use std::io;
use std::net::SocketAddr;

use crate::net::{Origin, Url};

/// Where the engine is.
#[derive(Clone, Debug)]
pub struct EngineEndpoint {
    /// The base URL as configured, for messages.
    pub base_url: String,
    /// `Host` header value.
    pub host: String,
    /// The host name or address, to resolve.
    pub hostname: String,
    /// The port.
    pub port: u16,
    /// Addresses to try, in order; empty until [`EngineEndpoint::resolve`]
    /// found some (each connection attempt tries again while empty).
    pub addrs: Vec<SocketAddr>,
    /// Path prefix of the base URL, without a trailing `/`.
    pub prefix: String,
}

/// Why a base URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL we understand.
    #[error("invalid engine base URL {url:?}: {reason}")]
    Invalid {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl EngineEndpoint {
    /// Parses `http://host[:port][/prefix]`. The engine runs in the same
    /// Pod, so plain HTTP is all it speaks to us.
    pub fn parse(url: &str) -> Result<EngineEndpoint, EndpointError> {
        let invalid = |reason| EndpointError::Invalid {
            url: url.to_owned(),
            reason,
        };
        let parsed = Url::parse(url).map_err(|e| match e {
            crate::net::UrlError::Scheme { .. } => invalid("the scheme must be http://"),
            crate::net::UrlError::NoHost { .. } => invalid("no host"),
            crate::net::UrlError::Syntax { .. } => invalid("not a URL"),
        })?;
        let Origin { https, host, port } = parsed.origin.clone();
        if https {
            return Err(invalid(
                "https is not supported; the engine is reached over plain HTTP inside the Pod",
            ));
        }
        Ok(EngineEndpoint {
            base_url: url.trim_end_matches('/').to_owned(),
            host: parsed.host_header(),
            hostname: host,
            port,
            addrs: Vec::new(),
            prefix: parsed.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Resolves the host name; on failure the addresses stay empty and the
    /// error says why.
    pub fn resolve(&mut self) -> io::Result<()> {
        self.addrs = resolve(&self.hostname, self.port)?;
        Ok(())
    }
}

/// Resolves a host name. Blocking: called at start, and on a worker only
/// while the engine's name has never resolved (a misconfiguration or a DNS
/// outage, not the normal path).
pub(super) fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(url: &str) -> EngineEndpoint {
        let mut endpoint = EngineEndpoint::parse(url).unwrap();
        let _ = endpoint.resolve();
        endpoint
    }

    #[test]
    fn endpoints() {
        let e = resolved("http://127.0.0.1:8000");
        assert_eq!(e.host, "127.0.0.1:8000");
        assert_eq!(e.prefix, "");
        assert_eq!(e.addrs, ["127.0.0.1:8000".parse().unwrap()]);
        let e = resolved("http://localhost:8000/engine/");
        assert_eq!(e.prefix, "/engine");
        assert!(!e.addrs.is_empty());
        let e = resolved("http://[::1]:81");
        assert_eq!(e.addrs, ["[::1]:81".parse().unwrap()]);
        assert_eq!(resolved("http://10.0.0.1").addrs[0].port(), 80);
        let unresolved = resolved("http://no-such-host.invalid:8000");
        assert!(unresolved.addrs.is_empty());
        assert_eq!(
            (unresolved.hostname.as_str(), unresolved.port),
            ("no-such-host.invalid", 8000)
        );
        for bad in [
            "https://localhost:8000",
            "localhost:8000",
            "ftp://x",
            "http://",
            "not a url",
        ] {
            assert!(EngineEndpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parsing_does_not_resolve() {
        let e = EngineEndpoint::parse("http://localhost:8000").unwrap();
        assert!(e.addrs.is_empty());
    }
}
