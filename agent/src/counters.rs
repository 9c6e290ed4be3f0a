//! Counters over a measured window: nginx stub_status, `/proc/net/snmp` Tcp and `/proc/stat`
//! CPU time, as snapshots and their deltas.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;
use crate::conntrack::ConntrackReading;

/// nginx's stub_status totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NginxStatus {
    pub accepts: u64,
    pub handled: u64,
    pub requests: u64,
}

/// Parses the body of an nginx stub_status page.
pub(crate) fn parse_stub_status(body: &str) -> Option<NginxStatus> {
    let mut lines = body.lines();
    lines.find(|l| l.trim() == "server accepts handled requests")?;
    let mut numbers = lines.next()?.split_whitespace().map(str::parse::<u64>);
    Some(NginxStatus {
        accepts: numbers.next()?.ok()?,
        handled: numbers.next()?.ok()?,
        requests: numbers.next()?.ok()?,
    })
}

/// How long stub_status may take. Right after a storm nginx's listen queue can still be full,
/// so the connect's SYN is dropped and sent again after 1, 3, 7 and 15 s: 5 s failed runs on a
/// loaded two-core machine ("no answer within 5 s"), and emulated guests are slower still.
const STUB_STATUS_PATIENCE: Duration = Duration::from_secs(30);

/// Why stub_status did not answer, as far as this node can tell: a full connection tracking
/// table drops every new connection's SYN, the status request's too.
fn unanswered(conntrack: Option<ConntrackReading>) -> String {
    let waited = format!("no answer within {} s", STUB_STATUS_PATIENCE.as_secs());
    match conntrack {
        Some(table) if table.limit > 0 && table.entries >= table.limit => format!(
            "{waited}; this node's connection tracking table is full ({} of {} entries), so \
             new connections' first packets are dropped: raise net.netfilter.nf_conntrack_max \
             or stop tracking the target's connections",
            table.entries, table.limit
        ),
        _ => waited,
    }
}

