//! A caller that disappears never stops what it started: the agent stops an abandoned capture
//! (its CPU sampler and lock probe with it) and an abandoned target (nginx) by itself. The periods are
//! shortened here; the agent's are an hour and a bit, and two. A binary of its own: it counts
//! the process's sampler and probe threads, which any other test's capture would add to.

use std::time::Duration;

use loadlab_agent::grpc::{Abandon, AgentService};
use loadlab_proto::v1::agent_server::Agent;
use loadlab_proto::v1::{CaptureHandle, StartCaptureRequest, TargetSpec};
use tonic::Request;

/// This process's threads of that name: the CPU sampler and each BPF probe live on their own.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .count()
}

/// Waits until `holds`; a bound for a broken agent, not a timing assumption (the periods here
/// are seconds).
async fn until(what: &str, mut holds: impl AsyncFnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        let mut checks = tokio::time::interval(Duration::from_millis(20));
        while !holds().await {
            checks.tick().await;
        }
    })
    .await;
    assert!(waited.is_ok(), "not within 2 minutes: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_capture_and_target_are_stopped_by_the_agent() {
    if loadlab_agent::nginx::find_nginx().is_err() {
        panic!("nginx is needed (apt-get install nginx-light)");
    }
    let tracing = nix::unistd::Uid::effective().is_root();
    let agent = AgentService::new().with_abandon(Abandon {
        capture_after: Duration::from_millis(500),
        target_after: Duration::from_secs(3),
    });
    let target = agent
        .prepare_target(Request::new(TargetSpec {
            workers: 1,
            ..TargetSpec::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let capture = agent
        .start_capture(Request::new(StartCaptureRequest {
            target_id: target.target_id.clone(),
            lock_contention: tracing,
            cpu_profile_hz: if tracing { 99 } else { 0 },
            ..StartCaptureRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    if tracing {
        assert_eq!(
            threads_named("cpu-sampler"),
            1,
            "the sampler samples the window"
        );
        assert_eq!(
            threads_named("lock-probe"),
            1,
            "the lock probe traces the window"
        );
    }
    // Nobody stops the capture.
    until("the capture ended", async || {
        !agent.has_capture(&capture.capture_id).await
    })
    .await;
    until("the sampler and the lock probe gone", async || {
        threads_named("cpu-sampler") + threads_named("lock-probe") == 0
    })
    .await;
    assert!(
        agent.has_target(&target.target_id).await,
        "the target outlives its capture"
    );
    let gone = agent
        .stop_capture(Request::new(CaptureHandle {
            capture_id: capture.capture_id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    // Nor the target.
    until("the target removed", async || {
        !agent.has_target(&target.target_id).await
    })
    .await;
    let endpoint: std::net::SocketAddr = target.endpoint.parse().unwrap();
    until("nginx stopped listening", async || {
        tokio::net::TcpStream::connect(endpoint).await.is_err()
    })
    .await;
}
