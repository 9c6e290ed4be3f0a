//! Kernel lock contention over a window, from the `lock:contention_begin/end` tracepoints,
//! aggregated in the kernel by loadlab's BPF program (`lockprobe.rs`: maps keyed by lock
//! address, lock flags and kernel call path) and read once at the end of the window; here the
//! numbers get names.
//!
//! The wait starts after the stack walk in `contention_begin`, so the walk is not counted as
//! waiting. Locks are named by their kernel symbol when `/proc/kallsyms` resolves the address
//! (static locks such as `epmutex`, on kernels with `CONFIG_KALLSYMS_ALL`), otherwise by lock
//! type and the first caller outside the locking code.

use std::collections::BTreeMap;
use std::path::Path;

use crate::kallsyms::KernelSymbols;
use crate::lockprobe::{
    LockSource, ProbeCapture, ProbeOptions, RawContention, RawReport, SlowPaths, SourceChoice,
};
use crate::privilege::TracingAccess;

/// Frames of the locking code itself, skipped to find who wanted the lock.
const LOCKING_FRAMES: [&str; 14] = [
    "__pv_queued_spin_lock_slowpath",
    "native_queued_spin_lock_slowpath",
    "queued_spin_lock_slowpath",
    "_raw_spin_lock",
    "_raw_read_lock",
    "_raw_write_lock",
    "__mutex_lock",
    "mutex_lock",
    "osq_lock",
    "rwsem_down",
    "down_read",
    "down_write",
    "percpu_down",
    "rt_mutex",
];

/// Functions whose presence in a call path puts a contention in the epoll view.
const EPOLL_FRAMES: [&str; 9] = [
    "eventpoll_release_file",
    "ep_free",
    "ep_remove",
    "ep_insert",
    "ep_poll_callback",
    "ep_poll",
    "ep_clear_and_put",
    "do_epoll_ctl",
    "do_epoll_wait",
];

/// Frames of a call path shown as the caller.
const CALLER_FRAMES: usize = 3;
/// Frames kept per call path once the tracing machinery's are dropped.
const STACK_DEPTH: usize = 6;
/// Frames of the tracing machinery on top of every walk from a tracepoint: not the kernel's
/// call path. Above them sits the BPF program itself, whose address kallsyms may not list.
const TRACING_FRAMES: [&str; 4] = [
    "bpf_trace_run",
    "__bpf_trace_",
    "__traceiter_",
    "bpf_get_stack",
];
/// How deep the tracing machinery's frames are looked for.
const TRACING_DEPTH: usize = 6;

/// epoll system calls of the target's processes over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpollCalls {
    pub ctl_add: u64,
    pub ctl_del: u64,
    pub ctl_mod: u64,
    /// epoll_wait and epoll_pwait.
    pub wait: u64,
    /// Acquisitions of the global `epmutex` by any task, when the kernel has one: every close
    /// of an epoll-watched file takes it on kernels without the epoll refcount patch.
    pub epmutex_acquisitions: Option<u64>,
}

/// What a lock capture returns.
#[derive(Debug, Clone, PartialEq)]
pub struct LockReport {
    /// Where the contention was seen.
    pub source: LockSource,
    pub contentions: Vec<Contention>,
    /// `None` where the kernel does not let them be counted cheaply
    /// ([`EPOLL_CALLS_UNCOUNTED`]).
    pub epoll_calls: Option<EpollCalls>,
}

/// What the lock program traces on this kernel, given its symbols: the source asked for (the
/// slow paths it has, for when the tracepoints are not used), and what it counts besides
/// contention. Both counts need kprobes; syscall tracepoints could count the epoll calls on
/// any kernel, but enabling one puts every system call of every task on the slow path, which
/// cost a connection storm about 5% of its rate on top of the lock tracing (README, "Cost of
/// collecting evidence"), more than the whole capture may cost.
pub(crate) fn probe_options(symbols: &KernelSymbols, source: SourceChoice) -> ProbeOptions {
    let kprobes = kprobes_available();
    ProbeOptions {
        source,
        kprobes,
        slow_paths: if kprobes {
            SlowPaths::present(|name| symbols.has_function(name))
        } else {
            SlowPaths::default()
        },
        epoll_calls: kprobes && symbols.has_epoll_functions(),
        epmutex: symbols.address_of("epmutex").filter(|_| kprobes),
    }
}

