//! `loadlab agent capture`: kernel lock contention and a CPU profile of the whole node over one
//! window, printed as a table or as JSON, the way `perf lock contention -a -- sleep D` and
//! `perf top` would show them together.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use loadlab_agent::facts::logical_cpus;
use loadlab_agent::kallsyms::KernelSymbols;
use loadlab_agent::lockstat::{Contention, EPOLL_CALLS_UNCOUNTED, EpollCalls, LockReport};
use loadlab_agent::profile::CpuProfile;
use loadlab_agent::traces::{TraceRequest, Traces};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::args::AgentCaptureArgs;
use crate::render::thousands;

/// Everything one window found, for printing.
struct NodeCapture {
    window: Duration,
    cpus: u32,
    locks: Result<Option<LockReport>, String>,
    profile: Result<Option<CpuProfile>, String>,
}

pub async fn run(args: AgentCaptureArgs, interrupted: CancellationToken) -> anyhow::Result<()> {
    if args.no_locks && args.cpu_profile_hz == 0 {
        bail!("nothing to capture: --no-locks and --cpu-profile-hz 0 leave no trace to run");
    }
    let proc = Path::new("/proc");
    let cpus = logical_cpus(proc)?.max(1);
    // Kernel data symbols name static locks; a capture without locks does not read them.
    let symbols = if args.no_locks {
        KernelSymbols::default()
    } else {
        tokio::task::spawn_blocking(|| KernelSymbols::read(Path::new("/proc/kallsyms")))
            .await
            .unwrap_or_default()
    };
    let request = TraceRequest {
        lock_contention: !args.no_locks,
        lock_source: args.lock_source.into(),
        cpu_profile_hz: args.cpu_profile_hz,
        profile_processes: None,
    };
    eprintln!("attaching traces...");
    let mut traces = Traces::start(&request, &symbols).await;
    let started = Instant::now();
    eprintln!(
        "capturing for {} (Ctrl-C ends the window early)",
        args.duration
    );
    tokio::select! {
        () = tokio::time::sleep(args.duration.0) => {}
        () = interrupted.cancelled() => eprintln!("interrupted: ending the window"),
    }
    traces.end_window().await;
    let window = started.elapsed();
    let found = traces.collect(&symbols).await;
    let capture = NodeCapture {
        window,
        cpus,
        locks: found.locks.transpose().map_err(|e| e.to_string()),
        profile: found.profile.transpose().map_err(|e| e.to_string()),
    };
    if let (Err(locks), Err(profile)) = (&capture.locks, &capture.profile) {
        bail!("nothing was captured: {locks}; {profile}");
    }
    if let (Some(path), Ok(Some(profile))) = (&args.folded, &capture.profile) {
        let lines: String = profile
            .folded
            .iter()
            .map(|(stack, samples)| format!("{stack} {samples}\n"))
            .collect();
        std::fs::write(path, lines)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&capture_json(&capture))?);
    } else {
        print!("{}", capture_text(&capture, args.top));
    }
    Ok(())
}

/// A wait as a share of all CPU time in the window (wait / (window × CPUs)).
fn share_of_cpu_time(wait_ns: u64, capture: &NodeCapture) -> f64 {
    let cpu_time_ns = capture.window.as_nanos() as f64 * f64::from(capture.cpus);
    if cpu_time_ns > 0.0 {
        wait_ns as f64 / cpu_time_ns
    } else {
        0.0
    }
}

fn lock_json(lock: &Contention, capture: &NodeCapture) -> serde_json::Value {
    json!({
        "lock": lock.lock,
        "lock_type": lock.lock_type,
        "caller": lock.caller,
        "path": lock.stack,
        "contended": lock.count,
        "wait_ns_total": lock.wait_ns,
        "wait_ns_max": lock.max_wait_ns,
        "share_of_cpu_time": share_of_cpu_time(lock.wait_ns, capture),
        "epoll": lock.epoll,
    })
}

/// The share of all lock wait spent on eventpoll call paths; none without any wait.
fn epoll_share_of_lock_wait(contentions: &[Contention]) -> Option<f64> {
    let total: u64 = contentions.iter().map(|c| c.wait_ns).sum();
    let epoll: u64 = contentions
        .iter()
        .filter(|c| c.epoll)
        .map(|c| c.wait_ns)
        .sum();
    (total > 0).then(|| epoll as f64 / total as f64)
}

