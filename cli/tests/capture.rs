//! `loadlab agent capture`: a one-off capture of the whole node, as a table and as JSON.

use std::process::Command;

fn capture(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args(["agent", "capture"])
        .args(args)
        .output()
        .expect("loadlab runs")
}

fn can_trace() -> bool {
    nix::unistd::Uid::effective().is_root()
        && loadlab_agent::lockstat::find_bpftrace().is_some()
        && loadlab_agent::profile::find_perf().is_some()
}

#[test]
fn json_has_locks_with_their_paths_and_the_cpu_profile() {
    let output = capture(&["--duration", "1s", "--cpu-profile-hz", "199", "--json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !can_trace() {
        assert!(!output.status.success());
        assert!(stderr.contains("nothing was captured"), "{stderr}");
        return;
    }
    assert!(output.status.success(), "{stderr}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(value["window_ms"].as_u64().unwrap() >= 1000, "{value}");
    assert!(value["lock_contention_unavailable"].is_null(), "{value}");
    for lock in value["locks"].as_array().expect("locks") {
        for field in ["lock", "path", "caller", "lock_type"] {
            assert!(lock[field].is_string(), "{field} in {lock}");
        }
        let (count, total, max) = (
            lock["contended"].as_u64().unwrap(),
            lock["wait_ns_total"].as_u64().unwrap(),
            lock["wait_ns_max"].as_u64().unwrap(),
        );
        assert!(count > 0 && max <= total, "{lock}");
    }
    // epoll calls are either counted or said not to be, never both.
    let epoll = &value["epoll"];
    assert_eq!(
        epoll["nginx_epoll_wait"].is_u64(),
        epoll["calls_not_counted"].is_null(),
        "{epoll}"
    );
    assert_eq!(
        epoll["nginx_epoll_ctl"].is_object(),
        epoll["nginx_epoll_wait"].is_u64(),
        "{epoll}"
    );
    // 199 Hz on every CPU, idle or not, for at least a second.
    let cpu = &value["cpu"];
    assert!(cpu["samples"].as_u64().unwrap() >= 199, "{cpu}");
    assert!(cpu["top_symbols"].is_array(), "{cpu}");
}

#[test]
fn the_table_shows_locks_and_symbols() {
    let output = capture(&["-d", "500ms", "--top", "3"]);
    if !can_trace() {
        return;
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.starts_with("capture · whole node · "), "{stdout}");
    assert!(stdout.contains("contended kernel locks:"), "{stdout}");
    assert!(stdout.contains("CPU profile: "), "{stdout}");
}

#[test]
fn asking_for_nothing_is_a_clear_error() {
    let output = capture(&["--no-locks", "--cpu-profile-hz", "0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nothing to capture"), "{stderr}");
    let bad = capture(&["--duration", "soon"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid duration"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
