//! The loadlab gRPC contract (`loadlab.v1`): generated types and services, plus the few
//! conversions every side needs.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("loadlab.v1");
}

pub mod histogram;

use std::time::Duration;

impl v1::StormSpec {
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_millis(self.warmup_ms)
    }
}

/// Converts a duration to whole milliseconds, saturating instead of wrapping.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
