//! Who calls a symbol, and with what share of the CPU: for each cohort, the call chains that
//! lead to a chosen symbol (e.g. `osq_lock` or `eventpoll_release_file`) in its CPU profiles,
//! like `perf report --children -G` narrowed to that symbol. Shares are of all samples (idle
//! included), the same base as the report's CPU symbols.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{RunOutcome, RunRecord};

/// How many chains each cohort lists.
pub(crate) const TOP_CHAINS: usize = 15;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallChain {
    /// The symbol first, then its caller, up to the process name.
    pub frames: Vec<String>,
    pub samples: i64,
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortCallChains {
    pub cohort: String,
    /// Every sample of the cohort's profiles, idle included.
    pub samples: i64,
    /// Samples with the symbol anywhere on the stack, as a share of all.
    pub children_share: f64,
    /// Samples with the symbol running, as a share of all.
    pub self_share: f64,
    /// Distinct chains leading to the symbol, before the top ones were kept.
    pub distinct_chains: usize,
    pub chains: Vec<CallChain>,
}

/// A frame names the symbol when it is the symbol, perhaps with perf's `_[k]` kernel mark.
fn is_symbol(frame: &str, symbol: &str) -> bool {
    frame == symbol || frame.strip_suffix("_[k]") == Some(symbol)
}

/// The call chains into `symbol` over one cohort's succeeded, profiled runs.
pub fn cohort_call_chains(runs: &[RunRecord], cohort: &str, symbol: &str) -> CohortCallChains {
    let mut samples = 0i64;
    let mut children = 0i64;
    let mut self_samples = 0i64;
    let mut chains: BTreeMap<Vec<&str>, i64> = BTreeMap::new();
    let profiles = runs
        .iter()
        .filter(|r| r.cohort == cohort && r.outcome == RunOutcome::Succeeded)
        .filter_map(|r| r.cpu_profile.as_ref());
    for profile in profiles {
        samples += profile.samples;
        for (stack, count) in &profile.folded {
            let frames: Vec<&str> = stack.split(';').collect();
            // The outermost occurrence: a recursive symbol counts once, with its whole chain.
            let Some(at) = frames.iter().position(|f| is_symbol(f, symbol)) else {
                continue;
            };
            children += count;
            if at == frames.len() - 1 {
                self_samples += count;
            }
            let chain: Vec<&str> = frames[..=at].iter().rev().copied().collect();
            *chains.entry(chain).or_default() += count;
        }
    }
    let share = |n: i64| {
        if samples > 0 {
            n as f64 / samples as f64
        } else {
            0.0
        }
    };
    let distinct_chains = chains.len();
    let mut ranked: Vec<(Vec<&str>, i64)> = chains.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    CohortCallChains {
        cohort: cohort.to_string(),
        samples,
        children_share: share(children),
        self_share: share(self_samples),
        distinct_chains,
        chains: ranked
            .into_iter()
            .take(TOP_CHAINS)
            .map(|(frames, n)| CallChain {
                frames: frames.into_iter().map(str::to_string).collect(),
                samples: n,
                share: share(n),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodeRecord, ProfileRecord, WindowCounters};

    fn profiled(cohort: &str, samples: i64, folded: &[(&str, i64)]) -> RunRecord {
        let at = chrono::DateTime::UNIX_EPOCH;
        let mut run = RunRecord {
            id: uuid::Uuid::new_v4(),
            experiment_id: uuid::Uuid::nil(),
            cohort: cohort.to_string(),
            repetition: 1,
            attempt: 1,
            sequence: 0,
            node: NodeRecord {
                hostname: "h".into(),
                kernel_release: "k".into(),
                kernel_version: "v".into(),
                cpu_model: "c".into(),
                logical_cpus: 2,
                memory_bytes: 1,
                facts: serde_json::Value::Null,
            },
            outcome: RunOutcome::Succeeded,
            started_at: at,
            finished_at: at,
            target: serde_json::Value::Null,
            load: serde_json::Value::Null,
            window_seconds: 1.0,
            completed_connections: 1,
            failed_connections: 0,
            warmup_connections: 0,
            connections_per_second: 1.0,
            errors: Default::default(),
            connect_histogram: Vec::new(),
            first_byte_histogram: Vec::new(),
            total_histogram: Vec::new(),
            completed_per_second: Vec::new(),
            counters: WindowCounters::default(),
            locks: Vec::new(),
            lock_contention_unavailable: None,
            lock_source: None,
            cpu_profile: None,
            cpu_profile_unavailable: None,
            generator_skew_us: None,
        };
        run.cpu_profile = Some(ProfileRecord {
            frequency_hz: 99,
            samples,
            idle_samples: 0,
            folded: folded.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            top_symbols: Vec::new(),
        });
        run
    }

    #[test]
    fn chains_lead_from_the_symbol_to_the_process_with_shares_of_all_samples() {
        let runs = [
            profiled(
                "unpatched",
                100,
                &[
                    (
                        "nginx;__x64_sys_close;eventpoll_release_file;mutex_lock;osq_lock",
                        50,
                    ),
                    (
                        "nginx;do_exit;eventpoll_release_file;mutex_lock;osq_lock",
                        10,
                    ),
                    ("nginx;__x64_sys_close;eventpoll_release_file", 5),
                    ("nginx;epoll_wait", 35),
                ],
            ),
            profiled("patched", 100, &[("nginx;epoll_wait", 100)]),
        ];
        let chains = cohort_call_chains(&runs, "unpatched", "osq_lock");
        assert_eq!(chains.samples, 100);
        assert!((chains.children_share - 0.6).abs() < 1e-9);
        assert!((chains.self_share - 0.6).abs() < 1e-9);
        assert_eq!(chains.chains.len(), 2);
        assert_eq!(
            chains.chains[0].frames,
            [
                "osq_lock",
                "mutex_lock",
                "eventpoll_release_file",
                "__x64_sys_close",
                "nginx"
            ]
        );
        assert_eq!(chains.chains[0].samples, 50);
        let release = cohort_call_chains(&runs, "unpatched", "eventpoll_release_file");
        assert!((release.children_share - 0.65).abs() < 1e-9);
        assert!((release.self_share - 0.05).abs() < 1e-9);
        assert_eq!(release.chains[0].frames[1], "__x64_sys_close");
        assert_eq!(release.chains[0].samples, 55);
        let patched = cohort_call_chains(&runs, "patched", "osq_lock");
        assert_eq!((patched.children_share, patched.chains.len()), (0.0, 0));
    }
}
