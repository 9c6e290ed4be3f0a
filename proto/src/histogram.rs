//! Latency histograms on the wire: HdrHistogram V2, so summaries from several generators merge
//! exactly and any HdrHistogram implementation can read them.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
