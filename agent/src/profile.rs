//! CPU profile of a window: the agent's own BPF sampler (`sampler.rs`) takes call stacks,
//! kernel and user, on every CPU at a fixed frequency with the `cpu-clock` software event,
//! switched on and off at the window's edges; the addresses are named here, kernel frames from
//! `/proc/kallsyms` and user frames from each process's objects (`usersyms.rs`), and kept as
//! folded stacks with counts, plus the top symbols by self and total share. No perf binary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::kallsyms::KernelSymbols;
use crate::privilege::TracingAccess;
use crate::sampler::{OUTSIDE_NAMESPACE, RawProfile, Sampler};
use crate::usersyms::{UserFrame, UserSymbols};

/// How many symbols a profile lists.
pub(crate) const TOP_SYMBOLS: usize = 30;
/// The most text a profile's folded stacks take. A capture reply must fit one gRPC message
/// (`loadlab_proto::MAX_CAPTURE_REPLY_BYTES`) and a run one ingest body: 30 s at 999 Hz on two
/// CPUs folded to 7 MB here, and more CPUs make more distinct stacks. Past it the least sampled
/// stacks are merged, per command, into one `[other stacks]` frame, so every sample still counts.
pub(crate) const MAX_FOLDED_BYTES: usize = 8 * 1024 * 1024;
/// The frame that stands for the stacks merged away.
pub(crate) const OTHER_STACKS: &str = "[other stacks]";
/// A frame no symbol names.
pub(crate) const UNKNOWN_FRAME: &str = "[unknown]";
/// The user-space half of a process in another pid namespace than the agent's.
pub(crate) const OUTSIDE_FRAME: &str = "[user space of another container]";
/// A sample whose stack contains this frame is the CPU idling.
const IDLE_FRAME: &str = "do_idle";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("CPU profile unavailable: {0}")]
    NotPrivileged(String),
    #[error("CPU profile unavailable: {0}")]
    Failed(String),
}

/// Samples of one symbol: where it was the running frame (self) and anywhere on the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolSamples {
    pub symbol: String,
    pub self_samples: u64,
    pub total_samples: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuProfile {
    pub frequency_hz: u32,
    pub samples: u64,
    /// Samples of idle CPUs (a `do_idle` frame on the stack).
    pub idle_samples: u64,
    /// `comm;outermost;...;innermost` -> samples.
    pub folded: BTreeMap<String, u64>,
    /// Busy samples only, most self samples first.
    pub top_symbols: Vec<SymbolSamples>,
}

impl CpuProfile {
    /// Samples with a frame no symbol names.
    pub fn unknown_samples(&self) -> u64 {
        self.folded
            .iter()
            .filter(|(stack, _)| stack.split(';').skip(1).any(|f| f == UNKNOWN_FRAME))
            .map(|(_, samples)| samples)
            .sum()
    }
}

/// A running profile: the sampler is attached and sampling.
#[derive(Debug)]
pub(crate) struct Profiler {
    sampler: Sampler,
    frequency_hz: u32,
    /// Only these processes' samples are kept; every sample when `None`.
    processes: Option<Vec<u32>>,
}

impl Profiler {
    /// Attaches the sampler on every CPU and returns once it samples, so the profile starts
    /// with the window. With `processes`, only those are kept; otherwise every CPU's samples.
    /// What the kernel certainly refuses is said before anything is loaded; a refusal it may
    /// make (Debian's perf restriction) is explained with the failure.
    pub async fn start(frequency_hz: u32, processes: Option<&[u32]>) -> Result<Self, ProfileError> {
        if processes.is_some_and(<[u32]>::is_empty) {
            return Err(ProfileError::Failed(
                "the target has no processes to profile".into(),
            ));
        }
        let access = TracingAccess::read(Path::new("/proc"));
        if let Some(why) = access.bpf_refusal() {
            return Err(ProfileError::NotPrivileged(why));
        }
        // Always every CPU: per-process events are switched on and off at every context
        // switch, which cost a connection storm 12% of its rate against 1.3% system-wide; a
        // target's samples are picked out when the profile is read.
        let sampler = crate::sampler::attach(frequency_hz)
            .await
            .map_err(|why| ProfileError::Failed(access.explain(why)))?;
        Ok(Self {
            sampler,
            frequency_hz,
            processes: processes.map(<[u32]>::to_vec),
        })
    }

    /// Stops sampling: the window is over.
    pub fn end_window(&mut self) {
        self.sampler.end_window();
    }

