//! Reconcile scenarios against a mock Kubernetes API server (`common::Cluster`).

use std::sync::{Arc, Mutex};

use crate::common::{Cluster, client_for};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use loadlab_controller::Connection;
use loadlab_controller::cache::{ClusterCache, Snapshot};
use loadlab_controller::namespaces::Namespaces;
use loadlab_controller::netpol::ControllerPeer;
use loadlab_controller::pod_tls;
use loadlab_controller::pods::{PerfEvents, PodSettings};
use loadlab_controller::reconcile::{Context, FINALIZER, ReadyFleet, Runner, reconcile};
use loadlab_controller::token::TokenKey;
use loadlab_controller::{Experiment, parse_experiment};
use serde_json::{Value, json};

const TOKEN_KEY: &str = "a-key-for-tests-only-thirty-two-bytes";

#[derive(Default)]
struct RecordingRunner {
    started: Mutex<Vec<(String, ReadyFleet)>>,
    stopped: Mutex<Vec<String>>,
}

impl Runner for RecordingRunner {
    fn fleet(&self, key: &str) -> Option<ReadyFleet> {
        self.started
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, fleet)| fleet.clone())
    }

    fn start(&self, experiment: Arc<Experiment>, fleet: ReadyFleet) {
        self.started
            .lock()
            .unwrap()
            .push((loadlab_controller::reconcile::key(&experiment), fleet));
    }

    fn stop(&self, key: &str) {
        self.stopped.lock().unwrap().push(key.to_string());
    }
}

fn node(name: &str, kernel: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name },
        "status": {
            "nodeInfo": {
                "kernelVersion": kernel, "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "", "operatingSystem": "linux",
                "osImage": "", "systemUUID": ""
            },
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }]
        }
    })
}

fn running(ip: &str) -> Value {
    json!({
        "phase": "Running", "podIP": ip,
        "conditions": [{ "type": "Ready", "status": "True" }],
        "containerStatuses": [{ "name": "agent", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                                "state": { "running": {} } }]
    })
}

fn experiment(finalized: bool) -> Experiment {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/epoll-refcount.yaml"
    ))
    .unwrap();
    let spec = parse_experiment(&text).unwrap().spec;
    let mut experiment = Experiment::new("epoll-refcount", spec);
    experiment.metadata.namespace = Some("lab".into());
    experiment.metadata.uid = Some("0d6c3f7e-6f43-4c36-9a4f-1f2b4f7d7a01".into());
    experiment.metadata.generation = Some(1);
    if finalized {
        experiment.metadata.finalizers = Some(vec![FINALIZER.into()]);
    }
    experiment
}

/// The condition of this type in a status patch.
fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
        .clone()
}

fn seed_fleet() -> Vec<Value> {
    vec![
        node("old-1", "6.1.0-47-cloud-amd64", true),
        node("new-1", "6.1.0-56-cloud-amd64", true),
        node("gen-1", "6.12.57+deb12-cloud-amd64", true),
    ]
}

struct Harness {
    cluster: Arc<Mutex<Cluster>>,
    runner: Arc<RecordingRunner>,
    /// The controller's pods, when experiments get NetworkPolicies.
    network_policy: Option<ControllerPeer>,
    /// Where experiments may run (every namespace unless a test narrows it).
    namespaces: Namespaces,
    /// One controller process across the passes, as in a cluster.
    context: Mutex<Option<(Arc<Context>, Snapshot)>>,
}

impl Harness {
    fn new(nodes: Vec<Value>) -> Self {
        Self {
            cluster: Arc::new(Mutex::new(Cluster {
                nodes,
                ..Cluster::default()
            })),
            runner: Arc::default(),
            network_policy: None,
            namespaces: Namespaces::All,
            context: Mutex::default(),
        }
    }

    fn with_network_policies(nodes: Vec<Value>) -> Self {
        Self {
            network_policy: Some(
                ControllerPeer::parse("loadlab-system", "app.kubernetes.io/component=controller")
                    .unwrap(),
            ),
            ..Self::new(nodes)
        }
    }

