//! The `loadlab.v1.Loadgen` service: validates a `StormSpec` at the edge, checks the target
//! against the generator's policy, runs the storm and streams progress and the summary.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, UNIX_EPOCH};

use loadlab_proto::v1::{self, loadgen_server, storm_event};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::http::RequestTemplate;
use crate::outcome::ErrorKind;
use crate::ports::PortPressure;
use crate::report::{HistogramError, Latencies, StormReport, decode_histogram, encode_histogram};
use crate::storm::{
    CloseMode, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, HandshakeAck, Pacing,
    StormConfig, run_storm,
};

/// The longest storm (warm-up plus window) a generator accepts: every load loop is bounded.
pub(crate) const MAX_STORM: Duration = Duration::from_secs(3600);
/// The most concurrent connections one generator opens.
pub const MAX_CONNECTIONS: u32 = 100_000;

/// Which endpoints a generator may load. A generator is a weapon: it never loads an address
/// just because a request named it.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allow_loopback: bool,
    allowed: Vec<IpAddr>,
}

impl TargetPolicy {
    /// Loopback addresses only (127.0.0.0/8, ::1): the policy of a single-machine run.
    pub fn loopback_only() -> Self {
        Self {
            allow_loopback: true,
            allowed: Vec::new(),
        }
    }

    /// Also allows the given addresses, any port.
    pub fn and_allow(mut self, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        self.allowed.extend(addresses);
        self
    }

    pub(crate) fn permits(&self, target: &SocketAddr) -> bool {
        let ip = target.ip();
        (self.allow_loopback && ip.is_loopback()) || self.allowed.contains(&ip)
    }
}

#[derive(Debug, Clone)]
pub struct LoadgenService {
    policy: TargetPolicy,
}

impl LoadgenService {
    pub fn new(policy: TargetPolicy) -> Self {
        Self { policy }
    }

    pub fn into_server(self) -> loadgen_server::LoadgenServer<Self> {
        loadgen_server::LoadgenServer::new(self)
    }

