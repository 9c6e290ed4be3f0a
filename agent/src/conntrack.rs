//! The kernel's connection tracking, read where it is on: every new connection takes an entry
//! (a closed one keeps it for `nf_conntrack_tcp_timeout_time_wait`, 120 s by default), and a
//! full table drops new connections' first packets, which a storm then counts as connect
//! timeouts. A host tracks connections as soon as any firewall rule or NAT table needs it
//! (kube-proxy, Docker), loopback included.

use std::path::Path;

/// One reading of this network namespace's connection tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackReading {
    /// Entries in the table now.
    pub entries: u64,
    /// The table's size (`nf_conntrack_max`).
    pub limit: u64,
    /// Packets dropped since boot because no entry could be made for them.
    pub dropped: u64,
}

impl ConntrackReading {
    /// `None` when the kernel has no connection tracking loaded.
    pub fn read(proc: &Path) -> Option<Self> {
        let number = |name: &str| -> Option<u64> {
            std::fs::read_to_string(proc.join("sys/net/netfilter").join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let statistics = std::fs::read_to_string(proc.join("net/stat/nf_conntrack")).ok()?;
        Some(Self {
            entries: number("nf_conntrack_count")?,
            limit: number("nf_conntrack_max")?,
            dropped: parse_dropped(&statistics)?,
        })
    }
}

/// The `drop` column of `/proc/net/stat/nf_conntrack` summed over its per-CPU lines (hex);
/// columns are found by the header's names, which differ between kernel versions.
pub(crate) fn parse_dropped(text: &str) -> Option<u64> {
    let mut lines = text.lines();
    let column = lines
        .next()?
        .split_whitespace()
        .position(|name| name == "drop")?;
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| u64::from_str_radix(line.split_whitespace().nth(column)?, 16).ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATISTICS: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00015097  00000000 00000000 00000000 0000006c 00000000 00000000 00000000 00000000 00000000 000002ef 00000000 00000000  00000000 00000000 00000000 00000000
00015097  00000000 00000000 00000000 000000ab 00000000 00000000 00000000 00000000 00000000 0000035c 00000000 00000000  00000000 00000000 00000000 00000000
";

    #[test]
    fn drops_are_the_drop_column_summed_over_cpus() {
        assert_eq!(parse_dropped(STATISTICS), Some(0x2ef + 0x35c));
    }

    #[test]
    fn a_header_without_a_drop_column_or_a_bad_number_reads_as_unknown() {
        assert_eq!(parse_dropped("entries found\n00000001 00000002\n"), None);
        assert_eq!(parse_dropped("entries drop\n00000001 zz\n"), None);
        assert_eq!(parse_dropped(""), None);
    }

    #[test]
    fn a_proc_without_connection_tracking_reads_as_none() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(ConntrackReading::read(empty.path()), None);
    }

    /// In a network namespace of the test's own, a firewall rule turns tracking on; the
    /// reading then counts the connections made there.
    #[test]
    fn a_namespace_that_tracks_counts_its_connections() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: a network namespace and a firewall rule need root");
            return;
        }
        let (before, after) = std::thread::spawn(|| {
            // Only this thread, and what it starts, moves to the new namespace; `/proc/net`
            // names the process's first thread's, so the reading goes through thread-self.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let run = |program: &str, args: &[&str]| {
                let status = std::process::Command::new(program).args(args).status();
                assert!(status.is_ok_and(|s| s.success()), "{program} {args:?}");
            };
            run("ip", &["link", "set", "lo", "up"]);
            run(
                "iptables",
                &[
                    "-A",
                    "OUTPUT",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "NEW",
                    "-j",
                    "ACCEPT",
                ],
            );
            let proc = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink("/proc/thread-self/net", proc.path().join("net")).unwrap();
            std::os::unix::fs::symlink("/proc/sys", proc.path().join("sys")).unwrap();
            let before = ConntrackReading::read(proc.path()).expect("tracking is on");
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap();
            for _ in 0..20 {
                let _client = std::net::TcpStream::connect(address).unwrap();
                let _server = listener.accept().unwrap();
            }
            (
                before,
                ConntrackReading::read(proc.path()).expect("tracking is on"),
            )
        })
        .join()
        .unwrap();
        assert_eq!(before.entries, 0, "a new namespace starts empty");
        assert!(after.entries >= 20, "{before:?} then {after:?}");
        assert!(after.limit > 0);
        assert_eq!(after.dropped, before.dropped, "nothing was dropped");
    }
}
