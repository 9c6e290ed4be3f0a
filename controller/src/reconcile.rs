//! The `Experiment` reconciler: plan nodes, create the token Secret, the agent pods and the
//! generator pods (each once, by name), and hand the ready fleet to a runner that drives the
//! run protocol. Status goes out by server-side apply; the reconciler owns `phase`,
//! `observedGeneration` and its conditions, the runner owns progress and results.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Client, Resource, ResourceExt};

use crate::cache::ClusterCache;
use crate::events::Events;
use crate::namespaces::Namespaces;
use crate::objects::is_owned_by;
use crate::orchestrator::Connection;
use crate::placement::{NodeView, Placement, place};
use crate::pods::{
    AGENT_PORT, LOADGEN_PORT, PodSettings, agent_pod, agent_pod_name, loadgen_pod,
    loadgen_pod_name, token_secret,
};
use crate::spec::Experiment;
use crate::status::{ExperimentStatus, Phase, StatusPart};
use crate::status_apply::apply_status;
use crate::token::TokenKey;

pub const FINALIZER: &str = "loadlab.dev/cleanup";
pub(crate) const FIELD_MANAGER: &str = "loadlab-controller";
/// How often a waiting experiment looks again (nodes may join, pods may start).
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(String),
    #[error("{0}")]
    Credentials(String),
}

/// A fleet whose pods are all up, ready for the run protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyFleet {
    /// Per cohort, in the spec's order: (node name, agent address).
    pub agents: Vec<Vec<(String, SocketAddr)>>,
    pub generators: Vec<SocketAddr>,
    /// The experiment's token and TLS trust.
    pub connection: Connection,
}

/// Runs experiments whose fleets are ready. One implementation drives the run protocol and
/// stores runs; tests use one that records what it was asked.
pub trait Runner: Send + Sync + 'static {
    /// Whether this process is running the experiment (`namespace/name`) now.
    fn is_running(&self, key: &str) -> bool {
        self.fleet(key).is_some()
    }
    /// The fleet the experiment runs on, while it runs here.
    fn fleet(&self, key: &str) -> Option<ReadyFleet>;
    /// Starts the experiment in the background; it writes its progress to the status.
    fn start(&self, experiment: Arc<Experiment>, fleet: ReadyFleet);
    /// Stops the experiment if it runs here (on deletion).
    fn stop(&self, key: &str);
}

pub struct Context {
    pub client: Client,
    pub pods: PodSettings,
    pub runner: Arc<dyn Runner>,
    /// Nodes and the controller's pods, as the watches last saw them.
    pub cache: ClusterCache,
    pub token_key: TokenKey,
    /// Where what stops an experiment is told besides its status.
    pub events: Events,
    /// Uids of experiments whose token Secret (and NetworkPolicy) this process made or found.
    secrets_made: Mutex<BTreeSet<String>>,
    /// Where experiments may run: elsewhere they wait, told why.
    namespaces: Namespaces,
}

impl Context {
    pub fn new(
        client: Client,
        pods: PodSettings,
        runner: Arc<dyn Runner>,
        cache: ClusterCache,
        token_key: TokenKey,
    ) -> Self {
        Self {
            events: Events::new(client.clone(), None),
            client,
            pods,
            runner,
            cache,
            token_key,
            secrets_made: Mutex::default(),
            namespaces: Namespaces::All,
        }
    }

    /// Events name this replica (its pod name) as their reporting instance.
    pub(crate) fn reporting_as(mut self, instance: &str) -> Self {
        self.events = Events::new(self.client.clone(), Some(instance.to_string()));
        self
    }

    /// Experiments run only in these namespaces (every one by default).
    pub fn in_namespaces(mut self, namespaces: Namespaces) -> Self {
        self.namespaces = namespaces;
        self
    }
}

pub fn key(experiment: &Experiment) -> String {
    format!(
        "{}/{}",
        experiment.namespace().unwrap_or_default(),
        experiment.name_any()
    )
}

