//! The storm engine: a closed loop of N connection slots, each opening a new TCP connection per
//! request, until the warm-up and the measured window have passed.
//!
//! A connection belongs to the phase in which it started: connections started during warm-up are
//! counted apart, and the measured window runs from its start to the end of the last connection
//! started in it, so no connection is cut off and none is counted twice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::http::{ResponseReader, close_request};
use crate::outcome::{ErrorCounts, ErrorKind};
use crate::report::{HistogramError, Latencies, StormReport};

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to storm, and for how long.
#[derive(Debug, Clone)]
pub struct StormConfig {
    pub target: SocketAddr,
    /// Host header; the target address when empty.
    pub host: String,
    pub path: String,
    /// Concurrent connections (closed loop).
    pub connections: u32,
    pub warmup: Duration,
    pub duration: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

impl StormConfig {
    pub fn new(target: SocketAddr, connections: u32, duration: Duration) -> Self {
        Self {
            target,
            host: String::new(),
            path: "/".into(),
            connections,
            warmup: Duration::ZERO,
            duration,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }

    pub fn validate(&self) -> Result<(), StormError> {
        if self.connections == 0 {
            return Err(StormError::Invalid("connections must be at least 1".into()));
        }
        if self.duration.is_zero() {
            return Err(StormError::Invalid("duration must be positive".into()));
        }
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(StormError::Invalid("timeouts must be positive".into()));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StormError {
    #[error("invalid storm: {0}")]
    Invalid(String),
    #[error(transparent)]
    Histogram(#[from] HistogramError),
    #[error("a storm worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// A look at a running storm, taken about once per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub elapsed: Duration,
    pub in_warmup: bool,
    /// Totals so far in the current phase.
    pub completed: u64,
    pub failed: u64,
}

/// Counters shared between the connection slots and the progress reporter: two atomics per
/// phase, touched once per connection.
#[derive(Debug, Default)]
struct LiveCounts {
    warmup_completed: AtomicU64,
    warmup_failed: AtomicU64,
    measured_completed: AtomicU64,
    measured_failed: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// Runs a storm to its end (or until `cancel`), calling `on_progress` about once per second.
pub async fn run_storm(
    config: &StormConfig,
    cancel: CancellationToken,
    mut on_progress: impl FnMut(Progress) + Send,
) -> Result<StormReport, StormError> {
    config.validate()?;
    let host = if config.host.is_empty() {
        config.target.to_string()
    } else {
        config.host.clone()
    };
    let request: Arc<[u8]> = close_request(&host, &config.path).into();
    let start = Instant::now();
    let clock = Clock {
        start,
        measure_from: start + config.warmup,
        end: start + config.warmup + config.duration,
    };
    let live = Arc::new(LiveCounts::default());
    let mut slots = JoinSet::new();
    for _ in 0..config.connections {
        let slot = Slot {
            target: config.target,
            request: request.clone(),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            clock,
            live: live.clone(),
            cancel: cancel.clone(),
        };
        slots.spawn(slot.run());
    }

    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut report = StormReport::default();
    let mut last_end = clock.measure_from;
    loop {
        tokio::select! {
            joined = slots.join_next() => {
                let Some(joined) = joined else { break };
                let (slot_report, slot_last_end) = joined?;
                report.merge(&slot_report)?;
                last_end = last_end.max(slot_last_end);
            }
            now = ticker.tick() => {
                let in_warmup = now < clock.measure_from;
                let (completed, failed) = if in_warmup {
                    (&live.warmup_completed, &live.warmup_failed)
                } else {
                    (&live.measured_completed, &live.measured_failed)
                };
                on_progress(Progress {
                    elapsed: now - clock.start,
                    in_warmup,
                    completed: completed.load(Ordering::Relaxed),
                    failed: failed.load(Ordering::Relaxed),
                });
            }
        }
    }
    report.window = last_end.saturating_duration_since(clock.measure_from);
    Ok(report)
}

/// One connection slot of the closed loop: connects, exchanges one request, closes, repeats.
struct Slot {
    target: SocketAddr,
    request: Arc<[u8]>,
    connect_timeout: Duration,
    response_timeout: Duration,
    clock: Clock,
    live: Arc<LiveCounts>,
    cancel: CancellationToken,
}

/// Timings of one successful connection, from the moment its connect began.
struct Timings {
    connect: Duration,
    first_byte: Duration,
    total: Duration,
}

impl Slot {
    async fn run(self) -> (StormReport, Instant) {
        let mut report = StormReport::default();
        let mut latencies = Latencies::default();
        let mut errors = ErrorCounts::default();
        let mut reader = ResponseReader::default();
        let mut buffer = vec![0u8; 16 * 1024];
        let mut last_end = self.clock.measure_from;
        loop {
            let started = Instant::now();
            if started >= self.clock.end || self.cancel.is_cancelled() {
                break;
            }
            let outcome = self.connection(&mut reader, &mut buffer, started).await;
            let ended = Instant::now();
            if started < self.clock.measure_from {
                report.warmup_connections += 1;
                let counter = match outcome {
                    Ok(_) => &self.live.warmup_completed,
                    Err(_) => &self.live.warmup_failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            last_end = last_end.max(ended);
            match outcome {
                Ok((timings, bytes)) => {
                    report.completed_connections += 1;
                    report.bytes_received += bytes;
                    record(&mut latencies.connect, timings.connect);
                    record(&mut latencies.first_byte, timings.first_byte);
                    record(&mut latencies.total, timings.total);
                    let second = (started - self.clock.measure_from).as_secs() as usize;
                    if report.completed_per_second.len() <= second {
                        report.completed_per_second.resize(second + 1, 0);
                    }
                    report.completed_per_second[second] += 1;
                    self.live.measured_completed.fetch_add(1, Ordering::Relaxed);
                }
                Err(kind) => {
                    report.failed_connections += 1;
                    errors.add(kind, 1);
                    self.live.measured_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        report.latencies = latencies;
        report.errors = errors;
        (report, last_end)
    }

    async fn connection(
        &self,
        reader: &mut ResponseReader,
        buffer: &mut [u8],
        started: Instant,
    ) -> Result<(Timings, u64), ErrorKind> {
        let mut stream = match timeout(self.connect_timeout, TcpStream::connect(self.target)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(ErrorKind::of_connect(&error)),
            Err(_) => return Err(ErrorKind::ConnectTimeout),
        };
        let connect = started.elapsed();
        // Small request, one write: no reason to wait for Nagle.
        let _ = stream.set_nodelay(true);
        reader.reset();
        let exchange = async {
            stream.write_all(&self.request).await?;
            let mut first_byte = None;
            let mut bytes = 0u64;
            loop {
                let n = stream.read(buffer).await?;
                if n == 0 {
                    break;
                }
                first_byte.get_or_insert_with(|| started.elapsed());
                bytes += n as u64;
                reader.feed(&buffer[..n]);
            }
            Ok::<_, std::io::Error>((first_byte, bytes))
        };
        let (first_byte, bytes) = match timeout(self.response_timeout, exchange).await {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => return Err(ErrorKind::of_exchange(&error)),
            Err(_) => return Err(ErrorKind::ResponseTimeout),
        };
        reader.finish().map_err(ErrorKind::of_response)?;
        let total = started.elapsed();
        Ok((
            Timings {
                connect,
                first_byte: first_byte.unwrap_or(total),
                total,
            },
            bytes,
        ))
    }
}

fn record(histogram: &mut hdrhistogram::Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    // Auto-resizing histograms grow to fit any value; `record` fails only if growing would
    // overflow usize. (`saturating_record` would clamp to the current size instead of growing.)
    let _ = histogram.record(micros);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::latency_histogram;

    #[test]
    fn slow_connections_are_recorded_at_their_true_latency() {
        let mut histogram = latency_histogram();
        record(&mut histogram, Duration::from_micros(300));
        record(&mut histogram, Duration::from_secs(7));
        record(&mut histogram, Duration::ZERO);
        assert_eq!(histogram.len(), 3);
        assert!(histogram.max() >= 6_990_000, "max {}", histogram.max());
        assert!(histogram.min() >= 1);
        assert!((299..=301).contains(&histogram.value_at_quantile(0.5)));
    }
}
