//! Node facts: kernel, CPU, memory, and which kernel symbols exist.

use std::path::Path;

use crate::Error;
use crate::platform::{Platform, read_platform};

/// The kernel symbols every description probes. `ep_clear_and_put` exists only in kernels that
/// carry the epoll refcount patch; `epmutex` and `epnested_mutex` name the global epoll mutexes
/// before and after it (the patch renamed the surviving nested-loop lock in later kernels).
pub(crate) const EPOLL_SYMBOLS: [&str; 3] = ["ep_clear_and_put", "epmutex", "epnested_mutex"];

/// Symbols that name data (locks), not code. Kernels without `CONFIG_KALLSYMS_ALL` list no data
/// symbols at all, so their absence there proves nothing.
const DATA_SYMBOLS: [&str; 2] = ["epmutex", "epnested_mutex"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Present,
    Absent,
    /// `/proc/kallsyms` could not be read or hides addresses: absence proves nothing.
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub hostname: String,
    pub kernel_release: String,
    pub kernel_version: String,
    pub cpu_model: String,
    pub logical_cpus: u32,
    pub memory_bytes: u64,
    pub kernel_symbols: Vec<(String, Presence)>,
    pub platform: Platform,
}

/// Reads this machine's facts from procfs.
pub fn describe() -> Result<NodeFacts, Error> {
    describe_from(Path::new("/proc"), &[])
}

/// The built-in epoll symbols, then each of `extra` not among them, in order.
fn probed_names(extra: &[String]) -> Vec<&str> {
    let mut names: Vec<&str> = EPOLL_SYMBOLS.to_vec();
    for name in extra {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names
}

/// sysfs for a procfs: `/sys` for `/proc`, a `sys` folder beside any other.
fn sys_beside(proc: &Path) -> std::path::PathBuf {
    proc.parent().unwrap_or(Path::new("/")).join("sys")
}

/// Reads facts from a procfs mounted at `proc`, probing the epoll symbols and `extra_symbols`.
pub fn describe_from(proc: &Path, extra_symbols: &[String]) -> Result<NodeFacts, Error> {
    let names = probed_names(extra_symbols);
    let read = |relative: &str| {
        let path = proc.join(relative);
        std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
    };
    let cpuinfo = read("cpuinfo")?;
    let (cpu_model, logical_cpus) = parse_cpuinfo(&cpuinfo);
    let kernel_symbols = match read("kallsyms") {
        Ok(kallsyms) => probe_symbols(&kallsyms, &names),
        Err(error) => {
            tracing::warn!(error = %error, "kernel symbols unknown");
            names
                .iter()
                .map(|name| (name.to_string(), Presence::Unknown))
                .collect()
        }
    };
    Ok(NodeFacts {
        hostname: read("sys/kernel/hostname")?.trim().to_string(),
        kernel_release: read("sys/kernel/osrelease")?.trim().to_string(),
        kernel_version: read("sys/kernel/version")?.trim().to_string(),
        cpu_model,
        logical_cpus,
        memory_bytes: parse_mem_total(&read("meminfo")?).unwrap_or(0),
        kernel_symbols,
        platform: read_platform(proc, &sys_beside(proc)),
    })
}

/// The number of logical CPUs, from `cpuinfo` alone (cheap enough for every target start,
/// unlike a full description, which reads all of `kallsyms`).
pub fn logical_cpus(proc: &Path) -> Result<u32, Error> {
    let path = proc.join("cpuinfo");
    let cpuinfo = std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })?;
    Ok(parse_cpuinfo(&cpuinfo).1)
}

/// The CPU model name and the number of logical CPUs listed in `/proc/cpuinfo`.
pub(crate) fn parse_cpuinfo(cpuinfo: &str) -> (String, u32) {
    let mut model = None;
    let mut processors = 0;
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => processors += 1,
            // x86 says "model name"; arm64 kernels list no model name, only "CPU part".
            "model name" | "Model" if model.is_none() => model = Some(value.trim().to_string()),
            _ => {}
        }
    }
    (model.unwrap_or_else(|| "unknown".into()), processors)
}

