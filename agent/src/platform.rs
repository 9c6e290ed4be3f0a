//! Platform facts that change what a connection storm measures: boot command line, CPU
//! vulnerability mitigations, frequency governor, SMT, NUMA, virtualization, NIC drivers and
//! the network sysctls a storm leans on.

use std::collections::BTreeMap;
use std::path::Path;

/// Sysctls reported with every node, under `/proc/sys`.
pub(crate) const SYSCTLS: [&str; 6] = [
    "net/core/somaxconn",
    "net/ipv4/tcp_max_syn_backlog",
    "net/ipv4/ip_local_port_range",
    "net/ipv4/tcp_tw_reuse",
    "net/ipv4/tcp_fin_timeout",
    "fs/file-max",
];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Platform {
    pub cmdline: String,
    /// `/sys/devices/system/cpu/vulnerabilities`: name -> status line.
    pub cpu_vulnerabilities: BTreeMap<String, String>,
    /// cpu0's scaling governor, or "none" without cpufreq (common in VMs).
    pub scaling_governor: String,
    /// "on", "off" or "unknown".
    pub smt: String,
    pub numa_nodes: u32,
    /// "bare metal", or "virtual machine" with what gave it away.
    pub virtualization: String,
    /// The CPUs are emulated (QEMU TCG, as the guest's command line says).
    pub emulated: bool,
    /// Interface -> kernel driver, for interfaces backed by a device.
    pub nic_drivers: BTreeMap<String, String>,
    /// Dotted sysctl name -> value.
    pub sysctls: BTreeMap<String, String>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Reads the platform from procfs at `proc` and sysfs at `sys`.
pub(crate) fn read_platform(proc: &Path, sys: &Path) -> Platform {
    let cpu = sys.join("devices/system/cpu");
    let mut cpu_vulnerabilities = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(cpu.join("vulnerabilities")) {
        for entry in entries.flatten() {
            if let Some(status) = read_trimmed(&entry.path()) {
                cpu_vulnerabilities
                    .insert(entry.file_name().to_string_lossy().into_owned(), status);
            }
        }
    }
    let smt = match read_trimmed(&cpu.join("smt/active")).as_deref() {
        Some("1") => "on",
        Some("0") => "off",
        _ => "unknown",
    }
    .to_string();
    let numa_nodes = std::fs::read_dir(sys.join("devices/system/node"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix("node")
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
                .count() as u32
        })
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string(proc.join("cpuinfo")).unwrap_or_default();
    let dmi = [
        sys.join("class/dmi/id/sys_vendor"),
        sys.join("class/dmi/id/product_name"),
    ]
    .iter()
    .filter_map(|p| read_trimmed(p))
    .collect::<Vec<_>>()
    .join(" ");
    let mut nic_drivers = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(sys.join("class/net")) {
        for entry in entries.flatten() {
            if let Ok(driver) = std::fs::read_link(entry.path().join("device/driver"))
                && let Some(name) = driver.file_name()
            {
                nic_drivers.insert(
                    entry.file_name().to_string_lossy().into_owned(),
                    name.to_string_lossy().into_owned(),
                );
            }
        }
    }
    let sysctls = SYSCTLS
        .iter()
        .filter_map(|name| {
            let value = read_trimmed(&proc.join("sys").join(name))?;
            Some((
                name.replace('/', "."),
                value.split_whitespace().collect::<Vec<_>>().join(" "),
            ))
        })
        .collect();
    let cmdline = read_trimmed(&proc.join("cmdline")).unwrap_or_default();
    Platform {
        cpu_vulnerabilities,
        scaling_governor: read_trimmed(&cpu.join("cpu0/cpufreq/scaling_governor"))
            .unwrap_or_else(|| "none".into()),
        smt,
        numa_nodes,
        virtualization: virtualization(&cpuinfo, &dmi, &cmdline),
        emulated: emulated(&cmdline),
        nic_drivers,
        sysctls,
        cmdline,
    }
}

/// Said of a guest whose CPUs QEMU emulates: its timings say little about its kernel.
pub(crate) const EMULATED: &str = "emulated (QEMU TCG)";

/// Whether loadlab booted this guest with emulated CPUs (`loadlab.accel=tcg`).
pub fn emulated(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|arg| arg == "loadlab.accel=tcg")
}

/// Judges virtualization from the CPU's `hypervisor` flag and the DMI vendor and product. A
/// guest loadlab booted is told how on its command line (`loadlab.accel=`): from inside, an
/// emulated CPU looks like any virtual one.
pub fn virtualization(cpuinfo: &str, dmi: &str, cmdline: &str) -> String {
    match cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("loadlab.accel="))
    {
        Some("tcg") => return EMULATED.into(),
        Some("kvm") => return "virtual machine (QEMU/KVM)".into(),
        _ => {}
    }
    let hypervisor_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .take(1)
        .any(|l| l.split_whitespace().any(|f| f == "hypervisor"));
    let known = [
        "QEMU",
        "KVM",
        "VMware",
        "VirtualBox",
        "Xen",
        "Amazon EC2",
        "Google Compute Engine",
        "Microsoft Corporation",
    ]
    .into_iter()
    .find(|vendor| dmi.contains(vendor));
    match (hypervisor_flag, known) {
        (_, Some(vendor)) => format!("virtual machine ({vendor})"),
        (true, None) => "virtual machine (hypervisor CPU flag)".into(),
        (false, None) => "bare metal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtualization_comes_from_flags_and_dmi() {
        let guest = "flags\t\t: fpu vme hypervisor lahf_lm\n";
        let metal = "flags\t\t: fpu vme lahf_lm\n";
        assert_eq!(
            virtualization(guest, "", ""),
            "virtual machine (hypervisor CPU flag)"
        );
        assert_eq!(
            virtualization(guest, "QEMU Standard PC (Q35 + ICH9, 2009)", "quiet"),
            "virtual machine (QEMU)"
        );
        assert_eq!(
            virtualization(metal, "Dell Inc. PowerEdge R650", ""),
            "bare metal"
        );
        assert_eq!(
            virtualization(guest, "QEMU Standard PC", "console=ttyS0 loadlab.accel=tcg"),
            EMULATED
        );
        assert_eq!(
            virtualization(guest, "QEMU Standard PC", "loadlab.accel=kvm quiet"),
            "virtual machine (QEMU/KVM)"
        );
        assert!(emulated("console=ttyS0 loadlab.accel=tcg"));
        assert!(!emulated("loadlab.accel=kvm quiet"));
        assert!(!emulated("loadlab.accel=tcgx"));
    }

    #[test]
    fn this_machine_reports_its_platform() {
        let platform = read_platform(Path::new("/proc"), Path::new("/sys"));
        assert!(!platform.cmdline.is_empty());
        assert!(platform.sysctls.contains_key("net.core.somaxconn"));
        let range = &platform.sysctls["net.ipv4.ip_local_port_range"];
        assert_eq!(range.split(' ').count(), 2, "{range}");
        assert!(["on", "off", "unknown"].contains(&platform.smt.as_str()));
    }

    #[test]
    fn a_missing_sysfs_gives_unknowns_not_errors() {
        let platform = read_platform(Path::new("/nonexistent"), Path::new("/nonexistent"));
        assert_eq!(platform.smt, "unknown");
        assert_eq!(platform.scaling_governor, "none");
        assert_eq!(platform.numa_nodes, 0);
        assert!(platform.sysctls.is_empty());
    }
}
