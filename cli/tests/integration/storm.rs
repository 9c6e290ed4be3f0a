//! `loadlab storm` as a user runs it: JSON output, and errors that come from the generator's
//! own limits.

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

use std::process::Command;

use loadlab_agent::nginx::{NginxSettings, NginxTarget, WorkerCpus, find_nginx};

async fn nginx() -> NginxTarget {
    let settings = NginxSettings {
        workers: Some(1),
        reuseport: false,
        backlog: None,
    };
    NginxTarget::start(
        &find_nginx().unwrap(),
        &settings,
        &WorkerCpus::Any { logical_cpus: 2 },
        LOCALHOST,
    )
    .await
    .unwrap()
}

fn storm_json(shell_prefix: &str, url: &str, flags: &str) -> serde_json::Value {
    let command = format!(
        "{shell_prefix} exec {} storm {url} {flags} --json",
        env!("CARGO_BIN_EXE_loadlab")
    );
    let output = Command::new("sh").arg("-c").arg(&command).output().unwrap();
    assert!(
        output.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_has_the_documented_fields() {
    let target = nginx().await;
    let url = format!("http://{}/", target.endpoint());
    let json = storm_json("", &url, "-c 4 -d 500ms -w 200ms -t 1");
    for field in [
        "completed_connections",
        "failed_connections",
        "warmup_connections",
        "connections_per_second",
        "errors",
        "latency_us",
    ] {
        assert!(json.get(field).is_some(), "missing {field}: {json}");
    }
    for percentile in ["p50", "p90", "p99", "max"] {
        assert!(json["latency_us"][percentile].as_u64().unwrap() > 0);
    }
    assert!(json["completed_connections"].as_u64().unwrap() > 0);
    assert!(json["warmup_connections"].as_u64().unwrap() > 0);
    target.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_is_counted_as_such() {
    let target = nginx().await;
    let url = format!("http://{}/", target.endpoint());
    // 64 concurrent connections under a limit of 40 descriptors: some sockets cannot be opened.
    let json = storm_json("ulimit -n 40;", &url, "-c 64 -d 300ms -t 1");
    assert!(
        json["errors"]["too_many_open_files"].as_u64().unwrap_or(0) > 0,
        "{json}"
    );
    target.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_connection_modes_complete_against_nginx_and_are_named() {
    let target = nginx().await;
    let url = format!("http://{}/", target.endpoint());
    let lean = "-c 2 -d 300ms -t 1 --handshake-ack with-request --close reset";
    let json = storm_json("", &url, lean);
    assert_eq!(json["failed_connections"], 0, "{json}");
    assert!(json["completed_connections"].as_u64().unwrap() > 0);

    let output = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args(["storm", &url])
        .args(lean.split_whitespace())
        .output()
        .unwrap();
    assert!(output.status.success());
    let heading = String::from_utf8_lossy(&output.stdout);
    let heading = heading.lines().next().unwrap();
    assert!(
        heading.contains("handshake ACK with the request")
            && heading.contains("closed with a reset"),
        "{heading}"
    );
    target.stop().await.unwrap();
}
