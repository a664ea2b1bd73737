//! The writer's connection to Redis: TCP, or TLS that trusts exactly what
//! every other outbound call trusts ([`outbound::tls_config`]: the
//! system roots, `SSL_CERT_FILE`, `SSL_CERT_DIR`); then `AUTH`, as an ACL
//! user when one is named, and `SELECT`.
//!
//! Commands and pipelines are still built, and replies parsed, by the
//! `redis` crate: [`RedisConnection`] implements its [`ConnectionLike`]
//! over our own socket. The crate's TLS (`tls-rustls`) is not used: it
//! builds a second trust store from its own load of the system roots,
//! with its own rules (one unreadable file in `SSL_CERT_DIR` fails every
//! connection), and cannot take our `ClientConfig`.
//!
//! Redis is never proxied: `HTTPS_PROXY` and its kin are for HTTP.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use redis::{ConnectionLike, RedisError, RedisResult, Value};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use super::RedisTarget;
use crate::net::outbound::{self, TrustError};
use crate::net::stream::Stream;

/// Why no usable connection to Redis was made. Never shows the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No TCP connection.
    #[error("cannot connect to {addr}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No trust store to verify the server with.
    #[error("cannot verify {addr}")]
    Trust {
        /// `host:port`.
        addr: String,
        /// Why.
        #[source]
        source: TrustError,
    },
    /// The host is not a name a certificate can be checked against.
    #[error("{host:?} is not a valid TLS server name")]
    ServerName {
        /// The host.
        host: String,
    },
    /// The TLS handshake failed (most often: a certificate we do not trust).
    #[error("TLS handshake with {addr} failed{hint}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// What to check, for a certificate we do not trust.
        hint: &'static str,
        /// What rustls said.
        #[source]
        source: io::Error,
    },
    /// `AUTH` failed: a wrong password, an unknown or disabled user.
    #[error("authentication {} failed", user.as_ref().map_or_else(|| "as the default user".to_owned(), |u| format!("as user {u:?}")))]
    Auth {
        /// The ACL user, if one was named.
        user: Option<String>,
        /// What Redis answered (never the password).
        #[source]
        source: Answer,
    },
    /// `SELECT` failed.
    #[error("cannot select database {db}")]
    Select {
        /// The database number.
        db: i64,
        /// What Redis answered.
        #[source]
        source: Answer,
    },
}

/// What Redis answered to a command, as `redis-cli` shows it
/// (`WRONGPASS invalid username-password pair …`), or why nothing came.
/// The end of a cause chain: a `RedisError`'s own source repeats it.
#[derive(Debug)]
pub struct Answer(pub RedisError);

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.0.code(), self.0.detail()) {
            (Some(code), Some(detail)) => write!(f, "{code} {detail}"),
            _ => std::fmt::Display::fmt(&self.0, f),
        }
    }
}

impl std::error::Error for Answer {}

const UNTRUSTED_HINT: &str = " (its certificate must chain to a CA in the system roots, \
SSL_CERT_FILE or SSL_CERT_DIR, and name the host)";

/// One connection, authenticated and on its database. It speaks RESP2
/// without transactions, which is all the writer sends; after any error
/// it is no longer open, and the writer drops it.
pub struct RedisConnection {
    stream: Stream,
    parser: redis::Parser,
    db: i64,
    open: bool,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("tls", &matches!(self.stream, Stream::Tls(_)))
            .field("db", &self.db)
            .field("open", &self.open)
            .finish()
    }
}

impl RedisConnection {
    /// Connects to `target`, each step (connect, handshake, every read
    /// and write after) bounded by `timeout`.
    pub fn connect(target: &RedisTarget, timeout: Duration) -> Result<Self, ConnectError> {
        let addr = target.addr();
        let connect_error = |source| ConnectError::Connect {
            addr: addr.clone(),
            source,
        };
        let tcp = tcp_connect(&target.host, target.port, timeout).map_err(connect_error)?;
        let stream = if target.tls {
            Stream::Tls(Box::new(tls_handshake(target, tcp)?))
        } else {
            Stream::Plain(tcp)
        };
        let mut conn = RedisConnection {
            stream,
            parser: redis::Parser::new(),
            db: 0,
            open: true,
        };
        if target.password.is_some() || target.username.is_some() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &target.username {
                auth.arg(user);
            }
            // A user without a password: `nopass` users accept any.
            auth.arg(target.password.as_ref().map_or("", |p| p.expose()));
            auth.query::<()>(&mut conn)
                .map_err(|e| ConnectError::Auth {
                    user: target.username.clone(),
                    source: Answer(e),
                })?;
        }
        if target.db != 0 {
            redis::cmd("SELECT")
                .arg(target.db)
                .query::<()>(&mut conn)
                .map_err(|e| ConnectError::Select {
                    db: target.db,
                    source: Answer(e),
                })?;
            conn.db = target.db;
        }
        Ok(conn)
    }

    fn send(&mut self, bytes: &[u8]) -> RedisResult<()> {
        let sent = self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush());
        if sent.is_err() {
            self.open = false;
        }
        Ok(sent?)
    }

    fn reply(&mut self) -> RedisResult<Value> {
        loop {
            match self.parser.parse_value(&mut self.stream) {
                // Out-of-band data (RESP3 only; we speak RESP2): not a reply.
                Ok(Value::Push { .. }) => continue,
                Ok(value) => return Ok(value),
                Err(e) => {
                    self.open = false;
                    return Err(e);
                }
            }
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.send(cmd)?;
        self.reply()
    }

    /// The replies of a pipeline: errors Redis answers are values
    /// (`Value::ServerError`), so one refused command keeps its place.
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.send(cmd)?;
        let mut replies = Vec::with_capacity(count);
        for i in 0..offset + count {
            let reply = self.reply()?;
            if i >= offset {
                replies.push(reply);
            }
        }
        Ok(replies)
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.open
    }
}

/// The first address of `host` that accepts, with socket timeouts set.
fn tcp_connect(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                tcp.set_read_timeout(Some(timeout))?;
                tcp.set_write_timeout(Some(timeout))?;
                return Ok(tcp);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The whole handshake now, so that an untrusted certificate is reported
/// as such rather than as the first command's failure.
fn tls_handshake(
    target: &RedisTarget,
    mut tcp: TcpStream,
) -> Result<StreamOwned<ClientConnection, TcpStream>, ConnectError> {
    let addr = target.addr();
    let config = outbound::tls_config().map_err(|source| ConnectError::Trust {
        addr: addr.clone(),
        source,
    })?;
    let name = ServerName::try_from(target.host.clone()).map_err(|_| ConnectError::ServerName {
        host: target.host.clone(),
    })?;
    let tls_error = |source: io::Error| {
        let untrusted = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
        ConnectError::Tls {
            addr: addr.clone(),
            hint: if untrusted { UNTRUSTED_HINT } else { "" },
            source,
        }
    };
    let mut tls =
        ClientConnection::new(config, name).map_err(|e| tls_error(io::Error::other(e)))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).map_err(tls_error)?;
    }
    Ok(StreamOwned::new(tls, tcp))
}
