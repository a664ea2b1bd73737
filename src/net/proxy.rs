//! The proxy variables, read once, as curl reads them:
//!
//! - `https://` targets: `https_proxy`, else `HTTPS_PROXY`;
//! - `http://` targets: `http_proxy` only, lower-case: curl ignores
//!   `HTTP_PROXY` because a CGI program gets a request's `Proxy:` header
//!   as that variable ("httpoxy"), and so do we;
//! - either, when unset: `all_proxy`, else `ALL_PROXY`;
//! - `no_proxy`, else `NO_PROXY`: hosts reached directly, comma- (or
//!   space-) separated: `*` for all; a name matches itself and its
//!   subdomains, with or without a leading dot (`example.com` and
//!   `.example.com` both match `s3.example.com`); an IP address or a CIDR
//!   block (`10.0.0.0/8`, `[::1]`) matches addresses written in the URL
//!   (names are not resolved to match); `:port` narrows any entry to one
//!   port.
//!
//! An empty variable counts as unset. A proxy URL is
//! `[http://][user[:password]@]host[:port]`: the port defaults to 1080, as
//! curl's does; the user and password are percent-decoded and sent as
//! `Proxy-Authorization: Basic`, kept in a [`Secret`] and never shown.
//! TLS to the proxy itself (`https://` proxy URLs) and SOCKS are refused
//! with a message saying so: every request that would use such a proxy
//! fails, none goes around it.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;

use super::url::Origin;
use crate::secret::Secret;

/// The port of a proxy URL that names none (curl's default).
pub const DEFAULT_PROXY_PORT: u16 = 1080;

/// A proxy to send requests through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// Where the proxy listens (always plain HTTP).
    pub origin: Origin,
    /// The whole `Proxy-Authorization` value (`Basic …`), when the URL
    /// carries a user.
    pub authorization: Option<Secret>,
    /// The variable it came from.
    pub variable: &'static str,
}

impl fmt::Display for Proxy {
    /// `http://host:port`, never the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.origin.host.contains(':') {
            format!("[{}]", self.origin.host)
        } else {
            self.origin.host.clone()
        };
        write!(
            f,
            "http://{host}:{} (from {})",
            self.origin.port, self.variable
        )
    }
}

/// A proxy variable whose value cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={shown} is not a usable proxy: {reason}")]
pub struct ProxyError {
    /// The variable.
    pub variable: &'static str,
    /// Its value, credentials replaced by `***`.
    pub shown: String,
    /// Why.
    pub reason: String,
}

/// Every proxy decision of the process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxies {
    https: Option<Result<Proxy, ProxyError>>,
    http: Option<Result<Proxy, ProxyError>>,
    no_proxy: Vec<Rule>,
}

impl Proxies {
    /// Reads the variables through `get` (the process environment, or a
    /// table in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Proxies {
        let first = |names: &[&'static str]| {
            names.iter().find_map(|name| {
                get(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (*name, v))
            })
        };
        let all = first(&["all_proxy", "ALL_PROXY"]);
        let https = first(&["https_proxy", "HTTPS_PROXY"]).or_else(|| all.clone());
        let http = first(&["http_proxy"]).or(all);
        let no_proxy = first(&["no_proxy", "NO_PROXY"])
            .map(|(_, v)| parse_no_proxy(&v))
            .unwrap_or_default();
        Proxies {
            https: https.map(|(name, v)| parse_proxy(name, &v)),
            http: http.map(|(name, v)| parse_proxy(name, &v)),
            no_proxy,
        }
    }

    /// The proxy for `origin`: `None` to connect directly.
    pub fn for_origin(&self, origin: &Origin) -> Result<Option<&Proxy>, ProxyError> {
        if self.no_proxy.iter().any(|rule| rule.matches(origin)) {
            return Ok(None);
        }
        let chosen = if origin.https {
            &self.https
        } else {
            &self.http
        };
        match chosen {
            None => Ok(None),
            Some(Ok(proxy)) => Ok(Some(proxy)),
            Some(Err(e)) => Err(e.clone()),
        }
    }

    /// Whether every connection goes direct (no proxy variable set).
    pub fn is_direct(&self) -> bool {
        self.https.is_none() && self.http.is_none()
    }

    /// One line for the log: which proxies apply (no credentials).
    pub fn describe(&self) -> String {
        let show = |p: &Option<Result<Proxy, ProxyError>>| match p {
            None => "direct".to_owned(),
            Some(Ok(proxy)) => proxy.to_string(),
            Some(Err(e)) => e.to_string(),
        };
        format!(
            "https:// via {}, http:// via {}, {} no_proxy entries",
            show(&self.https),
            show(&self.http),
            self.no_proxy.len()
        )
    }
}

