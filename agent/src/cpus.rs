//! Disjoint CPUs for nginx and everything else of the experiment on the node: nginx's workers
//! get whole cores of their own, and the agent's process (with it a generator it serves, on one
//! machine) runs on the rest, so the two do not take turns on the same core. Held for as long as
//! the target lives; the process's threads get their CPUs back when it ends.

use std::path::Path;

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// Where nginx and the rest run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSplit {
    pub nginx: Vec<u32>,
    pub rest: Vec<u32>,
}

/// Splits cores (each a set of sibling logical CPUs) between nginx and the rest: nginx takes the
/// upper half (the lower CPUs carry more of the system's housekeeping), the rest the lower half
/// and the odd core. Siblings stay together: two halves of one core share its execution units.
pub(crate) fn split_cores(cores: &[Vec<u32>], from_cores: usize) -> Result<CpuSplit, String> {
    if cores.len() >= 2 && cores.len() < from_cores {
        return Err(format!(
            "{} cores: below {from_cores}, where pinning starts (each side would lose more than \
             a quiet core gives)",
            cores.len()
        ));
    }
    if cores.len() < 2 {
        return Err(match cores.first() {
            Some(core) if core.len() > 1 => format!(
                "one core (CPUs {}) is all this process may use: its SMT siblings share it",
                list(core)
            ),
            _ => "one CPU is all this process may use".into(),
        });
    }
    let mut cores = cores.to_vec();
    cores.sort_by_key(|core| core.iter().min().copied());
    let rest_cores = cores.len().div_ceil(2);
    let (rest, nginx) = cores.split_at(rest_cores);
    let flat = |cores: &[Vec<u32>]| {
        let mut cpus: Vec<u32> = cores.iter().flatten().copied().collect();
        cpus.sort_unstable();
        cpus
    };
    Ok(CpuSplit {
        nginx: flat(nginx),
        rest: flat(rest),
    })
}

/// CPU numbers as "0-3,6".
pub fn list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut index = 0;
    while index < sorted.len() {
        let first = sorted[index];
        while index + 1 < sorted.len() && sorted[index + 1] == sorted[index] + 1 {
            index += 1;
        }
        let last = sorted[index];
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
        index += 1;
    }
    parts.join(",")
}

/// Parses a kernel CPU list ("0-3,6").
pub fn parse_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (u32, u32) = (first.parse().ok()?, last.parse().ok()?);
                if last < first || last - first > 65_536 {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// The CPUs this process may run on, grouped into cores by their SMT siblings (from `sys`,
/// normally `/sys/devices/system/cpu`); a CPU whose siblings cannot be read is a core alone.
pub(crate) fn allowed_cores(sys: &Path) -> Result<Vec<Vec<u32>>, String> {
    let allowed = allowed_cpus()?;
    let mut cores: Vec<Vec<u32>> = Vec::new();
    for cpu in &allowed {
        let siblings =
            std::fs::read_to_string(sys.join(format!("cpu{cpu}/topology/thread_siblings_list")))
                .ok()
                .and_then(|text| parse_list(&text))
                .unwrap_or_else(|| vec![*cpu]);
        let core: Vec<u32> = siblings
            .into_iter()
            .filter(|sibling| allowed.contains(sibling))
            .collect();
        if !cores.contains(&core) {
            cores.push(core);
        }
    }
    Ok(cores)
}

fn allowed_cpus() -> Result<Vec<u32>, String> {
    let set = sched_getaffinity(Pid::from_raw(0))
        .map_err(|e| format!("cannot read this process's CPUs: {e}"))?;
    Ok((0..CpuSet::count())
        .filter(|cpu| set.is_set(*cpu).unwrap_or(false))
        .map(|cpu| cpu as u32)
        .collect())
}

fn cpu_set(cpus: &[u32]) -> Result<CpuSet, String> {
    let mut set = CpuSet::new();
    for cpu in cpus {
        set.set(*cpu as usize)
            .map_err(|_| format!("CPU {cpu} is beyond what this system can address"))?;
    }
    Ok(set)
}

/// Runs the calling thread on `cpus` only.
pub fn pin_this_thread(cpus: &[u32]) -> Result<(), String> {
    sched_setaffinity(Pid::from_raw(0), &cpu_set(cpus)?)
        .map_err(|e| format!("cannot run on CPUs {}: {e}", list(cpus)))
}

/// Sets every thread of this process to `set`. Threads started later inherit their creator's.
fn set_process_threads(set: &CpuSet) -> Result<(), String> {
    let tasks = std::fs::read_dir("/proc/self/task")
        .map_err(|e| format!("cannot list this process's threads: {e}"))?;
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread that ended meanwhile is no error.
        match sched_setaffinity(Pid::from_raw(tid), set) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(format!("cannot move thread {tid}: {e}")),
        }
    }
    Ok(())
}

