use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = loadlab_cli::Cli::parse();
    loadlab_cli::init_tracing(&cli);
    loadlab_cli::main(cli)
}
