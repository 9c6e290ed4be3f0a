//! `loadlab bench cluster`: placement at fleet scale against a real API server. Against the
//! cluster in KUBECONFIG (simulated nodes from `scripts/cluster.sh kwok 1000`), it starts a
//! controller, applies several experiments at once and measures the time from the apply to
//! every pod they need created, the controller's CPU time and peak memory, and the API requests
//! it made per experiment (from the API server's audit log, which `scripts/cluster.sh` writes
//! for the benchmark's user only), beside planning alone over the same node snapshot.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use loadlab_controller::operator::LEASE_NAME;
use loadlab_controller::placement::{NodeView, place};
use loadlab_engine::Experiment;
use loadlab_engine::spec::ExperimentBuilder;
use serde_json::json;

use crate::args::BenchClusterArgs;

const NAMESPACE: &str = "loadlab-bench";
const IDENTITY: &str = "loadlab-bench";

/// Experiment `index` compares two kernels on one rack of the simulated fleet (nodes carry
/// `lab/rack: rack-<i % 20>`), its generators on the same rack. Racks 9 and 19 are skipped:
/// `scripts/kwok-nodes.sh` cordons every tenth node, which is all of theirs.
fn experiment(index: usize) -> anyhow::Result<Experiment> {
    let rack = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18,
    ][index % 18];
    let on_rack = json!({ "lab/rack": format!("rack-{rack}") });
    let file = ExperimentBuilder::new(&format!("scale-{index}"))
        .set("target.nginx", json!({}))
        .set("load.connections", 64)
        .set("load.duration", "10s")
        .set("load.generators", 2)
        .set("load.generatorPlacement.nodeSelector", on_rack.clone())
        .cohort(json!({ "name": "unpatched", "kernel": "6.1.0-47-*", "nodeSelector": on_rack }))
        .cohort(json!({ "name": "patched", "kernel": "6.1.0-56-*", "nodeSelector": on_rack }))
        .build()
        .context("the benchmark's experiment")?;
    let mut experiment = Experiment::new(&file.metadata.name, file.spec);
    experiment.metadata.namespace = Some(NAMESPACE.into());
    Ok(experiment)
}

/// User and system CPU time of a process, from /proc.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields
        .get(11..13)
        .context("a short /proc stat line")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

fn peak_rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM in /proc status")?;
    Ok(kb / 1024.0)
}

/// The audit log's requests (one `ResponseComplete` event each) after `offset`, by verb.
fn audited_requests(path: &Path, offset: u64) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let start = usize::try_from(offset).unwrap_or(0).min(text.len());
    let mut verbs = BTreeMap::new();
    for line in String::from_utf8_lossy(&text[start..]).lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["stage"] == "ResponseComplete" {
            let verb = event["verb"].as_str().unwrap_or("?").to_string();
            *verbs.entry(verb).or_default() += 1;
        }
    }
    Ok(verbs)
}

