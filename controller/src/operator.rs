//! The controller process on a cluster: once it holds the leader lease it watches
//! `Experiment`s (and the pods it owns) and reconciles them; when it loses the lease it stops,
//! leaving stored runs for the next leader to resume from.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use loadlab_results::Store;
use tokio_util::sync::CancellationToken;

use crate::leader::LeaseLock;
use crate::pods::PodSettings;
use crate::reconcile::{Context, error_policy, reconcile};
use crate::runner::ProtocolRunner;

#[derive(Debug, Clone)]
pub struct OperatorConfig {
    pub pods: PodSettings,
    /// Namespace of the leader lease (the controller's own).
    pub lease_namespace: String,
    /// This replica's name in the lease (its pod name).
    pub identity: String,
    pub lease_duration: Duration,
}

pub const LEASE_NAME: &str = "loadlab-controller";

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("lost the leader lease to another replica")]
    LostLease,
}

/// Waits for the lease, then reconciles until `stop` fires or the lease is lost.
pub async fn run_operator(
    client: Client,
    store: Store,
    config: OperatorConfig,
    stop: CancellationToken,
) -> Result<(), OperatorError> {
    let lease = LeaseLock::new(
        client.clone(),
        &config.lease_namespace,
        LEASE_NAME,
        &config.identity,
        config.lease_duration,
    );
    loop {
        if lease.try_acquire_or_renew().await? {
            break;
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(lease.renew_every()) => {}
        }
    }
    tracing::info!(identity = %config.identity, "leading: reconciling experiments");

    let runner = Arc::new(ProtocolRunner::new(client.clone(), store));
    let context = Arc::new(Context {
        client: client.clone(),
        pods: config.pods.clone(),
        runner: runner.clone(),
    });
    let lost = CancellationToken::new();
    let halt = CancellationToken::new();
    let renewing = {
        let (lost, halt, stop) = (lost.clone(), halt.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(lease.renew_every()) => {}
                }
                match lease.try_acquire_or_renew().await {
                    Ok(true) => {}
                    Ok(false) => {
                        lost.cancel();
                        break;
                    }
                    Err(error) => tracing::warn!(%error, "renewing the leader lease"),
                }
            }
            halt.cancel();
        })
    };
    let experiments: Api<crate::Experiment> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client);
    let shutdown = halt.clone();
    Controller::new(experiments, watcher::Config::default())
        .owns(
            pods,
            watcher::Config::default().labels("app.kubernetes.io/managed-by=loadlab-controller"),
        )
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile");
            }
        })
        .await;
    runner.stop_all();
    renewing.abort();
    if lost.is_cancelled() {
        return Err(OperatorError::LostLease);
    }
    Ok(())
}