pub async fn reconcile(
    experiment: Arc<Experiment>,
    context: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = experiment.namespace().unwrap_or_else(|| "default".into());
    let experiments: Api<Experiment> = Api::namespaced(context.client.clone(), &namespace);
    finalizer(&experiments, FINALIZER, experiment, |event| async {
        match event {
            Finalizer::Apply(experiment) => apply(experiment, &context, &namespace).await,
            Finalizer::Cleanup(experiment) => {
                // Owner references delete the pods and the Secret; what runs here must stop.
                context.runner.stop(&key(&experiment));
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|error| match error {
        kube::runtime::finalizer::Error::ApplyFailed(inner)
        | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner,
        other => ReconcileError::Finalizer(other.to_string()),
    })
}

async fn apply(
    experiment: Arc<Experiment>,
    context: &Context,
    namespace: &str,
) -> Result<Action, ReconcileError> {
    let status = experiment.status.clone().unwrap_or_default();
    if status.phase.is_finished() {
        return Ok(Action::await_change());
    }
    let client = &context.client;
    let experiments: Api<Experiment> = Api::namespaced(client.clone(), namespace);
    let mut report = StatusReport::new(&experiment, status.phase, &context.events);

    if let Err(error) = experiment
        .spec
        .validate()
        .and_then(|()| experiment.spec.require_cluster())
    {
        report.phase = Some(Phase::Failed);
        report.condition("SpecValid", false, "InvalidSpec", error.to_string());
        report.send(&experiments).await?;
        return Ok(Action::await_change());
    }
    report.condition("SpecValid", true, "Valid", "the spec is valid");
    if !context.namespaces.allows(namespace) {
        // Nothing is made here (the controller may not); a new chart setting restarts the
        // controller, which reconciles every experiment again.
        report.phase = Some(Phase::Pending);
        report.condition(
            "PodsReady",
            false,
            "NamespaceNotAllowed",
            context.namespaces.refusal(namespace),
        );
        report.send(&experiments).await?;
        return Ok(Action::await_change());
    }

    // A running experiment keeps its nodes even if labels change under it. A pod it runs on
    // that is gone or going is reported; the runner is left to find out at its next call to
    // it, so the run in flight is stored as failed with what the call met, and the runner
    // ends. Then the pods are made whole again below and the runner resumes (stored runs are
    // not repeated).
    let running = key(&experiment);
    if let Some(fleet) = context.runner.fleet(&running) {
        // The runner owns the phase from here: it may have just written the final one.
        report.phase = None;
        let wait = match lost_pod(&context.cache, &experiment, &fleet) {
            None => WAIT * 3,
            Some(why) => {
                tracing::info!(experiment = %running, %why, "a pod of the running experiment is lost");
                report.condition(
                    "PodsReady",
                    false,
                    "PodLost",
                    format!(
                        "{why}: the run in flight fails, then the experiment resumes on a new pod"
                    ),
                );
                WAIT
            }
        };
        report.send(&experiments).await?;
        return Ok(Action::requeue(wait));
    }

    let views: Vec<NodeView> = context
        .cache
        .nodes()
        .iter()
        .map(|node| NodeView::from_node(node))
        .collect();
    let placement = place(&experiment.spec, &views);
    if !placement.is_ready() {
        let reason = placement.problems[0].reason();
        let message: Vec<String> = placement.problems.iter().map(|p| p.to_string()).collect();
        report.phase = Some(Phase::Pending);
        report.condition("NodesPlanned", false, reason, message.join("; "));
        report.send(&experiments).await?;
        return Ok(Action::requeue(WAIT));
    }
    // Cohorts may share their nodes: each node counts once.
    let planned = placement
        .cohorts
        .iter()
        .flat_map(|c| &c.nodes)
        .collect::<BTreeSet<_>>()
        .len();
    report.condition(
        "NodesPlanned",
        true,
        "Planned",
        format!(
            "{planned} node(s) under test in {} cohort(s), {} generator(s)",
            placement.cohorts.len(),
            placement.generators.len()
        ),
    );

    // The cache may not have seen the runner's final status yet: a finished experiment must
    // not get its pods back.
    if experiments
        .get_status(&experiment.name_any())
        .await?
        .status
        .is_some_and(|s| s.phase.is_finished())
    {
        return Ok(Action::await_change());
    }
    let connection = match ensure_credentials(context, namespace, &experiment).await? {
        Ok(connection) => connection,
        Err(not_ready) => return report.pods_not_ready(not_ready, &experiments).await,
    };
    let pods = PodAccess {
        api: Api::namespaced(client.clone(), namespace),
        cache: &context.cache,
        namespace,
    };
    let agents = match ensure_agents(&pods, &experiment, &placement, &context.pods).await? {
        Ok(addresses) => addresses,
        Err(not_ready) => return report.pods_not_ready(not_ready, &experiments).await,
    };
    let targets: Vec<IpAddr> = agents.iter().flatten().map(|(_, a)| a.ip()).collect();
    let generators =
        match ensure_generators(&pods, &experiment, &placement, &targets, &context.pods).await? {
            Ok(addresses) => addresses.into_iter().flatten().map(|(_, a)| a).collect(),
            Err(not_ready) => return report.pods_not_ready(not_ready, &experiments).await,
        };
    report.phase = Some(Phase::Running);
    report.condition(
        "PodsReady",
        true,
        "Ready",
        "agent and generator pods are ready",
    );
    report.send(&experiments).await?;
    context.runner.start(
        experiment.clone(),
        ReadyFleet {
            agents,
            generators,
            connection,
        },
    );
    Ok(Action::requeue(WAIT * 3))
}

/// How the experiment's pods are reached (its token and TLS trust), their Secret (and, where
/// the chart asks, their NetworkPolicy) created first, once per process: what exists already
/// was made by this or an earlier leader.
async fn ensure_credentials(
    context: &Context,
    namespace: &str,
    experiment: &Experiment,
) -> Result<Result<Connection, NotReady>, ReconcileError> {
    let uid = experiment.uid().unwrap_or_default();
    let token = context.token_key.token_for(&uid);
    let (trust, identity) =
        crate::pod_tls::issue(&context.token_key, &uid).map_err(ReconcileError::Credentials)?;
    let connection = Connection::to_pods(token.clone(), trust);
    if lock(&context.secrets_made).contains(&uid) {
        return Ok(Ok(connection));
    }
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
    let secret = token_secret(experiment, &token, &identity);
    if let Err(refused) = create_unless_there(&secrets, &secret, "token Secret").await? {
        return Ok(Err(refused));
    }
    if let Some(controller) = &context.pods.network_policy {
        let policies: Api<NetworkPolicy> = Api::namespaced(context.client.clone(), namespace);
        let policy = crate::netpol::network_policy(experiment, controller);
        if let Err(refused) = create_unless_there(&policies, &policy, "NetworkPolicy").await? {
            return Ok(Err(refused));
        }
    }
    lock(&context.secrets_made).insert(uid);
    Ok(Ok(connection))
}

/// Creates `object` unless it exists; a refusal by the API server (admission, quota) is a
/// reason the experiment waits, named with `what`.
async fn create_unless_there<K>(
    api: &Api<K>,
    object: &K,
    what: &str,
) -> Result<Result<(), NotReady>, ReconcileError>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Ok(())),
        Err(error) => match refusal(&error) {
            Some(why) => Ok(Err(NotReady::Refused(format!(
                "the API server refused the {what} {}: {why}",
                object.meta().name.clone().unwrap_or_default()
            )))),
            None => Err(error.into()),
        },
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where pods are made (the API) and read (the cache), in one namespace.
struct PodAccess<'a> {
    api: Api<Pod>,
    cache: &'a ClusterCache,
    namespace: &'a str,
}

/// The first pod of a running fleet that is no longer what the runner talks to: deleted,
/// being deleted, failed, or at another address.
fn lost_pod(cache: &ClusterCache, experiment: &Experiment, fleet: &ReadyFleet) -> Option<String> {
    let current: BTreeMap<String, Arc<Pod>> = cache
        .pods_of(experiment)
        .into_iter()
        .map(|pod| (pod.name_any(), pod))
        .collect();
    let agents = fleet
        .agents
        .iter()
        .flatten()
        .map(|(node, address)| (agent_pod_name(experiment, node), *address));
    let generators = fleet
        .generators
        .iter()
        .enumerate()
        .map(|(index, address)| (loadgen_pod_name(experiment, index), *address));
    for (name, address) in agents.chain(generators) {
        let why = match current.get(&name).map(|pod| pod_state(pod)) {
            None => format!("pod {name} was deleted"),
            Some(PodState::Ready(ip)) if ip == address.ip() => continue,
            Some(PodState::Ready(ip)) => format!("pod {name} moved from {} to {ip}", address.ip()),
            Some(PodState::Waiting(state)) => format!("pod {name} is {state}"),
            Some(PodState::Failed(state)) => format!("pod {name} failed: {state}"),
        };
        return Some(why);
    }
    None
}

/// Per group, (node, gRPC address) of every pod, once all are ready.
type Pods = Result<Vec<Vec<(String, SocketAddr)>>, NotReady>;

enum NotReady {
    Waiting(String),
    Failed(String),
    /// The API server refused to create an object (PodSecurity, a ResourceQuota, a webhook,
    /// missing permissions): said until someone changes what refused it.
    Refused(String),
}

/// Whether an API error is the server refusing the object (as opposed to the call failing).
fn refusal(error: &kube::Error) -> Option<String> {
    match error {
        kube::Error::Api(status) if matches!(status.code, 400 | 403 | 422) => {
            Some(status.message.clone())
        }
        _ => None,
    }
}

async fn ensure_agents(
    pods: &PodAccess<'_>,
    experiment: &Experiment,
    placement: &Placement,
    settings: &PodSettings,
) -> Result<Pods, ReconcileError> {
    let mut cohorts_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for cohort in &placement.cohorts {
        for node in &cohort.nodes {
            cohorts_of.entry(node).or_default().push(&cohort.cohort);
        }
    }
    let mut wanted = Vec::new();
    for cohort in &placement.cohorts {
        let group: Vec<(String, Pod)> = cohort
            .nodes
            .iter()
            .map(|node| {
                (
                    node.clone(),
                    agent_pod(experiment, &cohorts_of[node.as_str()], node, settings),
                )
            })
            .collect();
        wanted.push(group);
    }
    ensure_pods(pods, experiment, wanted, AGENT_PORT).await
}

async fn ensure_generators(
    pods: &PodAccess<'_>,
    experiment: &Experiment,
    placement: &Placement,
    targets: &[IpAddr],
    settings: &PodSettings,
) -> Result<Pods, ReconcileError> {
    let group: Vec<(String, Pod)> = placement
        .generators
        .iter()
        .enumerate()
        .map(|(i, node)| {
            (
                node.clone(),
                loadgen_pod(experiment, i, node, targets, settings),
            )
        })
        .collect();
    ensure_pods(pods, experiment, vec![group], LOADGEN_PORT).await
}

/// Creates the pods (per group: node and pod) that do not exist yet, by name, and reports
/// whether all are ready, each ready one as (its node, its gRPC address).
async fn ensure_pods(
    pods: &PodAccess<'_>,
    experiment: &Experiment,
    wanted: Vec<Vec<(String, Pod)>>,
    port: u16,
) -> Result<Pods, ReconcileError> {
    let mut ready = Vec::with_capacity(wanted.len());
    let mut waiting = Vec::new();
    for group in wanted {
        let mut addresses = Vec::with_capacity(group.len());
        for (key, pod) in group {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let current = match pods.cache.pod(pods.namespace, &name) {
                // Neither adopted nor replaced: a pod of that name that another owner made.
                Some(existing) if !is_owned_by(&existing, experiment) => {
                    return Ok(Err(NotReady::Refused(format!(
                        "pod {name} exists but belongs to another owner: loadlab never adopts \
                         or replaces a pod it did not make for this experiment; delete that pod"
                    ))));
                }
                // A generator is told its targets when it starts: one made for agents that
                // have since been replaced must be replaced too.
                Some(existing) if container_args(&existing) != container_args(&pod) => {
                    if existing.metadata.deletion_timestamp.is_none() {
                        match pods.api.delete(&name, &Default::default()).await {
                            Ok(_) => {}
                            Err(kube::Error::Api(status)) if status.code == 404 => {}
                            Err(error) => return Err(error.into()),
                        }
                    }
                    waiting.push(format!("{name}: replaced (its targets changed)"));
                    continue;
                }
                Some(existing) => existing,
                // Not in the cache: new, or made by an earlier pass the watch has not
                // shown yet (then the API has it).
                None => match pods.api.create(&PostParams::default(), &pod).await {
                    Ok(created) => Arc::new(created),
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        Arc::new(pods.api.get(&name).await?)
                    }
                    Err(error) => match refusal(&error) {
                        Some(why) => {
                            return Ok(Err(NotReady::Refused(format!(
                                "the API server refused pod {name}: {why}"
                            ))));
                        }
                        None => return Err(error.into()),
                    },
                },
            };
            match pod_state(&current) {
                PodState::Ready(ip) => addresses.push((key, SocketAddr::new(ip, port))),
                PodState::Waiting(why) => waiting.push(format!("{name}: {why}")),
                PodState::Failed(why) => {
                    let node = current
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default();
                    return Ok(Err(NotReady::Failed(format!(
                        "pod {name} on node {node} failed: {why}"
                    ))));
                }
            }
        }
        ready.push(addresses);
    }
    if waiting.is_empty() {
        Ok(Ok(ready))
    } else {
        Ok(Err(NotReady::Waiting(format!(
            "waiting for {}",
            waiting.join("; ")
        ))))
    }
}