pub(crate) fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Which of `names` `/proc/kallsyms` lists. When every address reads as zero the kernel hides
/// them (kptr_restrict), and the listing cannot be trusted to be complete either.
pub(crate) fn probe_symbols(kallsyms: &str, names: &[&str]) -> Vec<(String, Presence)> {
    let mut found = vec![false; names.len()];
    let mut any_address = false;
    let mut any_line = false;
    let mut lists_data = false;
    for (address, kind, symbol) in crate::kallsyms::entries(kallsyms) {
        any_line = true;
        any_address |= address.bytes().any(|b| b != b'0');
        // Local (static) data symbols appear only with CONFIG_KALLSYMS_ALL; a few global
        // section markers (D, B) appear either way.
        lists_data |= matches!(kind, "d" | "b");
        if let Some(i) = names.iter().position(|name| *name == symbol) {
            found[i] = true;
        }
    }
    let trustworthy = any_line && any_address;
    names
        .iter()
        .zip(found)
        .map(|(name, found)| {
            let listable = !DATA_SYMBOLS.contains(name) || lists_data;
            let presence = match (found, trustworthy && listable) {
                (true, _) => Presence::Present,
                (false, true) => Presence::Absent,
                (false, false) => Presence::Unknown,
            };
            (name.to_string(), presence)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_gives_model_and_count() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(parse_cpuinfo(cpuinfo), ("AMD EPYC 7B13".into(), 2));
        assert_eq!(parse_cpuinfo(""), ("unknown".into(), 0));
    }

    #[test]
    fn meminfo_total_is_in_bytes() {
        assert_eq!(
            parse_mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn symbols_are_present_absent_or_unknown() {
        let visible = "ffffffff81000000 T _text\nffffffff81234560 t ep_clear_and_put\nffffffff82000000 d epnested_mutex\n";
        let code_only = "ffffffff81000000 T _text\nffffffff81234560 t ep_clear_and_put\n";
        assert_eq!(
            probe_symbols(code_only, &EPOLL_SYMBOLS)[1],
            ("epmutex".into(), Presence::Unknown),
            "without data symbols listed, a missing lock proves nothing"
        );
        assert_eq!(
            probe_symbols(visible, &EPOLL_SYMBOLS),
            vec![
                ("ep_clear_and_put".into(), Presence::Present),
                ("epmutex".into(), Presence::Absent),
                ("epnested_mutex".into(), Presence::Present),
            ]
        );
        let hidden = "0000000000000000 T _text\n0000000000000000 t ep_clear_and_put\n";
        assert_eq!(
            probe_symbols(hidden, &["ep_clear_and_put", "epmutex"]),
            vec![
                ("ep_clear_and_put".into(), Presence::Present),
                ("epmutex".into(), Presence::Unknown),
            ]
        );
    }

    #[test]
    fn module_symbols_match_by_name() {
        let with_module = "ffffffffc0000000 t epmutex\t[some_module]\n";
        assert_eq!(
            probe_symbols(with_module, &["epmutex"]),
            vec![("epmutex".into(), Presence::Present)]
        );
    }

    #[test]
    fn this_machine_describes_itself() {
        let facts = describe().unwrap();
        assert!(!facts.kernel_release.is_empty());
        assert!(facts.logical_cpus >= 1);
        assert!(facts.memory_bytes > 0);
        assert_eq!(facts.kernel_symbols.len(), EPOLL_SYMBOLS.len());
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(facts.kernel_release, release.trim());
    }

    #[test]
    fn extra_symbols_are_probed_after_the_epoll_ones_once_each() {
        let extra = vec![
            "tcp_v4_connect".to_string(),
            "epmutex".to_string(),
            "no_such_function_here".to_string(),
        ];
        assert_eq!(
            probed_names(&extra),
            [
                "ep_clear_and_put",
                "epmutex",
                "epnested_mutex",
                "tcp_v4_connect",
                "no_such_function_here"
            ]
        );
        let facts = describe_from(Path::new("/proc"), &extra).unwrap();
        let names: Vec<&str> = facts
            .kernel_symbols
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(names, probed_names(&extra));
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(
                facts.kernel_symbols[3].1,
                Presence::Present,
                "every kernel connects TCP"
            );
            assert_eq!(facts.kernel_symbols[4].1, Presence::Absent);
        }
    }

    #[test]
    fn logical_cpus_match_the_full_description() {
        let proc = Path::new("/proc");
        assert_eq!(
            logical_cpus(proc).unwrap(),
            describe_from(proc, &[]).unwrap().logical_cpus
        );
    }

    #[test]
    fn a_missing_procfs_is_a_clear_error() {
        let error = describe_from(Path::new("/nonexistent-proc"), &[]).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent-proc/cpuinfo"),
            "{error}"
        );
    }
}