    /// Ends the window if still open, and names and folds the samples.
    pub async fn stop(self) -> Result<CpuProfile, ProfileError> {
        let raw = self.sampler.stop().await.map_err(ProfileError::Failed)?;
        if raw.lost > 0 {
            tracing::warn!(lost = raw.lost, "CPU profile samples lost");
        }
        let (frequency_hz, processes) = (self.frequency_hz, self.processes);
        tokio::task::spawn_blocking(move || {
            let kernel = KernelSymbols::read(Path::new("/proc/kallsyms"));
            let user = UserSymbols::default();
            let kept = |tgid: u32| processes.as_ref().is_none_or(|p| p.contains(&tgid));
            fold(&name_stacks(&raw, &kernel, &user, kept), frequency_hz)
        })
        .await
        .map_err(|e| ProfileError::Failed(format!("naming the profile's frames: {e}")))
    }
}

/// One named stack: command, frames innermost first, samples.
pub(crate) type NamedStack = (String, Vec<String>, u64);

/// Names every kept stack's frames. A return address is named by the call before it (the
/// address less one), as a call that never returns is often a function's last instruction.
pub(crate) fn name_stacks(
    raw: &RawProfile,
    kernel: &KernelSymbols,
    user: &UserSymbols,
    kept: impl Fn(u32) -> bool,
) -> Vec<NamedStack> {
    let lookup = |stack: &[u64], leaf: bool, position: usize| {
        let address = stack[position];
        if leaf && position == 0 {
            address
        } else {
            address.saturating_sub(1)
        }
    };
    let mut user_addresses: HashMap<u32, HashSet<u64>> = HashMap::new();
    for key in raw
        .stacks
        .keys()
        .filter(|k| kept(k.tgid) && k.tgid != OUTSIDE_NAMESPACE)
    {
        let leaf = key.kernel.is_empty();
        let addresses = user_addresses.entry(key.tgid).or_default();
        addresses.extend((0..key.user.len()).map(|i| lookup(&key.user, leaf, i)));
    }
    let user_names: HashMap<u32, HashMap<u64, UserFrame>> = user_addresses
        .into_iter()
        .map(|(tgid, addresses)| {
            let addresses: Vec<u64> = addresses.into_iter().collect();
            (tgid, user.name(tgid, &addresses))
        })
        .collect();
    let mut named = Vec::with_capacity(raw.stacks.len());
    for (key, &samples) in raw.stacks.iter().filter(|(k, _)| kept(k.tgid)) {
        let mut frames: Vec<String> = (0..key.kernel.len())
            .map(|i| {
                let address = lookup(&key.kernel, true, i);
                kernel
                    .function_at(address)
                    .map_or_else(|| UNKNOWN_FRAME.to_string(), str::to_string)
            })
            .collect();
        if key.tgid == OUTSIDE_NAMESPACE && !key.user.is_empty() {
            // Another container's process: the agent cannot see its memory map.
            frames.push(OUTSIDE_FRAME.into());
            named.push((key.comm.clone(), frames, samples));
            continue;
        }
        let names = user_names.get(&key.tgid);
        let leaf = key.kernel.is_empty();
        for i in 0..key.user.len() {
            let frame = names
                .and_then(|n| n.get(&lookup(&key.user, leaf, i)))
                .unwrap_or(&UserFrame::Unknown);
            if *frame == UserFrame::Unknown {
                // A walk that left every executable mapping went wrong there: the frames
                // beyond are not return addresses. Only a first frame unnamed is shown.
                if i == 0 {
                    frames.push(UNKNOWN_FRAME.into());
                }
                break;
            }
            frames.push(frame.label());
        }
        named.push((key.comm.clone(), frames, samples));
    }
    for ((tgid, comm), &samples) in &raw.unkept {
        if kept(*tgid) {
            named.push((comm.clone(), vec![OTHER_STACKS.to_string()], samples));
        }
    }
    named
}

