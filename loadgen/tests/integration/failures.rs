//! The one check every storm against a well-behaved server makes: no connection failed. When
//! some did, the message says whether the host's connection tracking was dropping packets (a
//! full table turns SYNs into connect timeouts), the usual cause on a host that runs a
//! firewall, Docker or kube-proxy.

use loadlab_agent::conntrack::ConntrackReading;
use loadlab_loadgen::StormReport;

pub fn assert_none_failed(report: &StormReport) {
    if report.failed_connections == 0 {
        return;
    }
    let tracking = match ConntrackReading::read(std::path::Path::new("/proc")) {
        Some(reading) => format!(
            "this host tracks connections: {} of {} table entries used, {} packets dropped \
             since boot for want of an entry (see dmesg for \"nf_conntrack: table full\")",
            reading.entries, reading.limit, reading.dropped
        ),
        None => "this host has no connection tracking".into(),
    };
    panic!(
        "{} connections failed: {:?}; {tracking}",
        report.failed_connections, report.errors
    );
}
