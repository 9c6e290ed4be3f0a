//! `loadlab run` end to end: the real binary, real nginx, real Postgres (a scratch database on
//! DATABASE_URL's server or on loadlab's private cluster).

use std::path::Path;
use std::process::{Command, Output};

use loadlab_results::RunOutcome;

use loadlab_engine::spec::ExperimentBuilder;
use serde_json::json;

use crate::support::{
    error_lines, fails_in_one_line, only_experiment, scratch, stored_experiments,
};

const TINY: &str = r#"
apiVersion: loadlab.dev/v1alpha1
kind: Experiment
metadata: { name: tiny }
spec:
  target: { nginx: { workers: 1 } }
  load: { connections: 8, warmup: 300ms, duration: 1s, generators: 2 }
  cohorts:
    - { name: one-worker, local: true }
    - { name: two-workers, local: true, target: { nginx: { workers: 2, reuseport: true } } }
  repetitions: 1
  pinCpus: always
  collect: { lockContention: true, cpuProfile: { frequencyHz: 199 }, kernelSymbols: [tcp_v4_connect] }
"#;

fn loadlab(dir: &Path, yaml: &str, database_url: &str, extra_env: &[(&str, &str)]) -> Output {
    loadlab_on_file("run", dir, yaml, database_url, extra_env)
}

