use std::process::ExitCode;

use anyhow::Context;
use loadlab_results::Database;
use loadlab_results::api::{ApiState, app};

use crate::args::ServeArgs;
use std::future::IntoFuture;

use crate::commands::{DrainWithin, interrupt_token};

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let database = Database::from_env();
    let store = database
        .open()
        .await
        .with_context(|| format!("results database ({})", database.describe()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "loadlab API on http://{}/api/v1/experiments · results in {}",
        listener.local_addr()?,
        database.describe()
    );
    let mut state = ApiState::new(store);
    match args.api_token.as_deref().map(str::trim) {
        Some("") => anyhow::bail!("LOADLAB_API_TOKEN is set but empty"),
        Some(token) => state = state.with_ingest_token(token),
        None => eprintln!("ingest is off (set LOADLAB_API_TOKEN to accept runs over HTTP)"),
    }
    let stop = interrupt_token();
    axum::serve(listener, app(state))
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future()
        .drain_within(&stop)
        .await?;
    Ok(ExitCode::SUCCESS)
}