/// Folds named stacks into the profile: stacks by command, idle samples, top symbols.
pub fn fold(stacks: &[NamedStack], frequency_hz: u32) -> CpuProfile {
    let mut profile = CpuProfile {
        frequency_hz,
        ..CpuProfile::default()
    };
    let mut self_counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total_counts: BTreeMap<&str, u64> = BTreeMap::new();
    for (comm, frames, samples) in stacks {
        profile.samples += samples;
        if frames.iter().any(|f| f == IDLE_FRAME) {
            profile.idle_samples += samples;
        } else {
            if let Some(leaf) = frames.first() {
                *self_counts.entry(leaf).or_default() += samples;
            }
            let mut seen: Vec<&str> = Vec::with_capacity(frames.len());
            for frame in frames {
                if !seen.contains(&frame.as_str()) {
                    seen.push(frame);
                    *total_counts.entry(frame).or_default() += samples;
                }
            }
        }
        let mut stack = comm.replace(';', ":");
        for frame in frames.iter().rev() {
            stack.push(';');
            stack.push_str(frame);
        }
        *profile.folded.entry(stack).or_default() += samples;
    }
    let mut top: Vec<SymbolSamples> = total_counts
        .into_iter()
        .map(|(symbol, total_samples)| SymbolSamples {
            self_samples: self_counts.get(symbol).copied().unwrap_or(0),
            symbol: symbol.to_string(),
            total_samples,
        })
        .collect();
    top.sort_by(|a, b| {
        b.self_samples
            .cmp(&a.self_samples)
            .then(b.total_samples.cmp(&a.total_samples))
            .then_with(|| a.symbol.cmp(&b.symbol))
    });
    top.truncate(TOP_SYMBOLS);
    profile.top_symbols = top;
    profile.folded = cap_folded(std::mem::take(&mut profile.folded), MAX_FOLDED_BYTES);
    profile
}

