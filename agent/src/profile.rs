//! CPU profile of a window: `perf record` samples call stacks (kernel and user) on every CPU at
//! a fixed frequency with the `cpu-clock` software event, enabled and disabled through perf's
//! control FIFO so the samples cover exactly the window; `perf script` symbolizes them and they
//! are kept as folded stacks with counts, plus the top symbols by self and total share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::unistd::{Pid, mkfifo};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};

use crate::privilege::TracingAccess;

/// How many symbols a profile lists.
pub const TOP_SYMBOLS: usize = 30;
/// The most text a profile's folded stacks take. A capture reply must fit one gRPC message
/// (`loadlab_proto::MAX_CAPTURE_REPLY_BYTES`) and a run one ingest body: 30 s at 999 Hz on two
/// CPUs folded to 7 MB here, and more CPUs make more distinct stacks. Past it the least sampled
/// stacks are merged, per command, into one `[other stacks]` frame, so every sample still counts.
pub const MAX_FOLDED_BYTES: usize = 8 * 1024 * 1024;
/// The most `perf.data` one window may write: an hour at 999 Hz on 64 CPUs would be hundreds
/// of gigabytes. perf stops sampling there; a window that long is summarized from what fits.
const MAX_PERF_DATA: &str = "1G";
/// The frame that stands for the stacks merged away.
pub const OTHER_STACKS: &str = "[other stacks]";
const CONTROL_DEADLINE: Duration = Duration::from_secs(30);
/// A sample whose stack contains this frame is the CPU idling.
const IDLE_FRAME: &str = "do_idle";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("CPU profile unavailable: perf not found (apt-get install linux-perf)")]
    Missing,
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

/// Finds perf: `$LOADLAB_PERF`, then `PATH`, then `/usr/bin`.
pub fn find_perf() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LOADLAB_PERF") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("perf"))
        .find(|p| p.is_file())
}

/// A running profile: perf is recording, events enabled.
#[derive(Debug)]
pub struct Profiler {
    perf: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
    control: pipe::Sender,
    ack: BufReader<pipe::Receiver>,
    frequency_hz: u32,
    window_ended: bool,
    /// Only these processes' samples are kept; every sample when `None`.
    processes: Option<Vec<u32>>,
}

impl Profiler {
    /// Starts perf with events disabled, then enables them and waits for perf's ack, so the
    /// profile starts with the window. With `processes`, only those are sampled; otherwise
    /// every CPU.
    /// What the kernel certainly refuses is said before perf starts; a refusal it may make
    /// (Debian's perf restriction) is explained with the failure.
    pub async fn start(frequency_hz: u32, processes: Option<&[u32]>) -> Result<Self, ProfileError> {
        let perf = find_perf().ok_or(ProfileError::Missing)?;
        let access = TracingAccess::read(Path::new("/proc"));
        if let Some(why) = access.perf_refusal() {
            return Err(ProfileError::NotPrivileged(why));
        }
        Self::start_perf(perf, frequency_hz, processes)
            .await
            .map_err(|error| match error {
                ProfileError::Failed(why) => ProfileError::Failed(access.explain(why)),
                other => other,
            })
    }