/// Why epoll calls are not counted where they cannot be probed.
pub const EPOLL_CALLS_UNCOUNTED: &str = "epoll calls not counted: needs kprobes on do_epoll_ctl and do_epoll_wait, which this kernel does not offer (syscall tracepoints would slow every system call)";

/// Whether the kernel offers kprobes: through the kprobe PMU, or tracefs's `kprobe_events`.
fn kprobes_available() -> bool {
    [
        "/sys/bus/event_source/devices/kprobe",
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ]
    .iter()
    .any(|path| Path::new(path).exists())
}

/// Contention on one lock from one call path over the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contention {
    /// The lock's kernel symbol, or its type and first caller outside the locking code.
    pub lock: String,
    pub lock_type: String,
    /// The first frames outside the locking code, innermost first, joined by ` ← `.
    pub caller: String,
    /// Kernel call path, innermost first, frames joined by `;`.
    pub stack: String,
    pub count: u64,
    pub wait_ns: u64,
    pub max_wait_ns: u64,
    /// The call path runs through eventpoll code.
    pub epoll: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LockstatError {
    #[error("lock contention unavailable: {0}")]
    NotPrivileged(String),
    #[error("lock contention unavailable: {0}")]
    Failed(String),
}

/// A running lock-contention capture.
#[derive(Debug)]
pub(crate) struct LockCapture {
    probe: ProbeCapture,
    epoll_calls: bool,
    access: TracingAccess,
}

impl LockCapture {
    /// Loads and attaches the program and returns once it is attached, so the window starts
    /// traced. What the kernel certainly refuses is said before trying; a refusal it may make
    /// (Debian's perf restriction) is explained with the failure.
    pub async fn start(options: ProbeOptions) -> Result<Self, LockstatError> {
        let access = TracingAccess::read(Path::new("/proc"));
        if let Some(why) = access.bpf_refusal() {
            return Err(LockstatError::NotPrivileged(why));
        }
        let epoll_calls = options.epoll_calls;
        let probe = crate::lockprobe::attach(options)
            .await
            .map_err(|why| LockstatError::Failed(access.explain(why)))?;
        Ok(Self {
            probe,
            epoll_calls,
            access,
        })
    }

    /// Ends the window: the program is detached, its counts kept.
    pub fn end_window(&mut self) -> Result<(), LockstatError> {
        self.probe.end_window();
        Ok(())
    }

    /// Ends the window if still open, and reads the contention.
    pub async fn stop(self, symbols: &KernelSymbols) -> Result<LockReport, LockstatError> {
        let raw = self
            .probe
            .stop()
            .await
            .map_err(|why| LockstatError::Failed(self.access.explain(why)))?;
        for note in &raw.notes {
            tracing::warn!(%note, "lock probe");
        }
        if raw.dropped > 0 {
            tracing::warn!(
                dropped = raw.dropped,
                "lock contentions not counted: the probe's maps were full"
            );
        }
        Ok(report(&raw, self.epoll_calls, symbols))
    }
}

/// Names what the program counted; epoll calls only when they were asked for.
pub fn report(raw: &RawReport, epoll_calls: bool, symbols: &KernelSymbols) -> LockReport {
    let contentions: Vec<Contention> = raw
        .contentions
        .iter()
        .map(|c| contention(c, symbols))
        .collect();
    let epoll_calls =
        raw.epoll_calls
            .filter(|_| epoll_calls)
            .map(|[ctl_add, ctl_del, ctl_mod, wait]| EpollCalls {
                ctl_add,
                ctl_del,
                ctl_mod,
                wait,
                epmutex_acquisitions: raw.epmutex_acquisitions,
            });
    LockReport {
        source: raw.source,
        contentions: merge_by_lock_and_path(&contentions),
        epoll_calls,
    }
}

