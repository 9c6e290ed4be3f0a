//! The `loadlab` command: argument parsing and terminal output around the library crates.

mod args;
mod commands;
mod render;

use std::process::ExitCode;

pub use args::Cli;
use args::Command;

/// Exit code for a run cut short by Ctrl-C or SIGTERM (128 + SIGINT).
pub(crate) const INTERRUPTED: u8 = 130;

/// Exit code for an experiment that ran to its end with a cohort of which no run succeeded:
/// everything is stored and reported, but there is nothing to compare that cohort by.
pub(crate) const COHORT_UNMEASURED: u8 = 4;

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
            Command::Bisect(args) => commands::bisect::run(args).await,
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
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: libraries often repeat their source's
/// text in their own message, which `{:#}` would print again for every level.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug)]
    struct Root;

    impl std::fmt::Display for Root {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("database \"x\" does not exist")
        }
    }

    impl std::error::Error for Root {}

    /// Repeats its source's text in its own message, as sqlx's errors do.
    #[derive(Debug)]
    struct Repeating(Root);

    impl std::fmt::Display for Repeating {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot connect: {}", self.0)
        }
    }

    impl std::error::Error for Repeating {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let error = anyhow::Error::new(Repeating(Root)).context("results database");
        assert_eq!(
            one_line(&error),
            "results database: cannot connect: database \"x\" does not exist"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&plain), "outer: inner");
    }
}
