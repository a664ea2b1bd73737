//! `matrixinfer-runtime`: parse the command line, start, wait for a
//! signal, drain. Everything else is in the library.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use matrixinfer_runtime::config::{Cli, Command, Config};
use matrixinfer_runtime::shutdown::{self, Shutdown};
use matrixinfer_runtime::{bench, demo, download, errors, sidecar, sim};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let shutdown = Arc::new(Shutdown::default());
    if let Err(e) = shutdown::trigger_on_signals(shutdown.clone()) {
        eprintln!("cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        None => match Config::from_args(cli.serve) {
            Ok(config) => sidecar::run(config, shutdown).map_err(Box::from),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(e.exit_code());
            }
        },
        Some(Command::Simulate(args)) => sim::run(args, shutdown),
        Some(Command::Demo(args)) => demo::run(args, shutdown),
        Some(Command::Download(args)) => download::cli::run(args),
        Some(Command::Bench(args)) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", errors::chain(&*e));
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MATRIXINFER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        // The zeromq crate logs every reconnection attempt; the bridge
        // reports the engine's comings and goings itself, throttled.
        .unwrap_or_else(|_| EnvFilter::new("info,zeromq=error"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}
