//! What the kernel lets this process trace, read before a capture starts: the effective
//! capabilities and `kernel.perf_event_paranoid`. Being uid 0 is not enough in a container that
//! drops capabilities, and on Debian and Ubuntu kernels (`CONFIG_SECURITY_PERF_EVENTS_RESTRICT`)
//! a paranoid level of 3 or more refuses every perf event, tracepoints and sampling alike, to a
//! process without CAP_SYS_ADMIN, whatever CAP_PERFMON says. Upstream kernels treat those levels
//! as 2, so at 3 and above a capture is still tried, and its failure is explained.

use std::path::Path;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The chart value that gives the agent CAP_SYS_ADMIN, named in advice.
const CHART_VALUE: &str = "agent.perfEvents=sysAdmin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TracingAccess {
    /// `kernel.perf_event_paranoid`, when readable.
    pub perf_event_paranoid: Option<i32>,
    /// The effective capability set (`CapEff` in `/proc/self/status`); `None` when unreadable.
    effective: Option<u64>,
}

impl TracingAccess {
    /// This process's, from procfs at `proc`.
    pub fn read(proc: &Path) -> Self {
        let paranoid = std::fs::read_to_string(proc.join("sys/kernel/perf_event_paranoid")).ok();
        let status = std::fs::read_to_string(proc.join("self/status")).ok();
        Self::from_texts(paranoid.as_deref(), status.as_deref())
    }

    pub(crate) fn from_texts(paranoid: Option<&str>, status: Option<&str>) -> Self {
        let effective = status.and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        });
        Self {
            perf_event_paranoid: paranoid.and_then(|p| p.trim().parse().ok()),
            effective,
        }
    }

    fn has(&self, capability: u32) -> bool {
        // Unreadable capabilities: let the kernel decide, and explain its answer.
        self.effective
            .is_none_or(|set| set & (1 << capability) != 0)
    }

    fn paranoid_text(&self) -> String {
        self.perf_event_paranoid
            .map_or_else(|| "unknown".to_string(), |level| level.to_string())
    }

    /// Why system-wide perf events (`perf record -a`, the lock tracepoints) are certainly
    /// refused, and what to change; `None` when the kernel may allow them.
    pub(crate) fn perf_refusal(&self) -> Option<String> {
        if self.has(CAP_SYS_ADMIN) || self.has(CAP_PERFMON) {
            return None;
        }
        if self.perf_event_paranoid.is_some_and(|level| level < 0) {
            return None;
        }
        Some(format!(
            "system-wide perf events need CAP_PERFMON or CAP_SYS_ADMIN while \
             kernel.perf_event_paranoid is {} (above -1), and this process has neither: run the \
             agent as root with its capabilities (the chart's agent pods add PERFMON)",
            self.paranoid_text()
        ))
    }

    /// Why loading a BPF program (the lock probe) is certainly refused; `None` when it may work.
    pub(crate) fn bpf_refusal(&self) -> Option<String> {
        if !self.has(CAP_SYS_ADMIN) && !self.has(CAP_BPF) {
            return Some(
                "loading BPF programs needs CAP_BPF (or CAP_SYS_ADMIN), and this process has \
                 neither: run the agent as root with its capabilities (the chart's agent pods add \
                 BPF and PERFMON)"
                    .into(),
            );
        }
        self.perf_refusal()
    }

    /// What may explain a refused perf event on this node: the Debian and Ubuntu restriction,
    /// when it can apply.
    pub(crate) fn perf_advice(&self) -> Option<String> {
        if self.has(CAP_SYS_ADMIN) || self.perf_event_paranoid.is_none_or(|level| level < 3) {
            return None;
        }
        Some(format!(
            "kernel.perf_event_paranoid is {}: Debian's and Ubuntu's kernels then refuse every \
             perf event to a process without CAP_SYS_ADMIN, whatever CAP_PERFMON allows; set \
             `sysctl kernel.perf_event_paranoid=2` on the node, or give the agent CAP_SYS_ADMIN \
             ({CHART_VALUE})",
            self.paranoid_text()
        ))
    }

    /// `error` with the advice that may explain it, when there is some.
    pub fn explain(&self, error: String) -> String {
        match self.perf_advice() {
            Some(advice) => format!("{error} ({advice})"),
            None => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(paranoid: &str, capabilities: &[u32]) -> TracingAccess {
        let set: u64 = capabilities.iter().map(|c| 1u64 << c).sum();
        TracingAccess::from_texts(
            Some(paranoid),
            Some(&format!(
                "Name:\tloadlab\nCapInh:\t0\nCapEff:\t{set:016x}\n"
            )),
        )
    }

    #[test]
    fn capabilities_and_paranoia_decide_what_is_refused_and_what_is_explained() {
        // (paranoid, capabilities, perf refused, bpf refused, advice given)
        let table: [(&str, &[u32], bool, bool, bool); 9] = [
            ("2", &[CAP_BPF, CAP_PERFMON], false, false, false),
            ("2", &[CAP_SYS_ADMIN], false, false, false),
            ("2", &[], true, true, false),
            ("2", &[CAP_PERFMON], false, true, false),
            ("-1", &[], false, true, false),
            ("3", &[CAP_BPF, CAP_PERFMON], false, false, true),
            ("4", &[CAP_BPF, CAP_PERFMON], false, false, true),
            ("3", &[CAP_SYS_ADMIN], false, false, false),
            ("3", &[], true, true, true),
        ];
        for (paranoid, capabilities, perf, bpf, advice) in table {
            let access = access(paranoid, capabilities);
            let case = format!("paranoid {paranoid}, capabilities {capabilities:?}");
            assert_eq!(access.perf_refusal().is_some(), perf, "perf: {case}");
            assert_eq!(access.bpf_refusal().is_some(), bpf, "bpf: {case}");
            assert_eq!(access.perf_advice().is_some(), advice, "advice: {case}");
        }
        let debian = access("3", &[CAP_BPF, CAP_PERFMON]);
        assert!(
            debian
                .explain("perf_event_open: Permission denied".into())
                .contains("sysctl kernel.perf_event_paranoid=2")
        );
        assert!(
            access("2", &[])
                .perf_refusal()
                .unwrap()
                .contains("kernel.perf_event_paranoid is 2")
        );
    }

    #[test]
    fn unreadable_facts_leave_the_decision_to_the_kernel() {
        let unknown = TracingAccess::from_texts(None, None);
        assert_eq!(unknown.perf_refusal(), None);
        assert_eq!(unknown.bpf_refusal(), None);
        assert_eq!(unknown.perf_advice(), None);
    }

    #[test]
    fn this_process_is_read() {
        let here = TracingAccess::read(Path::new("/proc"));
        assert!(here.effective.is_some());
        assert!(here.perf_event_paranoid.is_some());
    }
}
