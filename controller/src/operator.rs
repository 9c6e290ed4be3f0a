//! The controller process on a cluster: once it holds the leader lease it watches
//! `Experiment`s (and the pods it owns) and reconciles them; when it loses the lease it stops,
//! leaving stored runs for the next leader to resume from.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::{Controller, controller, watcher};
use kube::{Api, Client};
use loadlab_results::Store;
use tokio_util::sync::CancellationToken;

use crate::cache::ClusterCache;
use crate::leader::{Holding, LeaseLock, keep_renewing};
use crate::namespaces::Namespaces;
use crate::pods::PodSettings;
use crate::reconcile::Context;
use crate::runner::ProtocolRunner;
use crate::token::TokenKey;
use crate::unreadable;

#[derive(Debug)]
pub struct OperatorConfig {
    pub pods: PodSettings,
    /// Namespace of the leader lease (the controller's own).
    pub lease_namespace: String,
    /// This replica's name in the lease (its pod name).
    pub identity: String,
    pub lease_duration: Duration,
    /// Derives each experiment's pod token (the same on every replica).
    pub token_key: TokenKey,
    /// Where experiments may run (the namespaces the controller has a Role in).
    pub namespaces: Namespaces,
}

/// How long an experiment's wake-ups are gathered into one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(200);

pub const LEASE_NAME: &str = "loadlab-controller";

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("lost the leader lease to another replica")]
    LostLease,
    #[error("the cluster cache stopped before it was filled: {0}")]
    Cache(String),
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

    let runner =
        Arc::new(ProtocolRunner::new(client.clone(), store).reporting_as(&config.identity));
    let (cache, watches) = ClusterCache::watch(client.clone(), &config.namespaces);
    let node_watch = tokio::spawn(watches.nodes);
    let waiting = cache.clone();
    let context = Arc::new(
        Context::new(
            client.clone(),
            config.pods.clone(),
            runner.clone(),
            cache,
            config.token_key,
        )
        .reporting_as(&config.identity)
        .in_namespaces(config.namespaces),
    );
    let lost = CancellationToken::new();
    let halt = CancellationToken::new();
    let renewing = {
        let (lost, halt, stop, lease) = (lost.clone(), halt.clone(), stop.clone(), lease.clone());
        tokio::spawn(async move {
            match keep_renewing(&lease, lease.renew_every(), lease.act_for(), &stop).await {
                Holding::Stopped => {}
                Holding::Lost => lost.cancel(),
                Holding::Lapsed => {
                    tracing::warn!(
                        "the leader lease could not be renewed for {} s: stopping before another replica may take it",
                        lease.act_for().as_secs()
                    );
                    lost.cancel();
                }
            }
            halt.cancel();
        })
    };
    // Reconciling starts once both caches hold their first listing. Waiting here, once,
    // rather than in each reconcile: a store's readiness wakes only the last task that
    // waited, so reconciles waiting side by side at start would hang but one.
    let mut pod_watch = watches.pods;
    let filled = {
        let ready = waiting.ready();
        tokio::pin!(ready);
        loop {
            tokio::select! {
                filled = &mut ready => {
                    break filled.map_err(|error| OperatorError::Cache(error.to_string()));
                }
                // Pod changes before then wake nothing: every experiment is reconciled at
                // the start anyway.
                _ = pod_watch.next() => {}
                () = halt.cancelled() => break Ok(()),
            }
        }
    };
    // Untyped, so an experiment the controller cannot read is reported on itself instead of
    // failing every listing (`unreadable.rs`).
    let resource = unreadable::api_resource();
    let experiments: Api<DynamicObject> = Api::all_with(client, &resource);
    let shutdown = halt.clone();
    if filled.is_ok() && !halt.is_cancelled() {
        Controller::new_with(experiments, watcher::Config::default(), resource)
            // The pod watch fills the cache the reconciler reads and wakes the pods' experiments.
            .owns_stream(pod_watch)
            // A burst of pod changes (a fleet of pods starting) wakes an experiment once.
            .with_config(controller::Config::default().debounce(DEBOUNCE))
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(
                unreadable::reconcile_object,
                unreadable::error_policy_object,
                context,
            )
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "reconcile");
                }
            })
            .await;
    }
    runner.stop_all();
    renewing.abort();
    node_watch.abort();
    if lost.is_cancelled() {
        return Err(OperatorError::LostLease);
    }
    // A replica that stops on its own hands the lease over once its runners have ended (a
    // runner still writing could race the next leader's resume); one that takes too long
    // lets the lease expire instead.
    if runner.stopped_within(lease.act_for()).await
        && let Err(error) = lease.release().await
    {
        tracing::warn!(%error, "releasing the leader lease");
    }
    filled
}