    /// One pass, after the cache has seen the mock cluster as it is now (as the watches
    /// would have by then).
    async fn reconcile(&self, experiment: Experiment) -> Action {
        let context = {
            let mut slot = self.context.lock().unwrap();
            let (context, snapshot) = slot.get_or_insert_with(|| {
                let (cache, snapshot) = ClusterCache::by_hand();
                let context = Context::new(
                    client_for(self.cluster.clone(), &experiment),
                    PodSettings {
                        image: "registry.example/loadlab:test".into(),
                        perf_events: PerfEvents::Perfmon,
                        agent_resources: None,
                        loadgen_resources: None,
                        network_policy: self.network_policy.clone(),
                        image_pull_policy: None,
                    },
                    self.runner.clone(),
                    cache,
                    TokenKey::new(TOKEN_KEY).unwrap(),
                )
                .in_namespaces(self.namespaces.clone());
                (Arc::new(context), snapshot)
            });
            let cluster = self.cluster.lock().unwrap();
            let nodes = cluster
                .nodes
                .iter()
                .map(|n| serde_json::from_value(n.clone()).unwrap());
            let pods = cluster
                .objects
                .iter()
                .filter(|(path, _)| path.contains("/pods/"))
                .map(|(_, pod)| serde_json::from_value(pod.clone()).unwrap());
            snapshot.show(nodes, pods);
            context.clone()
        };
        reconcile(Arc::new(experiment), context).await.unwrap()
    }

    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap()
    }
}

#[tokio::test]
async fn a_new_experiment_first_gets_the_finalizer() {
    let harness = Harness::new(seed_fleet());
    harness.reconcile(experiment(false)).await;
    let cluster = harness.cluster();
    assert_eq!(cluster.requests.len(), 1, "{:?}", cluster.requests);
    let (method, path, body) = &cluster.requests[0];
    assert_eq!(method, "PATCH");
    assert!(
        path.ends_with("/namespaces/lab/experiments/epoll-refcount"),
        "{path}"
    );
    assert!(body.to_string().contains(FINALIZER), "{body}");
}

