//! `loadlab agent capture`: a one-off capture of the whole node, as a table and as JSON.

use std::process::Command;

/// Runs a capture with nothing on `PATH`: no perf, no bpftrace, no compiler to lean on.
fn capture(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadlab"))
        .args(["agent", "capture"])
        .args(args)
        .env("PATH", "/nonexistent")
        .output()
        .expect("loadlab runs")
}

fn can_trace() -> bool {
    nix::unistd::Uid::effective().is_root()
}

#[test]
fn json_has_locks_with_their_paths_and_the_cpu_profile() {
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("folded.txt");
    let output = capture(&[
        "--duration",
        "1s",
        "--cpu-profile-hz",
        "199",
        "--json",
        "--folded",
        folded.to_str().unwrap(),
    ]);
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

    // The folded stacks hold every sample, one `stack count` per line.
    let text = std::fs::read_to_string(&folded).expect("the folded stacks written");
    let counted: u64 = text
        .lines()
        .map(|line| {
            let (stack, count) = line.rsplit_once(' ').expect("stack and count");
            assert!(!stack.is_empty(), "{line}");
            count.parse::<u64>().expect("a count")
        })
        .sum();
    assert_eq!(counted, cpu["samples"].as_u64().unwrap(), "{cpu}");
    // The unnamed-frame count is the folded stacks' own.
    let unknown: u64 = text
        .lines()
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(stack, _)| stack.split(';').skip(1).any(|f| f == "[unknown]"))
        .filter_map(|(_, count)| count.parse::<u64>().ok())
        .sum();
    assert_eq!(cpu["unknown_samples"].as_u64(), Some(unknown), "{cpu}");
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

/// `loadlab agent capture` as uid 0 with the capabilities of the given bounding set only.
fn capture_with_capabilities(bounding_set: &str) -> std::process::Output {
    Command::new("setpriv")
        .args(["--inh-caps=-all", &format!("--bounding-set={bounding_set}")])
        .arg(env!("CARGO_BIN_EXE_loadlab"))
        .args(["agent", "capture", "-d", "300ms", "--json"])
        .output()
        .expect("setpriv runs (util-linux)")
}

#[test]
fn without_capabilities_each_trace_says_which_it_needs() {
    if !can_trace() {
        return;
    }
    let output = capture_with_capabilities("-all");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: nothing was captured"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        error.contains("lock contention unavailable: loading BPF programs needs CAP_BPF"),
        "{error}"
    );
    assert!(
        error.contains("CPU profile unavailable: loading BPF programs needs CAP_BPF"),
        "{error}"
    );
}

#[test]
fn the_agent_pods_capabilities_are_enough_where_perf_events_are_not_restricted() {
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    if !can_trace() || paranoid.is_none_or(|level| level > 2) {
        return;
    }
    // The chart's agent pods: drop ALL, add these (controller/src/pods.rs).
    let output =
        capture_with_capabilities("-all,+bpf,+perfmon,+syslog,+sys_ptrace,+chown,+setuid,+setgid");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(value["lock_contention_unavailable"].is_null(), "{value}");
    assert!(value["cpu_profile_unavailable"].is_null(), "{value}");
    assert!(value["cpu"]["samples"].as_u64().unwrap() > 0, "{value}");
}

#[test]
fn from_a_pid_namespace_of_its_own_other_containers_user_space_is_said_not_misnamed() {
    if !can_trace() {
        return;
    }
    // A process outside the namespace, busy in user space for the whole window.
    let mut busy = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folded = dir.path().join("folded.txt");
    // As in a pod: the capture's own pid namespace and /proc.
    let output = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_loadlab"))
        .args(["agent", "capture", "-d", "1s", "--no-locks", "--folded"])
        .arg(&folded)
        .output()
        .expect("unshare runs (util-linux)");
    busy.kill().unwrap();
    busy.wait().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&folded).unwrap();
    let outside: u64 = text
        .lines()
        .filter(|l| l.starts_with("sh;[user space of another container]"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert!(
        outside >= 50,
        "the busy shell outside is sampled and said to be another container's: {outside}\n{text}"
    );
}
