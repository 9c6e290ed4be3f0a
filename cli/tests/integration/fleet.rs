//! Fleets without Kubernetes, on one machine: network namespaces joined by a bridge stand in for
//! hosts. Each test builds its own lab (a hub namespace with a bridge, one namespace per host,
//! a veth from the root namespace for `loadlab run`), starts `loadlab agent serve` and
//! `loadlab loadgen serve` inside, and removes everything when it ends. Load stays inside the
//! lab's namespaces. Needs root; without it each test says so and fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;

use loadlab_engine::spec::ExperimentBuilder;
use loadlab_results::private_postgres::PrivatePostgres;
use loadlab_results::{RunOutcome, Store};
use serde_json::json;

use crate::fleet_lab::*;
use crate::support::{fails_in_one_line, only_experiment, scratch, stored_experiments};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_namespaces_two_cohorts_two_generators_count_exactly() {
    let (url, store) = scratch().await;
    let mut lab = Lab::new();
    let a = lab.host(10);
    let b = lab.host(20);
    let g = lab.host(30);
    let (agent_a, _) = lab.agent(&a);
    let (agent_b, _) = lab.agent(&b);
    let (gen_1, _) = lab.loadgen(&g, 7701, &[&a, &b]);
    let (gen_2, _) = lab.loadgen(&g, 7702, &[&a, &b]);

    let output = lab.run(
        &experiment(&agent_a, &agent_b, &[gen_1, gen_2], "1s", 1),
        &url,
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let runs = store
        .experiment_runs(only_experiment(&store).await)
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    let completed: i64 = runs.iter().map(|r| r.completed_connections).sum();
    let accepts: u64 = runs.iter().map(|r| r.counters.nginx_accepts).sum();
    assert!(completed > 0);
    assert_eq!(
        completed, accepts as i64,
        "merged generators = nginx accepts"
    );
    for run in &runs {
        assert_eq!(run.outcome, RunOutcome::Succeeded);
        assert_eq!(run.completed_connections, run.counters.nginx_accepts as i64);
        // Measured and stored with the run; its size depends on the machine, not asserted.
        assert!(
            run.generator_skew_us.is_some_and(|skew| skew >= 0),
            "{:?}",
            run.generator_skew_us
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_killed_mid_run_fails_the_run_with_its_reason_and_the_experiment_goes_on() {
    let (url, store) = scratch().await;
    let mut lab = Lab::new();
    let hosts = two_hosts_and_a_generator(&mut lab);
    let file = hosts.experiment_file(&lab, "60s", 1);
    let mut run = lab.spawn_run(&file, |command| {
        command.env("DATABASE_URL", &url);
    });
    // The first run's target (host-a) is up: its storm is under way (a 60 s window).
    lab.target_up(10, &mut run).await;
    lab.kill(hosts.generator_process);
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let status = run.wait().unwrap();
    // It goes on to its end, then says no run of a cohort succeeded (exit status 4).
    assert_eq!(status.code(), Some(4), "the experiment goes on: {stderr}");
    assert!(stderr.contains("nothing to compare it by"), "{stderr}");
    for host in [10, 20] {
        assert_eq!(
            lab.listeners(host),
            1,
            "host .{host}: a target was left running"
        );
    }

    let id = only_experiment(&store).await;
    let runs = store.experiment_runs(id).await.unwrap();
    assert_eq!(
        runs.len(),
        4,
        "two planned runs, each tried twice (retries: 1)"
    );
    for run in &runs {
        match &run.outcome {
            RunOutcome::Failed { reason } => assert!(reason.contains("storm"), "{reason}"),
            RunOutcome::Succeeded => panic!("a run without its generator succeeded"),
        }
        assert_eq!(
            run.completed_connections, 0,
            "nothing half-measured is stored"
        );
    }
    let attempts: Vec<i32> = runs.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, vec![1, 2, 1, 2]);
    assert_eq!(store.experiment(id).await.unwrap().status, "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_is_gone_is_named_before_anything_is_stored() {
    let (url, store) = scratch().await;
    let mut lab = Lab::new();
    let hosts = two_hosts_and_a_generator(&mut lab);
    lab.kill(hosts.agent_b_process);
    let output = lab.run(
        &experiment(&hosts.agent_a, &hosts.agent_b, &[hosts.generator], "1s", 1),
        &url,
        &[],
    );
    fails_in_one_line(&output, &format!("cohort host-b, node {}", hosts.agent_b));
    let experiments = stored_experiments(&store).await;
    assert_eq!(experiments, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_by_the_hosts() {
    let (url, _store) = scratch().await;
    let mut lab = Lab::new();
    let a = lab.host(10);
    let g = lab.host(30);
    let (agent_a, _) = lab.agent(&a);
    let (generator, _) = lab.loadgen(&g, 7701, &[&a]);
    let wrong = lab.dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token").unwrap();
    let yaml = experiment(&agent_a, &agent_a, &[generator], "1s", 1);
    let file = lab.dir.path().join("experiment.yaml");
    std::fs::write(&file, yaml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args([
            "run",
            file.to_str().unwrap(),
            "--token-file",
            wrong.to_str().unwrap(),
        ])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("wrong token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_carries_the_fleet_and_a_client_without_the_ca_gets_nowhere() {
    let (url, store) = scratch().await;
    let mut lab = Lab::new();
    let a = lab.host(10);
    let g = lab.host(30);
    let certified = rcgen::generate_simple_self_signed(vec![a.clone(), g.clone()]).unwrap();
    let cert = lab.dir.path().join("cert.pem");
    let key = lab.dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let agent = format!("{a}:7700");
    lab.serve(
        &a,
        &[
            "agent",
            "serve",
            "--listen",
            &agent,
            "--target-address",
            &a,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
    );
    let generator = format!("{g}:7701");
    lab.serve(
        &g,
        &[
            "loadgen",
            "serve",
            "--listen",
            &generator,
            "--allow",
            &a,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
    );
    let yaml = experiment(&agent, &agent, &[generator], "1s", 1);

    let output = lab.run(&yaml, &url, &["--tls-ca", cert]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let runs = store
        .experiment_runs(only_experiment(&store).await)
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.outcome == RunOutcome::Succeeded));

    // Plain HTTP/2 against the TLS servers: refused before anything is stored.
    let output = lab.run(&yaml, &url, &[]);
    fails_in_one_line(&output, "cohort host-a");
    let experiments = stored_experiments(&store).await;
    assert_eq!(experiments, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_run_fails_that_cohorts_runs_and_the_other_cohort_goes_on() {
    let (url, store) = scratch().await;
    let mut lab = Lab::new();
    let hosts = two_hosts_and_a_generator(&mut lab);
    let file = hosts.experiment_file(&lab, "3s", 2);
    let mut run = lab.spawn_run(&file, |command| {
        command.env("DATABASE_URL", &url);
    });
    let mut stderr = BufReader::new(run.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    // The schedule is host-a, host-b, then host-b, host-a: wait for host-a's first run.
    while stderr.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.starts_with("[1/4 rep 1]") {
            break;
        }
        line.clear();
    }
    // host-b's target is up: kill its agent.
    lab.target_up(20, &mut run).await;
    lab.kill(hosts.agent_b_process);
    std::io::Read::read_to_string(stderr.get_mut(), &mut seen).unwrap();
    let status = run.wait().unwrap();
    // host-b measured nothing: the exit status says so (4) once everything is stored.
    assert_eq!(status.code(), Some(4), "the experiment goes on: {seen}");
    assert!(seen.contains("no run of host-b succeeded"), "{seen}");

    let runs = store
        .experiment_runs(only_experiment(&store).await)
        .await
        .unwrap();
    let (a, b): (Vec<_>, Vec<_>) = runs.iter().partition(|r| r.cohort == "host-a");
    assert_eq!(a.len(), 2, "{seen}");
    assert!(a.iter().all(|r| r.outcome == RunOutcome::Succeeded));
    assert_eq!(
        b.len(),
        4,
        "two planned runs on host-b, each tried twice: {seen}"
    );
    for run in &b {
        assert!(
            matches!(&run.outcome, RunOutcome::Failed { .. }),
            "{:?}",
            run.outcome
        );
        assert_eq!(
            run.completed_connections, 0,
            "nothing half-measured is stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_orchestrator_resumes_without_repeating_runs() {
    let (url, store) = scratch().await;
    let mut lab = Lab::new();
    let hosts = two_hosts_and_a_generator(&mut lab);
    let file = hosts.experiment_file(&lab, "2s", 2);
    let mut run = lab.spawn_run(&file, |command| {
        command.env("DATABASE_URL", &url);
    });
    let (id, _) = announced_until(&mut run, "[2/4 rep 1]");
    // The third run (host-b's, repetitions rotate) has its target listening beside the
    // agent, so its storm is under way: kill loadlab outright.
    let before = kill_once_target_up(&lab, 20, &mut run, &store, id).await;

    let yaml = std::fs::read_to_string(&file).unwrap();
    let runs = resume_to_the_end(&lab, &yaml, &url, &store, id, &before, 4).await;
    let mut keys: Vec<(String, i32)> = runs
        .iter()
        .map(|r| (r.cohort.clone(), r.repetition))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 4, "no run repeated");
    assert_eq!(store.experiment(id).await.unwrap().status, "completed");
    // The target the killed run left behind was stopped by the next PrepareTarget: only the
    // agents are left in their namespaces.
    for host in ["h10", "h20"] {
        let namespace = format!("{}{host}", lab.tag);
        assert_eq!(
            lab.pids(&namespace).len(),
            1,
            "{namespace}: a stale nginx is running"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_never_listens_fails_its_run_with_the_reason_and_is_not_left_running() {
    let (url, store) = scratch().await;
    let mut lab = Lab::new();
    let a = lab.host(10);
    let g = lab.host(30);
    // Answers `-v` like nginx, then never listens.
    let fake = lab.dir.path().join("never-listens");
    let pid_file = lab.dir.path().join("pid");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nif [ \"$1\" = -v ]; then echo 'nginx version: nginx/never-listens' >&2; exit 0; fi\necho $$ > {}\nexec sleep 600\n",
            pid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let agent = format!("{a}:7700");
    lab.serve_with(
        &a,
        &["agent", "serve", "--listen", &agent, "--target-address", &a],
        &[("LOADLAB_NGINX", &fake)],
    );
    let (generator, _) = lab.loadgen(&g, 7701, &[&a]);
    let yaml = ExperimentBuilder::new("fleet")
        .set("load.warmup", "200ms")
        .set("generators", vec![generator])
        .set("repetitions", 1)
        .set("retries", 0)
        .cohort(json!({ "name": "host-a", "nodes": [agent] }))
        .yaml();
    let output = lab.run(&yaml, &url, &[]);
    assert_eq!(
        output.status.code(),
        Some(4),
        "its one run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let runs = store
        .experiment_runs(only_experiment(&store).await)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    match &runs[0].outcome {
        RunOutcome::Failed { reason } => {
            assert!(reason.contains("did not listen"), "{reason}")
        }
        RunOutcome::Succeeded => panic!("a target that never listened was measured"),
    }
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the target that never listened was left running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_experiment_loses_no_run() {
    let mut lab = Lab::new();
    let hosts = two_hosts_and_a_generator(&mut lab);
    // loadlab creates and starts its private cluster here; the test stops and starts it.
    let data = tempfile::tempdir().unwrap();
    // The cluster's owner (postgres, when the tests run as root) must reach its directory.
    std::fs::set_permissions(
        data.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let cluster = PrivatePostgres::in_data_dir(data.path());
    let _stopped = Stopped(&cluster);
    let file = hosts.experiment_file(&lab, "1s", 2);
    let mut run = lab.spawn_run(&file, |command| {
        command
            .env_remove("DATABASE_URL")
            .env("LOADLAB_DATA_DIR", data.path());
    });
    let stderr = BufReader::new(run.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut restarted = false;
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.starts_with("[1/4 rep 1]") {
            // The first run is stored; the database goes away while the second one runs.
            cluster.stop().unwrap();
        }
        if line.starts_with("results database unavailable") {
            cluster.ensure_running().unwrap();
            restarted = true;
        }
        seen.push(line);
    }
    let status = run.wait().unwrap();
    let seen = seen.join("\n");
    assert!(status.success(), "{seen}");
    assert!(restarted, "no run waited for the database: {seen}");

    let store = Store::connect(cluster.connect_options("loadlab"))
        .await
        .unwrap();
    let runs = store
        .experiment_runs(only_experiment(&store).await)
        .await
        .unwrap();
    assert_eq!(runs.len(), 4, "{seen}");
    assert!(runs.iter().all(|r| r.outcome == RunOutcome::Succeeded));
}

/// Stops a private cluster when the test ends, however it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohort_of_two_nodes_stores_each_nodes_runs_and_resumes_after_a_kill() {
    let (url, store) = scratch().await;
    let mut lab = Lab::new();
    let yaml = two_node_cohort(&mut lab, [Some("node-a1"), Some("node-a2")], "2s", 2);
    let file = lab.dir.path().join("experiment.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let mut run = lab.spawn_run(&file, |command| {
        command.env("DATABASE_URL", &url);
    });
    let (id, finished) = announced_until(&mut run, "[2/6 rep 1]");
    assert!(
        finished[0].contains("fleet-a on node-a1"),
        "a run of a cohort of several nodes names its node: {finished:?}"
    );
    // The third run is node-a2's first (fleet-a, host-b, then fleet-a's second node): once its
    // target listens, kill loadlab outright.
    let before = kill_once_target_up(&lab, 11, &mut run, &store, id).await;

    let runs = resume_to_the_end(&lab, &yaml, &url, &store, id, &before, 6).await;
    let mut keys: Vec<(String, i32, String)> = runs
        .iter()
        .map(|r| (r.cohort.clone(), r.repetition, r.node.hostname.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        keys,
        vec![
            ("fleet-a".to_string(), 1, "node-a1".to_string()),
            ("fleet-a".to_string(), 1, "node-a2".to_string()),
            ("fleet-a".to_string(), 2, "node-a1".to_string()),
            ("fleet-a".to_string(), 2, "node-a2".to_string()),
            ("host-b".to_string(), 1, "node-b".to_string()),
            ("host-b".to_string(), 2, "node-b".to_string()),
        ],
        "every node of every cohort, each repetition once"
    );
    let (experiment, comparison) = store.experiment_with_comparison(id).await.unwrap();
    assert_eq!(experiment.status, "completed");
    assert_eq!(experiment.planned_runs, Some(6), "repetitions × nodes");
    let comparison: serde_json::Value =
        serde_json::from_slice(&comparison.expect("the comparison is written")).unwrap();
    let fleet_a = &comparison["cohorts"][0];
    assert_eq!(fleet_a["name"], "fleet-a", "{comparison}");
    assert_eq!(fleet_a["runs_succeeded"], 4, "{comparison}");
    let nodes: Vec<&str> = fleet_a["node_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().split('/').next().unwrap())
        .collect();
    assert_eq!(nodes, vec!["node-a1", "node-a2"], "{comparison}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_of_a_cohort_with_one_name_are_refused_before_anything_is_stored() {
    let (url, store) = scratch().await;
    let mut lab = Lab::new();
    // The lab's hosts share this machine's hostname: without --node-name both agents give it.
    let yaml = two_node_cohort(&mut lab, [None, None], "1s", 1);
    let output = lab.run(&yaml, &url, &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cohort fleet-a: nodes 1 and 2 both call themselves")
            && stderr.contains("--node-name"),
        "{stderr}"
    );
    assert_eq!(stored_experiments(&store).await, 0);
}