/// Lock type from the tracepoint's flags (LCB_F_SPIN, READ, WRITE, RT, PERCPU, MUTEX).
pub fn lock_type(flags: u32) -> &'static str {
    let (spin, read, write, rt, percpu, mutex) = (
        flags & 1 != 0,
        flags & 2 != 0,
        flags & 4 != 0,
        flags & 8 != 0,
        flags & 16 != 0,
        flags & 32 != 0,
    );
    match () {
        _ if rt => "rtmutex",
        _ if mutex => "mutex",
        _ if percpu => "percpu-rwsem",
        _ if spin && (read || write) => "rwlock",
        _ if spin => "spinlock",
        _ if read || write => "rwsem",
        _ => "lock",
    }
}

/// One lock, flags and call path, named: the call path by function, the tracing machinery's
/// frames dropped; the lock by its symbol, or by its type and the first caller outside the
/// locking code.
fn contention(raw: &RawContention, symbols: &KernelSymbols) -> Contention {
    let named: Vec<&str> = raw
        .frames
        .iter()
        .map(|&address| symbols.function_at(address).unwrap_or("[unknown]"))
        .collect();
    let kernel_path = named
        .iter()
        .take(TRACING_DEPTH)
        .rposition(|f| TRACING_FRAMES.iter().any(|t| f.starts_with(t)))
        .map_or(0, |last| last + 1);
    let frames: Vec<&str> = named
        .into_iter()
        .skip(kernel_path)
        .take(STACK_DEPTH)
        .collect();
    let outside: Vec<&str> = frames
        .iter()
        .skip_while(|f| LOCKING_FRAMES.iter().any(|l| f.starts_with(l)))
        .take(CALLER_FRAMES)
        .copied()
        .collect();
    let locker = outside.first().copied().unwrap_or("unknown");
    let lock_type = lock_type(raw.flags);
    let lock = symbols
        .resolve(raw.lock)
        .unwrap_or_else(|| format!("{lock_type} in {locker}"));
    Contention {
        lock,
        lock_type: lock_type.to_string(),
        caller: if outside.is_empty() {
            locker.to_string()
        } else {
            outside.join(" ← ")
        },
        stack: frames.join(";"),
        count: raw.count,
        wait_ns: raw.wait_ns,
        max_wait_ns: raw.max_wait_ns,
        epoll: frames.iter().any(|f| EPOLL_FRAMES.contains(f)),
    }
}

/// Instances of the same lock (per-bucket or per-socket locks) from the same path add up.
fn merge_by_lock_and_path(contentions: &[Contention]) -> Vec<Contention> {
    let mut merged: BTreeMap<(String, String), Contention> = BTreeMap::new();
    for c in contentions.iter() {
        merged
            .entry((c.lock.clone(), c.stack.clone()))
            .and_modify(|m| {
                m.count += c.count;
                m.wait_ns += c.wait_ns;
                m.max_wait_ns = m.max_wait_ns.max(c.max_wait_ns);
            })
            .or_insert_with(|| c.clone());
    }
    let mut merged: Vec<Contention> = merged.into_values().collect();
    merged.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then_with(|| a.lock.cmp(&b.lock)));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000000 T _text
