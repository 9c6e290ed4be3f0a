//! Where the handshake's last ACK goes, seen from the server: the kernel's count of segments
//! each accepted connection received by the time its request was read (`ss -i`, `segs_in`).

use std::net::SocketAddr;
use std::time::Duration;

use loadlab_loadgen::{HandshakeAck, StormConfig, run_storm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Connections whose segments are counted; later ones are answered without a look.
const COUNTED: usize = 5;

async fn read_request(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
    true
}

/// Segments the server's end of `server`..`client` has received, as the kernel counts them.
async fn segments_received(server: SocketAddr, client: SocketAddr) -> u64 {
    let filter = format!(
        "( sport = :{} and dport = :{} )",
        server.port(),
        client.port()
    );
    let output = tokio::process::Command::new("ss")
        .args(["-tinH", "state", "established", &filter])
        .output()
        .await
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .find_map(|field| field.strip_prefix("segs_in:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no segs_in for {client} in ss output: {text:?}"))
}

/// A server that answers every request with a small response and reports, for its first
/// connections, how many segments each had received once its request was in.
async fn counting_server() -> (SocketAddr, mpsc::Receiver<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (counts, received) = mpsc::channel(COUNTED);
    tokio::spawn(async move {
        let mut answered = 0;
        while let Ok((mut stream, client)) = listener.accept().await {
            if !read_request(&mut stream).await {
                continue;
            }
            if answered < COUNTED {
                let _ = counts.send(segments_received(address, client).await).await;
            }
            answered += 1;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                .await;
        }
    });
    (address, received)
}

async fn segments_per_request(handshake_ack: HandshakeAck) -> Vec<u64> {
    let (server, mut counts) = counting_server().await;
    // One slot: the server answers one connection at a time.
    let mut config = StormConfig::new(server, 1, Duration::from_millis(300));
    config.handshake_ack = handshake_ack;
    let report = run_storm(&config, CancellationToken::new(), |_| {})
        .await
        .unwrap();
    crate::failures::assert_none_failed(&report);
    assert!(report.completed_connections > 0);
    let mut seen = Vec::new();
    while let Ok(count) = counts.try_recv() {
        seen.push(count);
    }
    assert!(!seen.is_empty(), "no connection was counted");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_riding_on_the_request_saves_the_server_one_segment() {
    let separate = segments_per_request(HandshakeAck::Separate).await;
    let with_request = segments_per_request(HandshakeAck::WithRequest).await;
    let fewest = |counts: &[u64]| counts.iter().copied().min().unwrap();
    // A client stalled past the kernel's delayed-ACK timer (200 ms) would send its ACK alone,
    // so only the fewest are compared: one segment, the bare ACK, is saved.
    assert_eq!(
        fewest(&with_request) + 1,
        fewest(&separate),
        "segments received per request: separate ACK {separate:?}, ACK with request {with_request:?}"
    );
}