pub async fn run(args: BenchClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.experiments > 0, "--experiments must be above 0");
    anyhow::ensure!(
        args.controller_kubeconfig.exists(),
        "{} is missing: start the cluster with scripts/cluster.sh up",
        args.controller_kubeconfig.display()
    );
    let client = Client::try_default()
        .await
        .context("no cluster in KUBECONFIG (scripts/cluster.sh up, then export KUBECONFIG)")?;
    let nodes: Vec<NodeView> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(NodeView::from_node)
        .collect();
    let simulated = nodes
        .iter()
        .filter(|n| n.labels.get("type").map(String::as_str) == Some("kwok"))
        .count();
    if simulated == 0 {
        bail!("no simulated nodes: add them with `bash scripts/cluster.sh kwok 1000`");
    }
    let experiments: Vec<Experiment> = (0..args.experiments)
        .map(experiment)
        .collect::<anyhow::Result<_>>()?;

    // Planning alone over this snapshot, as `bench plan` times it over a synthetic one.
    let mut plan_times = Vec::new();
    let mut expected_pods = 0;
    for experiment in &experiments {
        let placement = place(&experiment.spec, &nodes);
        anyhow::ensure!(
            placement.is_ready(),
            "{} cannot be placed on this fleet: {:?}",
            experiment.name_any(),
            placement.problems
        );
        let mut under_test: Vec<&String> =
            placement.cohorts.iter().flat_map(|c| &c.nodes).collect();
        under_test.sort();
        under_test.dedup();
        expected_pods += under_test.len() + placement.generators.len();
        for _ in 0..50 {
            let started = Instant::now();
            std::hint::black_box(place(&experiment.spec, &nodes));
            plan_times.push(started.elapsed());
        }
    }
    plan_times.sort();
    let plan_p50 = plan_times[plan_times.len() / 2];

    let definitions: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(client.clone());
    if definitions
        .get_opt("experiments.loadlab.dev")
        .await?
        .is_none()
    {
        bail!(
            "the Experiment CRD is not installed on this cluster: `loadlab crd | kubectl apply -f -` (or helm install the chart)"
        );
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(NAMESPACE).await?.is_some() {
        bail!(
            "namespace {NAMESPACE} exists: a benchmark is running, or an earlier one was cut off (kubectl delete namespace {NAMESPACE})"
        );
    }
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(NAMESPACE.into());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await?;

    let log = tempfile::NamedTempFile::new()?;
    let mut controller = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "controller",
            "--listen",
            "127.0.0.1:0",
            "--identity",
            IDENTITY,
        ])
        .args(["--namespace", NAMESPACE, "--image", &args.image])
        .args(["--image-pull-policy", "Never"])
        .env("KUBECONFIG", &args.controller_kubeconfig)
        .env(
            "LOADLAB_TOKEN_KEY",
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
        )
        .stdout(log.reopen()?)
        .stderr(log.reopen()?)
        .kill_on_drop(true)
        .spawn()
        .context("starting the controller")?;
    let pid = controller.id().context("the controller's pid")?;
    // Ctrl-C or SIGTERM stops the measurement but not the cleanup below: the controller child,
    // the experiments and the namespace all go, so the next benchmark can start.
    let interrupted = super::interrupt_token();
    let outcome = tokio::select! {
        outcome = measure(&client, &experiments, expected_pods, pid, &args) => Some(outcome),
        () = interrupted.cancelled() => {
            eprintln!("interrupted: deleting the benchmark's experiments and namespace");
            None
        }
    };

    let api: Api<Experiment> = Api::namespaced(client.clone(), NAMESPACE);
    for experiment in &experiments {
        let _ = api
            .delete(&experiment.name_any(), &DeleteParams::default())
            .await;
    }
    let gone = |e: Option<&Experiment>| e.is_none();
    for experiment in &experiments {
        let _ = tokio::time::timeout(
            Duration::from_secs(120),
            await_condition(api.clone(), &experiment.name_any(), gone),
        )
        .await;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), controller.wait()).await;
    namespaces
        .delete(NAMESPACE, &DeleteParams::default())
        .await?;
    // The next benchmark may start as soon as this one returns.
    let _ = tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(namespaces, NAMESPACE, |n: Option<&Namespace>| n.is_none()),
    )
    .await;
    let Some(outcome) = outcome else {
        bail!("interrupted; the benchmark's experiments, pods and namespace are deleted");
    };
    let measured = outcome.with_context(|| {
        format!(
            "controller log:\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        )
    })?;

    println!(
        "cluster: {} nodes ({simulated} simulated by kwok), {} experiments applied at once, 2 cohorts each",
        nodes.len(),
        args.experiments
    );
    println!(
        "  planning one experiment over this snapshot: p50 {:.3} ms (`loadlab bench plan` times a synthetic fleet the same way)",
        plan_p50.as_secs_f64() * 1e3
    );
    println!(
        "  apply -> all {expected_pods} pods created: {:.2} s",
        measured.all_created.as_secs_f64()
    );
    println!(
        "  controller: {:.2} s CPU over that time, peak RSS {:.1} MB",
        measured.cpu.as_secs_f64(),
        measured.peak_rss_mb
    );
    let total: u64 = measured.requests.values().sum();
    let by_verb: Vec<String> = measured
        .requests
        .iter()
        .map(|(verb, n)| format!("{verb} {n}"))
        .collect();
    println!(
        "  API requests: {total} ({:.1} per experiment; {})",
        total as f64 / args.experiments as f64,
        by_verb.join(", ")
    );
    Ok(())
}

struct Measured {
    all_created: Duration,
    cpu: Duration,
    peak_rss_mb: f64,
    requests: BTreeMap<String, u64>,
}

async fn measure(
    client: &Client,
    experiments: &[Experiment],
    expected_pods: usize,
    pid: u32,
    args: &BenchClusterArgs,
) -> anyhow::Result<Measured> {
    // Leading (the lease is ours) means watching and ready to reconcile.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let ours = |lease: Option<&Lease>| {
        lease
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.as_deref())
            == Some(IDENTITY)
    };
    tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(leases, LEASE_NAME, ours),
    )
    .await
    .context("the controller did not take the lease within 2 minutes")??;

    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let mut created = watcher(pods, watcher::Config::default())
        .applied_objects()
        .boxed();
    let cpu_before = cpu_time(pid)?;
    let audit_offset = std::fs::metadata(&args.audit_log)
        .map(|m| m.len())
        .unwrap_or(0);
    let api: Api<Experiment> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    for experiment in experiments {
        api.create(&PostParams::default(), experiment).await?;
    }
    let mut seen = std::collections::BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(600), async {
        while seen.len() < expected_pods {
            match created.next().await {
                Some(Ok(pod)) => {
                    seen.insert(pod.name_any());
                }
                Some(Err(error)) => tracing::warn!(%error, "watching pods"),
                None => break,
            }
        }
    })
    .await
    .with_context(|| {
        format!(
            "{} of {expected_pods} pods created in 10 minutes",
            seen.len()
        )
    })?;
    let all_created = started.elapsed();
    let cpu = cpu_time(pid)?.saturating_sub(cpu_before);
    let peak_rss_mb = peak_rss_mb(pid)?;
    let requests = audited_requests(&args.audit_log, audit_offset)?;
    Ok(Measured {
        all_created,
        cpu,
        peak_rss_mb,
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_experiment_is_valid_and_keeps_to_one_rack() {
        for index in [0, 8, 9, 17, 18] {
            let experiment = experiment(index).unwrap();
            let rack = &experiment.spec.cohorts[0].node_selector["lab/rack"];
            assert!(!rack.ends_with("-9") && !rack.ends_with("-19"), "{rack}");
            assert_eq!(&experiment.spec.cohorts[1].node_selector["lab/rack"], rack);
        }
    }
}