/// `loadlab SUBCOMMAND FILE` with `yaml` as the file.
fn loadlab_on_file(
    subcommand: &str,
    dir: &Path,
    yaml: &str,
    database_url: &str,
    extra_env: &[(&str, &str)],
) -> Output {
    let file = dir.join("experiment.yaml");
    std::fs::write(&file, yaml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .arg(subcommand)
        .arg(&file)
        .env("DATABASE_URL", database_url)
        .envs(extra_env.iter().copied())
        .output()
        .expect("loadlab runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_experiment_is_measured_stored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = scratch().await;
    let output = loadlab(dir.path(), TINY, &url, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("conn/s (mean ± sd)"), "{stdout}");
    assert!(stdout.contains("two-workers"), "{stdout}");
    // The service demand of each cohort, and the second cohort's against the first.
    let cpu = stdout
        .lines()
        .skip_while(|l| !l.starts_with("node CPU per connection"))
        .find(|l| l.trim_start().starts_with("two-workers"))
        .unwrap_or_else(|| panic!("no CPU per connection row: {stdout}"));
    assert!(
        ["cheaper", "dearer", "no detectable change"]
            .iter()
            .any(|word| cpu.contains(word)),
        "{cpu}"
    );
    // nginx's own share of it, from its processes' CPU time over the window.
    assert!(cpu.contains("(nginx alone "), "{cpu}");
    // And the generator's, from its storm threads' CPU time.
    assert!(cpu.contains("(generator alone "), "{cpu}");
    assert!(stderr.contains("[2/2 rep 1]"), "progress per run: {stderr}");
    // What the windows could not control, per cohort.
    let noise = stdout
        .lines()
        .skip_while(|l| !l.starts_with("what the windows could not control"))
        .find(|l| l.trim_start().starts_with("two-workers"))
        .unwrap_or_else(|| panic!("no noise row: {stdout}"));
    assert!(noise.contains("other work"), "{noise}");

    let id_line = stdout
        .lines()
        .find(|l| l.starts_with("results: experiment "))
        .expect("results line");
    let id = uuid::Uuid::parse_str(id_line.split_whitespace().nth(2).unwrap()).unwrap();
    let runs = store.experiment_runs(id).await.unwrap();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert_eq!(run.outcome, RunOutcome::Succeeded);
        assert!(run.completed_connections > 0);
        assert!(run.warmup_connections > 0);
        assert_eq!(run.failed_connections, 0, "{:?}", run.errors);
        let attempted = (run.completed_connections + run.failed_connections) as f64;
        let accepts = run.counters.nginx_accepts as f64;
        assert!(
            (accepts - attempted).abs() <= attempted * 0.005,
            "{} loadgen vs {} nginx accepts",
            attempted,
            accepts
        );
        assert!(run.counters.tcp_passive_opens as f64 >= attempted * 0.995);
        assert!(run.counters.other_cpu_seconds.is_some());
        assert!(run.counters.device_interrupts.is_some());
        // `pinCpus: always`: on two or more cores nginx had its own (their interrupts are the
        // ones counted).
        let cpus = std::thread::available_parallelism().unwrap().get();
        if cpus >= 2 {
            assert_eq!(run.counters.unpinned, None);
            assert!(!run.counters.interrupt_cpus.is_empty());
            assert!(run.counters.interrupt_cpus.len() < cpus);
        } else {
            assert!(run.counters.unpinned.is_some());
        }
    }
    // Lock contention: collected when this machine can trace (root), else the reason.
    let can_trace = nix::unistd::Uid::effective().is_root();
    for run in &runs {
        if can_trace {
            assert_eq!(run.lock_contention_unavailable, None);
            assert!(
                !run.locks.is_empty(),
                "a connection storm on two CPUs contends kernel locks"
            );
            assert!(
                run.locks
                    .iter()
                    .all(|l| l.count > 0 && l.max_wait_ns <= l.wait_ns)
            );
        } else {
            assert!(run.lock_contention_unavailable.is_some());
        }
    }
    assert!(stdout.contains("top contended kernel locks"), "{stdout}");
    if can_trace {
        // One kernel: its epoll calls are either counted for every cohort or said once not to be.
        let counted = stdout
            .matches("nginx epoll calls per 1,000 connections")
            .count();
        let uncounted = stdout.matches("nginx epoll calls not counted").count();
        assert!(
            (counted > 0 && uncounted == 0) || (counted == 0 && uncounted == 1),
            "{stdout}"
        );
    }
    let can_profile =
        nix::unistd::Uid::effective().is_root() && Path::new("/usr/bin/perf").exists();
    for run in &runs {
        if can_profile {
            let profile = run.cpu_profile.as_ref().expect("a CPU profile");
            // 199 Hz on every CPU for a 1 s window: samples from both CPUs, whatever they did.
            assert!(profile.samples >= 100, "{} samples", profile.samples);
            assert_eq!(
                profile.folded.iter().map(|(_, n)| n).sum::<i64>(),
                profile.samples
            );
            assert!(!profile.top_symbols.is_empty());
        } else {
            assert!(run.cpu_profile_unavailable.is_some());
        }
    }
    assert!(stdout.contains("top CPU symbols"), "{stdout}");
    if can_profile {
        let svg = dir.path().join("diff.svg");
        let output = Command::new(env!("CARGO_BIN_EXE_loadlab"))
            .args([
                "flamegraph",
                &id.to_string(),
                "--cohort",
                "two-workers",
                "--against",
                "one-worker",
                "-o",
            ])
            .arg(&svg)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let svg = std::fs::read_to_string(&svg).unwrap();
        assert!(svg.contains("two-workers against one-worker"));
        let unknown = Command::new(env!("CARGO_BIN_EXE_loadlab"))
            .args(["flamegraph", &id.to_string(), "--cohort", "nope"])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(!unknown.status.success());
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("has no cohort \"nope\""));
    }
    // The probe asked for is in every node's stored facts.
    for run in &runs {
        let probed = &run.node.facts["kernel_symbols"]["tcp_v4_connect"];
        assert_eq!(probed, "present", "{}", run.node.facts);
    }
    assert_eq!(runs[1].target["workers"], 2);
    assert_eq!(runs[1].target["reuseport"], true);
    assert_eq!(store.experiment(id).await.unwrap().status, "completed");

    // The same comparison as text to paste: the cohort against the baseline within 80 columns.
    let pasted = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args(["compare", &id.to_string(), "--format", "text"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&pasted.stdout);
    assert!(pasted.status.success(), "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    assert!(text.contains("two-workers ("), "{text}");
    assert!(text.lines().any(|l| l.ends_with("conn/s")), "{text}");
}

#[tokio::test]
async fn bad_files_give_one_line_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = scratch().await;
    for (yaml, says) in [
        (
            TINY.replace("duration: 1s", "duration: 1s, burst: 3"),
            "spec.load.burst: unknown field `burst`",
        ),
        (
            TINY.replace("duration: 1s", "duration: -1s"),
            "spec.load.duration: invalid duration \"-1s\": must not be negative",
        ),
        (
            TINY.replace(
                "{ name: one-worker, local: true }",
                "{ name: one-worker, kernel: \"6.1.*\" }",
            )
            .replace(
                "name: two-workers, local: true,",
                "name: two-workers, kernel: \"6.12.*\",",
            ),
            "spec.cohorts[0]: selects cluster nodes",
        ),
        (
            TINY.replace("pinCpus: always", "pinCpus: sometimes"),
            "spec.pinCpus: unknown variant `sometimes`",
        ),
    ] {
        fails_in_one_line(&loadlab(dir.path(), &yaml, &url, &[]), says);
    }
    assert_eq!(stored_experiments(&store).await, 0);
}

#[tokio::test]
async fn a_missing_nginx_is_named_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = scratch().await;
    let output = loadlab(
        dir.path(),
        TINY,
        &url,
        &[("LOADLAB_NGINX", "/nonexistent/nginx")],
    );
    assert!(!output.status.success());
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("nginx not found"), "{errors:?}");
    assert!(errors[0].contains("apt-get install"), "{errors:?}");
    assert_eq!(stored_experiments(&store).await, 0);
}

