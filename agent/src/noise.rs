//! What a measured window could not control, with numbers: CPU time the hypervisor stole, CPU
//! time of everything but nginx and loadlab's own process, and device interrupts landing on
//! nginx's CPUs, and packets connection tracking dropped. The report turns them into noise
//! flags; the run keeps the numbers.

use std::path::Path;

use crate::conntrack::ConntrackReading;
use crate::counters::{CpuTimes, USER_HZ, processes_cpu_ticks};

/// Per-CPU totals of the numbered (device) lines of `/proc/interrupts`; index = CPU number as
/// the header names it. The named lines (timer, IPIs such as rescheduling and function calls)
/// are left out: the workload itself causes them.
pub(crate) fn parse_device_interrupts(text: &str) -> Vec<u64> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cpus: Vec<usize> = header
        .split_whitespace()
        .filter_map(|name| name.strip_prefix("CPU")?.parse().ok())
        .collect();
    let width = cpus.iter().max().map_or(0, |highest| highest + 1);
    let mut totals = vec![0u64; width];
    for line in lines {
        let Some((label, counts)) = line.split_once(':') else {
            continue;
        };
        if label.trim().parse::<u64>().is_err() {
            continue;
        }
        for (cpu, count) in cpus.iter().zip(counts.split_whitespace()) {
            match count.parse::<u64>() {
                Ok(count) => totals[*cpu] += count,
                // The counts end where the chip and handler names begin.
                Err(_) => break,
            }
        }
    }
    totals
}

/// The window's opening readings.
#[derive(Debug, Clone, Default)]
pub(crate) struct NoiseSnapshot {
    device_interrupts: Vec<u64>,
    own_ticks: u64,
    conntrack: Option<ConntrackReading>,
}

impl NoiseSnapshot {
    pub fn read(proc: &Path) -> Self {
        Self {
            device_interrupts: std::fs::read_to_string(proc.join("interrupts"))
                .map(|text| parse_device_interrupts(&text))
                .unwrap_or_default(),
            own_ticks: own_process_ticks(proc),
            conntrack: ConntrackReading::read(proc),
        }
    }
}

/// CPU time of the agent's own process: with a local generator, the generator and everything
/// else loadlab runs are in it.
fn own_process_ticks(proc: &Path) -> u64 {
    processes_cpu_ticks(proc, &[std::process::id()])
}

/// What the window could not control.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowNoise {
    /// Share of all CPU time the hypervisor gave to others.
    pub steal_share: f64,
    /// CPU time of everything but nginx and the agent's own process (other processes, kernel
    /// threads, interrupts), in ns.
    pub other_cpu_ns: u64,
    /// Device interrupts on `watched_cpus` over the window.
    pub device_interrupts: u64,
    /// nginx's CPUs when it was pinned; every CPU otherwise.
    pub watched_cpus: Vec<u32>,
    /// Packets connection tracking dropped over the window (a full table drops new
    /// connections' first packets); `None` where the kernel has no connection tracking.
    pub conntrack_dropped: Option<u64>,
}