/// Fetches `/stub_status` from an nginx target. This is itself one connection and one request
/// to the target, which `NginxStatus` counts.
pub async fn fetch_stub_status(endpoint: SocketAddr) -> Result<NginxStatus, Error> {
    let fetch = async {
        let mut stream = TcpStream::connect(endpoint).await?;
        stream
            .write_all(b"GET /stub_status HTTP/1.1\r\nHost: loadlab\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::with_capacity(512);
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(STUB_STATUS_PATIENCE, fetch)
        .await
        .map_err(|_| Error::StubStatus {
            endpoint,
            reason: unanswered(ConntrackReading::read(Path::new("/proc"))),
        })?
        .map_err(|e| Error::StubStatus {
            endpoint,
            reason: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(Error::StubStatus {
            endpoint,
            reason: format!(
                "unexpected response {:?}",
                head.lines().next().unwrap_or("")
            ),
        });
    }
    parse_stub_status(body).ok_or_else(|| Error::StubStatus {
        endpoint,
        reason: "the page does not look like stub_status".into(),
    })
}

/// The `Tcp:` counters of `/proc/net/snmp` that a connection storm moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpCounters {
    pub active_opens: u64,
    pub passive_opens: u64,
    pub attempt_fails: u64,
    pub estab_resets: u64,
    pub out_rsts: u64,
}

impl TcpCounters {
    pub fn since(&self, earlier: &TcpCounters) -> TcpCounters {
        TcpCounters {
            active_opens: self.active_opens.saturating_sub(earlier.active_opens),
            passive_opens: self.passive_opens.saturating_sub(earlier.passive_opens),
            attempt_fails: self.attempt_fails.saturating_sub(earlier.attempt_fails),
            estab_resets: self.estab_resets.saturating_sub(earlier.estab_resets),
            out_rsts: self.out_rsts.saturating_sub(earlier.out_rsts),
        }
    }
}

/// Parses the `Tcp:` header and value lines of `/proc/net/snmp`.
pub(crate) fn parse_snmp_tcp(snmp: &str) -> Option<TcpCounters> {
    let mut tcp_lines = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let names = tcp_lines.next()?.split_whitespace().skip(1);
    let values = tcp_lines.next()?.split_whitespace().skip(1);
    let mut counters = TcpCounters::default();
    for (name, value) in names.zip(values) {
        // Some Tcp fields (MaxConn) are -1; none of the ones kept here are.
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match name {
            "ActiveOpens" => counters.active_opens = value,
            "PassiveOpens" => counters.passive_opens = value,
            "AttemptFails" => counters.attempt_fails = value,
            "EstabResets" => counters.estab_resets = value,
            "OutRsts" => counters.out_rsts = value,
            _ => {}
        }
    }
    Some(counters)
}

/// Aggregate CPU time from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    /// Ticks some task or interrupt used: neither idle nor stolen.
    pub fn busy_ticks(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq
    }

    fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }

    /// Shares of all CPU time between `earlier` and `self`.
    pub(crate) fn shares_since(&self, earlier: &CpuTimes) -> CpuShares {
        let total = self.total().saturating_sub(earlier.total());
        if total == 0 {
            return CpuShares::default();
        }
        let share = |now: u64, then: u64| now.saturating_sub(then) as f64 / total as f64;
        let idle = share(self.idle + self.iowait, earlier.idle + earlier.iowait);
        let steal = share(self.steal, earlier.steal);
        CpuShares {
            // Stolen time is not this machine's work: it is not busy.
            busy: 1.0 - idle - steal,
            user: share(self.user + self.nice, earlier.user + earlier.nice),
            system: share(self.system + self.irq, earlier.system + earlier.irq),
            softirq: share(self.softirq, earlier.softirq),
            steal,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CpuShares {
    pub busy: f64,
    pub user: f64,
    pub system: f64,
    pub softirq: f64,
    /// Time the hypervisor gave to others while this machine had work.
    pub steal: f64,
}

pub fn parse_proc_stat(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let mut values = line.split_whitespace().skip(1).map(str::parse::<u64>);
    let mut next = || values.next().and_then(Result::ok);
    Some(CpuTimes {
        user: next()?,
        nice: next()?,
        system: next()?,
        idle: next()?,
        iowait: next()?,
        irq: next()?,
        softirq: next()?,
        steal: next().unwrap_or(0),
    })
}

/// Node-wide counters read together.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeCounters {
    pub tcp: TcpCounters,
    pub cpu: CpuTimes,
}

pub(crate) fn read_node_counters(proc: &Path) -> Result<NodeCounters, Error> {
    let read = |relative: &str| {
        let path = proc.join(relative);
        std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
    };
    let malformed = |what: &str| Error::Malformed(format!("{}/{what}", proc.display()));
    Ok(NodeCounters {
        tcp: parse_snmp_tcp(&read("net/snmp")?).ok_or_else(|| malformed("net/snmp"))?,
        cpu: parse_proc_stat(&read("stat")?).ok_or_else(|| malformed("stat"))?,
    })
}

/// Clock ticks per second in `/proc/<pid>/stat` (USER_HZ): 100 on every Linux architecture
/// loadlab runs on, whatever the kernel's own HZ.
pub(crate) const USER_HZ: u64 = 100;

/// CPU time (user + system) the processes have used, in ticks of [`USER_HZ`]; a process gone
/// meanwhile adds nothing.
pub fn processes_cpu_ticks(proc: &Path, pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok())
        .filter_map(|stat| process_cpu_ticks(&stat))
        .sum()
}

/// utime + stime of one `/proc/<pid>/stat` line (fields 14 and 15; the command name, which may
/// hold spaces and parentheses, ends at the last ')').
pub(crate) fn process_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_cpu_time_is_user_plus_system() {
        // `cat /proc/self/stat` of a process named with a space and a parenthesis.
        let stat = "4242 (nginx: w (x)) S 1 4242 4242 0 -1 4194560 300 0 0 0 125 37 0 0 20 0 1 0 \
                    100 10000000 500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(process_cpu_ticks(stat), Some(162));
        assert_eq!(process_cpu_ticks("garbage"), None);
        // This process has used some CPU; a pid that does not exist adds nothing.
        let me = std::process::id();
        assert!(processes_cpu_ticks(Path::new("/proc"), &[me, u32::MAX]) < u64::MAX);
        assert_eq!(processes_cpu_ticks(Path::new("/proc"), &[u32::MAX]), 0);
    }

    #[test]
    fn an_unanswered_status_names_a_full_connection_tracking_table() {
        let table = |entries| ConntrackReading {
            entries,
            limit: 4000,
            dropped: 0,
        };
        let full = unanswered(Some(table(4000)));
        assert!(
            full.starts_with("no answer within 30 s; ") && full.contains("(4000 of 4000 entries)"),
            "{full}"
        );
        assert_eq!(unanswered(Some(table(3999))), "no answer within 30 s");
        assert_eq!(unanswered(None), "no answer within 30 s");
    }

    #[test]
    fn stub_status_page_parses() {
        let page = "Active connections: 1 \nserver accepts handled requests\n 17 16 15 \nReading: 0 Writing: 1 Waiting: 0 \n";
        assert_eq!(
            parse_stub_status(page),
            Some(NginxStatus {
                accepts: 17,
                handled: 16,
                requests: 15
            })
        );
        assert_eq!(parse_stub_status("<html>welcome</html>"), None);
    }

    #[test]
    fn snmp_tcp_counters_parse() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\nTcp: 1 200 120000 -1 1000 990 3 2 5 100 100 0 0 7 0\n";
        assert_eq!(
            parse_snmp_tcp(snmp),
            Some(TcpCounters {
                active_opens: 1000,
                passive_opens: 990,
                attempt_fails: 3,
                estab_resets: 2,
                out_rsts: 7
            })
        );
        assert_eq!(parse_snmp_tcp("Ip: 1\n"), None);
    }

    #[test]
    fn cpu_shares_come_from_tick_deltas() {
        let before = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        let after = parse_proc_stat("cpu  140 0 70 830 50 0 10 0 0 0\n").unwrap();
        let shares = after.shares_since(&before);
        assert!((shares.busy - 0.7).abs() < 1e-9, "{shares:?}");
        assert!((shares.user - 0.4).abs() < 1e-9);
        assert!((shares.system - 0.2).abs() < 1e-9);
        assert!((shares.softirq - 0.1).abs() < 1e-9);
        assert_eq!(before.shares_since(&before), CpuShares::default());
    }

    #[test]
    fn this_machine_has_tcp_and_cpu_counters() {
        let counters = read_node_counters(Path::new("/proc")).unwrap();
        assert!(counters.cpu.idle > 0);
    }
}
