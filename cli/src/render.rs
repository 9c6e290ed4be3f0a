//! Everything the terminal shows: progress lines, the storm summary and the comparison report.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use loadlab_engine::Event;
use loadlab_engine::backends::BackendNotice;
use loadlab_engine::guests::BootEvent;
use loadlab_loadgen::{CloseMode, HandshakeAck, Progress, StormConfig, StormReport};
use loadlab_proto::v1;
use loadlab_results::RunOutcome;
use loadlab_results::noise::NoiseFlag;
use loadlab_results::report::{CohortReport, ExperimentReport, Percentiles};
use loadlab_results::stats::{self, Verdict};
use loadlab_vm::Accelerator;
use serde_json::json;

/// Why a report has no epoll call rates where it has lock contention.
const EPOLL_UNCOUNTED: &str = "nginx epoll calls not counted: no kprobes on do_epoll_ctl and do_epoll_wait there (syscall tracepoints would slow every system call)";

/// 1234567 -> "1,234,567".
pub(crate) fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

pub(crate) fn facts_line(facts: &v1::NodeFacts) -> String {
    let symbols: Vec<String> = facts
        .kernel_symbols
        .iter()
        .map(|s| format!("{} {}", s.name, s.presence_word()))
        .collect();
    let nginx = if facts.nginx_version.is_empty() {
        "nginx not found".to_string()
    } else {
        facts.nginx_version.clone()
    };
    let patch = facts.epoll_refcount_patch();
    format!(
        "node: {} · kernel {} · {} × {} CPUs · {:.1} GiB · {}\n{} · SMT {} · {} NUMA node(s) · governor {}\nepoll refcount patch: {} ({}) · kernel symbols: {}",
        facts.hostname,
        facts.kernel_release,
        facts.cpu_model,
        facts.logical_cpus,
        facts.memory_bytes as f64 / (1u64 << 30) as f64,
        nginx,
        facts.virtualization,
        facts.smt,
        facts.numa_nodes,
        facts.scaling_governor,
        patch.as_str(),
        patch.evidence(),
        symbols.join(", ")
    )
}

pub(crate) fn facts_json(facts: &v1::NodeFacts) -> serde_json::Value {
    let mut value = json!({
        "hostname": facts.hostname,
        "kernel_release": facts.kernel_release,
        "kernel_version": facts.kernel_version,
        "cpu_model": facts.cpu_model,
        "logical_cpus": facts.logical_cpus,
        "memory_bytes": facts.memory_bytes,
    });
    if let (Some(identity), serde_json::Value::Object(details)) = (
        value.as_object_mut(),
        loadlab_engine::orchestrator::node_details(facts),
    ) {
        identity.extend(details);
    }
    value
}

