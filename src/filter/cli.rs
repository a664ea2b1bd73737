//! `matrixinfer-runtime filter …`: tools for filter files.

use std::path::PathBuf;

use super::module::{self, PrecompileError};

/// Tools for filter files.
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: FilterCommand,
}

/// A filter tool.
#[derive(Debug, clap::Subcommand)]
pub enum FilterCommand {
    /// Compile a .wasm filter ahead of time for this binary; `--filter OUT` then loads it without starting the compiler (faster, less memory). Only this build of the runtime loads it.
    Compile {
        /// The filter, a .wasm module.
        input: PathBuf,
        /// Where to write the precompiled module (by convention .cwasm).
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// Runs the tool.
pub fn run(args: FilterArgs) -> Result<(), PrecompileError> {
    match args.command {
        FilterCommand::Compile { input, output } => {
            module::precompile(&input, &output)?;
            tracing::info!(input = %input.display(), output = %output.display(), "precompiled");
            Ok(())
        }
    }
}
