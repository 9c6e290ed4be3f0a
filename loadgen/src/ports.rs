//! Source-port pressure on the generator's host: how many sockets sit in TIME_WAIT against how
//! many ephemeral ports there are. A storm reports it rather than slowing down silently when
//! the kernel runs short of ports.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPressure {
    /// Sockets in TIME_WAIT in this network namespace (both ends of loopback connections).
    pub time_wait: u64,
    /// Size of `net.ipv4.ip_local_port_range`.
    pub ephemeral_ports: u64,
}

impl PortPressure {
    /// True when TIME_WAIT sockets could hold half the ephemeral ports: new connections from
    /// one source address to one target are then close to failing with EADDRNOTAVAIL.
    pub fn is_high(&self) -> bool {
        self.time_wait * 2 >= self.ephemeral_ports
    }
}

pub(crate) fn read_port_pressure() -> Option<PortPressure> {
    read_from(Path::new("/proc"))
}

fn read_from(proc: &Path) -> Option<PortPressure> {
    let sockstat = std::fs::read_to_string(proc.join("net/sockstat")).ok()?;
    let range = std::fs::read_to_string(proc.join("sys/net/ipv4/ip_local_port_range")).ok()?;
    Some(PortPressure {
        time_wait: parse_time_wait(&sockstat)?,
        ephemeral_ports: parse_port_range(&range)?,
    })
}

/// The `tw` figure of the `TCP:` line of `/proc/net/sockstat`.
pub(crate) fn parse_time_wait(sockstat: &str) -> Option<u64> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut fields = line.split_whitespace().skip(1);
    while let Some(name) = fields.next() {
        let value = fields.next()?;
        if name == "tw" {
            return value.parse().ok();
        }
    }
    None
}

pub(crate) fn parse_port_range(range: &str) -> Option<u64> {
    let mut bounds = range.split_whitespace().map(str::parse::<u64>);
    let (low, high) = (bounds.next()?.ok()?, bounds.next()?.ok()?);
    Some(high.saturating_sub(low) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockstat_and_port_range_parse() {
        let sockstat =
            "sockets: used 120\nTCP: inuse 5 orphan 0 tw 14074 alloc 7 mem 1\nUDP: inuse 1 mem 0\n";
        assert_eq!(parse_time_wait(sockstat), Some(14074));
        assert_eq!(parse_time_wait("UDP: inuse 1\n"), None);
        assert_eq!(parse_port_range("32768\t60999\n"), Some(28232));
        assert_eq!(parse_port_range("x"), None);
    }

    #[test]
    fn pressure_is_high_from_half_the_ports() {
        let pressure = |time_wait| PortPressure {
            time_wait,
            ephemeral_ports: 100,
        };
        assert!(!pressure(49).is_high());
        assert!(pressure(50).is_high());
    }

    #[test]
    fn this_machine_reports_its_ports() {
        let pressure = read_port_pressure().expect("procfs readable");
        assert!(pressure.ephemeral_ports > 0);
    }
}