ffffffff81100000 T bpf_trace_run2
ffffffff81100400 t __bpf_trace_contention_begin
ffffffff81100800 T __traceiter_contention_begin
ffffffff81200000 t osq_lock
ffffffff81200400 t __mutex_lock.constprop.0
ffffffff81200800 T __pv_queued_spin_lock_slowpath
ffffffff81200c00 T _raw_spin_lock_bh
ffffffff81300000 T eventpoll_release_file
ffffffff81300400 T __fput
ffffffff81300800 T __inet_hash_connect
ffffffff81300c00 T tcp_v4_connect
ffffffff81752fd0 t do_epoll_wait
ffffffff817539d0 T do_epoll_ctl
ffffffff82a01000 d epmutex
ffffffff82a02000 B big_table
";

    /// A report from the tracepoints holding these contentions and nothing else.
    fn found(contentions: Vec<RawContention>) -> RawReport {
        RawReport {
            source: LockSource::Tracepoints,
            contentions,
            epmutex_acquisitions: None,
            epoll_calls: None,
            dropped: 0,
            notes: Vec::new(),
        }
    }

    fn raw(lock: u64, flags: u32, frames: &[u64], counts: (u64, u64, u64)) -> RawContention {
        RawContention {
            lock,
            flags,
            frames: frames.to_vec(),
            count: counts.0,
            wait_ns: counts.1,
            max_wait_ns: counts.2,
        }
    }

    #[test]
    fn counts_become_contentions_named_by_symbol_or_caller() {
        let symbols = KernelSymbols::parse(KALLSYMS);
        // Every walk starts in the BPF program (an address kallsyms may resolve to whatever
        // symbol lies below it) and the tracing machinery: not the kernel's call path.
        let machinery = [
            0xffffffffc0a01234,
            0xffffffff81100010,
            0xffffffff81100410,
            0xffffffff81100810,
        ];
        let epmutex_path: Vec<u64> = machinery
            .iter()
            .chain(&[
                0xffffffff81200050,
                0xffffffff81200590,
                0xffffffff8130003c,
                0xffffffff813005f4,
            ])
            .copied()
            .collect();
        let bucket_path: Vec<u64> = machinery
            .iter()
            .chain(&[
                0xffffffff8120090e,
                0xffffffff81200c3f,
                0xffffffff81300a54,
                0xffffffff81300e7a,
            ])
            .copied()
            .collect();
        let found = RawReport {
            epmutex_acquisitions: Some(977),
            epoll_calls: Some([1000, 0, 7, 2500]),
            ..found(vec![
                raw(0xffff8881016634e0, 1, &bucket_path, (3, 300, 150)),
                raw(0xffff888101660000, 1, &bucket_path, (2, 200, 180)),
                raw(0xffffffff82a01000, 32, &epmutex_path, (7, 7000, 2000)),
            ])
        };
        let report = report(&found, true, &symbols);
        assert_eq!(report.source, LockSource::Tracepoints);
        let contentions = &report.contentions;
        assert_eq!(contentions.len(), 2, "{contentions:#?}");
        let epmutex = &contentions[0];
        assert_eq!(epmutex.lock, "epmutex");
        assert_eq!(epmutex.lock_type, "mutex");
        assert_eq!(epmutex.caller, "eventpoll_release_file ← __fput");
        assert_eq!(
            (epmutex.count, epmutex.wait_ns, epmutex.max_wait_ns),
            (7, 7000, 2000)
        );
        assert!(epmutex.epoll);
        assert_eq!(
            epmutex.stack,
            "osq_lock;__mutex_lock.constprop.0;eventpoll_release_file;__fput"
        );
        // Two bucket locks on the same path merge into one row.
        let buckets = &contentions[1];
        assert_eq!(buckets.lock, "spinlock in __inet_hash_connect");
        assert_eq!(buckets.caller, "__inet_hash_connect ← tcp_v4_connect");
        assert_eq!(
            (buckets.count, buckets.wait_ns, buckets.max_wait_ns),
            (5, 500, 180)
        );
        assert!(!buckets.epoll);
        assert_eq!(
            report.epoll_calls,
            Some(EpollCalls {
                ctl_add: 1000,
                ctl_del: 0,
                ctl_mod: 7,
                wait: 2500,
                epmutex_acquisitions: Some(977),
            })
        );
    }

    #[test]
    fn a_slow_path_walk_starts_at_the_slow_path_and_names_the_same_caller() {
        let symbols = KernelSymbols::parse(
            "ffffffff81200000 T __mutex_lock_slowpath\nffffffff81300000 T eventpoll_release_file\nffffffff81300400 T __fput\nffffffff82a01000 d epmutex\n",
        );
        // A kprobe's walk has no tracing machinery on top: it starts at the probed function.
        let found = RawReport {
            source: LockSource::SlowPaths,
            ..found(vec![raw(
                0xffffffff82a01000,
                32,
                &[0xffffffff81200000, 0xffffffff8130003c, 0xffffffff813005f4],
                (3, 900, 400),
            )])
        };
        let report = report(&found, false, &symbols);
        assert_eq!(report.source, LockSource::SlowPaths);
        let epmutex = &report.contentions[0];
        assert_eq!(epmutex.lock, "epmutex");
        assert_eq!(epmutex.caller, "eventpoll_release_file ← __fput");
        assert!(epmutex.epoll);
    }

    #[test]
    fn a_failed_walk_or_unknown_frames_still_give_a_row() {
        let symbols = KernelSymbols::parse(KALLSYMS);
        let found = found(vec![
            raw(0xffff888100000000, 1, &[], (4, 40, 20)),
            raw(0xffff888100000100, 32, &[0x10], (1, 10, 10)),
        ]);
        let report = report(&found, false, &symbols);
        let rows: Vec<(&str, &str)> = report
            .contentions
            .iter()
            .map(|c| (c.lock.as_str(), c.stack.as_str()))
            .collect();
        assert_eq!(
            rows,
            vec![
                ("spinlock in unknown", ""),
                ("mutex in [unknown]", "[unknown]")
            ]
        );
        assert_eq!(report.epoll_calls, None);
    }

    #[test]
    fn epoll_calls_are_counted_only_where_kprobes_reach_both_functions() {
        let both = "ffffffff81752fd0 t do_epoll_wait\nffffffff817539d0 T do_epoll_ctl\n";
        assert!(KernelSymbols::parse(both).has_epoll_functions());
        // do_epoll_wait inlined into its callers: nothing to probe it by.
        assert!(!KernelSymbols::parse("ffffffff817539d0 T do_epoll_ctl\n").has_epoll_functions());
        // Counted, but not asked for: not reported.
        let found = RawReport {
            epoll_calls: Some([1, 2, 3, 4]),
            ..found(Vec::new())
        };
        let symbols = KernelSymbols::default();
        assert_eq!(report(&found, false, &symbols).epoll_calls, None);
    }

    #[test]
    fn lock_types_follow_the_tracepoint_flags() {
        assert_eq!(lock_type(1), "spinlock");
        assert_eq!(lock_type(1 | 2), "rwlock");
        assert_eq!(lock_type(32), "mutex");
        assert_eq!(lock_type(2), "rwsem");
        assert_eq!(lock_type(16 | 2), "percpu-rwsem");
        assert_eq!(lock_type(8), "rtmutex");
    }

    #[test]
    fn addresses_resolve_inside_static_structures_only() {
        let symbols = KernelSymbols::parse(KALLSYMS);
        assert_eq!(
            symbols.resolve(0xffffffff82a01000).as_deref(),
            Some("epmutex")
        );
        assert_eq!(
            symbols.resolve(0xffffffff82a02010).as_deref(),
            Some("big_table+0x10")
        );
        assert_eq!(symbols.resolve(0xffffffff82a03000), None);
        assert_eq!(symbols.resolve(0x1000), None);
        assert_eq!(
            symbols.function_at(0xffffffff81300a54),
            Some("__inet_hash_connect")
        );
        assert_eq!(symbols.function_at(0x10), None);
        assert_eq!(symbols.address_of("epmutex"), Some(0xffffffff82a01000));
    }

    #[test]
    fn unreadable_symbols_are_none_not_a_panic() {
        let symbols =
            KernelSymbols::parse("garbage\nffffffffzz T bad\n0000000000000000 T hidden\n");
        assert_eq!(symbols.function_at(0xffffffff81000000), None);
        assert_eq!(symbols.address_of("hidden"), None);
    }
}
