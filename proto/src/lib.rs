//! The loadlab gRPC contract (`loadlab.v1`): generated types and services, plus the few
//! conversions every side needs.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("loadlab.v1");
}

pub mod auth;
pub mod histogram;
pub mod symbols;

use std::time::Duration;

/// Where an agent and a generator listen unless told otherwise: the same ports on hosts, in
/// pods and in virtual machines.
pub const AGENT_PORT: u16 = 7700;
pub const LOADGEN_PORT: u16 = 7701;

/// The largest message a client of the run protocol takes (tonic's default is 4 MiB). The
/// largest real one is a capture reply: its CPU profile's folded stacks are capped at 8 MiB by
/// the agent, and its lock stacks and counters take far less.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

impl v1::StormSpec {
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }
}

/// Converts a duration to whole milliseconds, saturating instead of wrapping.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Whether a kernel carries the epoll refcount patch ("epoll: use refcount to reduce ep_mutex
/// contention"), judged from its symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpollPatch {
    /// `ep_clear_and_put` exists only in kernels with the patch.
    Present,
    /// `/proc/kallsyms` is trustworthy and has no `ep_clear_and_put`.
    Absent,
    /// The symbols could not be read.
    Unknown,
}

impl EpollPatch {
    pub fn as_str(self) -> &'static str {
        match self {
            EpollPatch::Present => "present",
            EpollPatch::Absent => "absent",
            EpollPatch::Unknown => "unknown",
        }
    }

    /// The evidence behind the verdict, for people.
    pub fn evidence(self) -> &'static str {
        match self {
            EpollPatch::Present => "ep_clear_and_put is in /proc/kallsyms",
            EpollPatch::Absent => "ep_clear_and_put is not in /proc/kallsyms",
            EpollPatch::Unknown => "/proc/kallsyms unreadable or addresses hidden",
        }
    }
}

impl v1::KernelSymbol {
    /// "present", "absent" or "unknown", as reports and stored facts say it.
    pub fn presence_word(&self) -> &'static str {
        match v1::SymbolPresence::try_from(self.presence) {
            Ok(v1::SymbolPresence::Present) => "present",
            Ok(v1::SymbolPresence::Absent) => "absent",
            _ => "unknown",
        }
    }
}

impl v1::NodeFacts {
    /// The epoll refcount patch verdict. `epmutex` is not evidence either way: the name
    /// survives in some patched kernels as the nested-loop lock.
    pub fn epoll_refcount_patch(&self) -> EpollPatch {
        let presence = self
            .kernel_symbols
            .iter()
            .find(|s| s.name == "ep_clear_and_put")
            .and_then(|s| v1::SymbolPresence::try_from(s.presence).ok());
        match presence {
            Some(v1::SymbolPresence::Present) => EpollPatch::Present,
            Some(v1::SymbolPresence::Absent) => EpollPatch::Absent,
            _ => EpollPatch::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(presence: v1::SymbolPresence) -> v1::NodeFacts {
        v1::NodeFacts {
            kernel_symbols: vec![
                v1::KernelSymbol {
                    name: "epmutex".into(),
                    presence: v1::SymbolPresence::Present as i32,
                },
                v1::KernelSymbol {
                    name: "ep_clear_and_put".into(),
                    presence: presence as i32,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn the_patch_is_judged_by_ep_clear_and_put_only() {
        assert_eq!(
            facts(v1::SymbolPresence::Present).epoll_refcount_patch(),
            EpollPatch::Present
        );
        assert_eq!(
            facts(v1::SymbolPresence::Absent).epoll_refcount_patch(),
            EpollPatch::Absent
        );
        assert_eq!(
            facts(v1::SymbolPresence::Unknown).epoll_refcount_patch(),
            EpollPatch::Unknown
        );
        assert_eq!(
            v1::NodeFacts::default().epoll_refcount_patch(),
            EpollPatch::Unknown
        );
    }
}
