//! Options of the listening server, shared by every mode that serves.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::parse_seconds;
use crate::http::{ConnectionLimit, DEFAULT_MAX_CONNECTIONS, Limits, ServerConfig};
use crate::runtime::DriverChoice;

/// Options of the listening server, shared by every mode.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Worker threads, each with its own runtime and listener [default: 1, whatever the node's size].
    #[arg(long, env = "MATRIXINFER_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// I/O driver: io_uring where the kernel allows it, else epoll.
    #[arg(
        long,
        env = "MATRIXINFER_IO_DRIVER",
        value_enum,
        default_value = "auto"
    )]
    pub io_driver: DriverChoice,
    /// Seconds a keep-alive connection may wait for its next request.
    #[arg(long, env = "MATRIXINFER_IDLE_TIMEOUT", default_value = "120", value_parser = parse_seconds)]
    pub idle_timeout: Duration,
    /// Seconds a request may take to arrive once started (slow clients get 408).
    #[arg(long, env = "MATRIXINFER_READ_TIMEOUT", default_value = "15", value_parser = parse_seconds)]
    pub read_timeout: Duration,
    /// Largest request line plus headers, in bytes (431 beyond).
    #[arg(long, env = "MATRIXINFER_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,
    /// Largest request body, in bytes (413 beyond).
    #[arg(long, env = "MATRIXINFER_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "MATRIXINFER_SHUTDOWN_GRACE", default_value = "20", value_parser = parse_seconds)]
    pub shutdown_grace: Duration,
    /// Client connections kept open at once, across workers; more are answered 503 and closed.
    #[arg(long, env = "MATRIXINFER_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = parse_max_connections)]
    pub max_connections: usize,
}

impl ServerArgs {
    /// The connection settings these options describe.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            limits: Limits {
                max_head: self.max_header_bytes,
                max_body: self.max_body_bytes,
            },
            idle_timeout: self.idle_timeout,
            read_timeout: self.read_timeout,
            write_timeout: self.read_timeout.max(Duration::from_secs(30)),
            shutdown_grace: self.shutdown_grace,
            connections: Arc::new(ConnectionLimit::new(self.max_connections)),
            panics: Arc::default(),
        }
    }

    /// Worker threads to run.
    pub fn worker_count(&self) -> usize {
        self.workers.map_or_else(
            || crate::runtime::default_workers(crate::runtime::available_cores()),
            usize::from,
        )
    }
}

fn parse_max_connections(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a whole number of connections, at least 1: {text:?}"
        )),
    }
}
