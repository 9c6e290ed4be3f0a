//! Faults on the real cluster that take minutes each, run by hand (`scripts/fault-tests.sh`,
//! durations in the README) rather than in the test command: the leading controller killed
//! with SIGKILL five times mid-run, an agent its controller cannot reach for 90 s, a generator
//! that refuses its controller for good while its pod looks Ready, a namespace whose
//! PodSecurity level refuses the agent, and experiments whose long names share a prefix,
//! deleted and applied again five times.
//!
//! Network faults are made where a pod's own traffic passes: an iptables rule in the pod's
//! network namespace (entered from this machine through the process's pid) that drops or
//! refuses the controller's address only, so the kubelet's probes still find the pod Ready.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use loadlab_controller::Experiment;
use loadlab_controller::operator::LEASE_NAME;
use loadlab_controller::status::Phase;

use crate::failover::{all_eight_succeed_once, experiment, holder, outcomes, runs_stored_at_least};
use crate::harness::{
    Release, apply_json, condition, finished, kubectl, real_node_experiment, run, try_run,
};

/// Host pids of the processes whose command line contains `command` and, when given, whose
/// environment holds `variable` (a container's processes are this machine's processes).
fn host_processes(command: &str, variable: Option<&str>) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let read = |file: &str| std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
        let words = |bytes: Vec<u8>| {
            bytes
                .split(|b| *b == 0)
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect::<Vec<_>>()
        };
        if !words(read("cmdline")).join(" ").contains(command) {
            continue;
        }
        if variable.is_none_or(|v| words(read("environ")).iter().any(|e| e == v)) {
            found.push(pid);
        }
    }
    found
}

fn only_process(command: &str, variable: Option<&str>) -> i32 {
    let found = host_processes(command, variable);
    assert_eq!(found.len(), 1, "processes running {command:?}: {found:?}");
    found[0]
}

/// The pod addresses of the release's controller replicas.
fn controller_addresses(release: &Release) -> Vec<String> {
    let pods = release.kubectl_json(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=controller",
    ]);
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|pod| pod["status"]["podIP"].as_str().map(str::to_string))
        .collect()
}

/// `iptables ACTION INPUT ...` in the network namespace of process `pid`: what reaches `port`
/// from `source` meets `target` (DROP, or a reset).
fn firewall(pid: i32, action: &str, port: u16, source: &str, target: &[&str]) {
    let (pid, port) = (pid.to_string(), port.to_string());
    let mut args = vec![
        "-t", &pid, "-n", "iptables", action, "INPUT", "-p", "tcp", "--dport", &port, "-s", source,
        "-j",
    ];
    args.extend(target);
    run("nsenter", &args);
}