    fn storm_config(&self, spec: &v1::StormSpec) -> Result<StormConfig, Status> {
        let target: SocketAddr = spec.target.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "target {:?} is not an address:port such as 127.0.0.1:8080",
                spec.target
            ))
        })?;
        if !self.policy.permits(&target) {
            return Err(Status::permission_denied(format!(
                "this generator is not allowed to load {target}"
            )));
        }
        if spec.connections == 0 || spec.connections > MAX_CONNECTIONS {
            return Err(Status::invalid_argument(format!(
                "connections must be between 1 and {MAX_CONNECTIONS}, got {}",
                spec.connections
            )));
        }
        if spec.duration_ms == 0 {
            return Err(Status::invalid_argument("duration_ms must be positive"));
        }
        let storm_length = spec.duration().saturating_add(spec.warmup());
        if storm_length > MAX_STORM {
            return Err(Status::invalid_argument(format!(
                "warm-up plus duration must be at most {} s",
                MAX_STORM.as_secs()
            )));
        }
        let or_default = |ms: u64, default: Duration| {
            if ms == 0 {
                default
            } else {
                Duration::from_millis(ms)
            }
        };
        let source_addrs = spec
            .source_addrs
            .iter()
            .map(|a| {
                a.parse::<IpAddr>().map_err(|_| {
                    Status::invalid_argument(format!("source address {a:?} is not an IP address"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = StormConfig {
            target,
            request: RequestTemplate {
                method: if spec.method.is_empty() {
                    "GET".into()
                } else {
                    spec.method.clone()
                },
                path: if spec.path.is_empty() {
                    "/".into()
                } else {
                    spec.path.clone()
                },
                host: if spec.host.is_empty() {
                    target.to_string()
                } else {
                    spec.host.clone()
                },
                headers: spec
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
            requests_per_connection: spec.requests_per_connection.max(1),
            connections: spec.connections,
            pacing: if spec.rate_per_second > 0.0 {
                Pacing::Open {
                    per_second: spec.rate_per_second,
                }
            } else if spec.rate_per_second == 0.0 {
                Pacing::Closed
            } else {
                return Err(Status::invalid_argument(
                    "rate_per_second must not be negative",
                ));
            },
            warmup: spec.warmup(),
            duration: spec.duration(),
            connect_timeout: or_default(spec.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT),
            response_timeout: or_default(spec.response_timeout_ms, DEFAULT_RESPONSE_TIMEOUT),
            source_addrs,
            threads: 0,
            cpus: spec.cpus.clone(),
            start_at: (spec.start_at_unix_ns > 0)
                .then(|| UNIX_EPOCH + Duration::from_nanos(spec.start_at_unix_ns)),
            close: if spec.close_with_reset {
                CloseMode::Reset
            } else {
                CloseMode::Fin
            },
            handshake_ack: if spec.ack_with_request {
                HandshakeAck::WithRequest
            } else {
                HandshakeAck::Separate
            },
        };
        config
            .validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(config)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::StormEvent, Status>> + Send>>;

#[tonic::async_trait]
impl loadgen_server::Loadgen for LoadgenService {
    type RunStream = EventStream;

    async fn run(&self, request: Request<v1::StormSpec>) -> Result<Response<EventStream>, Status> {
        let config = self.storm_config(request.get_ref())?;
        let (events, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let cancel = CancellationToken::new();
            let progress_events = events.clone();
            let storm = run_storm(&config, cancel.clone(), move |progress| {
                // Progress is best effort: a slow reader misses ticks, never slows the storm.
                let _ = progress_events.try_send(Ok(v1::StormEvent {
                    event: Some(storm_event::Event::Progress(v1::StormProgress {
                        elapsed_ms: loadlab_proto::millis(progress.elapsed),
                        in_warmup: progress.in_warmup,
                        completed_connections: progress.completed,
                        failed_connections: progress.failed,
                    })),
                }));
            });
            let result = tokio::select! {
                result = storm => result,
                () = events.closed() => {
                    // The caller went away: stop the storm rather than load a target nobody
                    // is measuring.
                    cancel.cancel();
                    tracing::info!(target = %config.target, "storm cancelled: caller disconnected");
                    return;
                }
            };
            let event = match result {
                Ok(report) => summary_event(&report).map_err(|e| Status::internal(e.to_string())),
                Err(error) => Err(Status::internal(error.to_string())),
            };
            let _ = events.send(event).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

fn summary_event(report: &StormReport) -> Result<v1::StormEvent, HistogramError> {
    Ok(v1::StormEvent {
        event: Some(storm_event::Event::Summary(to_summary(report)?)),
    })
}

/// Converts a report into its wire form.
pub fn to_summary(report: &StormReport) -> Result<v1::StormSummary, HistogramError> {
    Ok(v1::StormSummary {
        completed_connections: report.completed_connections,
        failed_connections: report.failed_connections,
        warmup_connections: report.warmup_connections,
        window_us: u64::try_from(report.window.as_micros()).unwrap_or(u64::MAX),
        errors: report
            .errors
            .nonzero()
            .map(|(kind, count)| v1::ErrorCount {
                kind: kind.as_str().into(),
                count,
            })
            .collect(),
        connect_histogram: encode_histogram(&report.latencies.connect)?,
        first_byte_histogram: encode_histogram(&report.latencies.first_byte)?,
        total_histogram: encode_histogram(&report.latencies.total)?,
        completed_per_second: report.completed_per_second.clone(),
        bytes_received: report.bytes_received,
        completed_requests: report.completed_requests,
        offered_per_second: report.offered_per_second.unwrap_or(0.0),
        missed_arrivals: report.missed_arrivals,
        start_lateness_us: u64::try_from(report.start_lateness.as_micros()).unwrap_or(u64::MAX),
        time_wait_at_end: report.port_pressure.map_or(0, |p| p.time_wait),
        ephemeral_ports: report.port_pressure.map_or(0, |p| p.ephemeral_ports),
        cpu_ns: report
            .cpu
            .map(|cpu| u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX)),
    })
}

/// Reads a report back from its wire form. Unknown error kinds count as `other`.
pub fn from_summary(summary: &v1::StormSummary) -> Result<StormReport, HistogramError> {
    let mut report = StormReport {
        completed_connections: summary.completed_connections,
        failed_connections: summary.failed_connections,
        warmup_connections: summary.warmup_connections,
        window: Duration::from_micros(summary.window_us),
        latencies: Latencies {
            connect: decode_histogram(&summary.connect_histogram)?,
            first_byte: decode_histogram(&summary.first_byte_histogram)?,
            total: decode_histogram(&summary.total_histogram)?,
        },
        completed_per_second: summary.completed_per_second.clone(),
        bytes_received: summary.bytes_received,
        completed_requests: summary.completed_requests,
        offered_per_second: (summary.offered_per_second > 0.0)
            .then_some(summary.offered_per_second),
        missed_arrivals: summary.missed_arrivals,
        start_lateness: Duration::from_micros(summary.start_lateness_us),
        port_pressure: (summary.ephemeral_ports > 0).then_some(PortPressure {
            time_wait: summary.time_wait_at_end,
            ephemeral_ports: summary.ephemeral_ports,
        }),
        cpu: summary.cpu_ns.map(Duration::from_nanos),
        ..StormReport::default()
    };
    for error in &summary.errors {
        let kind = ErrorKind::parse(&error.kind).unwrap_or(ErrorKind::Other);
        report.errors.add(kind, error.count);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_refuses_other_addresses() {
        let policy = TargetPolicy::loopback_only();
        assert!(policy.permits(&"127.0.0.1:80".parse().unwrap()));
        assert!(policy.permits(&"127.3.2.1:80".parse().unwrap()));
        assert!(policy.permits(&"[::1]:80".parse().unwrap()));
        assert!(!policy.permits(&"10.0.0.1:80".parse().unwrap()));
        assert!(!TargetPolicy::default().permits(&"127.0.0.1:80".parse().unwrap()));
        let lab = TargetPolicy::default().and_allow(["10.0.0.1".parse().unwrap()]);
        assert!(lab.permits(&"10.0.0.1:8080".parse().unwrap()));
        assert!(!lab.permits(&"10.0.0.2:8080".parse().unwrap()));
    }

    fn spec(target: &str) -> v1::StormSpec {
        v1::StormSpec {
            target: target.into(),
            connections: 4,
            duration_ms: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn specs_are_checked_at_the_edge() {
        let service = LoadgenService::new(TargetPolicy::loopback_only());
        let code = |spec: v1::StormSpec| service.storm_config(&spec).unwrap_err().code();
        assert!(service.storm_config(&spec("127.0.0.1:8080")).is_ok());
        assert_eq!(code(spec("192.0.2.1:80")), tonic::Code::PermissionDenied);
        assert_eq!(code(spec("localhost")), tonic::Code::InvalidArgument);
        assert_eq!(
            code(v1::StormSpec {
                connections: 0,
                ..spec("127.0.0.1:1")
            }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(v1::StormSpec {
                duration_ms: 0,
                ..spec("127.0.0.1:1")
            }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(v1::StormSpec {
                warmup_ms: u64::MAX,
                ..spec("127.0.0.1:1")
            }),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(v1::StormSpec {
                path: "no-slash".into(),
                ..spec("127.0.0.1:1")
            }),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn connection_modes_carry_over_from_the_spec() {
        let service = LoadgenService::new(TargetPolicy::loopback_only());
        let plain = service.storm_config(&spec("127.0.0.1:8080")).unwrap();
        assert_eq!(
            (plain.close, plain.handshake_ack),
            (CloseMode::Fin, HandshakeAck::Separate)
        );
        let lean = service
            .storm_config(&v1::StormSpec {
                close_with_reset: true,
                ack_with_request: true,
                ..spec("127.0.0.1:8080")
            })
            .unwrap();
        assert_eq!(
            (lean.close, lean.handshake_ack),
            (CloseMode::Reset, HandshakeAck::WithRequest)
        );
    }

    #[test]
    fn summaries_round_trip() {
        let mut report = StormReport {
            completed_connections: 3,
            failed_connections: 1,
            window: Duration::from_millis(1500),
            completed_per_second: vec![2, 1],
            ..StormReport::default()
        };
        report.errors.add(ErrorKind::ShortRead, 1);
        report.latencies.total.record(250).unwrap();
        let back = from_summary(&to_summary(&report).unwrap()).unwrap();
        assert_eq!(back.completed_connections, 3);
        assert_eq!(back.errors, report.errors);
        assert_eq!(back.window, report.window);
        assert_eq!(back.latencies.total, report.latencies.total);
        assert_eq!(back.completed_per_second, vec![2, 1]);
    }
}