#[tokio::test]
async fn pods_are_created_once_and_the_run_starts_when_all_are_ready() {
    let harness = Harness::new(seed_fleet());
    harness.reconcile(experiment(true)).await;
    {
        let cluster = harness.cluster();
        assert_eq!(cluster.created("/secrets").len(), 1);
        let agents = cluster.created("/pods");
        assert_eq!(
            agents.len(),
            2,
            "one agent per node under test, generators wait"
        );
        let nodes: Vec<&str> = agents
            .iter()
            .map(|p| p["spec"]["nodeName"].as_str().unwrap())
            .collect();
        assert_eq!(nodes, vec!["old-1", "new-1"]);
        let status = cluster.status_patches().pop().unwrap();
        assert_eq!(status["phase"], "Pending");
        let pods_ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "PodsReady")
            .unwrap();
        assert_eq!(pods_ready["reason"], "Waiting");
    }

    // Reconciling again with the pods still starting creates nothing new.
    harness.reconcile(experiment(true)).await;
    assert_eq!(harness.cluster().created("/pods").len(), 2);
    assert_eq!(harness.cluster().created("/secrets").len(), 1);

    // Agents up: the generator pod is created, allowed to load only the agents.
    {
        let mut cluster = harness.cluster();
        let names = cluster.pod_names();
        for (i, name) in names.iter().enumerate() {
            cluster.set_pod_status(name, running(&format!("10.0.0.{}", i + 10)));
        }
    }
    harness.reconcile(experiment(true)).await;
    let generators: Vec<Value> = harness
        .cluster()
        .created("/pods")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app.kubernetes.io/component"] == "loadgen")
        .collect();
    assert_eq!(generators.len(), 2, "load.generators is 2");
    assert!(generators.iter().all(|g| g["spec"]["nodeName"] == "gen-1"));
    let args = generators[0]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("10.0.0.10") && args.contains("10.0.0.11"),
        "{args}"
    );
    assert!(harness.runner.started.lock().unwrap().is_empty());

    // Everything up: the runner gets the fleet, the status says Running.
    {
        let mut cluster = harness.cluster();
        for name in cluster.pod_names() {
            if name.contains("loadgen") {
                let ip = format!("10.0.1.{}", name.chars().last().unwrap());
                cluster.set_pod_status(&name, running(&ip));
            }
        }
    }
    harness.reconcile(experiment(true)).await;
    let started = harness.runner.started.lock().unwrap().clone();
    assert_eq!(started.len(), 1);
    let (key, fleet) = &started[0];
    assert_eq!(key, "lab/epoll-refcount");
    assert_eq!(fleet.agents.len(), 2);
    assert_eq!(fleet.agents[0][0].0, "old-1");
    assert_eq!(fleet.agents[0][0].1.port(), 7700);
    assert_eq!(fleet.generators.len(), 2);
    assert!(fleet.generators.iter().all(|g| g.port() == 7701));
    // The token is the key's for this experiment: a new leader derives the same one, so
    // the controller never reads a Secret back.
    // So is the TLS authority the runner trusts, and the pods' identity it signed.
    let key = TokenKey::new(TOKEN_KEY).unwrap();
    let uid = "0d6c3f7e-6f43-4c36-9a4f-1f2b4f7d7a01";
    let expected = key.token_for(uid);
    let (trust, identity) = pod_tls::issue(&key, uid).unwrap();
    assert_eq!(
        fleet.connection,
        Connection::to_pods(expected.clone(), trust)
    );
    let cluster = harness.cluster();
    let secret = &cluster.created("/secrets")[0];
    let stored = secret["data"]["token"].as_str().unwrap();
    assert_eq!(stored, base64_of(&expected), "{secret}");
    assert_eq!(secret["data"]["tls.crt"], base64_of(&identity.cert_pem));
    assert_eq!(secret["data"]["tls.key"], base64_of(&identity.key_pem));
    for pod in cluster.created("/pods") {
        let args = pod["spec"]["containers"][0]["args"].to_string();
        assert!(
            args.contains(r#""--tls-cert","/etc/loadlab/token/tls.crt","--tls-key","/etc/loadlab/token/tls.key""#),
            "{args}"
        );
    }
    assert_eq!(cluster.status_patches().pop().unwrap()["phase"], "Running");
    assert_eq!(cluster.created("/pods").len(), 4, "nothing created twice");
    // Nodes and pods come from the watches' cache: no pass lists nodes or reads a pod, and
    // no Secret is ever read.
    let reads: Vec<&String> = cluster
        .requests
        .iter()
        .filter(|(method, _, _)| method == "GET")
        .map(|(_, path, _)| path)
        .collect();
    assert!(
        reads.iter().all(|path| path.contains("/experiments/")),
        "{reads:?}"
    );
}

fn base64_of(text: &str) -> String {
    let value = serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec())).unwrap();
    value.as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_cohort_without_nodes_is_a_condition_that_names_it() {
    let harness = Harness::new(vec![
        node("old-1", "6.1.0-47-cloud-amd64", true),
        node("new-1", "6.1.0-56-cloud-amd64", false),
        node("gen-1", "6.12.57+deb12-cloud-amd64", true),
    ]);
    let action = harness.reconcile(experiment(true)).await;
    assert_eq!(action, Action::requeue(loadlab_controller::reconcile::WAIT));
    assert!(harness.cluster().created("/pods").is_empty());
    let status = harness.cluster().status_patches().pop().unwrap();
    assert_eq!(status["phase"], "Pending");
    let planned = condition(&status, "NodesPlanned");
    assert_eq!(planned["status"], "False");
    assert_eq!(planned["reason"], "CohortWithoutNodes");
    let message = planned["message"].as_str().unwrap();
    assert!(
        message.contains("\"patched\"") && message.contains("new-1 (NotReady)"),
        "{message}"
    );

    // The next pass finds that status in place and writes nothing: waiting experiments pass
    // every few seconds and must not each write an unchanged status.
    let mut seen = experiment(true);
    seen.status = Some(serde_json::from_value(status).unwrap());
    let patches = harness.cluster().status_patches().len();
    harness.reconcile(seen).await;
    assert_eq!(harness.cluster().status_patches().len(), patches);
}

