//! Where the engine is: its base URL, parsed once (never resolved while
//! arguments are parsed; [`super::Resolver`] looks the name up, off the
//! workers).

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
            prefix: parsed.path().trim_end_matches('/').to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = EngineEndpoint::parse("http://127.0.0.1:8000").unwrap();
        assert_eq!(e.host, "127.0.0.1:8000");
        assert_eq!(e.prefix, "");
        let e = EngineEndpoint::parse("http://localhost:8000/engine/").unwrap();
        assert_eq!(e.prefix, "/engine");
        assert_eq!((e.hostname.as_str(), e.port), ("localhost", 8000));
        assert_eq!(EngineEndpoint::parse("http://10.0.0.1").unwrap().port, 80);
        let e = EngineEndpoint::parse("http://no-such-host.invalid:8000").unwrap();
        assert_eq!(
            (e.hostname.as_str(), e.port),
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
}
