//! `matrixinfer-runtime`: parse the command line, start, wait for a
//! signal, drain. The sidecar is in the library; the helper commands that
//! do not ship in it are modules of this binary: `bench` (the
//! scrape-overhead harness) and `demo`, and `simulate` comes from the
//! `sim` crate (the simulated engine).

mod bench;
mod demo;

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use matrixinfer_runtime::config::Config;
use matrixinfer_runtime::download::{self, cli::DownloadArgs};
use matrixinfer_runtime::shutdown::{self, Shutdown};
use matrixinfer_runtime::{errors, filter, sidecar, startup};

/// The command line: the sidecar's options, or one of [`Command`].
type Cli = matrixinfer_runtime::config::Cli<Command>;

/// Helper modes.
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a simulated inference engine's /metrics and /health (for demos, tests, benchmarks).
    Simulate(sim::SimulateArgs),
    /// Run a simulated vLLM and the sidecar in front of it: try `curl localhost:9000/metrics`.
    Demo(demo::DemoArgs),
    /// Download a model without the server (for init containers); exits 0 only when all is verified.
    Download(DownloadArgs),
    /// Measure what the sidecar adds to a scrape: latency, throughput, CPU and memory, direct vs through it.
    Bench(Box<bench::BenchArgs>),
    /// Filter tools: `filter compile IN.wasm -o OUT.cwasm` precompiles a filter for this build.
    Filter(filter::cli::FilterArgs),
    /// The harness's byte-forwarding proxy (the floor it measures the sidecar against).
    #[command(hide = true)]
    BenchForward(bench::forward::ForwardArgs),
}

fn main() -> ExitCode {
    startup::mark("main");
    let cli = Cli::parse();
    startup::mark("arguments");
    init_logging();
    startup::mark("logging");
    let shutdown = Arc::new(Shutdown::default());
    if let Err(e) = shutdown::trigger_on_signals(shutdown.clone()) {
        eprintln!("cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    startup::mark("signals");
    let result = match cli.command {
        None => match Config::from_args(cli.serve).map(|c| sidecar::run(c, shutdown)) {
            Ok(Err(sidecar::RunError::Start(sidecar::StartError::Resolve(e)))) | Err(e) => {
                // A listen host that does not resolve is a usage error, as
                // any other unusable option (exit 2), though it is only
                // looked up at start.
                eprintln!("{e}");
                return ExitCode::from(e.exit_code());
            }
            Ok(result) => result.map_err(Box::from),
        },
        Some(Command::Simulate(args)) => simulate(&args, &shutdown),
        Some(Command::Demo(args)) => demo::run(args, shutdown),
        Some(Command::Download(args)) => download::cli::run(args),
        Some(Command::Bench(args)) => bench::run(*args),
        Some(Command::Filter(args)) => filter::cli::run(args).map_err(Box::from),
        Some(Command::BenchForward(args)) => bench::forward::run(args, shutdown),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", errors::chain(&*e));
            ExitCode::FAILURE
        }
    }
}

/// Runs the simulated engine until SIGTERM/SIGINT.
fn simulate(
    args: &sim::SimulateArgs,
    shutdown: &Shutdown,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let engine = sim::start(args)?;
    shutdown.wait_blocking();
    engine.stop();
    engine.join();
    Ok(())
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
        // By default a failed write is reported with `eprintln!`, which
        // panics when stderr is gone (its reader closed the pipe): the
        // thread that logged dies, the signal thread included, and SIGTERM
        // went unheard. A log line that cannot be written is dropped.
        .log_internal_errors(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("matrixinfer-runtime").chain(args.iter().copied()))
    }

    #[test]
    fn subcommands_need_no_sidecar_flags() {
        let cli = parse(&["simulate", "--flavor", "sglang-0.5", "--size", "1m"]).unwrap();
        match cli.command {
            Some(Command::Simulate(args)) => assert_eq!(args.size, 1024 * 1024),
            other => panic!("{other:?}"),
        }
    }
}