impl WindowNoise {
    /// The window's noise from its opening and closing readings. `nginx_ticks` is the CPU
    /// time nginx's processes used over the window; `nginx_cpus` its CPUs when pinned (empty:
    /// all).
    pub fn between(
        (opened, closed): (&NoiseSnapshot, &NoiseSnapshot),
        (cpu_before, cpu_after): (&CpuTimes, &CpuTimes),
        nginx_ticks: u64,
        nginx_cpus: &[u32],
    ) -> Self {
        let own_ticks = closed.own_ticks.saturating_sub(opened.own_ticks);
        let busy_ticks = cpu_after
            .busy_ticks()
            .saturating_sub(cpu_before.busy_ticks());
        let other_ticks = busy_ticks.saturating_sub(nginx_ticks + own_ticks);
        let watched_cpus: Vec<u32> = if nginx_cpus.is_empty() {
            (0..closed.device_interrupts.len() as u32).collect()
        } else {
            nginx_cpus.to_vec()
        };
        let on = |totals: &[u64], cpu: u32| totals.get(cpu as usize).copied().unwrap_or(0);
        let device_interrupts = watched_cpus
            .iter()
            .map(|cpu| {
                on(&closed.device_interrupts, *cpu)
                    .saturating_sub(on(&opened.device_interrupts, *cpu))
            })
            .sum();
        Self {
            steal_share: cpu_after.shares_since(cpu_before).steal,
            other_cpu_ns: other_ticks * (1_000_000_000 / USER_HZ),
            device_interrupts,
            watched_cpus,
            conntrack_dropped: opened
                .conntrack
                .zip(closed.conntrack)
                .map(|(opened, closed)| closed.dropped.saturating_sub(opened.dropped)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERRUPTS: &str = "           CPU0       CPU1       
 24:          1          0  IO-APIC   5-edge      ACPI:Ged
 36:          0    7943092 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
 39:      43113          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
NMI:          0          0   Non-maskable interrupts
LOC:   30431104   29942559   Local timer interrupts
RES:   15287966   15259739   Rescheduling interrupts
ERR:          0
";

    #[test]
    fn device_interrupts_are_the_numbered_lines_per_cpu() {
        assert_eq!(parse_device_interrupts(INTERRUPTS), vec![43114, 7943092]);
        assert_eq!(parse_device_interrupts(""), Vec::<u64>::new());
        // An offline CPU is missing from the header: the columns follow the names.
        let gap = "     CPU0  CPU2\n 5:  3  4  edge  x\n";
        assert_eq!(parse_device_interrupts(gap), vec![3, 0, 4]);
    }

    #[test]
    fn this_machine_counts_its_device_interrupts() {
        let totals = NoiseSnapshot::read(Path::new("/proc")).device_interrupts;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(totals.len() >= cpus, "{totals:?} for {cpus} CPUs");
    }

    #[test]
    fn other_cpu_is_the_busy_time_neither_nginx_nor_loadlab_used() {
        let opened = NoiseSnapshot {
            device_interrupts: vec![10, 100],
            own_ticks: 50,
            conntrack: Some(ConntrackReading {
                entries: 10,
                limit: 100,
                dropped: 7,
            }),
        };
        let closed = NoiseSnapshot {
            device_interrupts: vec![15, 180],
            own_ticks: 80,
            conntrack: Some(ConntrackReading {
                entries: 100,
                limit: 100,
                dropped: 47,
            }),
        };
        let before = CpuTimes {
            user: 1000,
            idle: 5000,
            ..CpuTimes::default()
        };
        // 300 busy ticks, 10 stolen, 100 idle.
        let after = CpuTimes {
            user: 1200,
            system: 100,
            idle: 5100,
            steal: 10,
            ..CpuTimes::default()
        };
        let noise = WindowNoise::between((&opened, &closed), (&before, &after), 120, &[1]);
        assert!((noise.steal_share - 10.0 / 410.0).abs() < 1e-9, "{noise:?}");
        // 300 busy, 120 nginx's, 30 loadlab's: 150 ticks of 10 ms.
        assert_eq!(noise.other_cpu_ns, 150 * 10_000_000);
        assert_eq!(noise.watched_cpus, vec![1]);
        assert_eq!(noise.device_interrupts, 80);
        assert_eq!(noise.conntrack_dropped, Some(40));
        // Unpinned, every CPU is watched.
        let unpinned = WindowNoise::between((&opened, &closed), (&before, &after), 120, &[]);
        assert_eq!(unpinned.watched_cpus, vec![0, 1]);
        assert_eq!(unpinned.device_interrupts, 85);
        // Without connection tracking at either end, there is no figure.
        let untracked = NoiseSnapshot {
            conntrack: None,
            ..closed.clone()
        };
        let noise = WindowNoise::between((&opened, &untracked), (&before, &after), 120, &[]);
        assert_eq!(noise.conntrack_dropped, None);
    }
}
