//! What each run collects besides counters: lock contention and where it is seen, a CPU profile.

use super::*;

/// What the agent collects over each measured window besides counters (always collected).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CollectSpec {
    /// Kernel lock contention by lock and call path (needs root, or CAP_BPF and CAP_PERFMON, on the node).
    #[serde(default)]
    pub lock_contention: bool,
    /// Where lock contention is seen: `auto` (the lock tracepoints on Linux 5.19 and later,
    /// else kprobes on the mutex, rwsem and spinlock slow paths), `tracepoints` or `slowPaths`.
    /// Each run names the source it used.
    #[serde(default, skip_serializing_if = "LockSourceSpec::is_auto")]
    pub lock_source: LockSourceSpec,
    /// Sampled call stacks on every CPU (needs root and perf on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_profile: Option<CpuProfileSpec>,
    /// Kernel symbols whose presence each node reports in its facts, besides the epoll ones
    /// (`ep_clear_and_put`, `epmutex`, `epnested_mutex`). A data symbol can only be shown absent
    /// on kernels that list data in `/proc/kallsyms` (`CONFIG_KALLSYMS_ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = loadlab_proto::symbols::MAX_EXTRA_SYMBOLS),
        inner(regex(pattern = r"^[A-Za-z0-9_.$]{1,128}$"))
    )]
    pub kernel_symbols: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CpuProfileSpec {
    /// Samples per second per CPU; 499 avoids lockstep with 100 Hz and 1000 Hz timers.
    #[serde(default = "default_profile_hz")]
    #[schemars(range(min = 1, max = MAX_PROFILE_HZ))]
    pub frequency_hz: u32,
    /// `system`: every CPU, whatever runs there (idle included); `target`: only the nginx
    /// target's processes.
    #[serde(default)]
    pub scope: ProfileScope,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LockSourceSpec {
    #[default]
    Auto,
    Tracepoints,
    SlowPaths,
}

impl LockSourceSpec {
    fn is_auto(&self) -> bool {
        *self == Self::Auto
    }

    /// The name the agent's protocol gives it.
    pub(crate) fn wire_name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Tracepoints => "tracepoints",
            Self::SlowPaths => "slow-paths",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProfileScope {
    #[default]
    System,
    Target,
}

fn default_profile_hz() -> u32 {
    499
}

impl CollectSpec {
    pub(super) fn validate(&self) -> Result<(), SpecError> {
        if let Some(profile) = self.cpu_profile
            && !(1..=MAX_PROFILE_HZ).contains(&profile.frequency_hz)
        {
            return Err(SpecError::at(
                "spec.collect.cpuProfile.frequencyHz",
                format!(
                    "must be between 1 and {MAX_PROFILE_HZ}, got {}",
                    profile.frequency_hz
                ),
            ));
        }
        loadlab_proto::symbols::check_symbol_names(&self.kernel_symbols).map_err(|bad| {
            let field = match bad.index {
                Some(i) => format!("spec.collect.kernelSymbols[{i}]"),
                None => "spec.collect.kernelSymbols".to_string(),
            };
            SpecError::at(field, bad.message)
        })?;
        Ok(())
    }
}
