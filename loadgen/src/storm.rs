//! The storm engine: connection slots that open a new TCP connection per request (or per N
//! requests), paced closed-loop (each slot reconnects at once) or open-loop (connections start
//! on a fixed arrival schedule, and latency counts from the scheduled start, so a generator that
//! falls behind shows it instead of hiding it).
//!
//! Like wrk, the storm runs one event loop per thread (a current-thread tokio runtime each),
//! with its slots spread over the threads; nothing is allocated, locked or logged per connection.
//!
//! A connection belongs to the phase in which it was scheduled: connections of the warm-up are
//! counted apart, and the measured window runs from its start to the end of the last connection
//! scheduled in it, so no connection is cut off and none is counted twice.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinSet, LocalSet};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::http::{RequestTemplate, ResponseReader};
use crate::outcome::ErrorKind;
use crate::ports::read_port_pressure;
use crate::report::{HistogramError, StormReport};
use crate::sockopt::defer_handshake_ack;

pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub(crate) const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How far a shared start instant may lie in the future.
pub(crate) const MAX_START_DELAY: Duration = Duration::from_secs(60);
/// A request up to this size goes out in one segment on any common path (an Ethernet MSS).
const SINGLE_SEGMENT_BYTES: usize = 1400;
/// Each storm thread's read buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// How connections are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Every slot starts its next connection as soon as the previous one ends.
    Closed,
    /// Connections start at a fixed rate; the slots bound how many are in flight.
    Open { per_second: f64 },
}

/// How the generator ends each connection once its last response is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CloseMode {
    /// An orderly close: the client's FIN answers the server's, and the server, which closed
    /// first, keeps the TIME_WAIT, as with browsers and wrk.
    #[default]
    Fin,
    /// An abortive close (`SO_LINGER` 0): the client answers with a RST, so the server's
    /// socket is freed at once and keeps no TIME_WAIT. The server's own close (and with it the
    /// epoll release of the socket) is unchanged; its TCP teardown is cheaper than in a real
    /// workload, so compare kernels only under one close mode.
    Reset,
}

/// How the client finishes each TCP handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HandshakeAck {
    /// The client acknowledges the server's SYN-ACK at once, in a segment of its own, as
    /// browsers and wrk do.
    #[default]
    Separate,
    /// The client's acknowledgement rides on its first request, and its later ACKs fold into
    /// the segments it sends anyway: 8 segments per connection instead of 10 with a FIN close
    /// (measured). The server's accept and everything after it are as before, except that the
    /// request is already queued when the connection is accepted.
    WithRequest,
}

/// What to storm, and for how long.
#[derive(Debug, Clone)]
pub struct StormConfig {
    pub target: SocketAddr,
    pub request: RequestTemplate,
    /// Requests per connection: 1 is a connection storm, more is keep-alive.
    pub requests_per_connection: u32,
    /// Concurrent connection slots (closed loop), or the most in flight (open loop).
    pub connections: u32,
    pub pacing: Pacing,
    pub warmup: Duration,
    pub duration: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Source addresses used in turn; empty means the kernel picks. Several loopback addresses
    /// (127.0.0.x) multiply the source ports available towards one target.
    pub source_addrs: Vec<IpAddr>,
    /// Event-loop threads; 0 means one per CPU (of `cpus` when set).
    pub threads: usize,
    /// Run the storm's threads on these CPUs only; empty: wherever the kernel puts them.
    pub cpus: Vec<u32>,
    /// A wall-clock start shared by several generators; `None` starts at once.
    pub start_at: Option<SystemTime>,
    pub close: CloseMode,
    pub handshake_ack: HandshakeAck,
}

impl StormConfig {
    /// A closed-loop, one-request-per-connection storm of `GET /`.
    pub fn new(target: SocketAddr, connections: u32, duration: Duration) -> Self {
        Self {
            target,
            request: RequestTemplate::get(&target.to_string(), "/"),
            requests_per_connection: 1,
            connections,
            pacing: Pacing::Closed,
            warmup: Duration::ZERO,
            duration,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            source_addrs: Vec::new(),
            threads: 0,
            cpus: Vec::new(),
            start_at: None,
            close: CloseMode::Fin,
            handshake_ack: HandshakeAck::Separate,
        }
    }

