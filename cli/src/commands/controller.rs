use std::process::ExitCode;
use std::time::Duration;

use crate::args::{AgentPerfEvents, ControllerArgs};
use crate::commands::interrupt_token;
use crate::commands::serve::{Api, ApiTokens};
use anyhow::Context;
use loadlab_controller::namespaces::Namespaces;
use loadlab_controller::netpol::ControllerPeer;
use loadlab_controller::operator::{OperatorConfig, run_operator};
use loadlab_controller::pods::{PerfEvents, PodSettings};
use loadlab_engine::token::TokenKey;

pub async fn run(args: ControllerArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.image.trim().is_empty(),
        "--image (LOADLAB_IMAGE) is empty"
    );
    anyhow::ensure!(
        (3..=3600).contains(&args.lease_seconds),
        "--lease-seconds must be between 3 and 3600"
    );
    let network_policy = args
        .network_policy_labels
        .as_deref()
        .map(|labels| ControllerPeer::parse(&args.namespace, labels))
        .transpose()
        .map_err(|error| anyhow::anyhow!("--network-policy-labels: {error}"))?;
    let namespaces = Namespaces::parse(&args.experiment_namespaces)
        .map_err(|error| anyhow::anyhow!("--experiment-namespaces: {error}"))?;
    let token_key = TokenKey::new(&args.token_key)
        .map_err(|error| anyhow::anyhow!("--token-key (LOADLAB_TOKEN_KEY): {error}"))?;
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
    let api = Api::open_waiting(
        args.listen,
        &ApiTokens {
            ingest: args.api_token.clone(),
            read: args.read_token.clone(),
        },
        args.database_wait.0,
    )
    .await?;
    eprintln!(
        "loadlab controller {identity}: API on http://{}/api/v1 · results in {}",
        api.address, api.database
    );
    let store = api.store.clone();
    let stop = interrupt_token();
    let serving = {
        let stop = stop.clone();
        tokio::spawn(async move { api.serve(&stop).await })
    };
    let config = OperatorConfig {
        pods: PodSettings {
            image: args.image,
            image_pull_policy: args.image_pull_policy,
            perf_events: match args.agent_perf_events {
                AgentPerfEvents::Perfmon => PerfEvents::Perfmon,
                AgentPerfEvents::SysAdmin => PerfEvents::SysAdmin,
            },
            agent_resources: resources("--agent-resources", args.agent_resources.as_deref())?,
            loadgen_resources: resources("--loadgen-resources", args.loadgen_resources.as_deref())?,
            network_policy,
        },
        lease_namespace: args.namespace,
        identity,
        lease_duration: Duration::from_secs(args.lease_seconds),
        token_key,
        namespaces,
    };
    let operated = run_operator(client, store, config, stop.clone()).await;
    stop.cancel();
    serving.await.context("the API server task")??;
    operated?;
    Ok(ExitCode::SUCCESS)
}

/// A ResourceRequirements given as JSON; empty or absent leaves the cluster's defaults.
fn resources(
    flag: &str,
    json: Option<&str>,
) -> anyhow::Result<Option<k8s_openapi::api::core::v1::ResourceRequirements>> {
    match json.map(str::trim).filter(|j| !j.is_empty()) {
        None => Ok(None),
        Some(json) => serde_json::from_str(json)
            .map(Some)
            .with_context(|| format!("{flag} is not a Kubernetes ResourceRequirements: {json}")),
    }
}