/// Keeps the most sampled stacks within `max_bytes` of text (a stack's bytes and a count's)
/// and merges the rest into `comm;[other stacks]`, one per command.
pub(crate) fn cap_folded(folded: BTreeMap<String, u64>, max_bytes: usize) -> BTreeMap<String, u64> {
    let size = |stack: &str| stack.len() + 20;
    if folded.keys().map(|k| size(k)).sum::<usize>() <= max_bytes {
        return folded;
    }
    let mut by_samples: Vec<(String, u64)> = folded.into_iter().collect();
    by_samples.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    // Room for the merged stacks: one per command, at most as many as there are commands.
    let mut commands: Vec<&str> = by_samples
        .iter()
        .map(|(stack, _)| stack.split(';').next().unwrap_or(""))
        .collect();
    commands.sort_unstable();
    commands.dedup();
    let reserve: usize = commands
        .iter()
        .map(|c| size(c) + OTHER_STACKS.len() + 1)
        .sum();
    let budget = max_bytes.saturating_sub(reserve);
    let mut kept = BTreeMap::new();
    let mut used = 0;
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for (stack, samples) in by_samples {
        if used + size(&stack) <= budget {
            used += size(&stack);
            kept.insert(stack, samples);
        } else {
            let command = stack.split(';').next().unwrap_or("");
            *merged
                .entry(format!("{command};{OTHER_STACKS}"))
                .or_default() += samples;
        }
    }
    for (stack, samples) in merged {
        *kept.entry(stack).or_default() += samples;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(comm: &str, frames: &[&str], samples: u64) -> NamedStack {
        (
            comm.to_string(),
            frames.iter().map(|f| f.to_string()).collect(),
            samples,
        )
    }

    fn stacks() -> Vec<NamedStack> {
        let mutex = [
            "osq_lock",
            "__mutex_lock.constprop.0",
            "eventpoll_release_file",
            "__fput",
        ];
        vec![
            stack("swapper/0", &["pv_native_safe_halt", "do_idle"], 1),
            stack("nginx", &mutex, 1),
            stack("nginx", &mutex, 1),
            stack(
                "loadlab",
                &["[unknown]", "tcp_v4_connect", "tcp_v4_connect"],
                1,
            ),
        ]
    }

    #[test]
    fn samples_fold_into_stacks_and_symbol_shares() {
        let profile = fold(&stacks(), 499);
        assert_eq!((profile.samples, profile.idle_samples), (4, 1));
        assert_eq!(profile.unknown_samples(), 1);
        assert_eq!(
            profile.folded["nginx;__fput;eventpoll_release_file;__mutex_lock.constprop.0;osq_lock"],
            2
        );
        assert_eq!(profile.folded["swapper/0;do_idle;pv_native_safe_halt"], 1);
        let osq = &profile.top_symbols[0];
        assert_eq!(
            (osq.symbol.as_str(), osq.self_samples, osq.total_samples),
            ("osq_lock", 2, 2)
        );
        let fput = profile
            .top_symbols
            .iter()
            .find(|s| s.symbol == "__fput")
            .unwrap();
        assert_eq!((fput.self_samples, fput.total_samples), (0, 2));
        // A recursive frame counts once per sample in the total.
        let connect = profile
            .top_symbols
            .iter()
            .find(|s| s.symbol == "tcp_v4_connect")
            .unwrap();
        assert_eq!(connect.total_samples, 1);
        assert!(
            !profile
                .top_symbols
                .iter()
                .any(|s| s.symbol == "pv_native_safe_halt")
        );
    }

    #[test]
    fn past_the_cap_the_least_sampled_stacks_merge_per_command_and_every_sample_counts() {
        let folded: BTreeMap<String, u64> = (0..1_000u64)
            .map(|i| (format!("nginx;frame_{i:04}"), i + 1))
            .chain([("loadlab;connect".to_string(), 5)])
            .collect();
        let all: u64 = folded.values().sum();
        let capped = cap_folded(folded.clone(), 10_000);
        assert_eq!(capped.values().sum::<u64>(), all, "no sample lost");
        assert!(
            capped.keys().map(|k| k.len() + 20).sum::<usize>() <= 10_000,
            "within the cap"
        );
        assert!(
            capped.contains_key("nginx;frame_0999"),
            "the most sampled stay"
        );
        assert!(
            !capped.contains_key("nginx;frame_0000"),
            "the least sampled go"
        );
        assert!(capped["nginx;[other stacks]"] > 0);
        assert!(capped.contains_key("loadlab;[other stacks]"));
        assert_eq!(
            cap_folded(folded.clone(), usize::MAX),
            folded,
            "under the cap: as is"
        );
    }

    #[test]
    fn empty_output_is_an_empty_profile() {
        let profile = fold(&[], 99);
        assert_eq!(profile.samples, 0);
        assert!(profile.folded.is_empty());
    }

    #[inline(never)]
    fn a_user_function() -> u64 {
        a_user_function as *const () as u64
    }

    #[test]
    fn kernel_frames_are_named_from_kallsyms_and_user_walks_cut_where_they_leave_the_maps() {
        use crate::sampler::StackKey;
        let kernel = KernelSymbols::parse(
            "ffffffff81000000 T tcp_v4_connect\nffffffff81000100 T __sys_connect\n\
             ffffffff81000200 T do_syscall_64\n",
        );
        let me = std::process::id();
        let user = a_user_function();
        let mut raw = RawProfile::default();
        // In the kernel, called from this process's function, then a frame outside every
        // mapping (a walk gone wrong) and one that looks fine beyond it.
        raw.stacks.insert(
            StackKey {
                tgid: me,
                comm: "loadlab".into(),
                kernel: vec![0xffff_ffff_8100_0010, 0xffff_ffff_8100_0101],
                user: vec![user + 1, 0x10, user + 1],
            },
            3,
        );
        // A return address one past a function's end names the function that called.
        raw.stacks.insert(
            StackKey {
                tgid: me,
                comm: "loadlab".into(),
                kernel: vec![0xffff_ffff_8100_0010, 0xffff_ffff_8100_0200],
                user: vec![],
            },
            1,
        );
        // A process gone: its first user frame is unknown, the rest cut.
        raw.stacks.insert(
            StackKey {
                tgid: u32::MAX - 1,
                comm: "gone".into(),
                kernel: vec![],
                user: vec![0x4000, 0x5000],
            },
            2,
        );
        raw.unkept.insert((me, "loadlab".into()), 4);
        raw.unkept.insert((7, "other".into()), 9);
        let named = name_stacks(&raw, &kernel, &UserSymbols::default(), |tgid| tgid != 7);
        let profile = fold(&named, 99);
        assert_eq!(profile.samples, 3 + 1 + 2 + 4);
        let this = profile
            .folded
            .keys()
            .find(|k| k.contains("a_user_function"))
            .expect("the user frame named");
        assert!(
            this.starts_with("loadlab;") && this.ends_with(";__sys_connect;tcp_v4_connect"),
            "{this}"
        );
        assert_eq!(
            this.matches("a_user_function").count(),
            1,
            "cut at the unmapped frame: {this}"
        );
        assert_eq!(profile.folded["loadlab;__sys_connect;tcp_v4_connect"], 1);
        assert_eq!(profile.folded["gone;[unknown]"], 2);
        assert_eq!(profile.folded["loadlab;[other stacks]"], 4);
        assert!(!profile.folded.keys().any(|k| k.starts_with("other")));
        assert_eq!(profile.unknown_samples(), 2);
    }
}