#[tokio::test]
async fn where_asked_an_experiment_gets_its_network_policy_once_before_its_pods() {
    let harness = Harness::with_network_policies(seed_fleet());
    harness.reconcile(experiment(true)).await;
    harness.reconcile(experiment(true)).await;
    {
        let cluster = harness.cluster();
        let policies = cluster.created("/networkpolicies");
        assert_eq!(policies.len(), 1, "{:?}", cluster.requests);
        let policy = &policies[0];
        assert!(
            policy["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("epoll-refcount-netpol-")
        );
        assert_eq!(
            policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "loadlab-system"
        );
        let first_pod = cluster
            .requests
            .iter()
            .position(|(m, p, _)| m == "POST" && p.ends_with("/pods"))
            .unwrap();
        let policy_at = cluster
            .requests
            .iter()
            .position(|(m, p, _)| m == "POST" && p.ends_with("/networkpolicies"))
            .unwrap();
        assert!(policy_at < first_pod);
    }
    // Without the chart's setting, none.
    let plain = Harness::new(seed_fleet());
    plain.reconcile(experiment(true)).await;
    assert!(plain.cluster().created("/networkpolicies").is_empty());
}

#[tokio::test]
async fn pods_or_a_secret_the_api_server_refuses_are_named_in_the_status() {
    for (suffix, says) in [
        ("/pods", "the API server refused pod "),
        ("/secrets", "the API server refused the token Secret "),
        (
            "/networkpolicies",
            "the API server refused the NetworkPolicy ",
        ),
    ] {
        let harness = Harness::with_network_policies(seed_fleet());
        let refused = "violates PodSecurity \"baseline:latest\": non-default capabilities";
        harness.cluster().refuse = Some((suffix.to_string(), 403, refused.to_string()));
        harness.reconcile(experiment(true)).await;
        let status = harness.cluster().status_patches().pop().unwrap();
        assert_eq!(status["phase"], "Pending", "{status}");
        let pods_ready = condition(&status, "PodsReady");
        assert_eq!(pods_ready["reason"], "Refused", "{pods_ready}");
        let message = pods_ready["message"].as_str().unwrap();
        assert!(
            message.starts_with(says) && message.ends_with(refused),
            "{message}"
        );
        assert!(harness.runner.started.lock().unwrap().is_empty());
        // And an Event, as `kubectl describe` shows them.
        let events = harness.cluster().created("/events");
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (events[0]["type"].as_str(), events[0]["reason"].as_str()),
            (Some("Warning"), Some("Refused"))
        );
        assert_eq!(events[0]["regarding"]["name"], "epoll-refcount");
        assert_eq!(events[0]["note"], message);
        // A pass that meets it again adds to the same Event rather than making another.
        harness.reconcile(experiment(true)).await;
        assert_eq!(harness.cluster().created("/events").len(), 1);
    }
}

