//! A forward proxy as fleets run them (squid, Dragonfly's dfdaemon): CONNECT
//! tunnels for `https://`, absolute-form requests for `http://`, both only
//! with the right `Proxy-Authorization` (else 407). It records what it
//! carried, and resolves names under `.test` to 127.0.0.1 — names the
//! runtime itself cannot resolve, so a download from such a host that
//! succeeds went through the proxy.
//!
//! And a TLS front with a certificate from a private CA (rcgen), for an
//! HTTPS Hub mirror trusted only through `SSL_CERT_FILE`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;

use base64::Engine as _;

use crate::util::{patience, read_request_head, temp_file};

pub struct ForwardProxy {
    pub addr: SocketAddr,
    /// `host:port` of every CONNECT tunnel opened.
    pub tunnels: Arc<Mutex<Vec<String>>>,
    /// `http://host:port/path` of every absolute-form request relayed.
    pub forwarded: Arc<Mutex<Vec<String>>>,
    /// Requests refused with 407.
    pub refused: Arc<AtomicUsize>,
}

impl ForwardProxy {
    /// A proxy accepting only `user`/`password` (sent as Basic).
    pub fn start(user: &str, password: &str) -> ForwardProxy {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = ForwardProxy {
            addr,
            tunnels: Arc::default(),
            forwarded: Arc::default(),
            refused: Arc::default(),
        };
        let (tunnels, forwarded, refused) = (
            proxy.tunnels.clone(),
            proxy.forwarded.clone(),
            proxy.refused.clone(),
        );
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (expected, tunnels, forwarded, refused) = (
                    expected.clone(),
                    tunnels.clone(),
                    forwarded.clone(),
                    refused.clone(),
                );
                thread::spawn(move || {
                    serve(client, &expected, &tunnels, &forwarded, &refused);
                });
            }
        });
        proxy
    }

    /// The proxy URL with credentials, `user` and `password` written as
    /// given (percent-encode them first where needed).
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    pub fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().unwrap().clone()
    }

    pub fn forwarded(&self) -> Vec<String> {
        self.forwarded.lock().unwrap().clone()
    }

    /// Everything it carried, tunnels and requests, as one text.
    pub fn carried(&self) -> String {
        format!("{:?} {:?}", self.tunnels(), self.forwarded())
    }
}

/// Where `host:port` is: `.test` names are this machine.
fn resolve(authority: &str) -> Option<TcpStream> {
    let (host, port) = authority.rsplit_once(':')?;
    let host = if host.ends_with(".test") {
        "127.0.0.1"
    } else {
        host
    };
    let stream = TcpStream::connect((host, port.parse::<u16>().ok()?)).ok()?;
    stream.set_read_timeout(Some(patience())).ok()?;
    Some(stream)
}

fn serve(
    mut client: TcpStream,
    expected: &str,
    tunnels: &Mutex<Vec<String>>,
    forwarded: &Mutex<Vec<String>>,
    refused: &AtomicUsize,
) {
    let _ = client.set_read_timeout(Some(patience()));
    let head = read_request_head(&mut client);
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = request.parse(&head) else {
        return;
    };
    let (method, target) = (request.method.unwrap_or(""), request.path.unwrap_or(""));
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    if header("proxy-authorization").as_deref() != Some(expected) {
        refused.fetch_add(1, SeqCst);
        let _ = client.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        return;
    }
    if method == "CONNECT" {
        tunnels.lock().unwrap().push(target.to_owned());
        let Some(server) = resolve(target) else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
            return;
        };
        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
        return relay(client, server);
    }
    // Absolute form: http://host[:port]/path?query.
    let Some(rest) = target.strip_prefix("http://") else {
        let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let path = if path.is_empty() { "/" } else { path };
    forwarded.lock().unwrap().push(format!(
        "http://{authority}{}",
        path.split('?').next().unwrap_or_default()
    ));
    let Some(mut server) = resolve(&authority) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    // One request per connection: the server closes after its answer.
    let mut upstream = format!("{method} {path} HTTP/1.1\r\n");
    let mut length = 0;
    for h in request.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if name.starts_with("proxy-") || name == "connection" {
            continue;
        }
        if name == "content-length" {
            length = String::from_utf8_lossy(h.value).parse().unwrap_or(0);
        }
        upstream.push_str(&format!(
            "{}: {}\r\n",
            h.name,
            String::from_utf8_lossy(h.value)
        ));
    }
    upstream.push_str("connection: close\r\n\r\n");
    let mut body = vec![0u8; length];
    if client.read_exact(&mut body).is_err()
        || server.write_all(upstream.as_bytes()).is_err()
        || server.write_all(&body).is_err()
    {
        return;
    }
    let _ = std::io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Both);
}

fn relay(client: TcpStream, server: TcpStream) {
    let (mut client_read, mut server_write) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up = thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(Shutdown::Write);
    });
    let (mut server_read, mut client_write) = (server, client);
    let _ = std::io::copy(&mut server_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = up.join();
}

// === A private CA and an HTTPS front ===

/// A CA of our own: its certificate's PEM file, for `SSL_CERT_FILE`, and
/// what it takes to sign with it.
pub struct PrivateCa {
    pub pem: PathBuf,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl PrivateCa {
    pub fn new(name: &str) -> PrivateCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = temp_file(&format!("{name}-ca.pem"), cert.pem().as_bytes());
        PrivateCa { pem, params, key }
    }

    /// A server configuration with a certificate for `names`.
    fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        Arc::new(config)
    }
}

/// HTTPS in front of a plain HTTP server that answers one request per
/// connection and closes (the local Hub does): each TLS connection
/// carries one request head (no body) to `upstream` and the whole answer
/// back.
pub struct TlsFront {
    pub addr: SocketAddr,
    /// TLS handshakes completed.
    pub handshakes: Arc<AtomicUsize>,
}

impl TlsFront {
    pub fn start(upstream: SocketAddr, ca: &PrivateCa, names: &[&str]) -> TlsFront {
        let config = ca.server_config(names);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let count = handshakes.clone();
        thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let (config, count) = (config.clone(), count.clone());
                thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(patience()));
                    let Ok(tls) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(tls, tcp);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    count.fetch_add(1, SeqCst);
                    let Ok(mut server) = TcpStream::connect(upstream) else {
                        return;
                    };
                    if server.write_all(&head).is_err() {
                        return;
                    }
                    let _ = std::io::copy(&mut server, &mut tls);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        TlsFront { addr, handshakes }
    }
}