#[tokio::test]
#[ignore = "slow fault test: scripts/fault-tests.sh"]
async fn the_leader_killed_five_times_mid_run_stores_every_run_once() {
    let started = Instant::now();
    let release = Release::install("loadlab-sigkill", &["controller.replicas=2"]).await;
    let ns = release.namespace.clone();
    apply_json(&experiment("sigkill", &ns));
    let leases: Api<Lease> = Api::namespaced(release.client.clone(), &ns);
    let mut stored = 0;
    for kill in 1..=5 {
        // One more run stored since the last kill: by then a leader has resumed it.
        let midway = release
            .wait_experiment(
                "sigkill",
                Duration::from_secs(600),
                "another run in",
                runs_stored_at_least(stored + 1),
            )
            .await;
        let status = midway.status.unwrap();
        assert!(
            !status.phase.is_finished(),
            "finished before kill {kill}: {status:?}"
        );
        stored = status.runs_stored;
        let leader = holder(&leases.get(LEASE_NAME).await.unwrap()).expect("a leader");
        let pid = only_process(
            "loadlab controller",
            Some(&format!("LOADLAB_IDENTITY={leader}")),
        );
        run("kill", &["-KILL", &pid.to_string()]);
        eprintln!(
            "kill {kill}: {leader} (pid {pid}) with {stored} runs stored, at {} s",
            started.elapsed().as_secs()
        );
    }
    let (status, failures) = all_eight_succeed_once(&release, "sigkill").await;
    let restarts: u64 = release.kubectl_json(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=controller",
    ])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pod| {
            pod["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(restarts, 5, "every kill restarted a container");
    eprintln!(
        "five SIGKILLs: {status:?}; failed attempts stored: {failures:?}; {} s",
        started.elapsed().as_secs()
    );
}

#[tokio::test]
#[ignore = "slow fault test: scripts/fault-tests.sh"]
async fn an_agent_its_controller_cannot_reach_for_90_s_is_ridden_out() {
    let started = Instant::now();
    let release = Release::install("loadlab-agent-away", &[]).await;
    let ns = release.namespace.clone();
    apply_json(&experiment("away", &ns));
    release
        .wait_experiment(
            "away",
            Duration::from_secs(600),
            "one run in",
            runs_stored_at_least(1),
        )
        .await;
    let agent = only_process("loadlab agent serve", None);
    let [controller] = controller_addresses(&release).try_into().unwrap();
    // Packets dropped, not refused: to the controller the agent is simply gone.
    firewall(agent, "-I", 7700, &controller, &["DROP"]);
    let away = Instant::now();
    tokio::time::sleep(Duration::from_secs(90)).await; // the outage itself
    firewall(agent, "-D", 7700, &controller, &["DROP"]);
    eprintln!("agent unreachable for {} s", away.elapsed().as_secs());
    let (status, failures) = all_eight_succeed_once(&release, "away").await;
    assert!(
        failures.len() <= 1,
        "only the run in flight may fail: {failures:?}"
    );
    eprintln!(
        "agent away 90 s: {status:?}; failed attempts: {failures:?}; {} s",
        started.elapsed().as_secs()
    );
}

#[tokio::test]
#[ignore = "slow fault test: scripts/fault-tests.sh"]
async fn a_generator_that_refuses_its_controller_for_good_fails_a_bounded_number_of_runs() {
    let started = Instant::now();
    let release = Release::install("loadlab-generator-gone", &[]).await;
    let ns = release.namespace.clone();
    // Two cohorts, two repetitions, one retry: at most 2 attempts for each planned run.
    apply_json(&real_node_experiment(
        "gone",
        &ns,
        serde_json::json!([
            { "name": "first", "nodeSelector": { "lab/kind": "real" } },
            { "name": "second", "nodeSelector": { "lab/kind": "real" },
              "target": { "nginx": { "workers": 2 } } }
        ]),
        2,
    ));
    release
        .wait_experiment(
            "gone",
            Duration::from_secs(600),
            "one run in",
            runs_stored_at_least(1),
        )
        .await;
    let generator = only_process("loadlab loadgen serve", None);
    let [controller] = controller_addresses(&release).try_into().unwrap();
    firewall(
        generator,
        "-I",
        7701,
        &controller,
        &["REJECT", "--reject-with", "tcp-reset"],
    );
    // A failed attempt stored while the generator's pod still looks Ready: only the bound
    // on attempts can end this.
    release
        .wait_experiment(
            "gone",
            Duration::from_secs(600),
            "a failed attempt in",
            runs_stored_at_least(2),
        )
        .await;
    let generator_ready = release.kubectl(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=loadgen",
        "-o",
        "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(generator_ready.trim(), "True", "the generator is not Ready");
    let ended = release
        .wait_experiment("gone", Duration::from_secs(900), "finished", finished)
        .await;
    let status = ended.status.clone().unwrap();
    let id = status.results_id.clone().unwrap();
    let runs = release.get_json(&format!("/api/v1/experiments/{id}/runs"));
    let (succeeded, failures) = outcomes(&runs);
    let planned_left = 4 - succeeded.len();
    assert!(
        !failures.is_empty() && failures.len() <= 2 * planned_left,
        "{} runs without success, {} failed attempts: {failures:?}",
        planned_left,
        failures.len()
    );
    let completed = condition(&ended, "Completed").expect("a Completed condition");
    assert_eq!(status.phase, Phase::Failed, "{status:?}");
    assert_eq!(completed.reason, "CohortWithoutRuns", "{completed:?}");
    assert!(
        completed.message.contains("second"),
        "the cohort is not named: {completed:?}"
    );
    eprintln!(
        "generator gone: {} failed attempts for {planned_left} runs, then {:?}; {} s",
        failures.len(),
        completed.message,
        started.elapsed().as_secs()
    );
}

#[tokio::test]
#[ignore = "slow fault test: scripts/fault-tests.sh"]
async fn a_namespace_whose_pod_security_refuses_the_agent_is_named_in_the_status() {
    let restricted = "loadlab-podsec-restricted";
    let _ = try_run(
        "kubectl",
        &["delete", "namespace", restricted, "--wait=true"],
    );
    kubectl(&["create", "namespace", restricted]);
    kubectl(&[
        "label",
        "namespace",
        restricted,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let grant = format!("experimentNamespaces={{loadlab-podsec,{restricted}}}");
    let release = Release::install("loadlab-podsec", &[&grant]).await;
    apply_json(&real_node_experiment(
        "refused",
        restricted,
        serde_json::json!([{ "name": "only", "nodeSelector": { "lab/kind": "real" } }]),
        1,
    ));
    let waiting = release
        .wait_experiment_in(
            restricted,
            "refused",
            Duration::from_secs(300),
            "refused",
            |e: Option<&Experiment>| {
                e.and_then(|e| condition(e, "PodsReady"))
                    .is_some_and(|c| c.reason == "Refused")
            },
        )
        .await;
    let refused = condition(&waiting, "PodsReady").unwrap();
    assert!(
        refused.message.contains("PodSecurity") && refused.message.contains("restricted"),
        "{refused:?}"
    );
    assert_eq!(waiting.status.as_ref().unwrap().phase, Phase::Pending);
    let events = kubectl(&["get", "events", "-n", restricted, "-o", "json"]);
    assert!(events.contains("PodSecurity"), "no Event: {events}");
    run(
        "kubectl",
        &["delete", "namespace", restricted, "--timeout=300s"],
    );
}

#[tokio::test]
#[ignore = "slow fault test: scripts/fault-tests.sh"]
async fn long_names_sharing_a_prefix_and_five_recreations_each_run_on_their_own_pods() {
    let started = Instant::now();
    let release = Release::install("loadlab-names", &[]).await;
    let ns = release.namespace.clone();
    let one_run = |name: &str| {
        real_node_experiment(
            name,
            &ns,
            serde_json::json!([{ "name": "only", "nodeSelector": { "lab/kind": "real" } }]),
            1,
        )
    };
    // Pod names keep the first characters of the experiment's name: these two share them all.
    let prefix = "a-long-experiment-name-that-fills-every-character-kept-";
    let twins = [format!("{prefix}one"), format!("{prefix}two")];
    for name in &twins {
        apply_json(&one_run(name));
    }
    for name in &twins {
        let ended = release
            .wait_experiment(name, Duration::from_secs(600), "finished", finished)
            .await;
        let status = ended.status.unwrap();
        assert_eq!(status.phase, Phase::Succeeded, "{name}: {status:?}");
        assert_eq!(status.runs_stored, 1, "{name}: {status:?}");
    }

    // Deleted and applied again under one name, five times, each as soon as the last is gone:
    // each generation gets pods of its own, none adopted from the one before.
    let mut pods_seen: Vec<std::collections::BTreeSet<String>> = Vec::new();
    let mut uids = Vec::new();
    for generation in 1..=5 {
        apply_json(&one_run("again"));
        let running = release
            .wait_experiment(
                "again",
                Duration::from_secs(300),
                "running",
                |e: Option<&Experiment>| {
                    e.and_then(|e| e.status.as_ref())
                        .is_some_and(|s| s.phase == Phase::Running || s.phase.is_finished())
                },
            )
            .await;
        let uid = running.metadata.uid.clone().unwrap();
        let pods = release.kubectl_json(&[
            "get",
            "pods",
            "-l",
            &format!("loadlab.dev/experiment-uid={uid}"),
        ]);
        let names: std::collections::BTreeSet<String> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pod| {
                let owner = &pod["metadata"]["ownerReferences"][0]["uid"];
                assert_eq!(owner, &serde_json::json!(uid), "{pod}");
                pod["metadata"]["name"].as_str().unwrap().to_string()
            })
            .collect();
        assert!(!names.is_empty(), "generation {generation}: no pods");
        for earlier in &pods_seen {
            assert!(
                earlier.is_disjoint(&names),
                "a pod name came back: {names:?}"
            );
        }
        pods_seen.push(names);
        uids.push(uid);
        if generation < 5 {
            kubectl(&[
                "delete",
                "experiment",
                "again",
                "-n",
                &ns,
                "--wait=true",
                "--timeout=120s",
            ]);
        }
    }
    let ended = release
        .wait_experiment("again", Duration::from_secs(600), "finished", finished)
        .await;
    let status = ended.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{status:?}");
    assert_eq!(
        status.results_id.as_deref(),
        uids.last().map(String::as_str)
    );
    let runs = release.get_json(&format!(
        "/api/v1/experiments/{}/runs",
        status.results_id.unwrap()
    ));
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    eprintln!(
        "long names and five generations: {} s",
        started.elapsed().as_secs()
    );
}
