//! Kernel lock contention over a window, from the `lock:contention_begin/end` tracepoints,
//! aggregated in the kernel by a bpftrace program (BPF maps keyed by lock address, lock flags
//! and kernel call path) and read once at the end of the window.
//!
//! The wait starts after the stack walk in `contention_begin`, so the walk is not counted as
//! waiting. Locks are named by their kernel symbol when `/proc/kallsyms` resolves the address
//! (static locks such as `epmutex`, on kernels with `CONFIG_KALLSYMS_ALL`), otherwise by lock
//! type and the first caller outside the locking code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

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
/// Stack depth kept per contention; deeper walks cost more per event.
const STACK_DEPTH: u32 = 6;
/// Open contentions kept per thread; deeper nesting is not traced.
const MAX_NESTING: u32 = 4;
const ATTACH_DEADLINE: Duration = Duration::from_secs(60);
/// How long bpftrace may take to print its maps once the window ends: under emulation,
/// symbolizing the call paths takes a minute and more.
const PRINT_DEADLINE: Duration = Duration::from_secs(300);
/// How long bpftrace may take to exit once its output has ended.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// The process name whose epoll system calls are counted: the target.
const TARGET_COMM: &str = "nginx";

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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LockReport {
    pub contentions: Vec<Contention>,
    /// `None` where the kernel does not let them be counted cheaply
    /// ([`EPOLL_CALLS_UNCOUNTED`]).
    pub epoll_calls: Option<EpollCalls>,
}

/// What the lock program counts besides contention. Both need kprobes; syscall tracepoints
/// could count the epoll calls on any kernel, but enabling one puts every system call of every
/// task on the slow path, which cost a connection storm about 5% of its rate on top of the lock
/// tracing (README, "Cost of collecting evidence"), more than the whole capture may cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunctionProbes {
    /// Count the target's `epoll_ctl` (by op) and `epoll_wait` calls, with kprobes on
    /// `do_epoll_ctl` and `do_epoll_wait`, which every epoll system call goes through.
    pub epoll_calls: bool,
    /// The address of the global `epmutex`, whose every `mutex_lock` is then counted.
    pub epmutex: Option<u64>,
}

impl FunctionProbes {
    /// What this kernel lets the program count cheaply, given its symbols.
    pub fn for_kernel(symbols: &DataSymbols) -> Self {
        if !kprobes_available() {
            return Self::default();
        }
        Self {
            epoll_calls: symbols.has_epoll_functions(),
            epmutex: symbols.address_of("epmutex"),
        }
    }
}

/// Why epoll calls are not counted where they cannot be probed.
pub const EPOLL_CALLS_UNCOUNTED: &str = "epoll calls not counted: needs kprobes on do_epoll_ctl and do_epoll_wait, which this kernel does not offer (syscall tracepoints would slow every system call)";

/// Whether bpftrace can attach kprobes: through the kprobe PMU, or tracefs's `kprobe_events`.
fn kprobes_available() -> bool {
    [
        "/sys/bus/event_source/devices/kprobe",
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ]
    .iter()
    .any(|path| Path::new(path).exists())
}