#[tokio::test]
async fn an_unreachable_database_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there.
    let output = loadlab(
        dir.path(),
        TINY,
        "postgres://loadlab@127.0.0.1:1/loadlab",
        &[],
    );
    assert!(!output.status.success());
    let errors = error_lines(&output);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("results database (postgres 127.0.0.1:1 database loadlab)"),
        "{errors:?}"
    );
    assert!(errors[0].contains("cannot connect"), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_runs_only_what_is_missing_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = scratch().await;
    let plain = TINY.replace(
        "  collect: { lockContention: true, cpuProfile: { frequencyHz: 199 }, kernelSymbols: [tcp_v4_connect] }\n",
        "",
    );
    assert_ne!(plain, TINY);
    let output = loadlab(dir.path(), &plain, &url, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = only_experiment(&store).await;
    let kept = store.experiment_runs(id).await.unwrap()[0].id;
    // As if the process had died during the second run.
    sqlx::query("DELETE FROM runs WHERE experiment_id = $1 AND sequence = 1")
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE experiments SET status = 'interrupted' WHERE id = $1")
        .bind(id)
        .execute(store.pool())
        .await
        .unwrap();

    let resumed = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args(["run", dir.path().join("experiment.yaml").to_str().unwrap()])
        .args(["--resume", &id.to_string()])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 runs to go, 1 stored already"),
        "{stderr}"
    );
    let runs = store.experiment_runs(id).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].id, kept, "the stored run is kept, not repeated");
    assert_eq!(runs[1].sequence, 1);
    assert_eq!(runs[1].outcome, RunOutcome::Succeeded);
    assert_eq!(store.experiment(id).await.unwrap().status, "completed");

    for (resume, says) in [
        (uuid::Uuid::new_v4().to_string(), "no such experiment"),
        (id.to_string(), "not \"other\""),
    ] {
        let other = plain.replace("name: tiny", "name: other");
        let file = dir.path().join("other.yaml");
        std::fs::write(&file, &other).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_loadlab"))
            .args(["run", file.to_str().unwrap(), "--resume", &resume])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let errors = error_lines(&output);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains(says), "{errors:?}");
    }
    assert_eq!(store.experiment_runs(id).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_scoped_profile_samples_only_nginx() {
    let can_profile =
        nix::unistd::Uid::effective().is_root() && Path::new("/usr/bin/perf").exists();
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = scratch().await;
    let yaml = TINY
        .replace(
            "cpuProfile: { frequencyHz: 199 }",
            "cpuProfile: { frequencyHz: 199, scope: target }",
        )
        .replace("lockContention: true", "lockContention: false");
    assert_ne!(yaml, TINY);
    let output = loadlab(dir.path(), &yaml, &url, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let id = only_experiment(&store).await;
    for run in store.experiment_runs(id).await.unwrap() {
        if !can_profile {
            assert!(run.cpu_profile_unavailable.is_some());
            continue;
        }
        let profile = run.cpu_profile.expect("a CPU profile");
        assert!(profile.samples > 0);
        // Every stack is an nginx process's (the first field is the command).
        for (stack, _) in &profile.folded {
            assert!(stack.starts_with("nginx"), "{stack}");
        }
    }
}

/// An auto experiment of one worker against two with `stopping`, run to its end: what it
/// printed, its stopping report and its runs. Checks what holds whatever the machine's noise:
/// it stops at the first round where every cohort is decided, or at the budget, and stores
/// exactly the rounds it ran.
async fn auto_experiment(
    stopping: serde_json::Value,
) -> (
    String,
    loadlab_results::report::StoppingReport,
    Vec<loadlab_results::RunRecord>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = scratch().await;
    let yaml = ExperimentBuilder::new("auto")
        .set("load.warmup", "200ms")
        .set("load.duration", "500ms")
        .local_cohort("one-worker")
        .cohort(json!({
            "name": "two-workers", "local": true,
            "target": { "nginx": { "workers": 2 } },
        }))
        .set("repetitions", "auto")
        .set("stopping", stopping)
        .yaml();
    let output = loadlab(dir.path(), &yaml, &url, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stderr}");
    // The budget is the most it may run.
    assert!(stderr.contains(": at most 8 runs"), "{stderr}");
    // A judgement after every round, the first interval at round 3.
    assert!(
        stderr.contains("round 1/4: two-workers  undecided"),
        "{stderr}"
    );
    assert!(stderr.contains("round 3/4: two-workers  "), "{stderr}");
    let id = only_experiment(&store).await;
    let row = store.experiment(id).await.unwrap();
    let runs = store.experiment_runs(id).await.unwrap();
    let report = loadlab_results::report::build_report(row.clone(), &runs).unwrap();
    let stopping = report
        .stopping
        .expect("an auto experiment reports its stopping");
    assert_eq!(stopping.budget, 4);
    let rounds = stopping.rounds as usize;
    assert!((3..=4).contains(&rounds), "{stopping:?}");
    // Every round ran both cohorts; nothing after the round that stopped it.
    assert_eq!(runs.len(), 2 * rounds, "{stderr}");
    assert_eq!(row.planned_runs, Some(2 * rounds as i64));
    let decided = stopping
        .cohorts
        .iter()
        .all(|c| c.judgement.decision != loadlab_results::sequential::Decision::Undecided);
    if rounds < 4 {
        assert!(decided, "stopped early undecided: {stopping:?}");
        assert!(stderr.contains(&format!("stopped after round {rounds} of at most 4")));
    } else if !decided {
        assert!(stderr.contains("stopped at the budget, round 4: two-workers undecided"));
    }
    assert!(stdout.contains("repetitions: auto · "), "{stdout}");
    assert!(stdout.contains(&stopping.cohorts[0].text), "{stdout}");
    (stderr, stopping, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_repetitions_stop_when_decided_or_at_the_budget_and_store_what_ran() {
    auto_experiment(json!({ "maxRepetitions": 4, "practicalChangePercent": 5 })).await;
}

/// Judged on CPU per connection, the rule reads the runs' CPU µs per connection: its change is
/// the geometric mean of the per-round ratios of those, not of conn/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_repetitions_can_judge_cpu_per_connection() {
    let (_, stopping, runs) = auto_experiment(json!({
        "maxRepetitions": 4, "practicalChangePercent": 5, "metric": "cpuPerConnection",
    }))
    .await;
    let judgement = &stopping.cohorts[0].judgement;
    assert_eq!(
        judgement.metric,
        loadlab_results::sequential::JudgedMetric::CpuPerConnection
    );
    let cpu_of = |cohort: &str, round: u32| {
        runs.iter()
            .find(|r| r.cohort == cohort && r.repetition as u32 == round)
            .and_then(|r| r.cpu_us_per_connection())
            .unwrap()
    };
    let log_ratios: Vec<f64> = (1..=stopping.rounds)
        .map(|round| (cpu_of("two-workers", round) / cpu_of("one-worker", round)).ln())
        .collect();
    let expected = (log_ratios.iter().sum::<f64>() / log_ratios.len() as f64).exp() - 1.0;
    assert!(
        (judgement.change - expected).abs() < 1e-6,
        "{} against {expected} from the runs",
        judgement.change
    );
    if judgement.decision != loadlab_results::sequential::Decision::Undecided {
        assert!(
            stopping.cohorts[0].text.contains("CPU per connection"),
            "{}",
            stopping.cohorts[0].text
        );
    }
}

const BISECTION: &str = r#"
apiVersion: loadlab.dev/v1alpha1
kind: Bisection
metadata: { name: bad }
spec:
  kernels: [linux-image-6.1.0-47-cloud-amd64-unsigned, linux-image-6.1.0-56-cloud-amd64-unsigned]
  holds: { metric: epmutexAcquisitionsPer1kConnections, below: 100 }
  vm: { cpus: 2 }
  experiment:
    target: { nginx: { workers: 1 } }
    load: { connections: 8, duration: 1s }
    repetitions: 1
"#;

#[tokio::test]
async fn a_bad_bisection_file_gives_one_line_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = scratch().await;
    for (yaml, says) in [
        (
            BISECTION.replace("below: 100", "below: 100, above: 1"),
            "spec.holds: give exactly one of below, above or changed",
        ),
        (
            BISECTION.replace("vm: { cpus: 2 }", "vm: { cpus: 2, kernel: x }"),
            "spec.vm.kernel: each step's kernel comes from spec.kernels",
        ),
        (
            BISECTION.replace("duration: 1s", "duration: 2h"),
            "spec.experiment (the step on linux-image-6.1.0-47-cloud-amd64-unsigned): spec.load.duration",
        ),
    ] {
        fails_in_one_line(
            &loadlab_on_file("bisect", dir.path(), &yaml, &url, &[]),
            says,
        );
    }
    // Steps on a cluster are stored where its controller writes: without that database, or
    // without a cluster to create them in, nothing starts.
    let on_cluster = BISECTION
        .replace("vm: { cpus: 2 }", "cluster: { namespace: loadlab }")
        .replace(
            "linux-image-6.1.0-47-cloud-amd64-unsigned, linux-image-6.1.0-56-cloud-amd64-unsigned",
            "\"6.1.0-47-*\", \"6.1.0-56-*\"",
        );
    fails_in_one_line(
        &loadlab_on_file("bisect", dir.path(), &on_cluster, "", &[]),
        "steps on a cluster are stored in the Postgres its loadlab controller writes to; set DATABASE_URL",
    );
    let nowhere = dir.path().join("no-kubeconfig");
    fails_in_one_line(
        &loadlab_on_file(
            "bisect",
            dir.path(),
            &on_cluster,
            &url,
            &[
                ("KUBECONFIG", nowhere.to_str().unwrap()),
                ("KUBERNETES_SERVICE_HOST", ""),
            ],
        ),
        "a Kubernetes cluster for the steps",
    );
    assert_eq!(stored_experiments(&store).await, 0);
    assert!(store.list_bisections(10).await.unwrap().is_empty());
}
