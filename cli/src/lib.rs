//! The `loadlab` command: argument parsing and terminal output around the library crates.

mod args;
mod commands;
mod render;

use std::process::ExitCode;

pub use args::Cli;
use args::Command;

/// Exit code for a run cut short by Ctrl-C or SIGTERM (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

pub fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOADLAB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs a parsed command line and turns any error into one line on stderr.
pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => commands::run::run(args).await,
            Command::Storm(args) => commands::storm::run(args).await,
            Command::Agent(args) => commands::agent::run(args).await,
            Command::Loadgen(args) => commands::loadgen::run(args).await,
            Command::Serve(args) => commands::serve::run(args).await,
            Command::Compare(args) => commands::compare::run(args).await,
            Command::Flamegraph(args) => commands::flamegraph::run(args).await,
            Command::Db(args) => commands::db::run(args).await,
            Command::Bench(args) => commands::bench::run(args).await,
            Command::Crd => commands::crd::run(),
            Command::Controller(args) => commands::controller::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