enum PodState {
    Ready(IpAddr),
    Waiting(String),
    Failed(String),
}

fn container_args(pod: &Pod) -> Option<&Vec<String>> {
    pod.spec.as_ref()?.containers.first()?.args.as_ref()
}

/// A pod is ready when Running, Ready and addressed; failed when it ended or cannot start
/// (image errors, crash loops); waiting while it is being deleted.
fn pod_state(pod: &Pod) -> PodState {
    // A pod on its way out is neither ready nor failed: wait until it is gone.
    if pod.metadata.deletion_timestamp.is_some() {
        return PodState::Waiting("being deleted".into());
    }
    let Some(status) = pod.status.as_ref() else {
        return PodState::Waiting("not scheduled yet".into());
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if phase == "Failed" || phase == "Succeeded" {
        let why = status
            .message
            .clone()
            .or_else(|| status.reason.clone())
            .unwrap_or_else(|| format!("ended ({phase})"));
        return PodState::Failed(why);
    }
    for container in status.container_statuses.iter().flatten() {
        let state = container.state.as_ref();
        if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = waiting.reason.as_deref().unwrap_or_default();
            if matches!(
                reason,
                "ErrImagePull"
                    | "ErrImageNeverPull"
                    | "ImagePullBackOff"
                    | "CrashLoopBackOff"
                    | "CreateContainerConfigError"
                    | "InvalidImageName"
            ) {
                let message = waiting.message.as_deref().unwrap_or_default();
                return PodState::Failed(format!("{reason} {message}").trim().to_string());
            }
        }
        if let Some(ended) = state.and_then(|s| s.terminated.as_ref()) {
            return PodState::Failed(format!(
                "container {} exited with {}{}",
                container.name,
                ended.exit_code,
                ended
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ));
        }
    }
    let is_ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok());
    match (phase, is_ready, ip) {
        ("Running", true, Some(ip)) => PodState::Ready(ip),
        _ => PodState::Waiting(format!("{phase}, not ready")),
    }
}