/// This process kept off nginx's CPUs until dropped, when its threads get back the CPUs the
/// process had.
#[derive(Debug)]
pub struct ProcessPinning {
    split: CpuSplit,
    before: CpuSet,
}

impl ProcessPinning {
    /// Splits the cores this process may use and moves its threads to the rest; the caller
    /// runs nginx on `split().nginx`. The error says why nothing was pinned.
    pub fn take(sys: &Path, from_cores: usize) -> Result<Self, String> {
        let before = sched_getaffinity(Pid::from_raw(0))
            .map_err(|e| format!("cannot read this process's CPUs: {e}"))?;
        let split = split_cores(&allowed_cores(sys)?, from_cores)?;
        set_process_threads(&cpu_set(&split.rest)?)?;
        Ok(Self { split, before })
    }

    pub fn split(&self) -> &CpuSplit {
        &self.split
    }
}

impl Drop for ProcessPinning {
    fn drop(&mut self) {
        if let Err(error) = set_process_threads(&self.before) {
            tracing::warn!(%error, "giving this process's threads their CPUs back");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_takes_the_upper_half_of_the_cores() {
        let cores =
            |groups: &[&[u32]]| -> Vec<Vec<u32>> { groups.iter().map(|g| g.to_vec()).collect() };
        // This machine: two CPUs, no SMT.
        assert_eq!(
            split_cores(&cores(&[&[0], &[1]]), 2),
            Ok(CpuSplit {
                nginx: vec![1],
                rest: vec![0]
            })
        );
        // The odd core goes to the rest, which runs the generator.
        assert_eq!(
            split_cores(&cores(&[&[2], &[0], &[1]]), 2),
            Ok(CpuSplit {
                nginx: vec![2],
                rest: vec![0, 1]
            })
        );
        // SMT siblings stay on one side (Intel numbers them n and n + cores).
        assert_eq!(
            split_cores(&cores(&[&[0, 4], &[1, 5], &[2, 6], &[3, 7]]), 4),
            Ok(CpuSplit {
                nginx: vec![2, 3, 6, 7],
                rest: vec![0, 1, 4, 5]
            })
        );
        let one = split_cores(&cores(&[&[0, 1]]), 2).unwrap_err();
        assert!(one.contains("SMT siblings"), "{one}");
        let single = split_cores(&cores(&[&[0]]), 2).unwrap_err();
        assert!(single.contains("one CPU"), "{single}");
        assert!(split_cores(&[], 2).is_err());
        // Below the threshold nothing is pinned, and the reason says so.
        let few = split_cores(&cores(&[&[0], &[1]]), 4).unwrap_err();
        assert!(few.starts_with("2 cores: below 4"), "{few}");
    }

    #[test]
    fn cpu_lists_read_and_print_as_the_kernel_writes_them() {
        assert_eq!(parse_list("0-3,6\n"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_list("5"), Some(vec![5]));
        assert_eq!(parse_list(""), Some(vec![]));
        assert_eq!(parse_list("3-1"), None);
        assert_eq!(parse_list("x"), None);
        assert_eq!(list(&[6, 0, 1, 2, 3]), "0-3,6");
        assert_eq!(list(&[1]), "1");
        assert_eq!(list(&[]), "");
    }

    #[test]
    fn this_process_may_run_on_some_core() {
        let cores = allowed_cores(Path::new("/sys/devices/system/cpu")).unwrap();
        assert!(!cores.is_empty());
        // The standard library counts the CPUs this process may use the same way.
        let cpus: usize = cores.iter().map(Vec::len).sum();
        assert_eq!(cpus, std::thread::available_parallelism().unwrap().get());
    }
}