/// The bpftrace program.
///
/// Contentions nest: a mutex's slow path may contend on its own spinlock while the mutex
/// contention is open. Each thread keeps a small stack of open contentions, so the inner one
/// and the outer one are both counted, each with its own wait. A second `contention_begin` on
/// the lock already on top (a mutex that stops spinning and goes to sleep) continues that
/// contention, so its wait includes the spinning. Every map operation costs here (a
/// microsecond or two on a small machine), so each event reads each map once.
fn program(probes: FunctionProbes) -> String {
    let mut extra = String::new();
    if probes.epoll_calls {
        extra.push_str(&format!(
            "kprobe:do_epoll_ctl /comm == \"{TARGET_COMM}\"/ {{ @epoll_ctl[arg1] = count(); }}\n\
             kprobe:do_epoll_wait /comm == \"{TARGET_COMM}\"/ {{ @epoll_wait = count(); }}\n"
        ));
    }
    if let Some(address) = probes.epmutex {
        extra.push_str(&format!(
            "kprobe:mutex_lock /arg0 == {address:#x}/ {{ @epmutex_acquisitions = count(); }}\n"
        ));
    }
    format!(
        r#"tracepoint:lock:contention_begin {{
  $d = @depth[tid];
  if ($d > 0) {{ if (@open[tid, $d - 1].0 == (uint64)args->lock_addr) {{ return; }} }}
  if ($d >= {MAX_NESTING}) {{ return; }}
  @stack[tid, $d] = kstack({STACK_DEPTH});
  @open[tid, $d] = ((uint64)args->lock_addr, (uint64)args->flags, nsecs);
  @depth[tid] = $d + 1;
}}
tracepoint:lock:contention_end {{
  $n = @depth[tid];
  if ($n == 0) {{ return; }}
  $d = $n - 1;
  $o = @open[tid, $d];
  if ($o.0 != (uint64)args->lock_addr) {{ return; }}
  $s = @stack[tid, $d];
  $wait = nsecs - $o.2;
  @count[$o.0, $o.1, $s] = count();
  @wait_ns[$o.0, $o.1, $s] = sum($wait);
  @max_ns[$o.0, $o.1, $s] = max($wait);
  delete(@open[tid, $d]); delete(@stack[tid, $d]);
  if ($d == 0) {{ delete(@depth[tid]); }} else {{ @depth[tid] = $d; }}
}}
{extra}END {{ clear(@open); clear(@stack); clear(@depth); }}
"#
    )
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
    #[error("lock contention unavailable: bpftrace not found (apt-get install bpftrace)")]
    Missing,
    #[error("lock contention unavailable: {0}")]
    NotPrivileged(String),
    #[error("lock contention unavailable: {0}")]
    Failed(String),
}

/// Finds bpftrace: `$LOADLAB_BPFTRACE`, then `PATH`, then `/usr/bin` and `/usr/sbin`.
pub fn find_bpftrace() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LOADLAB_BPFTRACE") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("bpftrace"))
        .find(|p| p.is_file())
}

/// A running lock-contention capture.
#[derive(Debug)]
pub struct LockCapture {
    child: Child,
    stdout: BufReader<ChildStdout>,
    window_ended: bool,
    probes: FunctionProbes,
}

impl LockCapture {
    /// Starts tracing and returns once the probes are attached, so the window starts traced.
    /// What the kernel certainly refuses is said before bpftrace starts; a refusal it may make
    /// (Debian's perf restriction) is explained with the failure.
    pub async fn start(probes: FunctionProbes) -> Result<Self, LockstatError> {
        let bpftrace = find_bpftrace().ok_or(LockstatError::Missing)?;
        let access = TracingAccess::read(Path::new("/proc"));
        if let Some(why) = access.bpf_refusal() {
            return Err(LockstatError::NotPrivileged(why));
        }
        Self::start_bpftrace(&bpftrace, probes)
            .await
            .map_err(|error| match error {
                LockstatError::Failed(why) => LockstatError::Failed(access.explain(why)),
                other => other,
            })
    }