fn epoll_json(calls: Option<&EpollCalls>, contentions: &[Contention]) -> serde_json::Value {
    json!({
        "share_of_lock_wait": epoll_share_of_lock_wait(contentions),
        "epmutex_acquisitions": calls.and_then(|c| c.epmutex_acquisitions),
        "nginx_epoll_ctl": calls.map(|c| json!({ "add": c.ctl_add, "del": c.ctl_del, "mod": c.ctl_mod })),
        "nginx_epoll_wait": calls.map(|c| c.wait),
        "calls_not_counted": calls.is_none().then_some(EPOLL_CALLS_UNCOUNTED),
    })
}

fn profile_json(profile: &CpuProfile) -> serde_json::Value {
    let all = profile.samples.max(1) as f64;
    let top: Vec<_> = profile
        .top_symbols
        .iter()
        .map(|s| {
            json!({
                "symbol": s.symbol,
                "self_samples": s.self_samples,
                "total_samples": s.total_samples,
                "self_share": s.self_samples as f64 / all,
                "total_share": s.total_samples as f64 / all,
            })
        })
        .collect();
    json!({
        "frequency_hz": profile.frequency_hz,
        "samples": profile.samples,
        "idle_samples": profile.idle_samples,
        "unknown_samples": profile.unknown_samples(),
        "top_symbols": top,
    })
}

fn capture_json(capture: &NodeCapture) -> serde_json::Value {
    let (locks, epoll) = match &capture.locks {
        Ok(Some(report)) => (
            report
                .contentions
                .iter()
                .map(|c| lock_json(c, capture))
                .collect(),
            Some(epoll_json(report.epoll_calls.as_ref(), &report.contentions)),
        ),
        _ => (Vec::new(), None),
    };
    json!({
        "window_ms": capture.window.as_millis() as u64,
        "logical_cpus": capture.cpus,
        "locks": locks,
        "lock_source": capture.locks.as_ref().ok().and_then(Option::as_ref).map(|r| r.source.describe()),
        "lock_contention_unavailable": capture.locks.as_ref().err(),
        "epoll": epoll,
        "cpu": capture.profile.as_ref().ok().and_then(Option::as_ref).map(profile_json),
        "cpu_profile_unavailable": capture.profile.as_ref().err(),
    })
}

fn duration_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