    pub fn validate(&self) -> Result<(), StormError> {
        let invalid = |message: String| Err(StormError::Invalid(message));
        if self.connections == 0 {
            return invalid("connections must be at least 1".into());
        }
        if self.requests_per_connection == 0 {
            return invalid("requests per connection must be at least 1".into());
        }
        if self.duration.is_zero() {
            return invalid("duration must be positive".into());
        }
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return invalid("timeouts must be positive".into());
        }
        if let Pacing::Open { per_second } = self.pacing
            && !(per_second.is_finite() && per_second > 0.0 && per_second <= 10_000_000.0)
        {
            return invalid(format!(
                "rate must be between 0 and 10,000,000 connections/s, got {per_second}"
            ));
        }
        if let Some(cpu) = self
            .cpus
            .iter()
            .find(|cpu| **cpu as usize >= CpuSet::count())
        {
            return invalid(format!(
                "CPU {cpu} is beyond the {} this system can address",
                CpuSet::count()
            ));
        }
        if let Some(address) = self
            .source_addrs
            .iter()
            .find(|a| a.is_ipv4() != self.target.is_ipv4())
        {
            return invalid(format!(
                "source address {address} is not of the target's family"
            ));
        }
        self.request.validate().map_err(StormError::Invalid)
    }

    fn thread_count(&self) -> usize {
        let threads = if self.threads == 0 && !self.cpus.is_empty() {
            self.cpus.len()
        } else if self.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.threads
        };
        threads.clamp(1, self.connections as usize)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StormError {
    #[error("invalid storm: {0}")]
    Invalid(String),
    #[error(transparent)]
    Histogram(#[from] HistogramError),
    #[error("cannot start a storm thread: {0}")]
    Thread(String),
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

/// Counters shared by the slots and the progress reporter: touched once per connection.
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
    /// Open loop: no arrival starts later than this, however far behind the generator is.
    give_up: Instant,
}

/// What every slot of a storm shares.
struct Shared {
    target: SocketAddr,
    keep_alive_request: Box<[u8]>,
    last_request: Box<[u8]>,
    requests_per_connection: u32,
    connect_timeout: Duration,
    response_timeout: Duration,
    source_addrs: Box<[IpAddr]>,
    close: CloseMode,
    handshake_ack: HandshakeAck,
    /// Requests long enough to span segments need Nagle off; shorter ones never wait for it
    /// (each is one write, sent when nothing of the connection is unacknowledged).
    nodelay: bool,
    clock: Clock,
    /// Open loop: the arrival interval and the next arrival's index.
    interval: Option<Duration>,
    next_arrival: AtomicU64,
    cancel: CancellationToken,
}

impl Shared {
    /// When the slot's next connection is scheduled to start, or `None` when the storm is over
    /// for this slot. Closed loop: now. Open loop: the next free arrival.
    fn next_start(&self) -> Option<Instant> {
        if self.cancel.is_cancelled() {
            return None;
        }
        let now = Instant::now();
        match self.interval {
            None => {
                let at = now.max(self.clock.start);
                (at < self.clock.end).then_some(at)
            }
            Some(interval) => {
                if now >= self.clock.give_up {
                    return None;
                }
                let index = self.next_arrival.fetch_add(1, Ordering::Relaxed);
                let at = self.clock.start + interval.mul_f64(index as f64);
                (at < self.clock.end).then_some(at)
            }
        }
    }
}

/// Runs a storm to its end (or until `cancel`), calling `on_progress` about once per second.
pub async fn run_storm(
    config: &StormConfig,
    cancel: CancellationToken,
    mut on_progress: impl FnMut(Progress) + Send,
) -> Result<StormReport, StormError> {
    config.validate()?;
    let mut start_lateness = Duration::ZERO;
    let start = match config.start_at {
        None => Instant::now(),
        Some(at) => {
            let now = SystemTime::now();
            start_lateness = now.duration_since(at).unwrap_or(Duration::ZERO);
            let delay = at.duration_since(now).unwrap_or(Duration::ZERO);
            if delay > MAX_START_DELAY {
                return Err(StormError::Invalid(format!(
                    "the start time is {} s away; at most {} s is allowed",
                    delay.as_secs(),
                    MAX_START_DELAY.as_secs()
                )));
            }
            Instant::now() + delay
        }
    };
    let end = start + config.warmup + config.duration;
    let interval = match config.pacing {
        Pacing::Closed => None,
        Pacing::Open { per_second } => Some(Duration::from_secs_f64(1.0 / per_second)),
    };
    let keep_alive_request: Box<[u8]> = config.request.render(false).into();
    let last_request: Box<[u8]> = config.request.render(true).into();
    let nodelay = keep_alive_request.len().max(last_request.len()) > SINGLE_SEGMENT_BYTES;
    let shared = Arc::new(Shared {
        target: config.target,
        keep_alive_request,
        last_request,
        requests_per_connection: config.requests_per_connection,
        connect_timeout: config.connect_timeout,
        response_timeout: config.response_timeout,
        source_addrs: config.source_addrs.clone().into(),
        close: config.close,
        handshake_ack: config.handshake_ack,
        nodelay,
        clock: Clock {
            start,
            measure_from: start + config.warmup,
            end,
            give_up: end + (config.duration / 10).max(Duration::from_secs(1)),
        },
        interval,
        next_arrival: AtomicU64::new(0),
        cancel,
    });

    let threads = config.thread_count();
    let cpus = cpu_set(&config.cpus)?;
    let mut results = Vec::with_capacity(threads);
    let mut live_counts = Vec::with_capacity(threads);
    for thread in 0..threads {
        // Spread the slots evenly: the first threads take one more when it does not divide.
        let slots = config.connections as usize / threads
            + usize::from(thread < config.connections as usize % threads);
        let (sender, receiver) = oneshot::channel();
        let shared = shared.clone();
        let live = Arc::new(LiveCounts::default());
        live_counts.push(live.clone());
        std::thread::Builder::new()
            .name(format!("storm-{thread}"))
            .spawn(move || {
                let pinned = match cpus {
                    Some(cpus) => sched_setaffinity(Pid::from_raw(0), &cpus)
                        .map_err(|e| StormError::Thread(format!("cannot pin to its CPUs: {e}"))),
                    None => Ok(()),
                };
                let _ = sender.send(pinned.and_then(|()| run_thread(shared, live, slots)));
            })
            .map_err(|e| StormError::Thread(e.to_string()))?;
        results.push(receiver);
    }

    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut report = StormReport::default();
    let mut cpu = Some(Duration::ZERO);
    let mut last_end = shared.clock.measure_from;
    let mut pending = results.into_iter();
    let mut current = pending.next();
    while let Some(receiver) = current.as_mut() {
        tokio::select! {
            finished = receiver => {
                let (thread_report, thread_last_end) = finished
                    .map_err(|_| StormError::Thread("a storm thread stopped unexpectedly".into()))??;
                report.merge(&thread_report)?;
                cpu = cpu.zip(thread_report.cpu).map(|(sum, thread)| sum + thread);
                last_end = last_end.max(thread_last_end);
                current = pending.next();
            }
            now = ticker.tick() => {
                let in_warmup = now < shared.clock.measure_from;
                let sum = |pick: fn(&LiveCounts) -> &AtomicU64| {
                    live_counts.iter().map(|live| pick(live).load(Ordering::Relaxed)).sum()
                };
                let (completed, failed) = if in_warmup {
                    (sum(|l| &l.warmup_completed), sum(|l| &l.warmup_failed))
                } else {
                    (sum(|l| &l.measured_completed), sum(|l| &l.measured_failed))
                };
                on_progress(Progress {
                    elapsed: now - shared.clock.start,
                    in_warmup,
                    completed,
                    failed,
                });
            }
        }
    }
    report.window = last_end.saturating_duration_since(shared.clock.measure_from);
    report.cpu = cpu;
    report.start_lateness = start_lateness;
    report.port_pressure = read_port_pressure();
    if let Some(interval) = interval {
        let arrivals_before =
            |t: Instant| (t - shared.clock.start).as_secs_f64() / interval.as_secs_f64();
        let offered = (arrivals_before(shared.clock.end).ceil()
            - arrivals_before(shared.clock.measure_from).ceil()) as u64;
        report.offered_per_second = Some(1.0 / interval.as_secs_f64());
        report.missed_arrivals =
            offered.saturating_sub(report.completed_connections + report.failed_connections);
    }
    Ok(report)
}

/// One storm thread: a current-thread runtime driving its share of the slots. The slots of a
/// thread record into one shared recorder: they never run at the same time, so a `RefCell`
/// suffices, and one set of histograms per thread keeps memory flat as slots grow.
fn run_thread(
    shared: Arc<Shared>,
    live: Arc<LiveCounts>,
    slots: usize,
) -> Result<(StormReport, Instant), StormError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StormError::Thread(e.to_string()))?;
    let recorder = Rc::new(RefCell::new(Recorder {
        report: StormReport::default(),
        last_end: shared.clock.measure_from,
    }));
    let buffer = Rc::new(RefCell::new(
        vec![0u8; READ_BUFFER_BYTES].into_boxed_slice(),
    ));
    let local = LocalSet::new();
    let cpu_at_measure_from = Rc::new(Cell::new(None));
    local.block_on(&runtime, async {
        let clock_in = {
            let cpu_at_measure_from = cpu_at_measure_from.clone();
            let measure_from = shared.clock.measure_from;
            tokio::task::spawn_local(async move {
                tokio::time::sleep_until(measure_from).await;
                cpu_at_measure_from.set(thread_cpu_time());
            })
        };
        let mut tasks = JoinSet::new();
        for _ in 0..slots {
            let slot = Slot::new(
                shared.clone(),
                live.clone(),
                recorder.clone(),
                buffer.clone(),
            );
            tasks.spawn_local(slot.run());
        }
        while let Some(joined) = tasks.join_next().await {
            joined.map_err(|e| StormError::Thread(e.to_string()))?;
        }
        clock_in.abort();
        Ok::<_, StormError>(())
    })?;
    let mut report = recorder.borrow().report.clone();
    report.cpu = cpu_at_measure_from
        .get()
        .zip(thread_cpu_time())
        .map(|(from, to)| to.saturating_sub(from));
    Ok((report, recorder.borrow().last_end))
}

