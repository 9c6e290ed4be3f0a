//! What the reconciler reads of the cluster, nodes and the pods the controller made, from
//! watches shared by every reconcile: many experiments over a large fleet must not each list
//! every node and GET every pod on every pass (the benchmark in the README has the figures).

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::pods::{MANAGED_BY_LABEL, MANAGER};

#[derive(Clone)]
pub struct ClusterCache {
    nodes: Store<Node>,
    pods: Store<Pod>,
}

/// The watches behind a [`ClusterCache`]: the node watch runs on its own once spawned; the
/// pod watch is also what wakes the owners of changed pods, so the controller drives it.
pub struct Watches {
    pub nodes: futures::future::BoxFuture<'static, ()>,
    pub pods: futures::stream::BoxStream<'static, Result<Pod, watcher::Error>>,
}

impl ClusterCache {
    pub fn watch(client: Client) -> (Self, Watches) {
        let (nodes, node_writer) = reflector::store();
        let (pods, pod_writer) = reflector::store();
        let node_stream = reflector(
            node_writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                // Planning reads labels, taints, conditions and kernels, never these.
                .modify(|node| {
                    node.managed_fields_mut().clear();
                    if let Some(status) = node.status.as_mut() {
                        status.images = None;
                    }
                }),
        )
        .for_each(|event| async move {
            if let Err(error) = event {
                tracing::warn!(%error, "watching nodes");
            }
        })
        .boxed();
        let pod_stream = reflector(
            pod_writer,
            watcher(
                Api::<Pod>::all(client),
                watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}")),
            )
            .default_backoff()
            .modify(|pod| pod.managed_fields_mut().clear()),
        )
        .touched_objects()
        .boxed();
        (
            Self { nodes, pods },
            Watches {
                nodes: node_stream,
                pods: pod_stream,
            },
        )
    }

    /// A cache filled by [`Snapshot::show`] instead of by watches, as a watch's relisting
    /// would fill it.
    pub fn by_hand() -> (Self, Snapshot) {
        let (nodes, node_writer) = reflector::store();
        let (pods, pod_writer) = reflector::store();
        (
            Self { nodes, pods },
            Snapshot {
                nodes: node_writer,
                pods: pod_writer,
            },
        )
    }

    /// Waits for both watches' first listings (at start, not on every pass).
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.nodes.wait_until_ready().await?;
        self.pods.wait_until_ready().await
    }

    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.state()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(namespace))
    }

    /// The pods the controller made for this very experiment (by its uid, not its name).
    pub fn pods_of(&self, experiment: &crate::Experiment) -> Vec<Arc<Pod>> {
        let namespace = experiment.namespace();
        self.pods.state_filter(|pod| {
            pod.namespace() == namespace && crate::pods::is_owned_by(pod, experiment)
        })
    }
}

/// Replaces what a [`ClusterCache::by_hand`] holds.
pub struct Snapshot {
    nodes: reflector::store::Writer<Node>,
    pods: reflector::store::Writer<Pod>,
}

impl Snapshot {
    pub fn show(
        &mut self,
        nodes: impl IntoIterator<Item = Node>,
        pods: impl IntoIterator<Item = Pod>,
    ) {
        relist(&mut self.nodes, nodes);
        relist(&mut self.pods, pods);
    }
}

fn relist<K>(writer: &mut reflector::store::Writer<K>, objects: impl IntoIterator<Item = K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
}
