//! Latency histograms on the wire: HdrHistogram V2, so summaries from several generators merge
//! exactly and any HdrHistogram implementation can read them.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// Latencies are recorded in microseconds with three significant digits.
pub(crate) const SIGNIFICANT_DIGITS: u8 = 3;

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
    #[error("not a loadlab latency histogram: {0}")]
    Refused(String),
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

/// The V2 header: cookie, payload length, normalizing offset, significant digits (u32 each),
/// lowest and highest trackable value (u64 each), conversion ratio (f64), all big-endian.
const V2_HEADER_BYTES: usize = 40;
const V2_COOKIE: u32 = 0x1c84_9313;
/// Far above any latency a storm (at most an hour) can record, and small enough that the
/// counts array it implies stays in kilobytes.
pub(crate) const MAX_TRACKABLE_US: u64 = 1 << 40;

/// Decodes what `encode_histogram` wrote. The header is checked before the decoder sees it:
/// the decoder allocates what the header claims (a payload of up to 4 GiB, a counts array for
/// any range and precision), so a 40-byte header could make it take gigabytes.
pub fn decode_histogram(bytes: &[u8]) -> Result<Histogram<u64>, HistogramError> {
    check_header(bytes)?;
    let mut histogram: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(HistogramError::Decode)?;
    histogram.auto(true);
    Ok(histogram)
}

fn check_header(bytes: &[u8]) -> Result<(), HistogramError> {
    let refused = |why: String| Err(HistogramError::Refused(why));
    let Some(header) = bytes.get(..V2_HEADER_BYTES) else {
        return refused(format!(
            "{} bytes, shorter than the {V2_HEADER_BYTES}-byte V2 header",
            bytes.len()
        ));
    };
    let u32_at = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let u64_at = |at: usize| (u64::from(u32_at(at)) << 32) | u64::from(u32_at(at + 4));
    if u32_at(0) != V2_COOKIE {
        return refused(format!("cookie {:#x} is not HdrHistogram V2's", u32_at(0)));
    }
    let payload = u32_at(4) as usize;
    if payload != bytes.len() - V2_HEADER_BYTES {
        return refused(format!(
            "the header claims a {payload}-byte payload, {} bytes follow",
            bytes.len() - V2_HEADER_BYTES
        ));
    }
    let digits = u32_at(12);
    if digits != u32::from(SIGNIFICANT_DIGITS) {
        return refused(format!(
            "{digits} significant digits; loadlab records {SIGNIFICANT_DIGITS}"
        ));
    }
    let highest = u64_at(24);
    if highest > MAX_TRACKABLE_US {
        return refused(format!(
            "highest trackable value {highest} µs is above {MAX_TRACKABLE_US}"
        ));
    }
    Ok(())
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
            Err(HistogramError::Refused(_))
        ));
    }

    /// A real histogram's bytes with one header field replaced.
    fn with_field(at: usize, value: &[u8]) -> Vec<u8> {
        let mut histogram = latency_histogram();
        histogram.record(1_234).unwrap();
        let mut bytes = encode_histogram(&histogram).unwrap();
        bytes[at..at + value.len()].copy_from_slice(value);
        bytes
    }

    #[test]
    fn a_header_that_claims_more_than_follows_is_refused() {
        for (at, value, why) in [
            (4, &u32::MAX.to_be_bytes()[..], "payload"),
            (12, &5u32.to_be_bytes()[..], "significant digits"),
            (24, &(u64::MAX / 2).to_be_bytes()[..], "highest trackable"),
            (0, &0u32.to_be_bytes()[..], "cookie"),
        ] {
            match decode_histogram(&with_field(at, value)) {
                Err(HistogramError::Refused(message)) => {
                    assert!(message.contains(why), "{message}")
                }
                other => panic!("{why}: {other:?}"),
            }
        }
    }
}