/// The storm threads' CPUs, `None` for any.
fn cpu_set(cpus: &[u32]) -> Result<Option<CpuSet>, StormError> {
    if cpus.is_empty() {
        return Ok(None);
    }
    let mut set = CpuSet::new();
    for cpu in cpus {
        set.set(*cpu as usize)
            .map_err(|_| StormError::Invalid(format!("CPU {cpu} cannot be addressed")))?;
    }
    Ok(Some(set))
}

/// CPU time (user + system) the kernel's rusage gives for `who`: this thread
/// (`RUSAGE_THREAD`) or this whole process (`RUSAGE_SELF`).
pub fn cpu_time(who: UsageWho) -> Option<Duration> {
    let usage = getrusage(who).ok()?;
    let duration = |t: TimeVal| {
        Some(
            Duration::from_secs(u64::try_from(t.tv_sec()).ok()?)
                + Duration::from_micros(u64::try_from(t.tv_usec()).ok()?),
        )
    };
    Some(duration(usage.user_time())? + duration(usage.system_time())?)
}

fn thread_cpu_time() -> Option<Duration> {
    cpu_time(UsageWho::RUSAGE_THREAD)
}

/// What one thread's slots measured.
struct Recorder {
    report: StormReport,
    last_end: Instant,
}

impl Recorder {
    fn measured(
        &mut self,
        scheduled: Instant,
        measure_from: Instant,
        outcome: &Result<(Timings, u64), ErrorKind>,
        requests: u32,
    ) {
        let report = &mut self.report;
        self.last_end = self.last_end.max(Instant::now());
        match outcome {
            Ok((timings, bytes)) => {
                report.completed_connections += 1;
                report.completed_requests += u64::from(requests);
                report.bytes_received += bytes;
                record(&mut report.latencies.connect, timings.connect);
                record(&mut report.latencies.first_byte, timings.first_byte);
                record(&mut report.latencies.total, timings.total);
                let second = (scheduled - measure_from).as_secs() as usize;
                if report.completed_per_second.len() <= second {
                    report.completed_per_second.resize(second + 1, 0);
                }
                report.completed_per_second[second] += 1;
            }
            Err(kind) => {
                report.failed_connections += 1;
                report.errors.add(*kind, 1);
            }
        }
    }
}

