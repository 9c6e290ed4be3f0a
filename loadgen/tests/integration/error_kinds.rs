//! Every error kind, provoked by a server (or a machine state) that causes it.

use std::net::SocketAddr;
use std::time::Duration;

use loadlab_loadgen::{ErrorKind, StormConfig, StormReport, run_storm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Reads the request, then resets the connection (SO_LINGER 0).
    Reset,
    /// Reads the request and never answers.
    Stall,
    /// Answers 503.
    Unavailable,
    /// Promises 10 bytes of body, sends 3, closes.
    ShortBody,
    /// Answers with something that is not HTTP.
    Garbage,
}

async fn read_request(stream: &mut TcpStream) {
    let mut buffer = [0u8; 1024];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

async fn misbehaving_server(how: Misbehaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_request(&mut stream).await;
                let reply: &[u8] = match how {
                    Misbehaviour::Reset => {
                        let _ = stream.set_zero_linger();
                        return;
                    }
                    Misbehaviour::Stall => {
                        // Hold the connection until the client gives up.
                        let _ = stream.read(&mut [0u8; 1]).await;
                        return;
                    }
                    Misbehaviour::Unavailable => b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    Misbehaviour::ShortBody => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc",
                    Misbehaviour::Garbage => b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
                };
                let _ = stream.write_all(reply).await;
            });
        }
    });
    address
}

async fn storm(target: SocketAddr) -> StormReport {
    let mut config = StormConfig::new(target, 4, Duration::from_millis(300));
    config.response_timeout = Duration::from_millis(100);
    config.threads = 1;
    run_storm(&config, CancellationToken::new(), |_| {})
        .await
        .unwrap()
}

async fn assert_only(how: Misbehaviour, kind: ErrorKind) {
    let report = storm(misbehaving_server(how).await).await;
    assert_eq!(report.completed_connections, 0);
    assert!(report.failed_connections > 0);
    assert_eq!(
        report.errors.get(kind),
        report.failed_connections,
        "{:?} gave {:?}",
        kind,
        report.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_are_counted_as_reset() {
    assert_only(Misbehaviour::Reset, ErrorKind::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_is_a_response_timeout() {
    assert_only(Misbehaviour::Stall, ErrorKind::ResponseTimeout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses_are_bad_status() {
    assert_only(Misbehaviour::Unavailable, ErrorKind::BadStatus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_body_is_a_short_read() {
    assert_only(Misbehaviour::ShortBody, ErrorKind::ShortRead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_http_answers_are_malformed() {
    assert_only(Misbehaviour::Garbage, ErrorKind::MalformedResponse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_refused() {
    // Bind then drop: nothing listens on this port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let report = storm(port).await;
    assert!(report.failed_connections > 0);
    assert_eq!(
        report.errors.get(ErrorKind::Refused),
        report.failed_connections
    );
}

/// Source-port exhaustion, inside a network namespace of this test's own (loopback only) whose
/// ephemeral port range holds two ports, so eight concurrent connections cannot all get one.
#[test]
fn exhausted_source_ports_are_their_own_kind() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: creating a network namespace needs root");
        return;
    }
    let report = std::thread::spawn(|| {
        // Only this thread (and the threads it starts) moves to the new namespace.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
        let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status().unwrap();
        assert!(up.success(), "ip link set lo up");
        std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "40000 40001").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let target = listener.local_addr().unwrap();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        read_request(&mut stream).await;
                        // Hold each connection a little so they overlap.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                    });
                }
            });
            let mut config = StormConfig::new(target, 8, Duration::from_millis(300));
            config.threads = 1;
            run_storm(&config, CancellationToken::new(), |_| {}).await.unwrap()
        })
    })
    .join()
    .unwrap();
    assert!(
        report.completed_connections > 0,
        "two ports still carry connections"
    );
    assert!(
        report.errors.get(ErrorKind::PortExhaustion) > 0,
        "{:?}",
        report.errors
    );
}
