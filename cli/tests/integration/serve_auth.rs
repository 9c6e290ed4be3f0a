//! `loadlab loadgen serve` with a token: calls without it are refused before any storm, and
//! listening beyond loopback without a token is refused at start.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use loadlab_proto::auth::AttachToken;
use loadlab_proto::v1::{self, loadgen_client::LoadgenClient};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn denied_spec() -> v1::StormSpec {
    v1::StormSpec {
        // TEST-NET-1: never loaded, the policy refuses it before any connection.
        target: "192.0.2.1:80".into(),
        connections: 1,
        duration_ms: 100,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_answers_only_callers_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "t0ken\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args([
            "loadgen",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
        ])
        .arg(&token_file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let address = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "loadgen exited before listening"
        );
        if let Some(address) = line.trim().strip_prefix("loadlab loadgen listening on ") {
            break address.to_string();
        }
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut anonymous = LoadgenClient::new(channel.clone());
    let refused = anonymous.run(denied_spec()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let mut wrong =
        LoadgenClient::with_interceptor(channel.clone(), AttachToken::new(Some("guess")).unwrap());
    assert_eq!(
        wrong.run(denied_spec()).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    let mut trusted =
        LoadgenClient::with_interceptor(channel, AttachToken::new(Some("t0ken")).unwrap());
    // Past the token, the target policy answers.
    assert_eq!(
        trusted.run(denied_spec()).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );

    // Close the connection first: the server drains open connections before it exits.
    drop((anonymous, wrong, trusted));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "SIGTERM stops the server cleanly"
    );
}

#[test]
fn listening_beyond_loopback_needs_a_token() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args(["loadgen", "serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs --token-file"), "{stderr}");
}