    async fn start_perf(
        perf: PathBuf,
        frequency_hz: u32,
        processes: Option<&[u32]>,
    ) -> Result<Self, ProfileError> {
        let failed =
            |what: &str, e: &dyn std::fmt::Display| ProfileError::Failed(format!("{what}: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("loadlab-profile-")
            .tempdir()
            .map_err(|e| failed("temporary directory", &e))?;
        let (control_path, ack_path) = (dir.path().join("control"), dir.path().join("ack"));
        for fifo in [&control_path, &ack_path] {
            mkfifo(fifo, Mode::S_IRUSR | Mode::S_IWUSR).map_err(|e| failed("control FIFO", &e))?;
        }
        // Read-write opens of a FIFO never block waiting for the other end.
        let control = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&control_path)
            .map_err(|e| failed("control FIFO", &e))?;
        let ack = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&ack_path)
            .map_err(|e| failed("ack FIFO", &e))?;
        if processes.is_some_and(<[u32]>::is_empty) {
            return Err(ProfileError::Failed(
                "the target has no processes to profile".into(),
            ));
        }
        // Always every CPU: per-process events (`perf record -p`) are switched on and off at
        // every context switch, which cost a connection storm 12% of its rate against 1.3%
        // system-wide; a target's samples are picked out when the profile is read.
        let child = Command::new(&perf)
            .args(["record", "-e", "cpu-clock", "-F", &frequency_hz.to_string()])
            .args(["-a", "-g", "-D", "-1", "--quiet"])
            // Samples × stack depth × CPUs has no bound the spec can see; the node's disk has.
            .args(["--max-size", MAX_PERF_DATA])
            .arg(format!(
                "--control=fifo:{},{}",
                control_path.display(),
                ack_path.display()
            ))
            .arg("-o")
            .arg(dir.path().join("perf.data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed("cannot run perf", &e))?;
        let mut profiler = Self {
            perf,
            child,
            dir,
            control,
            ack: BufReader::new(ack),
            frequency_hz,
            window_ended: false,
            processes: processes.map(<[u32]>::to_vec),
        };
        profiler.command("enable").await?;
        Ok(profiler)
    }

    async fn command(&mut self, command: &str) -> Result<(), ProfileError> {
        let exchange = async {
            self.control
                .write_all(format!("{command}\n").as_bytes())
                .await?;
            let mut line = String::new();
            self.ack.read_line(&mut line).await?;
            Ok::<_, std::io::Error>(line)
        };
        match tokio::time::timeout(CONTROL_DEADLINE, exchange).await {
            // perf terminates each ack with a NUL, which then leads the next line.
            Ok(Ok(line))
                if line.trim_matches(|c: char| c == '\0' || c.is_whitespace()) == "ack" =>
            {
                Ok(())
            }
            Ok(Ok(line)) => Err(ProfileError::Failed(format!(
                "perf answered {line:?} to {command}"
            ))),
            Ok(Err(e)) => Err(ProfileError::Failed(format!("perf control: {e}"))),
            Err(_) => Err(ProfileError::Failed(format!(
                "perf did not acknowledge {command}"
            ))),
        }
    }

    /// Stops sampling: the window is over.
    pub async fn end_window(&mut self) -> Result<(), ProfileError> {
        if !self.window_ended {
            self.window_ended = true;
            self.command("disable").await?;
        }
        Ok(())
    }

    /// Ends the window if still open, and reads the profile.
    pub async fn stop(mut self) -> Result<CpuProfile, ProfileError> {
        self.end_window().await?;
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGINT);
        }
        let _ = tokio::time::timeout(CONTROL_DEADLINE, self.child.wait()).await;
        let mut script = Command::new(&self.perf);
        script.args(["script", "-F", "comm,ip,sym"]);
        if let Some(processes) = &self.processes {
            let pids: Vec<String> = processes.iter().map(u32::to_string).collect();
            script.arg(format!("--pid={}", pids.join(",")));
        }
        let output = script
            .arg("-i")
            .arg(self.dir.path().join("perf.data"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .await
            .map_err(|e| ProfileError::Failed(format!("perf script: {e}")))?;
        if !output.status.success() {
            return Err(ProfileError::Failed(format!(
                "perf script failed ({})",
                output.status
            )));
        }
        Ok(fold(
            &String::from_utf8_lossy(&output.stdout),
            self.frequency_hz,
        ))
    }
}

/// Folds `perf script -F comm,ip,sym` output: a header line with the command, then one frame
/// per line (innermost first), then a blank line.
pub fn fold(script: &str, frequency_hz: u32) -> CpuProfile {
    let mut profile = CpuProfile {
        frequency_hz,
        ..CpuProfile::default()
    };
    let mut self_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut total_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut comm: Option<String> = None;
    let mut frames: Vec<String> = Vec::new();
    let mut finish =
        |comm: &mut Option<String>, frames: &mut Vec<String>, profile: &mut CpuProfile| {
            let Some(name) = comm.take() else { return };
            profile.samples += 1;
            if frames.iter().any(|f| f == IDLE_FRAME) {
                profile.idle_samples += 1;
            } else {
                if let Some(leaf) = frames.first() {
                    *self_counts.entry(leaf.clone()).or_default() += 1;
                }
                let mut seen: Vec<&String> = Vec::with_capacity(frames.len());
                for frame in frames.iter() {
                    if !seen.contains(&frame) {
                        seen.push(frame);
                        *total_counts.entry(frame.clone()).or_default() += 1;
                    }
                }
            }
            let mut stack = name;
            for frame in frames.iter().rev() {
                stack.push(';');
                stack.push_str(frame);
            }
            *profile.folded.entry(stack).or_default() += 1;
            frames.clear();
        };
    for line in script.lines() {
        if line.trim().is_empty() {
            finish(&mut comm, &mut frames, &mut profile);
        } else if line.starts_with(char::is_whitespace) && comm.is_some() {
            // "\t ffffffff8225f42b pv_native_safe_halt" (the symbol may be missing or carry
            // an offset).
            let mut parts = line.split_whitespace();
            let _address = parts.next();
            let symbol = parts.next().unwrap_or("[unknown]");
            let symbol = symbol.split('+').next().unwrap_or(symbol);
            frames.push(symbol.to_string());
        } else {
            finish(&mut comm, &mut frames, &mut profile);
            comm = Some(line.trim().replace(';', ":"));
        }
    }
    finish(&mut comm, &mut frames, &mut profile);
    let mut top: Vec<SymbolSamples> = total_counts
        .into_iter()
        .map(|(symbol, total_samples)| SymbolSamples {
            self_samples: self_counts.get(&symbol).copied().unwrap_or(0),
            symbol,
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
pub fn cap_folded(folded: BTreeMap<String, u64>, max_bytes: usize) -> BTreeMap<String, u64> {
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

    const SCRIPT: &str = "swapper \n\tffffffff8225f42b pv_native_safe_halt\n\tffffffff813cfe96 do_idle\n\nnginx \n\tffffffff81a osq_lock\n\tffffffff81b __mutex_lock.constprop.0\n\tffffffff81c eventpoll_release_file\n\tffffffff81d __fput\n\nnginx \n\tffffffff81a osq_lock\n\tffffffff81b __mutex_lock.constprop.0\n\tffffffff81c eventpoll_release_file\n\tffffffff81d __fput\n\nloadlab \n\t7f00 [unknown]\n\tffffffff81e tcp_v4_connect\n\tffffffff81e tcp_v4_connect\n\n";

    #[test]
    fn samples_fold_into_stacks_and_symbol_shares() {
        let profile = fold(SCRIPT, 499);
        assert_eq!((profile.samples, profile.idle_samples), (4, 1));
        assert_eq!(
            profile.folded["nginx;__fput;eventpoll_release_file;__mutex_lock.constprop.0;osq_lock"],
            2
        );
        assert_eq!(profile.folded["swapper;do_idle;pv_native_safe_halt"], 1);
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
        let profile = fold("", 99);
        assert_eq!(profile.samples, 0);
        assert!(profile.folded.is_empty());
    }
}