#[tokio::test]
async fn a_pod_of_the_same_name_that_another_experiment_owns_is_neither_adopted_nor_deleted() {
    let harness = Harness::new(seed_fleet());
    // The first pass makes this experiment's pods; then they are handed to another owner, as
    // if an experiment of the same name and another uid had made them.
    harness.reconcile(experiment(true)).await;
    {
        let mut cluster = harness.cluster();
        for name in cluster.pod_names() {
            let path = format!("/api/v1/namespaces/lab/pods/{name}");
            let pod = cluster.objects.get_mut(&path).unwrap();
            pod["metadata"]["ownerReferences"][0]["uid"] = "someone-else".into();
            pod["status"] = running("10.1.0.9");
        }
    }
    let deletes_before = harness
        .cluster()
        .requests
        .iter()
        .filter(|(m, _, _)| m == "DELETE")
        .count();
    harness.reconcile(experiment(true)).await;
    let cluster = harness.cluster();
    let status = cluster.status_patches().pop().unwrap();
    assert_eq!(status["phase"], "Pending", "{status}");
    assert!(
        status["conditions"]
            .to_string()
            .contains("exists but belongs to another owner"),
        "{status}"
    );
    let deletes = cluster
        .requests
        .iter()
        .filter(|(m, _, _)| m == "DELETE")
        .count();
    assert_eq!(deletes, deletes_before, "another owner's pod was deleted");
    assert!(harness.runner.started.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failing_pod_fails_the_experiment_and_is_named() {
    let harness = Harness::new(seed_fleet());
    harness.reconcile(experiment(true)).await;
    {
        let mut cluster = harness.cluster();
        let name = cluster.pod_names()[0].clone();
        cluster.set_pod_status(
            &name,
            json!({
                "phase": "Pending",
                "containerStatuses": [{ "name": "agent", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                    "state": { "waiting": { "reason": "ImagePullBackOff", "message": "pull access denied" } } }]
            }),
        );
    }
    let action = harness.reconcile(experiment(true)).await;
    assert_eq!(action, Action::await_change());
    let status = harness.cluster().status_patches().pop().unwrap();
    assert_eq!(status["phase"], "Failed");
    let message = status["conditions"].to_string();
    assert!(
        message.contains("ImagePullBackOff pull access denied"),
        "{message}"
    );
    assert!(message.contains("on node"), "{message}");
    assert!(harness.runner.started.lock().unwrap().is_empty());
}

/// Nothing was asked of the API server but the status and Events.
fn assert_only_status_and_events_written(cluster: &Cluster) {
    assert!(
        cluster
            .requests
            .iter()
            .all(|(m, p, _)| (m == "PATCH" && p.ends_with("/status"))
                || (m == "POST" && p.ends_with("/events"))),
        "{:?}",
        cluster.requests
    );
}

#[tokio::test]
async fn an_invalid_spec_fails_without_touching_the_cluster() {
    let harness = Harness::new(seed_fleet());
    let mut bad = experiment(true);
    bad.spec.cohorts[1].name = "unpatched".into();
    harness.reconcile(bad).await;
    let cluster = harness.cluster();
    assert_only_status_and_events_written(&cluster);
    let status = cluster.status_patches().pop().unwrap();
    assert_eq!(status["phase"], "Failed");
    assert!(status["conditions"].to_string().contains("another cohort"));
}

#[tokio::test]
async fn an_experiment_where_the_controller_may_not_run_waits_told_why_and_nothing_is_made() {
    let harness = Harness {
        namespaces: Namespaces::parse("perf").unwrap(),
        ..Harness::new(seed_fleet())
    };
    // In `lab`, which the chart did not grant.
    let action = harness.reconcile(experiment(true)).await;
    assert_eq!(action, Action::await_change());
    let cluster = harness.cluster();
    assert_only_status_and_events_written(&cluster);
    let status = cluster.status_patches().pop().unwrap();
    assert_eq!(status["phase"], "Pending");
    let pods = condition(&status, "PodsReady");
    assert_eq!(pods["reason"], "NamespaceNotAllowed");
    let message = pods["message"].as_str().unwrap();
    assert!(
        message.contains("only in namespace(s) perf, not in lab")
            && message.contains("experimentNamespaces"),
        "{message}"
    );
    assert!(
        cluster
            .created("/events")
            .iter()
            .any(|event| event.to_string().contains("NamespaceNotAllowed")),
        "no Warning Event"
    );
    drop(cluster);
    assert!(harness.runner.started.lock().unwrap().is_empty());
}

#[tokio::test]
async fn deletion_stops_the_run_and_removes_the_finalizer() {
    let harness = Harness::new(seed_fleet());
    let mut deleting = experiment(true);
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    harness.reconcile(deleting.clone()).await;
    assert_eq!(
        harness.runner.stopped.lock().unwrap().clone(),
        vec!["lab/epoll-refcount".to_string()]
    );
    let cluster = harness.cluster();
    let (method, path, body) = cluster.requests.last().unwrap();
    assert_eq!(method, "PATCH");
    assert!(path.ends_with("/experiments/epoll-refcount"), "{path}");
    assert!(body.to_string().contains("remove"), "{body}");
    assert!(cluster.created("/pods").is_empty());
    let _ = deleting.name_any();
}