    async fn start_bpftrace(
        bpftrace: &Path,
        probes: FunctionProbes,
    ) -> Result<Self, LockstatError> {
        let mut child = Command::new(bpftrace)
            .args(["-f", "json", "-e"])
            .arg(program(probes))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LockstatError::Failed(format!("cannot run bpftrace: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LockstatError::Failed("no output".into()))?;
        let mut capture = Self {
            child,
            stdout: BufReader::new(stdout),
            window_ended: false,
            probes,
        };
        let attached = tokio::time::timeout(ATTACH_DEADLINE, capture.wait_attached()).await;
        match attached {
            Ok(Ok(())) => Ok(capture),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(LockstatError::Failed(format!(
                "bpftrace did not attach within {ATTACH_DEADLINE:?}"
            ))),
        }
    }

    async fn wait_attached(&mut self) -> Result<(), LockstatError> {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self
                .stdout
                .read_line(&mut line)
                .await
                .map_err(|e| LockstatError::Failed(e.to_string()))?;
            if read == 0 {
                let mut stderr = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr).await;
                }
                let reason: Vec<&str> = stderr
                    .lines()
                    .filter(|l| !l.contains("RLIMIT_MEMLOCK"))
                    .collect();
                return Err(LockstatError::Failed(format!(
                    "bpftrace exited: {}",
                    reason.join("; ")
                )));
            }
            if line.contains("\"attached_probes\"") {
                return Ok(());
            }
        }
    }

    /// Ends the window: on SIGINT bpftrace detaches, prints its maps and exits. A second
    /// SIGINT would cut the printing short, so it is sent once.
    pub fn end_window(&mut self) -> Result<(), LockstatError> {
        if !self.window_ended {
            self.window_ended = true;
            if let Some(pid) = self.child.id() {
                kill(Pid::from_raw(pid as i32), Signal::SIGINT)
                    .map_err(|e| LockstatError::Failed(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Ends the window if still open, and reads the contention.
    pub async fn stop(mut self, symbols: &DataSymbols) -> Result<LockReport, LockstatError> {
        self.end_window()?;
        let mut output = String::new();
        let read =
            tokio::time::timeout(PRINT_DEADLINE, self.stdout.read_to_string(&mut output)).await;
        if !matches!(read, Ok(Ok(_))) {
            let _ = self.child.start_kill();
        }
        // A tracer stuck detaching its probes (seen in emulated guests on a busy host) must
        // not hold the capture, and with it the run, for good.
        if tokio::time::timeout(EXIT_DEADLINE, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            tracing::warn!("bpftrace did not exit after printing its maps; killed");
        }
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(LockstatError::Failed(e.to_string())),
            Err(_) => {
                return Err(LockstatError::Failed(format!(
                    "bpftrace did not print its maps within {} s",
                    PRINT_DEADLINE.as_secs()
                )));
            }
        }
        let mut epoll_calls = parse_epoll_calls(&output)?;
        if self.probes.epmutex.is_some() {
            // bpftrace prints no map for a count that never happened.
            epoll_calls.epmutex_acquisitions.get_or_insert(0);
        }
        let epoll_calls = self.probes.epoll_calls.then_some(epoll_calls);
        Ok(LockReport {
            contentions: parse_maps(&output, symbols)?,
            epoll_calls,
        })
    }
}

/// Reads the `@epoll_ctl` (by op: 1 add, 2 del, 3 mod) and `@epoll_wait` maps.
pub fn parse_epoll_calls(output: &str) -> Result<EpollCalls, LockstatError> {
    let mut calls = EpollCalls::default();
    for line in output.lines().filter(|l| l.contains("\"type\": \"map\"")) {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| LockstatError::Failed(format!("unreadable bpftrace output: {e}")))?;
        if let Some(wait) = value["data"]["@epoll_wait"].as_u64() {
            calls.wait = wait;
        }
        if let Some(taken) = value["data"]["@epmutex_acquisitions"].as_u64() {
            calls.epmutex_acquisitions = Some(taken);
        }
        if let Some(ops) = value["data"]["@epoll_ctl"].as_object() {
            for (op, count) in ops {
                let count = count.as_u64().unwrap_or(0);
                match op.as_str() {
                    "1" => calls.ctl_add = count,
                    "2" => calls.ctl_del = count,
                    "3" => calls.ctl_mod = count,
                    _ => {}
                }
            }
        }
    }
    Ok(calls)
}

/// Kernel data symbols by address, to name static locks.
#[derive(Debug, Default)]
pub struct DataSymbols {
    data: Vec<(u64, String)>,
    /// Both functions every epoll system call goes through are there to probe (not inlined).
    epoll_functions: bool,
}

impl DataSymbols {
    /// Reads the data symbols of a `kallsyms` file; none when it cannot be read.
    pub fn read(kallsyms: &Path) -> Self {
        std::fs::read_to_string(kallsyms)
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    pub fn parse(kallsyms: &str) -> Self {
        let mut data = Vec::new();
        let (mut ctl, mut wait) = (false, false);
        for (address, kind, name) in crate::kallsyms::entries(kallsyms) {
            match (kind, name) {
                ("t" | "T", "do_epoll_ctl") => ctl = true,
                ("t" | "T", "do_epoll_wait") => wait = true,
                ("d" | "D" | "b" | "B", _) => {
                    if let Ok(address) = u64::from_str_radix(address, 16)
                        && address != 0
                    {
                        data.push((address, name.to_string()));
                    }
                }
                _ => {}
            }
        }
        data.sort();
        Self {
            data,
            epoll_functions: ctl && wait,
        }
    }

    pub fn has_epoll_functions(&self) -> bool {
        self.epoll_functions
    }

    /// The address of a data symbol, such as `epmutex`.
    pub fn address_of(&self, symbol: &str) -> Option<u64> {
        self.data
            .iter()
            .find(|(_, name)| name == symbol)
            .map(|(address, _)| *address)
    }

    /// The symbol a lock address lies in: exact, or within the first 256 bytes of a symbol
    /// (a lock embedded in a static structure).
    pub fn resolve(&self, address: u64) -> Option<String> {
        let index = self
            .data
            .partition_point(|(a, _)| *a <= address)
            .checked_sub(1)?;
        let (start, name) = &self.data[index];
        match address - start {
            0 => Some(name.clone()),
            offset if offset < 256 => Some(format!("{name}+{offset:#x}")),
            _ => None,
        }
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

fn strip_offset(frame: &str) -> &str {
    frame.split('+').next().unwrap_or(frame).trim()
}

/// Reads bpftrace's JSON map lines into contentions, largest total wait first.
/// A lock address as bpftrace prints it in a map key: a pointer in hex, or an integer in
/// decimal that kernel addresses make negative.
fn lock_address(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text
            .parse::<i64>()
            .map(|signed| signed as u64)
            .or_else(|_| text.parse::<u64>())
            .ok(),
    }
}

pub fn parse_maps(output: &str, symbols: &DataSymbols) -> Result<Vec<Contention>, LockstatError> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut waits: BTreeMap<String, u64> = BTreeMap::new();
    let mut maxima: BTreeMap<String, u64> = BTreeMap::new();
    for line in output.lines().filter(|l| l.contains("\"type\": \"map\"")) {
        let value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| LockstatError::Failed(format!("unreadable bpftrace output: {e}")))?;
        let Some(maps) = value["data"].as_object() else {
            continue;
        };
        for (name, entries) in maps {
            let target = match name.as_str() {
                "@count" => &mut counts,
                "@wait_ns" => &mut waits,
                "@max_ns" => &mut maxima,
                _ => continue,
            };
            for (key, value) in entries.as_object().into_iter().flatten() {
                target.insert(key.clone(), value.as_u64().unwrap_or(0));
            }
        }
    }
    let mut contentions: Vec<Contention> = counts
        .iter()
        .filter_map(|(key, &count)| {
            let mut parts = key.splitn(3, ',');
            let address = lock_address(parts.next()?)?;
            let flags: u32 = parts.next()?.trim().parse().ok()?;
            let frames: Vec<&str> = parts
                .next()
                .unwrap_or("")
                .lines()
                .map(strip_offset)
                .filter(|f| !f.is_empty())
                .collect();
            let outside: Vec<&str> = frames
                .iter()
                .skip_while(|f| LOCKING_FRAMES.iter().any(|l| f.starts_with(l)))
                .take(CALLER_FRAMES)
                .copied()
                .collect();
            let locker = outside.first().copied().unwrap_or("unknown");
            let lock_type = lock_type(flags);
            let lock = symbols
                .resolve(address)
                .unwrap_or_else(|| format!("{lock_type} in {locker}"));
            Some(Contention {
                lock,
                lock_type: lock_type.to_string(),
                caller: if outside.is_empty() {
                    locker.to_string()
                } else {
                    outside.join(" ← ")
                },
                stack: frames.join(";"),
                count,
                wait_ns: waits.get(key).copied().unwrap_or(0),
                max_wait_ns: maxima.get(key).copied().unwrap_or(0),
                epoll: frames.iter().any(|f| EPOLL_FRAMES.contains(f)),
            })
        })
        .collect();
    Ok(merge_by_lock_and_path(&mut contentions))
}

/// Instances of the same lock (per-bucket or per-socket locks) from the same path add up.
fn merge_by_lock_and_path(contentions: &mut [Contention]) -> Vec<Contention> {
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

    const OUTPUT: &str = r#"{"type": "attached_probes", "data": {"probes": 3}}
{"type": "map", "data": {"@count": {"0xffff8881016634e0,1,\n    __pv_queued_spin_lock_slowpath+270\n    _raw_spin_lock_bh+63\n    __inet_hash_connect+596\n    tcp_v4_connect+634\n": 3, "0xffff888101660000,1,\n    __pv_queued_spin_lock_slowpath+270\n    _raw_spin_lock_bh+63\n    __inet_hash_connect+596\n    tcp_v4_connect+634\n": 2, "0xffffffff82a01000,32,\n    osq_lock+80\n    __mutex_lock.constprop.0+400\n    eventpoll_release_file+60\n    __fput+500\n": 7}}}
{"type": "map", "data": {"@wait_ns": {"0xffff8881016634e0,1,\n    __pv_queued_spin_lock_slowpath+270\n    _raw_spin_lock_bh+63\n    __inet_hash_connect+596\n    tcp_v4_connect+634\n": 300, "0xffff888101660000,1,\n    __pv_queued_spin_lock_slowpath+270\n    _raw_spin_lock_bh+63\n    __inet_hash_connect+596\n    tcp_v4_connect+634\n": 200, "0xffffffff82a01000,32,\n    osq_lock+80\n    __mutex_lock.constprop.0+400\n    eventpoll_release_file+60\n    __fput+500\n": 7000}}}
{"type": "map", "data": {"@max_ns": {"0xffff8881016634e0,1,\n    __pv_queued_spin_lock_slowpath+270\n    _raw_spin_lock_bh+63\n    __inet_hash_connect+596\n    tcp_v4_connect+634\n": 150, "0xffff888101660000,1,\n    __pv_queued_spin_lock_slowpath+270\n    _raw_spin_lock_bh+63\n    __inet_hash_connect+596\n    tcp_v4_connect+634\n": 180, "0xffffffff82a01000,32,\n    osq_lock+80\n    __mutex_lock.constprop.0+400\n    eventpoll_release_file+60\n    __fput+500\n": 2000}}}
"#;

    #[test]
    fn lock_addresses_read_in_hex_or_signed_decimal() {
        assert_eq!(
            lock_address("0xffffffff82a01000"),
            Some(0xffff_ffff_82a0_1000)
        );
        // The same address printed as a signed 64-bit integer.
        assert_eq!(lock_address("-2103439360"), Some(0xffff_ffff_82a0_1000));
        assert_eq!(lock_address("4096"), Some(4096));
        assert_eq!(lock_address("lock"), None);
    }

    #[test]
    fn maps_become_contentions_named_by_symbol_or_caller() {
        let symbols = DataSymbols::parse(
            "ffffffff82a01000 d epmutex\nffffffff82a02000 D other\nffffffff81000000 T _text\n",
        );
        let contentions = parse_maps(OUTPUT, &symbols).unwrap();
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
    }

    #[test]
    fn epmutex_acquisitions_are_read_when_counted() {
        let output = "{\"type\": \"map\", \"data\": {\"@epmutex_acquisitions\": 977}}\n";
        assert_eq!(
            parse_epoll_calls(output).unwrap().epmutex_acquisitions,
            Some(977)
        );
        assert_eq!(parse_epoll_calls("").unwrap().epmutex_acquisitions, None);
        let epmutex = FunctionProbes {
            epoll_calls: false,
            epmutex: Some(0xffff_ffff_82a0_1000),
        };
        assert!(program(epmutex).contains(
            "kprobe:mutex_lock /arg0 == 0xffffffff82a01000/ { @epmutex_acquisitions = count(); }"
        ));
        assert!(!program(FunctionProbes::default()).contains("mutex_lock"));
        let symbols = DataSymbols::parse("ffffffff82a01000 d epmutex\nffffffff82a02000 D other\n");
        assert_eq!(symbols.address_of("epmutex"), Some(0xffff_ffff_82a0_1000));
        assert_eq!(symbols.address_of("epnested_mutex"), None);
    }

    /// Every variant compiles to BPF (bpftrace's dry run checks it against this kernel's
    /// tracepoint formats without attaching, so kprobe variants are checked here too).
    #[test]
    fn every_variant_of_the_program_compiles() {
        let bpftrace = find_bpftrace().expect("bpftrace installed (scripts/install-deps.sh)");
        let elf = std::env::temp_dir().join(format!("loadlab-lockstat-{}.elf", std::process::id()));
        for (epoll_calls, epmutex) in [
            (false, None),
            (true, None),
            (true, Some(0xffff_ffff_82a0_1000)),
        ] {
            let text = program(FunctionProbes {
                epoll_calls,
                epmutex,
            });
            let out = std::process::Command::new(&bpftrace)
                .arg("--emit-elf")
                .arg(&elf)
                .arg("-e")
                .arg(&text)
                .output()
                .expect("bpftrace runs");
            assert!(
                out.status.success(),
                "{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_file(&elf);
    }

    #[test]
    fn epoll_calls_are_counted_by_kprobe_or_not_at_all() {
        let counted = program(FunctionProbes {
            epoll_calls: true,
            epmutex: None,
        });
        assert!(
            counted.contains(
                "kprobe:do_epoll_ctl /comm == \"nginx\"/ { @epoll_ctl[arg1] = count(); }"
            )
        );
        assert!(
            counted.contains("kprobe:do_epoll_wait /comm == \"nginx\"/ { @epoll_wait = count(); }")
        );
        let uncounted = program(FunctionProbes::default());
        assert!(!uncounted.contains("kprobe:"));
        // A syscall tracepoint would put every system call on the slow path.
        for program in [counted, uncounted] {
            assert!(!program.contains("syscalls:"));
        }
        let both = "ffffffff81752fd0 t do_epoll_wait\nffffffff817539d0 T do_epoll_ctl\n";
        assert!(DataSymbols::parse(both).has_epoll_functions());
        // do_epoll_wait inlined into its callers: nothing to probe it by.
        assert!(!DataSymbols::parse("ffffffff817539d0 T do_epoll_ctl\n").has_epoll_functions());
    }

    #[test]
    fn epoll_calls_are_read_by_op() {
        let output = "{\"type\": \"map\", \"data\": {\"@epoll_ctl\": {\"1\": 1000, \"3\": 7}}}\n{\"type\": \"map\", \"data\": {\"@epoll_wait\": 2500}}\n";
        assert_eq!(
            parse_epoll_calls(output).unwrap(),
            EpollCalls {
                ctl_add: 1000,
                ctl_del: 0,
                ctl_mod: 7,
                wait: 2500,
                epmutex_acquisitions: None,
            }
        );
        assert_eq!(parse_epoll_calls("").unwrap(), EpollCalls::default());
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
        let symbols =
            DataSymbols::parse("ffffffff82a01000 d epmutex\nffffffff82a02000 B big_table\n");
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
    }

    #[test]
    fn garbage_output_is_an_error_not_a_panic() {
        assert!(parse_maps("{\"type\": \"map\", broken", &DataSymbols::default()).is_err());
        assert!(parse_maps("", &DataSymbols::default()).unwrap().is_empty());
    }
}
