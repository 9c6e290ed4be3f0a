//! A quiet node: nginx's workers on cores of their own, away from the agent's process, and what a
//! window could not control measured, not guessed (a busy process outside loadlab shows as other
//! work; the same work inside the agent's own process does not).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use loadlab_agent::grpc::AgentService;
use loadlab_proto::v1::agent_server::Agent;
use loadlab_proto::v1::{CaptureHandle, StartCaptureRequest, TargetRef, TargetSpec, WindowNoise};
use tonic::Request;

/// The window: long enough for a busy loop to collect many 10 ms ticks.
const WINDOW: Duration = Duration::from_secs(1);

async fn window_of(agent: &AgentService, target_id: &str) -> (WindowNoise, Duration) {
    let capture = agent
        .start_capture(Request::new(StartCaptureRequest {
            target_id: target_id.to_string(),
            ..StartCaptureRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(WINDOW).await;
    let captured = agent
        .stop_capture(Request::new(CaptureHandle {
            capture_id: capture.capture_id,
        }))
        .await
        .unwrap()
        .into_inner();
    (
        captured.noise.expect("every capture measures its noise"),
        Duration::from_millis(captured.window_ms),
    )
}

/// The node's busy CPU time so far (neither idle nor stolen), from `/proc/stat`.
fn node_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks = loadlab_agent::counters::parse_proc_stat(&stat)
        .unwrap()
        .busy_ticks();
    Duration::from_millis(ticks * 10)
}

/// CPU time of this whole process so far, as the agent reads a process's (its `/proc` ticks).
fn own_cpu() -> Duration {
    let me = std::process::id();
    let ticks = loadlab_agent::counters::processes_cpu_ticks(std::path::Path::new("/proc"), &[me]);
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_work_is_what_neither_nginx_nor_the_agent_did() {
    loadlab_agent::nginx::find_nginx().expect("nginx is needed (apt-get install nginx-light)");
    // Online CPUs, not this thread's (another test here may pin the whole process).
    let cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count() as u32;
    let agent = AgentService::new();
    let target = agent
        .prepare_target(Request::new(TargetSpec {
            workers: 1,
            ..TargetSpec::default()
        }))
        .await
        .unwrap()
        .into_inner();

    // A busy process that is neither nginx nor this one.
    let mut busy = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let (outside, window) = window_of(&agent, &target.target_id).await;
    busy.kill().unwrap();
    busy.wait().unwrap();
    let other = Duration::from_nanos(outside.other_cpu_ns);
    // It had a CPU of its own for most of the window; a tenth of it is a bound that a busy
    // machine still meets, and that nothing but counting it can.
    assert!(
        other >= window / 10,
        "{other:?} of other work in {window:?}"
    );
    // At most every CPU for the window, give or take a 10 ms tick per CPU at each edge.
    assert!(
        other <= (window + Duration::from_millis(20)) * cpus,
        "{other:?} in {window:?} on {cpus} CPUs"
    );
    assert!((0.0..1.0).contains(&outside.steal_share), "{outside:?}");
    // Not pinned: every CPU's interrupts are counted.
    assert_eq!(outside.watched_cpus, (0..cpus).collect::<Vec<_>>());
    // Connection tracking's drops are a figure exactly where the kernel has tracking loaded.
    assert_eq!(
        outside.conntrack_dropped.is_some(),
        std::path::Path::new("/proc/net/stat/nf_conntrack").exists(),
        "{outside:?}"
    );

    // The same work on a thread of this process is the agent's own, not other work.
    let spinning = Arc::new(AtomicBool::new(true));
    let spinner = {
        let spinning = spinning.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while spinning.load(Ordering::Relaxed) {
                std::hint::black_box(started.elapsed());
            }
        })
    };
    let (busy_before, own_before) = (node_busy(), own_cpu());
    let (inside, _) = window_of(&agent, &target.target_id).await;
    let (busy, own) = (node_busy() - busy_before, own_cpu() - own_before);
    spinning.store(false, Ordering::Relaxed);
    spinner.join().unwrap();
    // Whatever else the machine does, other work and this process's CPU fit in the node's busy
    // time around the window (give or take a tick per CPU at each of four readings); counted
    // as other work, the spinner would overflow it by its own CPU time, most of the window.
    let other = Duration::from_nanos(inside.other_cpu_ns);
    let slack = Duration::from_millis(40) * cpus;
    assert!(
        other + own <= busy + slack,
        "{other:?} of other work and {own:?} of this process's in {busy:?} of busy node time"
    );
    assert!(
        own >= Duration::from_millis(100),
        "the spinner ran: {own:?}"
    );
    agent.stop_all_targets().await;
}

/// The CPUs a task may run on, from its status (`Cpus_allowed_list`).
fn allowed_cpus(task: &std::path::Path) -> Vec<u32> {
    let status = std::fs::read_to_string(task.join("status")).unwrap();
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap();
    loadlab_agent::cpus::parse_list(list).unwrap()
}

/// Every thread of this process and the CPUs each may use.
fn own_threads() -> Vec<(String, Vec<u32>)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|task| {
            (
                task.file_name().to_string_lossy().into_owned(),
                allowed_cpus(&task.path()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_gets_cores_of_its_own_until_its_target_stops() {
    loadlab_agent::nginx::find_nginx().expect("nginx is needed (apt-get install nginx-light)");
    let all: Vec<u32> = allowed_cpus(std::path::Path::new("/proc/self"));
    let agent = AgentService::new();
    let target = agent
        .prepare_target(Request::new(TargetSpec {
            pin_from_cores: 2,
            ..TargetSpec::default()
        }))
        .await
        .unwrap()
        .into_inner();
    if all.len() < 2 {
        assert!(target.unpinned.contains("one CPU"), "{target:?}");
        assert!(target.nginx_cpus.is_empty() && target.other_cpus.is_empty());
        return;
    }
    assert_eq!(target.unpinned, "", "{target:?}");
    // Disjoint halves of what the process had; `workers: auto` is one per nginx CPU.
    assert!(!target.nginx_cpus.is_empty() && !target.other_cpus.is_empty());
    assert!(
        target
            .nginx_cpus
            .iter()
            .all(|cpu| !target.other_cpus.contains(cpu))
    );
    let mut both: Vec<u32> = target
        .nginx_cpus
        .iter()
        .chain(&target.other_cpus)
        .copied()
        .collect();
    both.sort_unstable();
    assert_eq!(both, all);
    assert_eq!(target.workers as usize, target.nginx_cpus.len());
    // Each worker runs on one of nginx's CPUs only, the master (started by this process) and
    // every thread of this process on the rest.
    // nginx accepts connections once its master listens; each worker is forked after and pins
    // itself: wait (a bound for a broken nginx, not a timing assumption) until all have.
    let on_cpus = async || -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
        agent
            .target_processes(&target.target_id)
            .await
            .iter()
            .filter_map(|pid| {
                let task = std::path::Path::new("/proc").join(pid.to_string());
                task.exists().then(|| allowed_cpus(&task))
            })
            .partition(|cpus| cpus.iter().all(|cpu| target.nginx_cpus.contains(cpu)))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (workers, master) = loop {
        let (workers, master) = on_cpus().await;
        if workers.len() == target.workers as usize || Instant::now() > deadline {
            break (workers, master);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(workers.len(), target.workers as usize, "{workers:?}");
    assert!(workers.iter().all(|cpus| cpus.len() == 1), "{workers:?}");
    assert_eq!(master, vec![target.other_cpus.clone()]);
    for (thread, cpus) in own_threads() {
        assert_eq!(cpus, target.other_cpus, "thread {thread}");
    }
    // A window's interrupts are counted on nginx's CPUs.
    let (noise, _) = window_of(&agent, &target.target_id).await;
    assert_eq!(noise.watched_cpus, target.nginx_cpus);

    agent
        .stop_target(Request::new(TargetRef {
            target_id: target.target_id.clone(),
        }))
        .await
        .unwrap();
    for (thread, cpus) in own_threads() {
        assert_eq!(cpus, all, "thread {thread} got its CPUs back");
    }
}
