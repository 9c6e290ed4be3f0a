//! What a storm measured: counts, error kinds, latency histograms and a per-second timeline.
//! Reports from several generators (or workers) merge exactly.

use std::time::Duration;

use hdrhistogram::Histogram;
pub use loadlab_proto::histogram::{
    HistogramError, decode_histogram, encode_histogram, latency_histogram,
};

use crate::outcome::ErrorCounts;
use crate::ports::PortPressure;

/// Latency histograms of the measured window, in microseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    /// From starting the connect to the connection being established.
    pub connect: Histogram<u64>,
    /// From starting the connect to the first response byte.
    pub first_byte: Histogram<u64>,
    /// From starting the connect to the end of the response.
    pub total: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            connect: latency_histogram(),
            first_byte: latency_histogram(),
            total: latency_histogram(),
        }
    }
}

impl Latencies {
    pub fn merge(&mut self, other: &Latencies) -> Result<(), HistogramError> {
        self.connect
            .add(&other.connect)
            .map_err(HistogramError::Merge)?;
        self.first_byte
            .add(&other.first_byte)
            .map_err(HistogramError::Merge)?;
        self.total
            .add(&other.total)
            .map_err(HistogramError::Merge)?;
        Ok(())
    }
}

/// The result of one storm.
#[derive(Debug, Clone, Default)]
pub struct StormReport {
    /// Connections started in the measured window that completed with a good response.
    pub completed_connections: u64,
    /// Connections started in the measured window that failed (see `errors`).
    pub failed_connections: u64,
    /// Connections started during warm-up, whatever their outcome; not in any other figure.
    pub warmup_connections: u64,
    /// From the start of the measured window to the end of its last connection.
    pub window: Duration,
    pub errors: ErrorCounts,
    pub latencies: Latencies,
    /// Completed connections per second of the measured window.
    pub completed_per_second: Vec<u64>,
    pub bytes_received: u64,
    /// Requests answered on completed connections.
    pub completed_requests: u64,
    /// Open loop: the arrival rate asked for (summed over merged generators).
    pub offered_per_second: Option<f64>,
    /// Open loop: arrivals of the measured window that never started because the generator
    /// fell too far behind.
    pub missed_arrivals: u64,
    /// How late the storm started against a shared start time (the worst of merged reports).
    pub start_lateness: Duration,
    /// TIME_WAIT sockets and ephemeral ports on the generator's host at the storm's end (the
    /// highest pressure of merged reports).
    pub port_pressure: Option<PortPressure>,
    /// CPU time (user + system) the generator's storm threads used from the start of the
    /// measured window to their end; summed over merged reports, absent when any lacks it.
    pub cpu: Option<Duration>,
}

impl StormReport {
    pub fn connections_per_second(&self) -> f64 {
        let seconds = self.window.as_secs_f64();
        if seconds > 0.0 {
            self.completed_connections as f64 / seconds
        } else {
            0.0
        }
    }

    /// Adds another generator's report for the same window. Counts, histograms and timelines
    /// add up; the window is the longest of the two since generators start together.
    pub fn merge(&mut self, other: &StormReport) -> Result<(), HistogramError> {
        self.completed_connections += other.completed_connections;
        self.failed_connections += other.failed_connections;
        self.warmup_connections += other.warmup_connections;
        self.window = self.window.max(other.window);
        self.errors.merge(&other.errors);
        self.latencies.merge(&other.latencies)?;
        if self.completed_per_second.len() < other.completed_per_second.len() {
            self.completed_per_second
                .resize(other.completed_per_second.len(), 0);
        }
        for (mine, theirs) in self
            .completed_per_second
            .iter_mut()
            .zip(&other.completed_per_second)
        {
            *mine += theirs;
        }
        self.bytes_received += other.bytes_received;
        self.completed_requests += other.completed_requests;
        self.offered_per_second = match (self.offered_per_second, other.offered_per_second) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.missed_arrivals += other.missed_arrivals;
        self.start_lateness = self.start_lateness.max(other.start_lateness);
        self.port_pressure = match (self.port_pressure, other.port_pressure) {
            (Some(a), Some(b)) => Some(
                if b.time_wait * a.ephemeral_ports > a.time_wait * b.ephemeral_ports {
                    b
                } else {
                    a
                },
            ),
            (a, b) => a.or(b),
        };
        self.cpu = match (self.cpu, other.cpu) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::ErrorKind;

    fn report(values: &[u64], errors: u64) -> StormReport {
        let mut report = StormReport {
            completed_connections: values.len() as u64,
            failed_connections: errors,
            window: Duration::from_secs(2),
            completed_per_second: vec![values.len() as u64],
            ..StormReport::default()
        };
        report.errors.add(ErrorKind::Refused, errors);
        for &v in values {
            report.latencies.total.record(v).unwrap();
        }
        report
    }

    #[test]
    fn merged_reports_equal_one_report_of_everything() {
        let mut merged = report(&[100, 200, 300], 1);
        merged.merge(&report(&[400, 50_000], 2)).unwrap();
        let whole = report(&[100, 200, 300, 400, 50_000], 3);
        assert_eq!(merged.completed_connections, 5);
        assert_eq!(merged.errors, whole.errors);
        assert_eq!(merged.latencies.total, whole.latencies.total);
        assert_eq!(merged.completed_per_second, vec![5]);
    }

    #[test]
    fn rate_is_completed_over_the_window() {
        let report = report(&[1, 2, 3, 4], 0);
        assert_eq!(report.connections_per_second(), 2.0);
        assert_eq!(StormReport::default().connections_per_second(), 0.0);
    }
}
