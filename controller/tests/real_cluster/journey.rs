//! The user journey of the README: `helm install`, `helm test`, `kubectl apply` of an
//! experiment, `kubectl get experiments` moving from Pending to Succeeded, agent pods on the
//! chosen node, the comparison, runs and a flamegraph through the Service, and deleting the
//! experiment removes its pods but never its results.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use loadlab_controller::status::Phase;

use crate::harness::{Release, repo, run, try_run};

const EXPERIMENT: &str = "one-node";

#[tokio::test]
#[ignore = "needs cluster"]
async fn helm_install_apply_run_and_read_the_results() {
    let release = Release::install("loadlab-journey", &["controller.replicas=2"]).await;
    let ns = release.namespace.clone();
    run("helm", &["test", "loadlab", "-n", &ns, "--timeout", "5m"]);
    // The controller waits for the database the chart starts beside it instead of crashing.
    let controllers = release.kubectl_json(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=controller",
    ]);
    let controllers = controllers["items"].as_array().unwrap();
    assert_eq!(controllers.len(), 2);
    for pod in controllers {
        assert_eq!(
            pod["status"]["containerStatuses"][0]["restartCount"], 0,
            "{}",
            pod["metadata"]["name"]
        );
    }

    // Least privilege: what the controller uses and no more, as the API server enforces it
    // (the experiment below then runs with exactly this).
    let account = format!("system:serviceaccount:{ns}:loadlab");
    // `kubectl auth can-i` takes a subresource apart (`x/y` would name an object `y`).
    let can = |verb: &str, resource: &str, namespace: &str| {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let mut args = vec![
            "auth", "can-i", verb, resource, "--as", &account, "-n", namespace,
        ];
        let flag = format!("--subresource={subresource}");
        if !subresource.is_empty() {
            args.push(&flag);
        }
        try_run("kubectl", &args).0
    };
    let uses = [
        ("get", "experiments.loadlab.dev"),
        ("list", "experiments.loadlab.dev"),
        ("watch", "experiments.loadlab.dev"),
        ("patch", "experiments.loadlab.dev"),
        ("patch", "experiments.loadlab.dev/status"),
        ("update", "experiments.loadlab.dev/finalizers"),
        ("list", "nodes"),
        ("watch", "nodes"),
        ("get", "pods"),
        ("list", "pods"),
        ("create", "pods"),
        ("delete", "pods"),
        ("deletecollection", "pods"),
        ("watch", "pods"),
        ("create", "secrets"),
        ("create", "events.events.k8s.io"),
        ("patch", "events.events.k8s.io"),
        ("update", "leases.coordination.k8s.io"),
        ("create", "networkpolicies.networking.k8s.io"),
    ];
    for (verb, resource) in uses {
        assert!(
            can(verb, resource, &ns),
            "the controller needs {verb} {resource}"
        );
    }
    let never = [
        ("delete", "experiments.loadlab.dev", ns.as_str()),
        ("update", "experiments.loadlab.dev", ns.as_str()),
        ("update", "experiments.loadlab.dev/status", ns.as_str()),
        ("get", "nodes", ns.as_str()),
        ("patch", "nodes", ns.as_str()),
        // Pod tokens are derived from the chart's key: no Secret is ever read back.
        ("get", "secrets", ns.as_str()),
        ("get", "secrets", "kube-system"),
        ("list", "secrets", ns.as_str()),
        ("delete", "secrets", ns.as_str()),
        ("delete", "events.events.k8s.io", ns.as_str()),
        ("create", "deployments.apps", ns.as_str()),
        ("create", "pods/exec", ns.as_str()),
        ("get", "networkpolicies.networking.k8s.io", ns.as_str()),
        ("delete", "networkpolicies.networking.k8s.io", ns.as_str()),
        ("update", "leases.coordination.k8s.io", "kube-system"),
        // Pods, Secrets and NetworkPolicies only where experiments may run (the release's
        // namespace unless the chart names others).
        ("create", "pods", "default"),
        ("list", "pods", "kube-system"),
        ("create", "secrets", "default"),
        ("create", "networkpolicies.networking.k8s.io", "default"),
    ];
    for (verb, resource, namespace) in never {
        assert!(
            !can(verb, resource, namespace),
            "the controller may {verb} {resource} in {namespace}, which it never needs"
        );
    }

    let example = repo().join("examples/one-node-cluster.yaml");
    release.kubectl(&["apply", "-f", example.to_str().unwrap()]);

    // What `kubectl get experiments` shows each time the status changes, and the agent pods
    // seen while it runs.
    let mut rows: Vec<String> = Vec::new();
    let mut agent_nodes = BTreeSet::new();
    let experiments = release.experiments();
    let pods: Api<Pod> = Api::namespaced(release.client.clone(), &ns);
    let selector = format!("loadlab.dev/experiment={EXPERIMENT},app.kubernetes.io/component=agent");
    let mut changes = watcher(
        experiments.clone(),
        watcher::Config::default().fields(&format!("metadata.name={EXPERIMENT}")),
    )
    .applied_objects()
    .boxed();
    let finished = tokio::time::timeout(Duration::from_secs(20 * 60), async {
        while let Some(change) = changes.next().await {
            let experiment = change.expect("watching the experiment");
            let row = release.kubectl(&["get", "experiments", EXPERIMENT, "--no-headers"]);
            if rows.last() != Some(&row) {
                rows.push(row);
            }
            for pod in pods
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
            {
                if let Some(node) = pod.spec.and_then(|s| s.node_name) {
                    agent_nodes.insert(node);
                }
            }
            let phase = experiment.status.as_ref().map(|s| s.phase);
            if phase.is_some_and(Phase::is_finished) {
                return experiment;
            }
        }
        panic!("the watch ended");
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "not finished in 20 minutes: {rows:?}\n{}",
            release.diagnose()
        )
    });
    let status = finished.status.clone().unwrap();
    assert_eq!(
        status.phase,
        Phase::Succeeded,
        "{rows:?}\n{}",
        release.diagnose()
    );

    // PHASE, RUNS and VERDICT moved as a person watching would see them.
    let header = release.kubectl(&["get", "experiments"]);
    assert!(
        header.starts_with("NAME") && header.contains("PHASE") && header.contains("RUNS"),
        "{header}"
    );
    assert!(
        rows.iter().any(|r| r.contains("Running")),
        "never seen Running: {rows:?}"
    );
    let last = rows.last().unwrap();
    assert!(
        last.contains("Succeeded") && last.contains("4/4"),
        "{rows:?}"
    );
    assert!(status.verdict.is_some(), "{status:?}");
    assert_eq!(status.runs_stored, 4);
    let real_node = release
        .kubectl(&["get", "nodes", "-l", "lab/kind=real", "-o", "name"])
        .trim()
        .trim_start_matches("node/")
        .to_string();
    assert_eq!(
        agent_nodes,
        BTreeSet::from([real_node.clone()]),
        "one agent pod, on the real node"
    );
    for cohort in &status.cohorts {
        assert_eq!(cohort.nodes, vec![real_node.clone()]);
        assert!(
            cohort.connections_per_second.unwrap_or(0.0) > 0.0,
            "{cohort:?}"
        );
    }

    // The experiment's NetworkPolicy, as the API server accepted it: only the controller
    // reaches its pods' gRPC. (This cluster's network plugin does not enforce policies.)
    let policies = release.kubectl_json(&[
        "get",
        "networkpolicies",
        "-l",
        &format!("loadlab.dev/experiment={EXPERIMENT}"),
    ]);
    let policies = policies["items"].as_array().unwrap();
    assert_eq!(policies.len(), 1, "{policies:?}");
    let from = &policies[0]["spec"]["ingress"][0]["from"][0];
    assert_eq!(
        from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        ns.as_str()
    );
    assert_eq!(
        from["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "controller"
    );

    // The REST API through the chart's Service.
    let id = status
        .results_id
        .clone()
        .expect("the status names the results");
    let comparison = release.get_json(&format!("/api/v1/experiments/{id}/comparison"));
    let cohorts = comparison["cohorts"].as_array().unwrap();
    assert_eq!(cohorts.len(), 2, "{comparison}");
    for cohort in cohorts {
        assert_eq!(cohort["runs_succeeded"], 2, "{cohort}");
        assert!(
            !cohort["locks"].as_array().unwrap().is_empty(),
            "lock contention from inside the agent pod: {cohort}"
        );
        assert!(
            !cohort["cpu_symbols"].as_array().unwrap().is_empty(),
            "a CPU profile from inside the agent pod: {cohort}"
        );
    }
    let runs = release.get_json(&format!("/api/v1/experiments/{id}/runs"));
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for stored in runs {
        assert_eq!(stored["status"], "succeeded", "{stored}");
        assert!(stored["lock_contention_unavailable"].is_null(), "{stored}");
        assert!(stored["cpu_profile_unavailable"].is_null(), "{stored}");
        // Counted three ways inside the agent pod's network namespace: the generator's
        // connections, nginx's accepts, the kernel's passive opens (which also count the
        // kubelet's readiness probes of the agent's port, one every 2 s).
        let completed = stored["completed_connections"].as_u64().unwrap();
        let counters = &stored["counters"];
        assert!(completed > 0);
        assert_eq!(
            counters["nginx_accepts"].as_u64(),
            Some(completed),
            "{stored}"
        );
        let passive = counters["tcp_passive_opens"].as_u64().unwrap();
        assert!(
            passive >= completed && passive - completed <= 10,
            "PassiveOpens {passive} against {completed} connections: {stored}"
        );
    }
    let (code, svg) = release.get(&format!(
        "/api/v1/experiments/{id}/flamegraph?cohort=two-workers"
    ));
    assert_eq!(code, 200);
    let svg = String::from_utf8_lossy(&svg);
    assert!(svg.contains("<svg"));
    // nginx's user-space half named inside the agent pod, with no perf binary in the image:
    // the C library's system call wrappers its workers spend their time under.
    assert!(
        ["epoll_wait", "accept4", "__close", "writev"]
            .iter()
            .any(|wrapper| svg.contains(&format!("<title>{wrapper} ("))),
        "no user-space frame of nginx named in the flamegraph"
    );

    // The experiment's pods are gone once it ends; deleting it keeps its results.
    let left = pods
        .list(&ListParams::default().labels(&format!("loadlab.dev/experiment={EXPERIMENT}")))
        .await
        .unwrap();
    let running: Vec<_> = left
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(running.is_empty(), "pods left after the end: {running:?}");
    release.kubectl(&["delete", "experiment", EXPERIMENT, "--timeout=120s"]);
    let after = release.get_json(&format!("/api/v1/experiments/{id}/comparison"));
    assert_eq!(after["cohorts"], comparison["cohorts"]);
}