/// The reconciler's part of the status, sent whole by server-side apply.
struct StatusReport {
    name: String,
    object: ObjectReference,
    events: Events,
    /// None leaves the phase to whoever wrote it last (the runner, while it runs).
    phase: Option<Phase>,
    generation: Option<i64>,
    status: ExperimentStatus,
    /// As the pass found it: what already says all this is not written again.
    found: ExperimentStatus,
}

impl StatusReport {
    fn new(experiment: &Experiment, phase: Phase, events: &Events) -> Self {
        Self {
            name: experiment.name_any(),
            object: experiment.object_ref(&()),
            events: events.clone(),
            phase: Some(phase),
            generation: experiment.metadata.generation,
            status: experiment.status.clone().unwrap_or_default(),
            found: experiment.status.clone().unwrap_or_default(),
        }
    }

    fn condition(&mut self, type_: &str, holds: bool, reason: &str, message: impl Into<String>) {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        self.status
            .set_condition(type_, holds, reason, message, &now);
    }

    /// Pods still starting: wait and look again. A pod that failed: the experiment fails.
    async fn pods_not_ready(
        mut self,
        not_ready: NotReady,
        experiments: &Api<Experiment>,
    ) -> Result<Action, ReconcileError> {
        let action = match not_ready {
            NotReady::Waiting(message) => {
                self.phase = Some(Phase::Pending);
                self.condition("PodsReady", false, "Waiting", message);
                Action::requeue(WAIT)
            }
            NotReady::Failed(message) => {
                self.phase = Some(Phase::Failed);
                self.condition("PodsReady", false, "PodFailed", message);
                Action::await_change()
            }
            NotReady::Refused(message) => {
                self.phase = Some(Phase::Pending);
                self.condition("PodsReady", false, "Refused", message);
                Action::requeue(WAIT * 3)
            }
        };
        self.send(experiments).await?;
        Ok(action)
    }

