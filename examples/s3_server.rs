//! A local S3 server for benchmarks: s3s-fs serving a directory, SigV4
//! checked with fixed keys. The integration tests run the same server
//! in-process; this one runs on its own so that other clients (boto3,
//! rclone) can be measured against it too.
//!
//! `cargo run --release --example s3_server -- <root-dir> <port>`
//! Keys: access `AKIABENCH`, secret `benchsecret`.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = args.next().ok_or("usage: s3_server <root-dir> <port>")?;
    let port: u16 = args
        .next()
        .ok_or("usage: s3_server <root-dir> <port>")?
        .parse()?;
    std::fs::create_dir_all(&root)?;
    let fs = s3s_fs::FileSystem::new(&root).map_err(|e| format!("{e:?}"))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single("AKIABENCH", "benchsecret"));
    let service = builder.build();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("s3 server on http://127.0.0.1:{port} serving {root}");
        let http = Builder::new(TokioExecutor::new());
        loop {
            let (socket, _) = listener.accept().await?;
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    })
}