fn capture_text(capture: &NodeCapture, top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "capture · whole node · {:.1} s window · {} CPUs",
        capture.window.as_secs_f64(),
        capture.cpus
    );
    match &capture.locks {
        Err(reason) => {
            let _ = writeln!(out, "\n{reason}");
        }
        Ok(None) => {}
        Ok(Some(report)) => {
            let contended: u64 = report.contentions.iter().map(|c| c.count).sum();
            let _ = writeln!(
                out,
                "\ncontended kernel locks: {} contentions on {} lock/call-path pairs (from {})",
                thousands(contended),
                report.contentions.len(),
                report.source.describe()
            );
            if !report.contentions.is_empty() {
                let _ = writeln!(
                    out,
                    "{:>10} {:>11} {:>11} {:>7}  {:<10} lock ← caller",
                    "contended", "total wait", "max wait", "CPU %", "type"
                );
            }
            for lock in report.contentions.iter().take(top) {
                let _ = writeln!(
                    out,
                    "{:>10} {:>11} {:>11} {:>6.2}%  {:<10} {} ← {}",
                    thousands(lock.count),
                    duration_ns(lock.wait_ns),
                    duration_ns(lock.max_wait_ns),
                    100.0 * share_of_cpu_time(lock.wait_ns, capture),
                    lock.lock_type,
                    lock.lock,
                    lock.caller
                );
            }
            if let Some(share) = epoll_share_of_lock_wait(&report.contentions) {
                let _ = writeln!(
                    out,
                    "epoll paths' share of lock wait: {:.1}%",
                    100.0 * share
                );
            }
            match &report.epoll_calls {
                Some(calls) => {
                    let _ = writeln!(
                        out,
                        "nginx epoll calls: epoll_ctl add {} · mod {} · del {} · epoll_wait {}",
                        thousands(calls.ctl_add),
                        thousands(calls.ctl_mod),
                        thousands(calls.ctl_del),
                        thousands(calls.wait)
                    );
                    if let Some(taken) = calls.epmutex_acquisitions {
                        let _ = writeln!(out, "global epmutex acquisitions: {}", thousands(taken));
                    }
                }
                None => {
                    let _ = writeln!(out, "{EPOLL_CALLS_UNCOUNTED}");
                }
            }
        }
    }
    match &capture.profile {
        Err(reason) => {
            let _ = writeln!(out, "\n{reason}");
        }
        Ok(None) => {}
        Ok(Some(profile)) => {
            let all = profile.samples.max(1) as f64;
            let _ = writeln!(
                out,
                "\nCPU profile: {} samples at {} Hz, {:.1}% idle, {:.1}% with a frame no symbol names",
                thousands(profile.samples),
                profile.frequency_hz,
                100.0 * profile.idle_samples as f64 / all,
                100.0 * profile.unknown_samples() as f64 / all
            );
            let _ = writeln!(out, "{:>7} {:>7}  symbol", "self", "total");
            for symbol in profile.top_symbols.iter().take(top) {
                let _ = writeln!(
                    out,
                    "{:>6.2}% {:>6.2}%  {}",
                    100.0 * symbol.self_samples as f64 / all,
                    100.0 * symbol.total_samples as f64 / all,
                    symbol.symbol
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadlab_agent::lockprobe::LockSource;

    fn contention(lock: &str, count: u64, wait_ns: u64, epoll: bool) -> Contention {
        Contention {
            lock: lock.into(),
            lock_type: "mutex".into(),
            caller: "pipe_write ← vfs_write".into(),
            stack: "__mutex_lock;pipe_write;vfs_write".into(),
            count,
            wait_ns,
            max_wait_ns: wait_ns / 2,
            epoll,
        }
    }

    fn capture() -> NodeCapture {
        NodeCapture {
            window: Duration::from_secs(2),
            cpus: 2,
            locks: Ok(Some(LockReport {
                source: LockSource::Tracepoints,
                contentions: vec![
                    contention("mutex in pipe_write", 10, 400_000_000, false),
                    contention("epmutex", 2, 100_000_000, true),
                ],
                epoll_calls: Some(EpollCalls {
                    epmutex_acquisitions: Some(7),
                    ..EpollCalls::default()
                }),
            })),
            profile: Err("CPU profile unavailable: perf not found".into()),
        }
    }

    #[test]
    fn json_has_the_documented_lock_fields_and_shares() {
        let value = capture_json(&capture());
        let first = &value["locks"][0];
        assert_eq!(first["lock"], "mutex in pipe_write");
        assert_eq!(first["path"], "__mutex_lock;pipe_write;vfs_write");
        assert_eq!(first["contended"], 10);
        assert_eq!(first["wait_ns_total"], 400_000_000);
        assert_eq!(first["wait_ns_max"], 200_000_000);
        // 0.4 s of wait in 2 s on 2 CPUs.
        assert_eq!(first["share_of_cpu_time"], 0.1);
        assert_eq!(value["epoll"]["share_of_lock_wait"], 0.2);
        assert_eq!(value["epoll"]["epmutex_acquisitions"], 7);
        assert!(value["cpu"].is_null());
        assert_eq!(
            value["cpu_profile_unavailable"],
            "CPU profile unavailable: perf not found"
        );
    }

    #[test]
    fn text_names_locks_callers_and_what_is_missing() {
        let text = capture_text(&capture(), 1);
        assert!(
            text.contains("12 contentions on 2 lock/call-path pairs"),
            "{text}"
        );
        assert!(
            text.contains("mutex in pipe_write ← pipe_write ← vfs_write"),
            "{text}"
        );
        assert!(!text.contains("epmutex ←"), "only the top row: {text}");
        assert!(text.contains("400.00 ms"), "{text}");
        assert!(text.contains("perf not found"), "{text}");
    }
}
