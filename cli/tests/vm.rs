//! Virtual-machine cohorts end to end: the real binary boots Debian's kernels without and with
//! the epoll refcount patch under QEMU (emulated here: /dev/kvm refuses stock kernels), storms
//! nginx inside each guest and stores the runs. The kernel packages are downloaded once into
//! loadlab's cache; tracing inside the guests needs root here too.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use loadlab_engine::spec::ExperimentBuilder;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

#[allow(dead_code)]
#[path = "integration/support.rs"]
mod support;
use support::{scratch, stored_experiments};

const UNPATCHED: &str = "linux-image-6.1.0-47-cloud-amd64-unsigned";
const PATCHED: &str = "linux-image-6.1.0-56-cloud-amd64-unsigned";

/// Cohorts as (name, kernel, more `vm` settings such as `{ "generator": "host" }`).
fn experiment(duration: &str, cohorts: &[(&str, &str, Value)]) -> String {
    experiment_collecting(duration, cohorts, 8, json!({ "lockContention": true }))
}

fn experiment_collecting(
    duration: &str,
    cohorts: &[(&str, &str, Value)],
    connections: u32,
    collect: Value,
) -> String {
    let mut experiment = ExperimentBuilder::new("vm")
        .set("target.nginx.workers", 2)
        .set("load.connections", connections)
        .set("load.warmup", "0s")
        .set("load.duration", duration)
        .set("repetitions", 1)
        .set("collect", collect);
    for (name, kernel, more) in cohorts {
        let mut vm = json!({ "kernel": kernel, "cpus": 2, "memoryMiB": 1536, "accel": "tcg" });
        if let (Some(vm), Some(more)) = (vm.as_object_mut(), more.as_object()) {
            vm.extend(more.clone());
        }
        experiment = experiment.cohort(json!({ "name": name, "vm": vm }));
    }
    experiment.yaml()
}

fn needs_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the VM tests trace kernels and need root"
    );
}

/// Runs the experiment; returns what it printed and its process id.
fn run(dir: &Path, yaml: &str, url: &str, env: &[(&str, &str)]) -> (Output, u32) {
    let file = dir.join("experiment.yaml");
    std::fs::write(&file, yaml).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args(["run", "--json"])
        .arg(&file)
        .env("DATABASE_URL", url)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadlab runs");
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

/// Network namespaces a loadlab process created for its guests and left behind.
fn namespaces_left_by(pid: u32) -> Vec<String> {
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.starts_with(&format!("loadlab-vm-{pid}-")))
        .map(str::to_string)
        .collect()
}

/// Processes whose parent is `parent`, with their command names.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = tail.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if ppid == Some(parent) {
            let comm = head.split_once('(').map(|(_, c)| c.to_string());
            children.push((pid, comm.unwrap_or_default()));
        }
    }
    children
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots two kernels under emulation and storms both: minutes on two CPUs, and emulated guests crawl when the host is busy; run with --ignored on a quiet machine"]
async fn the_unpatched_kernel_takes_the_global_epmutex_on_every_close_and_the_patched_one_never() {
    needs_root();
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = scratch().await;
    // One generator on this machine over the guest's tap, one inside its guest.
    let yaml = experiment(
        "3s",
        &[
            ("unpatched", UNPATCHED, json!({ "generator": "host" })),
            ("patched", PATCHED, json!({})),
        ],
    );
    let (output, pid) = run(dir.path(), &yaml, &url, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        namespaces_left_by(pid).is_empty(),
        "{:?}\nstderr:\n{stderr}",
        namespaces_left_by(pid)
    );
    assert!(output.status.success(), "stderr:\n{stderr}");
    assert!(
        stderr.contains("6.1.0-47-cloud-amd64 up under TCG"),
        "{stderr}"
    );
    assert!(
        stderr.contains("6.1.0-56-cloud-amd64 up under TCG"),
        "{stderr}"
    );

    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let cohort = |name: &str| -> serde_json::Value {
        report["cohorts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no cohort {name} in {report}"))
            .clone()
    };
    let (unpatched, patched) = (cohort("unpatched"), cohort("patched"));
    for c in [&unpatched, &patched] {
        assert_eq!(c["runs_succeeded"], 1, "{c}\nstderr:\n{stderr}");
        assert!(c["completed_connections"].as_u64().unwrap() > 0, "{c}");
        assert!(
            c["throughput_caveat"]
                .as_str()
                .unwrap()
                .contains("emulated"),
            "an emulated cohort's rates carry the caveat: {c}"
        );
    }
    let taken =
        |c: &serde_json::Value| c["epoll_calls_per_thousand"]["epmutex_acquisitions"].as_f64();
    // Every close of an epoll-watched socket takes the global mutex without the patch.
    let before = taken(&unpatched).unwrap_or_else(|| {
        panic!("6.1.0-47 has a global epmutex to count: {unpatched}\nstderr:\n{stderr}")
    });
    assert!(
        before > 500.0,
        "{before} acquisitions per 1,000 connections: {unpatched}\nstderr:\n{stderr}"
    );
    assert_eq!(taken(&patched), Some(0.0), "{patched}");
    // These kernels offer kprobes: nginx's epoll calls are counted at do_epoll_ctl, one add
    // per accepted connection.
    for c in [&unpatched, &patched] {
        let adds = c["epoll_calls_per_thousand"]["ctl_add"].as_f64();
        assert!(
            adds.is_some_and(|a| a > 500.0),
            "{adds:?} epoll_ctl adds per 1,000: {c}"
        );
    }

    let id = uuid::Uuid::parse_str(report["experiment"]["id"].as_str().unwrap()).unwrap();
    let runs = store.experiment_runs(id).await.unwrap();
    let mut kernels: Vec<(&str, &str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r.cohort.as_str(),
                r.node.kernel_release.as_str(),
                r.node.facts["virtualization"].as_str().unwrap(),
            )
        })
        .collect();
    kernels.sort();
    assert_eq!(
        kernels,
        [
            ("patched", "6.1.0-56-cloud-amd64", "emulated (QEMU TCG)"),
            ("unpatched", "6.1.0-47-cloud-amd64", "emulated (QEMU TCG)")
        ]
    );
}

