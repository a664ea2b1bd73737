//! A real S3 server in the test process: s3s-fs serving a directory, with
//! s3s verifying every request's SigV4 signature. s3s-fs ignores
//! `If-Match` on GET; AWS honours it, so by default a thin layer answers
//! 412 when the object's current ETag differs, as AWS does.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use md5::Digest;
use s3s::auth::{S3Auth, SecretKey, SimpleAuth};
use s3s::dto::{
    ETagCondition, GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput,
    ListObjectsInput, ListObjectsOutput, ListObjectsV2Input, ListObjectsV2Output,
};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use tokio::sync::oneshot;

pub const ACCESS_KEY: &str = "AKIATESTRUNTIME";
pub const SECRET_KEY: &str = "s3cr3t/K3Y+for+tests";

/// A running S3 server; stops when dropped. Buckets are directories of
/// `root`.
pub struct S3Server {
    pub addr: SocketAddr,
    pub root: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl S3Server {
    pub fn start(root: &Path) -> io::Result<S3Server> {
        S3Server::start_with(root, None, true, None)
    }

    /// A store that accepts only the keys of `keyring`, each until it
    /// expires.
    pub fn start_keyring(root: &Path, keyring: Keyring) -> io::Result<S3Server> {
        S3Server::start_with(root, None, true, Some(keyring))
    }

    /// A store that also takes virtual-hosted requests
    /// (`{bucket}.{domain}`), as AWS does.
    pub fn start_virtual(root: &Path, domain: &'static str) -> io::Result<S3Server> {
        VIRTUAL_DOMAIN.with(|d| d.set(Some(domain)));
        let server = S3Server::start_with(root, None, true, None);
        VIRTUAL_DOMAIN.with(|d| d.set(None));
        server
    }

    /// A store that ignores `If-Match`, as s3s-fs and some S3-compatible
    /// stores do.
    pub fn start_unconditional(root: &Path) -> io::Result<S3Server> {
        S3Server::start_with(root, None, false, None)
    }

    /// The same behind TLS with a fresh self-signed certificate for
    /// `localhost`; returns the certificate's PEM file, for `SSL_CERT_FILE`.
    pub fn start_tls(root: &Path) -> io::Result<(S3Server, PathBuf)> {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .map_err(io::Error::other)?;
        let pem = root.with_extension("cert.pem");
        std::fs::write(&pem, certified.cert.pem())?;
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .map_err(io::Error::other)?;
        let server = S3Server::start_with(
            root,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
            true,
            None,
        )?;
        Ok((server, pem))
    }

    fn start_with(
        root: &Path,
        tls: Option<tokio_rustls::TlsAcceptor>,
        conditional: bool,
        keyring: Option<Keyring>,
    ) -> io::Result<S3Server> {
        std::fs::create_dir_all(root)?;
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| io::Error::other(format!("s3s-fs: {e:?}")))?;
        let auth = SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY);
        let service: S3Service = if conditional {
            let mut builder = S3ServiceBuilder::new(Conditional {
                fs,
                root: root.to_path_buf(),
            });
            match keyring {
                Some(keyring) => builder.set_auth(keyring),
                None => builder.set_auth(auth),
            }
            if let Some(domain) = VIRTUAL_DOMAIN.with(|d| d.get()) {
                builder.set_host(VirtualHosts(domain));
            }
            builder.build()
        } else {
            let mut builder = S3ServiceBuilder::new(fs);
            builder.set_auth(auth);
            builder.build()
        };
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3s")
            .enable_all()
            .build()?;
        let (tx, rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("s3s-server".into())
            .spawn(move || runtime.block_on(serve(listener, service, tls, rx)))?;
        Ok(S3Server {
            addr,
            root: root.to_path_buf(),
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Puts a file straight into the bucket directory.
    pub fn put(&self, bucket: &str, key: &str, data: &[u8]) {
        let path = self.root.join(bucket).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

thread_local! {
    /// The base domain of virtual-hosted requests for the store being
    /// started on this thread.
    static VIRTUAL_DOMAIN: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Virtual-hosted requests under a base domain, whatever the port
/// (s3s's own `SingleDomain` compares the port too); other hosts are
/// path-style.
struct VirtualHosts(&'static str);

impl s3s::host::S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<s3s::host::VirtualHost<'a>> {
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        let bucket = name.strip_suffix(self.0).and_then(|b| b.strip_suffix('.'));
        Ok(match bucket {
            Some(bucket) => s3s::host::VirtualHost::new(self.0).with_bucket(bucket),
            None => s3s::host::VirtualHost::new(name),
        })
    }
}

/// Keys a store accepts, each until it expires: the long-lived ones of
/// the tests and the temporary ones the tests' STS, container endpoint
/// and IMDS hand out. A request signed with expired keys is refused
/// `ExpiredToken`, as AWS refuses it, and counted.
#[derive(Clone, Default)]
pub struct Keyring {
    /// Secret and expiry by access key.
    keys: Arc<Mutex<HashMap<String, Held>>>,
    /// Requests refused for expired keys.
    pub expired: Arc<AtomicUsize>,
    issued: Arc<AtomicUsize>,
    /// Said to live this much longer than they do (a clock that differs).
    overstated: Arc<Mutex<Duration>>,
}

type Held = (String, Option<SystemTime>);

/// Keys handed out.
#[derive(Clone, Debug)]
pub struct Issued {
    pub access: String,
    pub secret: String,
    pub session: String,
    /// RFC 3339, as AWS writes `Expiration`.
    pub expiration: String,
}

impl Keyring {
    /// Long-lived keys.
    pub fn add(&self, access: &str, secret: &str) {
        self.keys
            .lock()
            .unwrap()
            .insert(access.into(), (secret.into(), None));
    }

    /// From now on, hand out keys said to live `by` longer than the store
    /// accepts them: the store calls them expired before their holder's
    /// clock does.
    pub fn overstate(&self, by: Duration) {
        *self.overstated.lock().unwrap() = by;
    }

    /// Ends every temporary key's life now, as if it had expired.
    pub fn expire_all(&self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for (_, expires) in self.keys.lock().unwrap().values_mut() {
            if expires.is_some() {
                *expires = Some(past);
            }
        }
    }

    /// Temporary keys, valid for `ttl`.
    pub fn issue(&self, ttl: Duration) -> Issued {
        let n = self.issued.fetch_add(1, SeqCst);
        let access = format!("ASIATEMP{n:08}");
        let secret = format!("temp/secret+{n}-{}", std::process::id());
        let expires = SystemTime::now() + ttl;
        self.keys
            .lock()
            .unwrap()
            .insert(access.clone(), (secret.clone(), Some(expires)));
        Issued {
            access,
            secret,
            session: format!("FwoGZXIvYXdzEXAMPLESESSION{n}"),
            expiration: aws_smithy_types::DateTime::from(
                expires + *self.overstated.lock().unwrap(),
            )
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap(),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for Keyring {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let found = self.keys.lock().unwrap().get(access_key).cloned();
        match found {
            None => Err(s3_error!(InvalidAccessKeyId)),
            Some((_, Some(expires))) if SystemTime::now() > expires => {
                self.expired.fetch_add(1, SeqCst);
                Err(s3_error!(ExpiredToken, "The provided token has expired."))
            }
            Some((secret, _)) => Ok(SecretKey::from(secret)),
        }
    }
}

/// s3s-fs with conditional GET: the calls the runtime makes, passed
/// through, and `If-Match` checked against the object's current MD5 (its
/// ETag, as s3s-fs computes it) first.
struct Conditional {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
}

#[async_trait::async_trait]
impl S3 for Conditional {
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        if let Some(ETagCondition::ETag(wanted)) = &req.input.if_match {
            let path = self.root.join(&req.input.bucket).join(&req.input.key);
            let data = tokio::fs::read(&path)
                .await
                .map_err(|_| s3_error!(NoSuchKey))?;
            let current: String = md5::Md5::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if wanted.value() != current {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        }
        self.fs.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }
}

async fn serve(
    listener: std::net::TcpListener,
    service: S3Service,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                match &tls {
                    None => {
                        let connection = http.serve_connection(TokioIo::new(socket), service.clone());
                        let connection = graceful.watch(connection.into_owned());
                        tokio::spawn(async move { let _ = connection.await; });
                    }
                    Some(acceptor) => {
                        let (acceptor, http, service) = (acceptor.clone(), http.clone(), service.clone());
                        tokio::spawn(async move {
                            let Ok(stream) = acceptor.accept(socket).await else { return };
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        });
                    }
                }
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(Duration::from_secs(2)) => {},
    }
}
