use std::future::IntoFuture;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use loadlab_controller::operator::{OperatorConfig, run_operator};
use loadlab_controller::pods::PodSettings;
use loadlab_results::Database;
use loadlab_results::api::{ApiState, app};

use crate::args::ControllerArgs;
use crate::commands::{DrainWithin, interrupt_token};

pub async fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.image.trim().is_empty(),
        "--image (LOADLAB_IMAGE) is empty"
    );
    anyhow::ensure!(
        (3..=3600).contains(&args.lease_seconds),
        "--lease-seconds must be between 3 and 3600"
    );
    let identity = match args.identity {
        Some(identity) => identity,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .context("cannot read the hostname for --identity")?,
    };
    // Before the database: without a cluster there is nothing to start a database for.
    let client = kube::Client::try_default().await.map_err(|error| {
        anyhow::anyhow!("no Kubernetes API to talk to (in-cluster config or KUBECONFIG): {error}")
    })?;
    let database = Database::from_env();
    let store = database
        .open()
        .await
        .with_context(|| format!("results database ({})", database.describe()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "loadlab controller {identity}: API on http://{}/api/v1 · results in {}",
        listener.local_addr()?,
        database.describe()
    );
    let mut state = ApiState::new(store.clone());
    match args.api_token.as_deref().map(str::trim) {
        Some("") => anyhow::bail!("LOADLAB_API_TOKEN is set but empty"),
        Some(token) => state = state.with_ingest_token(token),
        None => {}
    }
    let stop = interrupt_token();
    let api = {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app(state))
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future()
                .drain_within(&stop)
                .await
        })
    };
    let config = OperatorConfig {
        pods: PodSettings {
            image: args.image,
            image_pull_policy: args.image_pull_policy,
        },
        lease_namespace: args.namespace,
        identity,
        lease_duration: Duration::from_secs(args.lease_seconds),
    };
    let operated = run_operator(client, store, config, stop.clone()).await;
    stop.cancel();
    api.await.context("the API server task")??;
    operated?;
    Ok(ExitCode::SUCCESS)
}