    /// Whether the status already says what this pass would write (a fleet of experiments
    /// passing every few seconds must not each write an unchanged status).
    fn is_unchanged(&self) -> bool {
        self.phase.is_none_or(|phase| phase == self.found.phase)
            && self.generation == self.found.observed_generation
            && OWN_CONDITIONS
                .iter()
                .all(|type_| self.status.condition(type_) == self.found.condition(type_))
    }

    async fn send(self, experiments: &Api<Experiment>) -> Result<(), ReconcileError> {
        if self.is_unchanged() {
            return Ok(());
        }
        // A problem newly found is an Event too (pods still starting are no problem).
        for condition in self.status.conditions.iter().filter(|c| {
            OWN_CONDITIONS.contains(&c.type_.as_str())
                && c.status == "False"
                && c.reason != "Waiting"
                && self.found.condition(&c.type_).is_none_or(|found| {
                    found.status != c.status
                        || found.reason != c.reason
                        || found.message != c.message
                })
        }) {
            self.events
                .warn(
                    &self.object,
                    &condition.type_,
                    &condition.reason,
                    &condition.message,
                )
                .await;
        }
        let conditions: BTreeMap<&str, _> = self
            .status
            .conditions
            .iter()
            .filter(|c| OWN_CONDITIONS.contains(&c.type_.as_str()))
            .map(|c| (c.type_.as_str(), c))
            .collect();
        let part = StatusPart {
            phase: self.phase,
            observed_generation: self.generation,
            // Always sent, empty or not: the reconciler owns these types and no others.
            conditions: Some(conditions.into_values().cloned().collect()),
            ..StatusPart::default()
        };
        apply_status(experiments, &self.name, FIELD_MANAGER, &part).await?;
        Ok(())
    }
}

const OWN_CONDITIONS: [&str; 3] = ["SpecValid", "NodesPlanned", "PodsReady"];
