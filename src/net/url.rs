//! The one URL type of outbound calls: parsed and joined by the `url`
//! crate, kept split the way a request needs it (where to connect, what to
//! put on the request line).

use std::fmt;

/// Scheme, host and port: where to connect, and the unit of connection
/// reuse and of credential scoping.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Whether TLS is used.
    pub https: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Origin {
    /// The port `https` implies when none is written.
    pub fn default_port(https: bool) -> u16 {
        if https { 443 } else { 80 }
    }

    /// The scheme's name.
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The `Host` header value: brackets around IPv6, the port unless it is
    /// the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == Origin::default_port(self.https) {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// An absolute `http://` or `https://` URL.
///
/// The request target is kept as given, byte for byte: S3 signs the exact
/// path it will receive, so composing one from already-encoded parts must
/// not re-encode or normalize it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// Where to connect.
    pub origin: Origin,
    /// Path and query, as sent on the request line (starts with `/`).
    pub target: String,
}

/// Why text is not a URL we can call.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Not a URL.
    #[error("{text:?} is not a URL ({source})")]
    Syntax {
        /// The text (a redirect's without its query, which may carry a
        /// signature).
        text: String,
        /// What the parser said.
        #[source]
        source: ::url::ParseError,
    },
    /// A scheme other than `http` and `https`.
    #[error("{text:?}: only http:// and https:// are supported")]
    Scheme {
        /// The text.
        text: String,
    },
    /// No host.
    #[error("{text:?} has no host")]
    NoHost {
        /// The text.
        text: String,
    },
}

impl Url {
    /// Parses `http(s)://host[:port][/path][?query]`.
    pub fn parse(text: &str) -> Result<Url, UrlError> {
        let parsed = ::url::Url::parse(text).map_err(|source| UrlError::Syntax {
            text: text.to_owned(),
            source,
        })?;
        Url::from_parsed(&parsed, text)
    }

    /// Composes a URL from an origin and an already-encoded target.
    pub fn from_parts(origin: Origin, target: String) -> Url {
        Url { origin, target }
    }

    fn from_parsed(parsed: &::url::Url, text: &str) -> Result<Url, UrlError> {
        let https = match parsed.scheme() {
            "https" => true,
            "http" => false,
            _ => {
                return Err(UrlError::Scheme {
                    text: text.to_owned(),
                });
            }
        };
        let host = match parsed.host() {
            Some(::url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            Some(::url::Host::Ipv4(ip)) => ip.to_string(),
            Some(::url::Host::Ipv6(ip)) => ip.to_string(),
            _ => {
                return Err(UrlError::NoHost {
                    text: text.to_owned(),
                });
            }
        };
        let port = parsed.port().unwrap_or(Origin::default_port(https));
        let mut target = parsed.path().to_owned();
        if let Some(query) = parsed.query() {
            target.push('?');
            target.push_str(query);
        }
        Ok(Url {
            origin: Origin { https, host, port },
            target,
        })
    }

    /// Resolves a `Location` header (absolute, scheme-relative,
    /// path-absolute or relative) against this URL, per RFC 3986.
    pub fn join(&self, location: &str) -> Result<Url, UrlError> {
        let base = self.to_string();
        let base = ::url::Url::parse(&base).map_err(|source| UrlError::Syntax {
            text: base.clone(),
            source,
        })?;
        // A redirect's query may carry a signature: kept out of errors.
        let shown = location.split('?').next().unwrap_or_default();
        let joined = base.join(location).map_err(|source| UrlError::Syntax {
            text: shown.to_owned(),
            source,
        })?;
        Url::from_parsed(&joined, shown)
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        self.origin.host_header()
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("/")
    }

    /// The URL without its query string, for messages (queries may carry
    /// signatures).
    pub fn display_without_query(&self) -> String {
        format!(
            "{}://{}{}",
            self.origin.scheme(),
            self.host_header(),
            self.path()
        )
    }
}

impl fmt::Display for Url {
    /// The whole URL, query included: for requests, never for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.origin.scheme(),
            self.host_header(),
            self.target
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_show() {
        let url = Url::parse("https://s3.example.com/bucket/key%20x?list-type=2").unwrap();
        assert_eq!(
            url.origin,
            Origin {
                https: true,
                host: "s3.example.com".into(),
                port: 443
            }
        );
        assert_eq!(url.target, "/bucket/key%20x?list-type=2");
        assert_eq!(url.host_header(), "s3.example.com");
        assert_eq!(
            url.display_without_query(),
            "https://s3.example.com/bucket/key%20x"
        );
        let url = Url::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (url.target.as_str(), url.host_header().as_str()),
            ("/", "127.0.0.1:9000")
        );
        let v6 = Url::parse("http://[::1]:81/x").unwrap();
        assert_eq!(
            (v6.origin.host.as_str(), v6.host_header().as_str()),
            ("::1", "[::1]:81")
        );
        assert_eq!(
            Url::parse("HTTP://Example.COM/A").unwrap().origin.host,
            "example.com"
        );
        assert_eq!(Url::parse("http://h:80/").unwrap().host_header(), "h");
        for bad in [
            "ftp://x/y",
            "http://",
            "not a url",
            "localhost:8000",
            "file:///etc",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn joins_locations_per_rfc_3986() {
        let base = Url::parse("http://hub:8080/org/repo/resolve/main/a/b.bin?x=1").unwrap();
        let cdn = base.join("https://cdn.example/x?sig=1").unwrap();
        assert_eq!(
            (cdn.origin.host.as_str(), cdn.target.as_str()),
            ("cdn.example", "/x?sig=1")
        );
        assert_eq!(base.join("/api/x").unwrap().target, "/api/x");
        assert_eq!(
            base.join("c.bin").unwrap().target,
            "/org/repo/resolve/main/a/c.bin"
        );
        assert_eq!(
            base.join("../c.bin").unwrap().target,
            "/org/repo/resolve/main/c.bin"
        );
        assert_eq!(
            base.join("?y=2").unwrap().target,
            "/org/repo/resolve/main/a/b.bin?y=2"
        );
        assert_eq!(
            base.join("//other:9/p").unwrap().origin,
            Origin {
                https: false,
                host: "other".into(),
                port: 9
            }
        );
    }

    #[test]
    fn composed_targets_stay_as_given() {
        let origin = Url::parse("http://127.0.0.1:9000").unwrap().origin;
        let url = Url::from_parts(origin, "/b/a/../k%2Bx?prefix=a%2F".into());
        assert_eq!(
            url.to_string(),
            "http://127.0.0.1:9000/b/a/../k%2Bx?prefix=a%2F"
        );
        assert_eq!(
            url.display_without_query(),
            "http://127.0.0.1:9000/b/a/../k%2Bx"
        );
    }
}