/// Timings of one successful connection, from its scheduled start.
struct Timings {
    connect: Duration,
    first_byte: Duration,
    total: Duration,
}

/// One connection slot: connects, exchanges its requests, closes, repeats.
struct Slot {
    shared: Arc<Shared>,
    live: Arc<LiveCounts>,
    recorder: Rc<RefCell<Recorder>>,
    reader: ResponseReader,
    /// The thread's read buffer.
    buffer: Rc<RefCell<Box<[u8]>>>,
    next_source: usize,
}

impl Slot {
    fn new(
        shared: Arc<Shared>,
        live: Arc<LiveCounts>,
        recorder: Rc<RefCell<Recorder>>,
        buffer: Rc<RefCell<Box<[u8]>>>,
    ) -> Self {
        Self {
            shared,
            live,
            recorder,
            reader: ResponseReader::default(),
            buffer,
            next_source: 0,
        }
    }

    async fn run(mut self) {
        let clock = self.shared.clock;
        while let Some(scheduled) = self.shared.next_start() {
            // A timer, even one already due, waits for the next timer tick (~1 ms): only
            // sleep for arrivals still ahead.
            if scheduled > Instant::now() {
                tokio::time::sleep_until(scheduled).await;
            }
            let outcome = self.connection(scheduled).await;
            let live = &self.live;
            let counter = match (scheduled < clock.measure_from, outcome.is_ok()) {
                (true, true) => &live.warmup_completed,
                (true, false) => &live.warmup_failed,
                (false, true) => &live.measured_completed,
                (false, false) => &live.measured_failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let mut recorder = self.recorder.borrow_mut();
            if scheduled < clock.measure_from {
                recorder.report.warmup_connections += 1;
            } else {
                recorder.measured(
                    scheduled,
                    clock.measure_from,
                    &outcome,
                    self.shared.requests_per_connection,
                );
            }
        }
    }
    async fn connect(&mut self) -> std::io::Result<TcpStream> {
        let shared = &self.shared;
        let socket = if shared.target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if shared.handshake_ack == HandshakeAck::WithRequest {
            defer_handshake_ack(&socket)?;
        }
        if !shared.source_addrs.is_empty() {
            let source = shared.source_addrs[self.next_source % shared.source_addrs.len()];
            self.next_source = self.next_source.wrapping_add(1);
            // Choose the source port at connect time, per destination, instead of reserving one
            // at bind time for any destination: far more connections fit in the port range.
            setsockopt(&socket, sockopt::IpBindAddressNoPort, &true)
                .map_err(std::io::Error::from)?;
            socket.bind(SocketAddr::new(source, 0))?;
        }
        socket.connect(shared.target).await
    }

    async fn connection(&mut self, scheduled: Instant) -> Result<(Timings, u64), ErrorKind> {
        let (connect_timeout, response_timeout) =
            (self.shared.connect_timeout, self.shared.response_timeout);
        let mut stream = match timeout(connect_timeout, self.connect()).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(ErrorKind::of_connect(&error)),
            Err(_) => return Err(ErrorKind::ConnectTimeout),
        };
        let connect = scheduled.elapsed();
        if self.shared.nodelay {
            let _ = stream.set_nodelay(true);
        }
        let Slot {
            shared,
            reader,
            buffer,
            ..
        } = self;
        let exchange = async {
            let mut first_byte = None;
            let mut bytes = 0u64;
            for n in 1..=shared.requests_per_connection {
                let request = if n == shared.requests_per_connection {
                    &shared.last_request
                } else {
                    &shared.keep_alive_request
                };
                stream
                    .write_all(request)
                    .await
                    .map_err(|e| ErrorKind::of_exchange(&e))?;
                reader.reset();
                // A whole response ends the read, as in wrk: no wait for the server's FIN (nginx
                // sends it with the response, so it still closes first and keeps the TIME_WAIT).
                while !reader.body_complete() {
                    stream
                        .readable()
                        .await
                        .map_err(|e| ErrorKind::of_exchange(&e))?;
                    // The thread's read buffer is borrowed only between awaits, so one
                    // buffer serves every slot of the thread.
                    let mut buffer = buffer.borrow_mut();
                    let read = match stream.try_read(&mut buffer) {
                        Ok(0) => break,
                        Ok(read) => read,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(ErrorKind::of_exchange(&e)),
                    };
                    first_byte.get_or_insert_with(|| scheduled.elapsed());
                    bytes += read as u64;
                    reader.feed(&buffer[..read]);
                }
                reader.finish().map_err(ErrorKind::of_response)?;
            }
            Ok((first_byte, bytes))
        };
        let (first_byte, bytes) = match timeout(response_timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => return Err(ErrorKind::ResponseTimeout),
        };
        let total = scheduled.elapsed();
        if shared.close == CloseMode::Reset {
            let abort = nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            let _ = setsockopt(&stream, sockopt::Linger, &abort);
        }
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

    #[test]
    fn configs_are_checked() {
        let target: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let good = StormConfig::new(target, 4, Duration::from_secs(1));
        assert!(good.validate().is_ok());
        let bad = |f: &dyn Fn(&mut StormConfig)| {
            let mut config = good.clone();
            f(&mut config);
            config.validate().is_err()
        };
        assert!(bad(&|c| c.connections = 0));
        assert!(bad(&|c| c.requests_per_connection = 0));
        assert!(bad(&|c| c.duration = Duration::ZERO));
        assert!(bad(&|c| c.pacing = Pacing::Open { per_second: 0.0 }));
        assert!(bad(&|c| c.pacing = Pacing::Open {
            per_second: f64::NAN
        }));
        assert!(bad(&|c| c.source_addrs = vec!["::1".parse().unwrap()]));
        assert!(bad(&|c| c.request.method = "GET /".into()));
    }

    #[test]
    fn threads_never_outnumber_slots() {
        let target: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let mut config = StormConfig::new(target, 3, Duration::from_secs(1));
        config.threads = 8;
        assert_eq!(config.thread_count(), 3);
        config.threads = 2;
        assert_eq!(config.thread_count(), 2);
    }
}