/// Kernels before 5.19 have no lock tracepoints; there the probe takes kprobes on the lock slow
/// paths. On the unpatched 6.1 kernel (which has both) a storm seen through the slow paths
/// finds the global epmutex contended from the close path, as the tracepoints do, and each run
/// names its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots a kernel under emulation twice: a minute on two CPUs; run with --ignored on a quiet machine"]
async fn the_slow_paths_see_the_epmutex_where_the_tracepoints_do() {
    needs_root();
    let dir = tempfile::tempdir().unwrap();
    let (url, _store) = scratch().await;
    let mut seen = Vec::new();
    for (source, named) in [
        ("tracepoints", "lock tracepoints"),
        ("slowPaths", "kprobes on slow paths"),
    ] {
        let yaml = experiment_collecting(
            "5s",
            &[("unpatched", UNPATCHED, json!({ "generator": "host" }))],
            32,
            json!({ "lockContention": true, "lockSource": source }),
        );
        let (output, _) = run(dir.path(), &yaml, &url, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "stderr:\n{stderr}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let cohort = report["cohorts"][0].clone();
        assert_eq!(
            cohort["lock_sources"],
            serde_json::json!([named]),
            "{cohort}\nstderr:\n{stderr}"
        );
        let epmutex = cohort["locks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["lock"] == "epmutex")
            .cloned();
        eprintln!("{source}: epmutex {epmutex:?}");
        seen.push((source, epmutex, cohort));
    }
    let (_, slow_paths, cohort) = &seen[1];
    let epmutex = slow_paths
        .as_ref()
        .unwrap_or_else(|| panic!("the slow paths did not see epmutex: {cohort}"));
    assert!(
        epmutex["top_caller"]
            .as_str()
            .is_some_and(|c| c.starts_with("eventpoll_release_file")),
        "{epmutex}"
    );
}

/// The one guest CI boots: its agent answers, reports the guest's own kernel and the patch
/// verdict for it, and an interrupt powers the guest off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_reports_its_own_kernel_and_an_interrupt_powers_it_off() {
    needs_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.yaml");
    // User-mode networking: the guest is reached through ports forwarded on loopback.
    let yaml = experiment(
        "10m",
        &[("unpatched", UNPATCHED, json!({ "network": "user" }))],
    );
    std::fs::write(&file, yaml).unwrap();
    let (url, store) = scratch().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .arg("run")
        .arg(&file)
        .env("DATABASE_URL", &url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // "experiment <id>: 1 runs" comes once the guest is up and its agent has described it.
    let mut seen = String::new();
    let mut line = String::new();
    let mut experiment_id = None;
    while stderr.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if let Some(rest) = line.strip_prefix("experiment ") {
            experiment_id = rest
                .split(':')
                .next()
                .map(|id| uuid::Uuid::parse_str(id).unwrap());
            break;
        }
        line.clear();
    }
    let experiment_id = experiment_id.unwrap_or_else(|| panic!("no experiment line in:\n{seen}"));
    // The agent inside the guest described the guest, not this machine.
    assert!(
        seen.contains("node: unpatched-vm · kernel 6.1.0-47-cloud-amd64 · "),
        "{seen}"
    );
    assert!(seen.contains("emulated (QEMU TCG)"), "{seen}");
    assert!(
        seen.contains("epoll refcount patch: absent (ep_clear_and_put is not in /proc/kallsyms)"),
        "{seen}"
    );
    let guests: Vec<(u32, String)> = children_of(child.id())
        .into_iter()
        .filter(|(_, comm)| comm.starts_with("qemu-system"))
        .collect();
    assert_eq!(guests.len(), 1, "one guest runs: {guests:?}");

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    for (pid, _) in &guests {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "guest {pid} still runs"
        );
    }
    let experiment = store.experiment(experiment_id).await.unwrap();
    assert_eq!(experiment.status, "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_kernel_package_or_qemu_is_a_clear_error_before_anything_is_stored() {
    needs_root();
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = scratch().await;

    let missing_package = experiment(
        "1s",
        &[("a", "linux-image-0.0.0-0-nonexistent-amd64", json!({}))],
    );
    let (output, _) = run(dir.path(), &missing_package, &url, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("kernel package linux-image-0.0.0-0-nonexistent-amd64 not found"),
        "{stderr}"
    );

    let no_qemu = experiment("1s", &[("a", UNPATCHED, json!({}))]);
    let (output, _) = run(
        dir.path(),
        &no_qemu,
        &url,
        &[("LOADLAB_QEMU", "/nonexistent/qemu")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("apt-get install qemu-system-x86"),
        "{stderr}"
    );
    assert_eq!(stored_experiments(&store).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_cannot_boot_its_network_fails_with_its_console() {
    needs_root();
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = scratch().await;
    // The package's kernel alone, without the modules directory that holds its virtio_net.
    let cache = loadlab_results::data_dir::default_data_dir();
    let kernel = loadlab_vm::kernel::resolve(UNPATCHED, &cache).unwrap();
    let bare = dir.path().join("vmlinuz");
    std::fs::copy(&kernel.image, &bare).unwrap();
    let yaml = experiment("1s", &[("bare", bare.to_str().unwrap(), json!({}))]);
    let (output, pid) = run(dir.path(), &yaml, &url, &[]);
    assert!(
        namespaces_left_by(pid).is_empty(),
        "a failed boot removes its network"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cohort bare: the guest booting 6.1.0-47-cloud-amd64 stopped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no network device eth0"),
        "the console says why: {stderr}"
    );
    assert_eq!(stored_experiments(&store).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots three kernels under emulation, one after another: minutes on two CPUs; run with --ignored on a quiet machine"]
async fn a_bisection_over_three_kernels_finds_the_first_without_the_global_epmutex() {
    needs_root();
    let dir = tempfile::tempdir().unwrap();
    let (url, store) = scratch().await;
    // The ends measured too: 57 (holds), 47 (does not), then 56, the answer.
    let file = dir.path().join("bisection.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: loadlab.dev/v1alpha1\nkind: Bisection\nmetadata: {{ name: vm-bisect }}\nspec:\n  kernels: [{UNPATCHED}, {PATCHED}, linux-image-6.1.0-57-cloud-amd64-unsigned]\n  holds: {{ metric: epmutexAcquisitionsPer1kConnections, below: 100 }}\n  checkEnds: true\n  vm: {{ cpus: 2, memoryMiB: 1536, accel: tcg }}\n  experiment:\n    target: {{ nginx: {{ workers: 2 }} }}\n    load: {{ connections: 8, warmup: 0s, duration: 3s }}\n    repetitions: 1\n    collect: {{ lockContention: true }}\n"
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args(["bisect", "--json"])
        .arg(&file)
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr:\n{stderr}");
    eprintln!("bisection took {:.0} s", started.elapsed().as_secs_f64());
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let stored = store.list_bisections(10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let bisection = &stored[0];
    assert_eq!(printed["id"], bisection.id.to_string());
    assert_eq!(
        bisection.status,
        loadlab_results::bisections::BisectionStatus::Found
    );
    assert_eq!(bisection.first_holding.as_deref(), Some(PATCHED));
    let measured: Vec<(u32, Option<bool>)> = bisection
        .steps
        .iter()
        .map(|s| (s.kernel_index, s.holds))
        .collect();
    assert_eq!(
        measured,
        [(2, Some(true)), (0, Some(false)), (1, Some(true))],
        "{stderr}"
    );
    // Each step is a stored experiment with its evidence: about one acquisition per
    // connection without the patch, none with it.
    for step in &bisection.steps {
        let experiment = store.experiment(step.experiment_id).await.unwrap();
        assert_eq!(experiment.status, "completed", "{step:?}");
        let value = step.value.expect("measured");
        if step.holds == Some(false) {
            assert!(value > 500.0, "{step:?}");
        } else {
            assert!(value < 1.0, "{step:?}");
        }
    }
}