fn bar(done: f64, width: usize) -> String {
    let filled = ((done.clamp(0.0, 1.0)) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

pub(crate) fn clear_line() {
    eprint!("\r\x1b[2K");
    let _ = std::io::stderr().flush();
}

/// What happens to the machines an experiment runs on: guests booting, one that stopped, the
/// console of each after a failure.
pub(crate) fn backend_notice(notice: BackendNotice) {
    match notice {
        BackendNotice::Boot(BootEvent::Booting { cohort, kernel }) => {
            eprintln!("cohort {cohort}: booting {kernel}");
        }
        BackendNotice::Boot(BootEvent::Booted {
            cohort,
            release,
            accelerator,
            took,
        }) => {
            let note = match accelerator {
                Accelerator::Kvm => "",
                Accelerator::Tcg => {
                    " (emulated: lock evidence holds, connection rates say little about the kernel)"
                }
            };
            eprintln!(
                "cohort {cohort}: {release} up under {} in {:.1} s{note}",
                accelerator.name().to_uppercase(),
                took.as_secs_f64()
            );
        }
        BackendNotice::GuestStopped(guest) => {
            clear_line();
            eprintln!(
                "cohort {}: the {} guest stopped (QEMU exited); its remaining runs will fail. Last console lines:\n{}",
                guest.cohort, guest.kernel, guest.console
            );
        }
        BackendNotice::GuestConsole { kernel, console } => {
            eprintln!("last console lines of the {kernel} guest:\n{console}");
        }
    }
}

fn live_line(line: &str) {
    eprint!("\r\x1b[2K{line}");
    let _ = std::io::stderr().flush();
}

pub(crate) fn storm_progress(progress: &Progress, length: Duration, warmup: Duration) {
    let phase_elapsed = if progress.in_warmup {
        progress.elapsed
    } else {
        progress.elapsed.saturating_sub(warmup)
    };
    let rate = progress.completed as f64 / phase_elapsed.as_secs_f64().max(1e-3);
    live_line(&format!(
        "{} {} {:.0}/{:.0} s  {} conn/s  errors {}",
        if progress.in_warmup {
            "warm-up"
        } else {
            "storm  "
        },
        bar(progress.elapsed.as_secs_f64() / length.as_secs_f64(), 20),
        progress.elapsed.as_secs_f64(),
        length.as_secs_f64(),
        thousands(rate as u64),
        progress.failed
    ));
}

fn percentiles_json(histogram: &hdrhistogram::Histogram<u64>) -> serde_json::Value {
    let p = Percentiles::of(histogram);
    json!({ "p50": p.p50_us, "p90": p.p90_us, "p99": p.p99_us, "max": p.max_us })
}

pub fn storm_json(report: &StormReport) -> serde_json::Value {
    let errors: serde_json::Map<String, serde_json::Value> = report
        .errors
        .nonzero()
        .map(|(kind, count)| (kind.as_str().to_string(), json!(count)))
        .collect();
    json!({
        "completed_connections": report.completed_connections,
        "failed_connections": report.failed_connections,
        "warmup_connections": report.warmup_connections,
        "window_seconds": report.window.as_secs_f64(),
        "connections_per_second": report.connections_per_second(),
        "errors": errors,
        "latency_us": percentiles_json(&report.latencies.total),
        "connect_latency_us": percentiles_json(&report.latencies.connect),
        "first_byte_latency_us": percentiles_json(&report.latencies.first_byte),
        "completed_per_second": report.completed_per_second,
        "completed_requests": report.completed_requests,
        "bytes_received": report.bytes_received,
        "offered_per_second": report.offered_per_second,
        "missed_arrivals": report.missed_arrivals,
        "time_wait_at_end": report.port_pressure.map(|p| p.time_wait),
        "ephemeral_ports": report.port_pressure.map(|p| p.ephemeral_ports),
    })
}

/// The connection modes that differ from what real clients do, as ` · ...` parts of a heading.
pub(crate) fn connection_modes(ack_with_request: bool, close_with_reset: bool) -> String {
    let mut modes = String::new();
    if ack_with_request {
        modes.push_str(" · handshake ACK with the request");
    }
    if close_with_reset {
        modes.push_str(" · closed with a reset");
    }
    modes
}

pub(crate) fn storm_text(url: &str, config: &StormConfig, report: &StormReport) -> String {
    let mut out = String::new();
    let total = Percentiles::of(&report.latencies.total);
    let connect = Percentiles::of(&report.latencies.connect);
    let _ = writeln!(
        out,
        "storm {url} · {} connections{} · {:.1} s measured{}",
        config.connections,
        connection_modes(
            config.handshake_ack == HandshakeAck::WithRequest,
            config.close == CloseMode::Reset
        ),
        report.window.as_secs_f64(),
        if report.warmup_connections > 0 {
            format!(
                " (+{} warm-up connections)",
                thousands(report.warmup_connections)
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "  {} conn/s · {} completed · {} failed",
        thousands(report.connections_per_second() as u64),
        thousands(report.completed_connections),
        thousands(report.failed_connections)
    );
    let _ = writeln!(
        out,
        "  latency ms    p50     p90     p99     max\n  connect   {:>7} {:>7} {:>7} {:>7}\n  total     {:>7} {:>7} {:>7} {:>7}",
        ms(connect.p50_us),
        ms(connect.p90_us),
        ms(connect.p99_us),
        ms(connect.max_us),
        ms(total.p50_us),
        ms(total.p90_us),
        ms(total.p99_us),
        ms(total.max_us),
    );
    if let Some(offered) = report.offered_per_second {
        let achieved = report.connections_per_second();
        let _ = writeln!(
            out,
            "  open loop: offered {} conn/s, achieved {} ({:.1}%), {} arrivals missed",
            thousands(offered as u64),
            thousands(achieved as u64),
            achieved / offered * 100.0,
            thousands(report.missed_arrivals)
        );
    }
    for (kind, count) in report.errors.nonzero() {
        let _ = writeln!(out, "  error {}: {}", kind.as_str(), thousands(count));
    }
    if let Some(ports) = report.port_pressure {
        let _ = writeln!(
            out,
            "  TIME_WAIT at the end: {} sockets for {} ephemeral ports{}",
            thousands(ports.time_wait),
            thousands(ports.ephemeral_ports),
            if ports.is_high() {
                " (high: source ports may run out; add --source-addrs 127.0.0.2,127.0.0.3,...)"
            } else {
                ""
            }
        );
    }
    out
}

/// Shows an experiment's progress: a live line on a terminal, a line per finished run always.
pub(crate) struct RunProgress {
    live: bool,
    runs: usize,
    cohorts: Vec<String>,
    current: String,
}

impl RunProgress {
    pub fn new(live: bool, cohorts: Vec<String>) -> Self {
        Self {
            live,
            runs: 0,
            cohorts,
            current: String::new(),
        }
    }

    pub fn show(&mut self, event: &Event) {
        let width = self.cohorts.iter().map(String::len).max().unwrap_or(8);
        match event {
            Event::Started {
                experiment_id,
                nodes,
                runs,
                resumed,
                until_decided,
                ..
            } => {
                self.runs = *runs + *resumed;
                let mut seen = std::collections::BTreeSet::new();
                for node in nodes.iter().filter(|n| seen.insert(n.hostname.clone())) {
                    eprintln!("{}", facts_line(node));
                }
                let most = if *until_decided { "at most " } else { "" };
                if *resumed > 0 {
                    eprintln!(
                        "experiment {experiment_id}: {most}{runs} runs to go, {resumed} stored already"
                    );
                } else {
                    eprintln!("experiment {experiment_id}: {most}{runs} runs");
                }
            }
            Event::RunStarted { cohort, node, .. } => {
                self.current = match node {
                    Some(node) => format!("{cohort} on {node}"),
                    None => cohort.clone(),
                };
            }
            Event::Progress {
                run,
                warmup,
                elapsed,
                length,
                completed,
                failed,
            } if self.live => {
                let rate = *completed as f64 / elapsed.as_secs_f64().max(1e-3);
                live_line(&format!(
                    "[{}/{} rep {}] {:width$}  {} {} {:.0}/{:.0} s  {} conn/s  errors {}",
                    run.sequence + 1,
                    self.runs,
                    run.repetition,
                    self.current,
                    if *warmup { "warm-up" } else { "measure" },
                    bar(elapsed.as_secs_f64() / length.as_secs_f64(), 20),
                    elapsed.as_secs_f64(),
                    length.as_secs_f64(),
                    thousands(rate as u64),
                    failed
                ));
            }
            Event::Progress { .. } => {}
            Event::RoundJudged(judged) => {
                if self.live {
                    clear_line();
                }
                for (cohort, judgement) in &judged.judgements {
                    eprintln!(
                        "round {}/{}: {cohort:width$}  {}",
                        judged.round,
                        judged.budget,
                        judgement.describe(judged.threshold)
                    );
                }
                if let Some(reason) = judged.stop_reason() {
                    eprintln!("{reason}");
                }
            }
            Event::StoreUnavailable { error } => {
                if self.live {
                    clear_line();
                }
                eprintln!(
                    "results database unavailable ({error}): the finished run is kept and written when it answers"
                );
            }
            Event::RunFinished { run, record } => {
                if self.live {
                    clear_line();
                }
                let outcome = match &record.outcome {
                    RunOutcome::Succeeded => format!(
                        "{:>9} conn/s  errors {}  nginx accepts {}",
                        thousands(record.connections_per_second as u64),
                        record.failed_connections,
                        thousands(record.counters.nginx_accepts)
                    ),
                    RunOutcome::Failed { reason } => format!("FAILED: {reason}"),
                };
                eprintln!(
                    "[{}/{} rep {}] {:width$}  {outcome}",
                    run.sequence + 1,
                    self.runs,
                    run.repetition,
                    self.current
                );
            }
        }
    }
}

/// What each cohort's windows could not control: the numbers always, the flags when above
/// their thresholds.
fn noise_section(report: &ExperimentReport, width: usize) -> String {
    let mut out = String::new();
    if report.cohorts.iter().all(|c| c.node_noise.is_none()) {
        return out;
    }
    let _ = writeln!(
        out,
        "\nwhat the windows could not control (steal: CPU time the hypervisor took, worst run;\n other work: CPUs' worth used by neither nginx nor loadlab; device interrupts on nginx's CPUs;\n conntrack drops: packets the node's connection tracking dropped, where its kernel has it):"
    );
    for cohort in &report.cohorts {
        let Some(noise) = &cohort.node_noise else {
            continue;
        };
        let _ = writeln!(
            out,
            "  {:width$}  steal {:.1}%  other work {:.2} CPU  {} interrupts/s on CPU{} {}{}",
            cohort.name,
            noise.steal_share_max * 100.0,
            noise.other_work_cpus,
            thousands(noise.device_interrupts_per_second.round() as u64),
            if noise.watched_cpus.len() == 1 {
                ""
            } else {
                "s"
            },
            loadlab_agent::cpus::list(&noise.watched_cpus),
            // Only where the node tracks connections: elsewhere there is nothing to drop.
            noise
                .conntrack_dropped
                .map(|dropped| format!("  conntrack drops {}", thousands(dropped)))
                .unwrap_or_default(),
        );
        if !noise.flags.is_empty() {
            let flags: Vec<String> = noise.flags.iter().map(NoiseFlag::describe).collect();
            let _ = writeln!(out, "  {:width$}  noise: {}", "", flags.join("; "));
        }
    }
    out
}

fn signed_percent(ratio: f64) -> String {
    format!("{:+.1}%", (ratio - 1.0) * 100.0)
}

fn versus(cohort: &CohortReport) -> String {
    match &cohort.comparison {
        None => "baseline".into(),
        Some(c) => match c.ci95 {
            Some((low, high)) => format!(
                "{} [{}, {}]",
                signed_percent(c.ratio),
                signed_percent(low),
                signed_percent(high)
            ),
            None => signed_percent(c.ratio),
        },
    }
}

fn latency(p: &Percentiles) -> String {
    format!("{} / {} ms", ms(p.p50_us), ms(p.p99_us))
}

/// The comparison report as a table.
pub(crate) fn report_table(report: &ExperimentReport) -> String {
    let mut out = String::new();
    let experiment = &report.experiment;
    let width = report
        .cohorts
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "\nexperiment {} · {} · baseline {} · {}",
        experiment.name, experiment.id, experiment.baseline, experiment.status
    );
    let _ = writeln!(
        out,
        "{:width$}  {:>20}  {:>26}  {:>17}  {:>17}  {:>6}  {:>4}",
        "",
        "conn/s (mean ± sd)",
        "vs baseline [95% CI]",
        "connect p50/p99",
        "total p50/p99",
        "errors",
        "runs"
    );
    for cohort in &report.cohorts {
        let rate = match cohort.summary {
            Some(s) => format!("{} ± {}", thousands(s.mean as u64), thousands(s.sd as u64)),
            None => "no data".into(),
        };
        let runs = if cohort.runs_failed > 0 {
            format!("{}+{}✗", cohort.runs_succeeded, cohort.runs_failed)
        } else {
            cohort.runs_succeeded.to_string()
        };
        let _ = writeln!(
            out,
            "{:width$}  {:>20}  {:>26}  {:>17}  {:>17}  {:>6}  {:>4}",
            cohort.name,
            rate,
            versus(cohort),
            latency(&cohort.connect_latency),
            latency(&cohort.total_latency),
            thousands(cohort.failed_connections),
            runs
        );
    }
    let emulated: Vec<&str> = report
        .cohorts
        .iter()
        .filter(|c| c.throughput_caveat.is_some())
        .map(|c| c.name.as_str())
        .collect();
    if !emulated.is_empty() {
        let _ = writeln!(
            out,
            "note: {} {}",
            emulated.join(", "),
            loadlab_results::report::EMULATED_CAVEAT
        );
    }
    if let Some(stopping) = &report.stopping {
        let _ = writeln!(
            out,
            "\nrepetitions: auto · {}\n (per-round conn/s ratios; each of {looks} looks a t interval at 1 - 0.05/{looks}, so 95% over all;\n practical change ±{:.0}%):",
            stopping.reason,
            stopping.practical_change * 100.0,
            looks = stopping.budget.saturating_sub(2).max(1),
        );
        for cohort in &stopping.cohorts {
            let _ = writeln!(out, "  {:width$}  {}", cohort.cohort, cohort.text);
        }
    }
    let _ = writeln!(
        out,
        "\nverdicts (conn/s; ratio of geometric means, Welch 95% CI on logs):"
    );
    for cohort in &report.cohorts {
        let Some(c) = &cohort.comparison else {
            continue;
        };
        let mut why = format!("ratio {:.3}", c.ratio);
        if let Some((low, high)) = c.ci95 {
            let _ = write!(why, ", CI [{low:.3}, {high:.3}]");
        }
        if let Some(g) = c.hedges_g {
            let _ = write!(why, ", Hedges' g {g:+.2}");
        }
        match c.p_value {
            Some(p) if p < 0.001 => why.push_str(", p < 0.001"),
            Some(p) => {
                let _ = write!(why, ", p {p:.3}");
            }
            None => {}
        }
        for flag in &c.flags {
            why.push_str(match flag {
                stats::NoiseFlag::HighVariation => "; noisy: run-to-run variation above 5%",
                stats::NoiseFlag::TooFewRuns => "; fewer than 3 runs",
            });
        }
        let relation = match c.verdict {
            Verdict::Improved | Verdict::Regressed => "than",
            Verdict::NoDetectableChange | Verdict::InsufficientData => "against",
        };
        let _ = writeln!(
            out,
            "  {:width$}  {} {relation} {} ({why})",
            cohort.name,
            c.verdict.as_str(),
            experiment.baseline
        );
    }
    let _ = writeln!(out, "\ncounters over the measured windows (should agree):");
    let _ = writeln!(
        out,
        "{:width$}  {:>14}  {:>14}  {:>16}  {:>9}",
        "", "loadgen done", "nginx accepts", "kernel PassiveOp", "CPU busy"
    );
    for cohort in &report.cohorts {
        let attempted = cohort.completed_connections + cohort.failed_connections;
        let _ = writeln!(
            out,
            "{:width$}  {:>14}  {:>14}  {:>16}  {:>8.0}%",
            cohort.name,
            thousands(attempted),
            thousands(cohort.nginx_accepts),
            thousands(cohort.tcp_passive_opens),
            cohort.mean_cpu_busy_share * 100.0
        );
    }
    if report
        .cohorts
        .iter()
        .any(|c| c.cpu_per_connection.is_some())
    {
        let _ = writeln!(
            out,
            "\nnode CPU per connection (µs; busy share × window × CPUs ÷ connections: nginx, the kernel\n and a generator on the node; change against the baseline, Welch 95% CI):"
        );
        for cohort in &report.cohorts {
            let Some(cpu) = cohort.cpu_per_connection else {
                continue;
            };
            // The comparison is of connections per CPU-second; shown as the change in µs per
            // connection, the figure printed beside it (the inverse ratio and interval).
            let versus = match &cohort.efficiency_comparison {
                Some(c) => {
                    let interval = c.ci95.map_or_else(String::new, |(low, high)| {
                        format!(
                            " [{}, {}]",
                            signed_percent(1.0 / high),
                            signed_percent(1.0 / low)
                        )
                    });
                    let word = match c.verdict {
                        Verdict::Improved => "cheaper",
                        Verdict::Regressed => "dearer",
                        Verdict::NoDetectableChange | Verdict::InsufficientData => {
                            "no detectable change"
                        }
                    };
                    format!("  {word}: {}{interval}", signed_percent(1.0 / c.ratio))
                }
                None => String::new(),
            };
            let nginx = cohort
                .nginx_cpu_per_connection
                .map(|n| format!("  (nginx alone {:.1} ± {:.1})", n.mean, n.sd))
                .unwrap_or_default();
            let generator = cohort
                .generator_cpu_per_connection
                .map(|g| format!("  (generator alone {:.1} ± {:.1})", g.mean, g.sd))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:width$}  {:>8.1} ± {:.1}{versus}{nginx}{generator}",
                cohort.name, cpu.mean, cpu.sd
            );
        }
    }
    out.push_str(&noise_section(report, width));
    if report
        .cohorts
        .iter()
        .any(|c| !c.locks.is_empty() || !c.lock_contention_unavailable.is_empty())
    {
        let _ = writeln!(
            out,
            "\ntop contended kernel locks (wait as a share of all CPU time in the windows; contentions per 1,000 connections; the\n call path with the most wait)"
        );
        let uncounted =
            |c: &&CohortReport| c.epoll_calls_per_thousand.is_none() && !c.locks.is_empty();
        // Said once when it holds for every cohort with contention (one kernel, or one kind).
        let uncounted_everywhere = report
            .cohorts
            .iter()
            .filter(|c| !c.locks.is_empty())
            .all(|c| uncounted(&c));
        if uncounted_everywhere && report.cohorts.iter().any(|c| uncounted(&c)) {
            let _ = writeln!(out, "  {EPOLL_UNCOUNTED}");
        }
        for cohort in &report.cohorts {
            let epoll = cohort
                .epoll_share_of_contention
                .map(|share| format!(" · epoll paths {:.1}% of lock wait", share * 100.0))
                .unwrap_or_default();
            // The tracepoints are the default; only another source is worth a word.
            let source = match cohort.lock_sources.as_slice() {
                [] => String::new(),
                [only] if only == "lock tracepoints" => String::new(),
                sources => format!(" · seen through {}", sources.join(" and ")),
            };
            let _ = writeln!(out, "  {}{epoll}{source}", cohort.name);
            if let Some(rates) = cohort.epoll_calls_per_thousand {
                let _ = writeln!(
                    out,
                    "    nginx epoll calls per 1,000 connections: ctl add {:.0} · mod {:.0} · del {:.0} · wait {:.0}",
                    rates.ctl_add, rates.ctl_mod, rates.ctl_del, rates.wait
                );
                if let Some(taken) = rates.epmutex_acquisitions {
                    let _ = writeln!(
                        out,
                        "    global epmutex taken {taken:.0} times per 1,000 connections (by any task){}",
                        if taken >= 1.0 {
                            ": closes take the global mutex, the path the epoll refcount patch removes"
                        } else {
                            ""
                        }
                    );
                }
            } else if !cohort.locks.is_empty() && !uncounted_everywhere {
                let _ = writeln!(out, "    {EPOLL_UNCOUNTED}");
            }
            for reason in &cohort.lock_contention_unavailable {
                let _ = writeln!(out, "    {reason}");
            }
            if cohort.locks.is_empty() && cohort.lock_contention_unavailable.is_empty() {
                let _ = writeln!(out, "    no contention recorded");
            }
            for lock in cohort.locks.iter().take(5) {
                let _ = writeln!(
                    out,
                    "    {:>6.2}%  {:<36} {:>9.2}/1k  max {:>7.3} ms  via {}",
                    lock.share_of_cpu_time * 100.0,
                    lock.lock,
                    lock.per_thousand_connections,
                    lock.max_wait_ns as f64 / 1e6,
                    lock.top_caller
                );
            }
        }
    }
    if report
        .cohorts
        .iter()
        .any(|c| !c.cpu_symbols.is_empty() || !c.cpu_profile_unavailable.is_empty())
    {
        let _ = writeln!(
            out,
            "\ntop CPU symbols (share of all CPU samples in the windows, idle included: self / on stack)"
        );
        for cohort in &report.cohorts {
            let _ = writeln!(
                out,
                "  {} ({} samples)",
                cohort.name,
                thousands(cohort.cpu_profile_samples)
            );
            for reason in &cohort.cpu_profile_unavailable {
                let _ = writeln!(out, "    {reason}");
            }
            for symbol in cohort.cpu_symbols.iter().take(6) {
                let _ = writeln!(
                    out,
                    "    {:>6.2}% / {:>6.2}%  {}",
                    symbol.self_share * 100.0,
                    symbol.total_share * 100.0,
                    symbol.symbol
                );
            }
        }
    }
    for cohort in &report.cohorts {
        for failure in &cohort.failures {
            let _ = writeln!(out, "failed run of {}: {failure}", cohort.name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0.5, 4), "██░░");
        assert_eq!(bar(2.0, 2), "██");
    }
}
