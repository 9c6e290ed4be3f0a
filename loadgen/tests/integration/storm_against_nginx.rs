//! The storm engine against a real nginx: its counts must agree with nginx's own.

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

use std::time::Duration;

use loadlab_agent::counters::fetch_stub_status;
use loadlab_agent::nginx::{NginxSettings, NginxTarget, WorkerCpus, find_nginx};
use loadlab_loadgen::grpc::{from_summary, to_summary};
use loadlab_loadgen::storm::Pacing;
use loadlab_loadgen::{CloseMode, StormConfig, run_storm};
use loadlab_proto::v1::{self, loadgen_client::LoadgenClient, storm_event};
use tokio_util::sync::CancellationToken;

async fn nginx(workers: u32) -> NginxTarget {
    let settings = NginxSettings {
        workers: Some(workers),
        reuseport: false,
        backlog: None,
    };
    NginxTarget::start(
        &find_nginx().expect("nginx installed"),
        &settings,
        &WorkerCpus::Any { logical_cpus: 2 },
        LOCALHOST,
    )
    .await
    .expect("nginx starts")
}

/// CPU time (user + system) of this whole process so far.
fn process_cpu_time() -> Duration {
    loadlab_loadgen::storm::cpu_time(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_connections_equal_nginx_accepts() {
    let target = nginx(1).await;
    let before = fetch_stub_status(target.endpoint()).await.unwrap();
    let config = StormConfig::new(target.endpoint(), 16, Duration::from_millis(800));
    let process_cpu_before = process_cpu_time();
    let report = run_storm(&config, CancellationToken::new(), |_| {})
        .await
        .unwrap();
    let process_cpu = process_cpu_time() - process_cpu_before;
    crate::failures::assert_none_failed(&report);
    let after = fetch_stub_status(target.endpoint()).await.unwrap();

    // The storm threads' own CPU time: part of this process's (other tests' threads may add
    // to the process), and at least a microsecond per connection (a connect, a write, a read
    // and a close each cost more).
    let storm_cpu = report.cpu.expect("the storm threads' CPU time");
    assert!(storm_cpu <= process_cpu, "{storm_cpu:?} > {process_cpu:?}");
    assert!(
        storm_cpu >= Duration::from_micros(report.completed_connections),
        "{storm_cpu:?} for {} connections",
        report.completed_connections
    );

    assert!(report.completed_connections > 0);
    // The second status request is one accepted connection of its own.
    assert_eq!(
        after.accepts - before.accepts - 1,
        report.completed_connections
    );
    assert_eq!(
        after.requests - before.requests - 1,
        report.completed_connections
    );
    assert_eq!(report.latencies.total.len(), report.completed_connections);
    assert_eq!(
        report.completed_per_second.iter().sum::<u64>(),
        report.completed_connections
    );
    assert_eq!(report.warmup_connections, 0);
    assert!(report.window >= Duration::from_millis(800));
    assert_eq!(report.bytes_received % report.completed_connections, 0);
    target.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_connections_are_counted_apart() {
    let target = nginx(1).await;
    let before = fetch_stub_status(target.endpoint()).await.unwrap();
    let mut config = StormConfig::new(target.endpoint(), 8, Duration::from_millis(500));
    config.warmup = Duration::from_millis(300);
    let report = run_storm(&config, CancellationToken::new(), |_| {})
        .await
        .unwrap();
    let after = fetch_stub_status(target.endpoint()).await.unwrap();
    assert!(report.warmup_connections > 0);
    assert_eq!(
        after.accepts - before.accepts - 1,
        report.completed_connections + report.warmup_connections
    );
    assert_eq!(report.latencies.total.len(), report.completed_connections);
    target.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_the_requested_rate() {
    let target = nginx(1).await;
    let before = fetch_stub_status(target.endpoint()).await.unwrap();
    let mut config = StormConfig::new(target.endpoint(), 32, Duration::from_secs(2));
    config.pacing = Pacing::Open { per_second: 400.0 };
    config.warmup = Duration::from_millis(250);
    let report = run_storm(&config, CancellationToken::new(), |_| {})
        .await
        .unwrap();
    let after = fetch_stub_status(target.endpoint()).await.unwrap();
    // 400/s over 2 s: 800 arrivals in the window, 100 in the warm-up.
    crate::failures::assert_none_failed(&report);
    assert_eq!(report.missed_arrivals, 0);
    assert_eq!(report.completed_connections, 800);
    assert_eq!(report.warmup_connections, 100);
    assert_eq!(report.completed_per_second, vec![400, 400]);
    assert_eq!(report.offered_per_second, Some(400.0));
    let achieved = report.connections_per_second();
    assert!(
        (achieved - 400.0).abs() <= 8.0,
        "achieved {achieved} conn/s for 400 offered"
    );
    assert_eq!(after.accepts - before.accepts - 1, 900);
    target.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_sends_every_request_on_one_connection() {
    let target = nginx(1).await;
    let before = fetch_stub_status(target.endpoint()).await.unwrap();
    let mut config = StormConfig::new(target.endpoint(), 4, Duration::from_millis(500));
    config.requests_per_connection = 5;
    let report = run_storm(&config, CancellationToken::new(), |_| {})
        .await
        .unwrap();
    let after = fetch_stub_status(target.endpoint()).await.unwrap();
    crate::failures::assert_none_failed(&report);
    assert_eq!(report.completed_requests, 5 * report.completed_connections);
    assert_eq!(
        after.accepts - before.accepts - 1,
        report.completed_connections
    );
    assert_eq!(
        after.requests - before.requests - 1,
        report.completed_requests
    );
    target.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_source_addresses_share_the_load() {
    let target = nginx(1).await;
    let mut config = StormConfig::new(target.endpoint(), 4, Duration::from_millis(300));
    config.source_addrs = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
    // nginx listens on 127.0.0.1 only; connections from 127.0.0.2/3 reach it over loopback.
    let report = run_storm(&config, CancellationToken::new(), |_| {})
        .await
        .unwrap();
    assert!(report.completed_connections > 0);
    crate::failures::assert_none_failed(&report);
    target.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generators_with_a_shared_start_begin_together_and_merge_exactly() {
    let target = nginx(1).await;
    let before = fetch_stub_status(target.endpoint()).await.unwrap();
    let mut config = StormConfig::new(target.endpoint(), 4, Duration::from_millis(500));
    config.start_at = Some(std::time::SystemTime::now() + Duration::from_millis(200));
    config.threads = 1;
    let (a, b) = tokio::join!(
        run_storm(&config, CancellationToken::new(), |_| {}),
        run_storm(&config, CancellationToken::new(), |_| {})
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let after = fetch_stub_status(target.endpoint()).await.unwrap();
    let mut merged = a.clone();
    merged.merge(&b).unwrap();
    assert_eq!(
        merged.completed_connections,
        a.completed_connections + b.completed_connections
    );
    assert_eq!(merged.latencies.total.len(), merged.completed_connections);
    assert_eq!(
        after.accepts - before.accepts - 1,
        merged.completed_connections
    );
    assert!(
        a.start_lateness < Duration::from_millis(200)
            && b.start_lateness < Duration::from_millis(200)
    );
    target.stop().await.unwrap();
}

/// The CPUs each of this process's storm threads may run on.
fn storm_thread_cpus() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.starts_with("storm-"))
        })
        .filter_map(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            let list = status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
            Some(list.trim().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_runs_on_the_cpus_it_is_given() {
    let target = nginx(1).await;
    let last_cpu = std::thread::available_parallelism().unwrap().get() as u32 - 1;
    let mut config = StormConfig::new(target.endpoint(), 4, Duration::from_secs(3600));
    config.cpus = vec![last_cpu];
    // Looked at from the first progress tick, while the threads run; then the storm is ended.
    let cancel = CancellationToken::new();
    let mut seen = None;
    let report = run_storm(&config, cancel.clone(), |_| {
        if seen.is_none() {
            seen = Some(storm_thread_cpus());
            cancel.cancel();
        }
    })
    .await
    .unwrap();
    assert!(report.completed_connections > 0);
    // One thread per CPU given, on that CPU alone (other tests' storms run unpinned).
    let seen = seen.expect("a progress tick");
    assert!(seen.contains(&last_cpu.to_string()), "{seen:?}");
    let mut beyond = config.clone();
    beyond.cpus = vec![100_000];
    let refused = run_storm(&beyond, CancellationToken::new(), |_| {})
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("CPU 100000"), "{refused}");
    target.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_storm_stops_early() {
    let target = nginx(1).await;
    let config = StormConfig::new(target.endpoint(), 4, Duration::from_secs(3600));
    let cancel = CancellationToken::new();
    cancel.cancel();
    let report = run_storm(&config, cancel, |_| {}).await.unwrap();
    assert_eq!(report.completed_connections, 0);
    target.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_service_streams_a_summary_that_matches_nginx() {
    let target = nginx(1).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service =
        loadlab_loadgen::LoadgenService::new(loadlab_loadgen::TargetPolicy::loopback_only());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = LoadgenClient::connect(format!("http://{address}"))
        .await
        .unwrap();

    let denied = client
        .run(v1::StormSpec {
            target: "192.0.2.1:80".into(),
            connections: 1,
            duration_ms: 100,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let before = fetch_stub_status(target.endpoint()).await.unwrap();
    let mut events = client
        .run(v1::StormSpec {
            target: target.endpoint().to_string(),
            connections: 8,
            duration_ms: 1500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut progress = 0;
    let mut summary = None;
    while let Some(event) = events.message().await.unwrap() {
        match event.event.unwrap() {
            storm_event::Event::Progress(_) => progress += 1,
            storm_event::Event::Summary(s) => summary = Some(s),
        }
    }
    let after = fetch_stub_status(target.endpoint()).await.unwrap();
    let report = from_summary(&summary.expect("a summary ends the stream")).unwrap();
    assert!(
        progress >= 1,
        "a 1.5 s storm reports progress at least once"
    );
    assert_eq!(
        after.accepts - before.accepts - 1,
        report.completed_connections
    );
    assert_eq!(report.latencies.total.len(), report.completed_connections);
    // What crossed the wire re-encodes to the same bytes.
    let again = to_summary(&report).unwrap();
    assert_eq!(again.completed_connections, report.completed_connections);
    target.stop().await.unwrap();
}

/// TIME_WAIT sockets whose local port is `port`, from the kernel's IPv4 socket table.
fn time_waits_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields[1].rsplit(':').next().unwrap();
            u16::from_str_radix(local_port, 16) == Ok(port) && fields[3] == "06"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_close_leaves_the_server_no_time_wait_and_a_fin_close_does() {
    let target = nginx(1).await;
    let port = target.endpoint().port();
    let mut config = StormConfig::new(target.endpoint(), 4, Duration::from_millis(300));
    config.close = CloseMode::Reset;
    let before = time_waits_on(port);
    let report = run_storm(&config, CancellationToken::new(), |_| {})
        .await
        .unwrap();
    assert!(report.completed_connections > 0);
    crate::failures::assert_none_failed(&report);
    // Older ones (another test's server on this port) may expire meanwhile; none may appear.
    assert!(
        time_waits_on(port) <= before,
        "a reset close left TIME_WAIT sockets"
    );

    config.close = CloseMode::Fin;
    let before = time_waits_on(port);
    let report = run_storm(&config, CancellationToken::new(), |_| {})
        .await
        .unwrap();
    crate::failures::assert_none_failed(&report);
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap();
    let tw: u64 = sockstat
        .split_whitespace()
        .skip_while(|w| *w != "tw")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    let cap: u64 = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_max_tw_buckets")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The kernel keeps no TIME_WAIT when its table is full; then there is nothing to see.
    if tw + report.completed_connections < cap {
        assert!(
            time_waits_on(port) > before,
            "nginx closes first and keeps the TIME_WAIT after an orderly close"
        );
    }
    target.stop().await.unwrap();
}