/// One `no_proxy` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    /// `*`.
    All,
    /// A name and its subdomains.
    Name { name: String, port: Option<u16> },
    /// An address block.
    Net {
        addr: IpAddr,
        bits: u8,
        port: Option<u16>,
    },
}

impl Rule {
    fn matches(&self, origin: &Origin) -> bool {
        let host = origin.host.trim_end_matches('.').to_ascii_lowercase();
        let port_ok = |port: &Option<u16>| port.is_none_or(|p| p == origin.port);
        match self {
            Rule::All => true,
            Rule::Name { name, port } => {
                port_ok(port)
                    && (host == *name
                        || host
                            .strip_suffix(name.as_str())
                            .is_some_and(|rest| rest.ends_with('.')))
            }
            Rule::Net { addr, bits, port } => {
                port_ok(port)
                    && host
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| in_block(ip, *addr, *bits))
            }
        }
    }
}

fn in_block(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(bits.min(32)))
                .unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(bits.min(128)))
                .unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

fn parse_no_proxy(text: &str) -> Vec<Rule> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .filter_map(parse_rule)
        .collect()
}

fn parse_rule(entry: &str) -> Option<Rule> {
    if entry == "*" {
        return Some(Rule::All);
    }
    // `[v6]`, `[v6]:port`, `v6` and `v6/bits` have colons of their own.
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':').and_then(|p| p.parse().ok()))
    } else if entry.matches(':').count() > 1 {
        (entry, None)
    } else {
        match entry.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (entry, None),
        }
    };
    let (addr, bits) = match host.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits)),
        None => (host, None),
    };
    if let Ok(addr) = addr.parse::<IpAddr>() {
        let full = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(bits) => bits.parse::<u8>().ok().filter(|b| *b <= full)?,
            None => full,
        };
        return Some(Rule::Net { addr, bits, port });
    }
    let name = host
        .trim_start_matches("*.")
        .trim_start_matches('.')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    (!name.is_empty()).then_some(Rule::Name { name, port })
}

fn parse_proxy(variable: &'static str, text: &str) -> Result<Proxy, ProxyError> {
    let text = text.trim();
    let fail = |reason: &str| ProxyError {
        variable,
        shown: redact(text),
        reason: reason.to_owned(),
    };
    let rest = match text.split_once("://") {
        None => text,
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => rest,
            "https" => {
                return Err(fail(
                    "TLS to the proxy itself (https://) is not supported; use an http:// proxy URL \
                     (https:// targets still go through it in an encrypted CONNECT tunnel)",
                ));
            }
            _ => return Err(fail("only http:// proxies are supported")),
        },
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| fail("unclosed [ in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(fail("no host"));
    }
    let port = match port {
        None | Some("") => DEFAULT_PROXY_PORT,
        Some(port) => port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| fail("the port is not a number from 1 to 65535"))?,
    };
    let authorization = userinfo.map(|userinfo| {
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let mut pair = percent_decode(user);
        pair.push(b':');
        pair.extend(percent_decode(password));
        Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
    });
    Ok(Proxy {
        origin: Origin {
            https: false,
            host: host.to_ascii_lowercase(),
            port,
        },
        authorization,
        variable,
    })
}

/// `text` with any `user:password@` replaced by `***@`.
fn redact(text: &str) -> String {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), text),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => text.to_owned(),
    }
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
