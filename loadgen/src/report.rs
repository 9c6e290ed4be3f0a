//! What a storm measured: counts, error kinds, latency histograms and a per-second timeline.
//! Reports from several generators (or workers) merge exactly.

use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

use crate::outcome::ErrorCounts;

/// Latencies are recorded in microseconds with three significant digits.
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram that grows to fit what it records.
pub fn latency_histogram() -> Histogram<u64> {
    // Cannot fail: three significant digits are within the supported range.
    Histogram::new(SIGNIFICANT_DIGITS).unwrap_or_else(|_| unreachable!())
}

#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("cannot encode a latency histogram: {0:?}")]
    Encode(hdrhistogram::serialization::V2SerializeError),
    #[error("cannot decode a latency histogram: {0:?}")]
    Decode(hdrhistogram::serialization::DeserializeError),
    #[error("cannot merge latency histograms: {0:?}")]
    Merge(hdrhistogram::AdditionError),
}

/// Serializes a histogram in the HdrHistogram V2 format (portable across implementations).
pub fn encode_histogram(histogram: &Histogram<u64>) -> Result<Vec<u8>, HistogramError> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(histogram, &mut bytes)
        .map_err(HistogramError::Encode)?;
    Ok(bytes)
}

pub fn decode_histogram(bytes: &[u8]) -> Result<Histogram<u64>, HistogramError> {
    let mut histogram: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(HistogramError::Decode)?;
    histogram.auto(true);
    Ok(histogram)
}

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
    fn histograms_survive_encoding_exactly() {
        let mut histogram = latency_histogram();
        for v in [1, 17, 999, 1_000_001, 45_000_000] {
            histogram.record(v).unwrap();
        }
        let decoded = decode_histogram(&encode_histogram(&histogram).unwrap()).unwrap();
        assert_eq!(decoded, histogram);
        assert_eq!(
            decoded.value_at_quantile(0.5),
            histogram.value_at_quantile(0.5)
        );
    }

    #[test]
    fn garbage_is_not_a_histogram() {
        assert!(matches!(
            decode_histogram(b"not a histogram"),
            Err(HistogramError::Decode(_))
        ));
    }

    #[test]
    fn rate_is_completed_over_the_window() {
        let report = report(&[1, 2, 3, 4], 0);
        assert_eq!(report.connections_per_second(), 2.0);
        assert_eq!(StormReport::default().connections_per_second(), 0.0);
    }
}
