//! What the reconciler reads of the cluster, nodes and the pods the controller made, from
//! watches shared by every reconcile: many experiments over a large fleet must not each list
//! every node and GET every pod on every pass (the benchmark in the README has the figures).

use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::namespaces::Namespaces;
use crate::objects::{MANAGED_BY_LABEL, MANAGER};

#[derive(Clone)]
pub struct ClusterCache {
    nodes: Store<Node>,
    /// One store per watched namespace (or one for all): a store takes one watch's listings,
    /// and a relist of one namespace must not empty another's.
    pods: Vec<Store<Pod>>,
}

/// The watches behind a [`ClusterCache`]: the node watch runs on its own once spawned; the
/// pod watch is also what wakes the owners of changed pods, so the controller drives it.
pub struct Watches {
    pub nodes: futures::future::BoxFuture<'static, ()>,
    pub pods: futures::stream::BoxStream<'static, Result<Pod, watcher::Error>>,
}

impl ClusterCache {
    /// Watches every node, and the controller's pods in the namespaces it may use.
    pub fn watch(client: Client, namespaces: &Namespaces) -> (Self, Watches) {
        let (nodes, node_writer) = reflector::store();
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
        let apis = match namespaces {
            Namespaces::All => vec![Api::<Pod>::all(client)],
            Namespaces::Only(names) => names
                .iter()
                .map(|namespace| Api::<Pod>::namespaced(client.clone(), namespace))
                .collect(),
        };
        let (pods, streams): (Vec<_>, Vec<_>) = apis
            .into_iter()
            .map(|api| {
                let (store, writer) = reflector::store();
                let stream = reflector(
                    writer,
                    watcher(
                        api,
                        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}")),
                    )
                    .default_backoff()
                    .modify(|pod| pod.managed_fields_mut().clear()),
                )
                .touched_objects()
                .boxed();
                (store, stream)
            })
            .unzip();
        let pod_stream = futures::stream::select_all(streams).boxed();
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
            Self {
                nodes,
                pods: vec![pods],
            },
            Snapshot {
                nodes: node_writer,
                pods: pod_writer,
            },
        )
    }

    /// Waits for both watches' first listings (at start, not on every pass).
    pub async fn ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.nodes.wait_until_ready().await?;
        for pods in &self.pods {
            pods.wait_until_ready().await?;
        }
        Ok(())
    }

    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.state()
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        let wanted = ObjectRef::new(name).within(namespace);
        self.pods.iter().find_map(|pods| pods.get(&wanted))
    }

    /// The pods the controller made for this very experiment (by its uid, not its name).
    pub(crate) fn pods_of(&self, experiment: &crate::Experiment) -> Vec<Arc<Pod>> {
        let namespace = experiment.namespace();
        self.pods
            .iter()
            .flat_map(|pods| {
                pods.state_filter(|pod| {
                    pod.namespace() == namespace && crate::objects::is_owned_by(pod, experiment)
                })
            })
            .collect()
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
