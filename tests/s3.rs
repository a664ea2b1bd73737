//! A real S3 server in the test process: s3s-fs serving a directory, with
//! s3s verifying every request's SigV4 signature.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
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
        S3Server::start_with(root, None)
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
        )?;
        Ok((server, pem))
    }

    fn start_with(root: &Path, tls: Option<tokio_rustls::TlsAcceptor>) -> io::Result<S3Server> {
        std::fs::create_dir_all(root)?;
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| io::Error::other(format!("s3s-fs: {e:?}")))?;
        let service: S3Service = {
            let mut builder = S3ServiceBuilder::new(fs);
            builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
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
