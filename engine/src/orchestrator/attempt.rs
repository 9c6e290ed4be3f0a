//! One attempt at one planned run: prepare the target, warm up, capture, storm, stop, and what
//! the run measured (or why it measured nothing).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use loadlab_loadgen::StormReport;
use loadlab_loadgen::grpc::{from_summary, to_summary};
use loadlab_proto::histogram::{encode_histogram, latency_histogram};
use loadlab_proto::v1::{
    self, agent_client::AgentClient, loadgen_client::LoadgenClient, storm_event,
};
use loadlab_results::model::{EpollCounts, WindowCounters};
use loadlab_results::{LockRecord, NodeRecord, ProfileRecord, RunOutcome, RunRecord, SymbolRecord};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::nodes::to_i64;
use super::{Event, RpcChannel};
use crate::Error;
use crate::plan::PlannedRun;
use crate::spec::{CloseSpec, ExperimentFile, HandshakeAckSpec, NginxSpec, PinCpus};

/// How far ahead several generators are given their shared start instant.
const GENERATOR_START_LEAD: Duration = Duration::from_millis(250);
/// How long stopping a target may take before the run moves on without the answer.
const TARGET_STOP_DEADLINE: Duration = Duration::from_secs(30);

pub(super) enum RunError {
    Interrupted,
    Failed(String),
    /// The call never reached its peer (connection refused, reset or timed out).
    Unreachable(String),
}

fn failed(what: &str) -> impl Fn(tonic::Status) -> RunError + '_ {
    move |status| {
        let reason = format!("{what}: {}", status.message());
        if status.code() == tonic::Code::Unavailable {
            RunError::Unreachable(reason)
        } else {
            RunError::Failed(reason)
        }
    }
}

/// The longest one agent call may take: under emulation, attaching a trace or collecting a
/// profile takes minutes; an agent that answers keep-alive pings but not the call is stuck.
pub(super) const AGENT_CALL_DEADLINE: Duration = Duration::from_secs(600);

/// Awaits an agent call, failing the run when it errs or outlasts [`AGENT_CALL_DEADLINE`].
async fn agent_answer<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, RunError> {
    match tokio::time::timeout(AGENT_CALL_DEADLINE, call).await {
        Ok(answer) => answer
            .map(tonic::Response::into_inner)
            .map_err(failed(what)),
        Err(_) => Err(RunError::Failed(format!(
            "{what}: the agent did not answer within {} s",
            AGENT_CALL_DEADLINE.as_secs()
        ))),
    }
}

pub(super) struct RunAttempt<'a, F> {
    pub(super) file: &'a ExperimentFile,
    pub(super) planned: PlannedRun,
    pub(super) nginx: NginxSpec,
    pub(super) agent: &'a mut AgentClient<RpcChannel>,
    pub(super) loadgens: &'a mut [LoadgenClient<RpcChannel>],
    pub(super) generators_beside_agents: bool,
    pub(super) cancel: &'a CancellationToken,
    pub(super) on_event: &'a mut F,
}

/// What one successful run measured.
pub(super) struct Measurement {
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    /// Connections of the warm-up storm, which runs before the capture opens.
    warmup_connections: u64,
    summary: v1::StormSummary,
    generator_skew_us: Option<u64>,
    capture: v1::Capture,
    /// Why nginx shared its CPUs with a generator beside it, when it did.
    unpinned: Option<String>,
}

impl<F: FnMut(Event)> RunAttempt<'_, F> {
    pub(super) async fn execute(&mut self) -> Result<Measurement, RunError> {
        let cancel = self.cancel.clone();
        let prepared = self.agent.prepare_target(v1::TargetSpec {
            workers: self.nginx.workers.as_wire(),
            reuseport: self.nginx.reuseport,
            backlog: self.nginx.backlog.unwrap_or(0),
            pin_from_cores: if self.generators_beside_agents {
                self.file.spec.pin_cpus.from_cores()
            } else {
                0
            },
        });
        let target = tokio::select! {
            prepared = agent_answer("preparing the nginx target", prepared) => prepared?,
            () = cancel.cancelled() => return Err(RunError::Interrupted),
        };
        let result = tokio::select! {
            result = self.measure(&target) => result,
            () = cancel.cancelled() => Err(RunError::Interrupted),
        };
        // Always stop the target, whatever happened to the measurement, but never wait long
        // on an agent that is gone: it stops its targets itself when its caller disappears.
        let stopped = tokio::time::timeout(
            TARGET_STOP_DEADLINE,
            self.agent.stop_target(v1::TargetRef {
                target_id: target.target_id.clone(),
            }),
        )
        .await;
        match stopped {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                tracing::warn!(error = %status.message(), target_id = %target.target_id, "nginx target did not stop cleanly");
            }
            Err(_) => {
                tracing::warn!(target_id = %target.target_id, "the agent did not answer the request to stop its nginx target");
            }
        }
        result
    }

    async fn measure(&mut self, target: &v1::PreparedTarget) -> Result<Measurement, RunError> {
        let load = &self.file.spec.load;
        let spec = |duration: Duration| v1::StormSpec {
            target: target.endpoint.clone(),
            path: load.path.clone().unwrap_or_default(),
            connections: load.connections,
            rate_per_second: load.rate.unwrap_or(0.0),
            requests_per_connection: load.requests_per_connection,
            duration_ms: loadlab_proto::millis(duration),
            close_with_reset: load.close == CloseSpec::Reset,
            ack_with_request: load.handshake_ack == HandshakeAckSpec::WithRequest,
            cpus: target.other_cpus.clone(),
            ..Default::default()
        };
        let mut warmup_connections = 0;
        if !load.warmup.0.is_zero() {
            let (warmup, _) = self.storm(spec(load.warmup.0), true).await?;
            warmup_connections = warmup.completed_connections + warmup.failed_connections;
        }
        let start = self.agent.start_capture(v1::StartCaptureRequest {
            target_id: target.target_id.clone(),
            lock_contention: self.file.spec.collect.lock_contention,
            lock_source: self.file.spec.collect.lock_source.wire_name().to_string(),
            cpu_profile_hz: self
                .file
                .spec
                .collect
                .cpu_profile
                .map_or(0, |p| p.frequency_hz),
            cpu_profile_target_only: self
                .file
                .spec
                .collect
                .cpu_profile
                .is_some_and(|p| p.scope == crate::spec::ProfileScope::Target),
        });
        let asked = std::time::Instant::now();
        let handle = agent_answer("starting the capture", start).await?;
        tracing::debug!(took = ?asked.elapsed(), "capture started");
        let started_at = Utc::now();
        let (summary, generator_skew_us) = self.storm(spec(load.duration.0), false).await?;
        let capture = agent_answer("stopping the capture", self.agent.stop_capture(handle)).await?;
        let unpinned = if !self.generators_beside_agents {
            None
        } else if self.file.spec.pin_cpus == PinCpus::Never {
            Some("pinCpus is never".to_string())
        } else {
            Some(target.unpinned.clone()).filter(|reason| !reason.is_empty())
        };
        Ok(Measurement {
            started_at,
            finished_at: Utc::now(),
            warmup_connections,
            summary,
            generator_skew_us,
            capture,
            unpinned,
        })
    }

    /// Runs one storm on `generators` generators at once (a shared start instant, load split
    /// evenly) and merges their summaries exactly.
    /// Returns the merged summary and, with several generators, how far apart they started
    /// (µs; each measures its lateness against the shared instant on its own clock).
    async fn storm(
        &mut self,
        spec: v1::StormSpec,
        warmup: bool,
    ) -> Result<(v1::StormSummary, Option<u64>), RunError> {
        let generators = self.loadgens.len() as u32;
        let length = Duration::from_millis(spec.duration_ms);
        let start_at_unix_ns = if generators > 1 {
            let start = std::time::SystemTime::now() + GENERATOR_START_LEAD;
            start
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        } else {
            0
        };
        let (events, mut received) = tokio::sync::mpsc::channel(64);
        for index in 0..generators {
            let share = |total: u32| total / generators + u32::from(index < total % generators);
            let spec = v1::StormSpec {
                connections: share(spec.connections),
                rate_per_second: spec.rate_per_second / f64::from(generators),
                start_at_unix_ns,
                ..spec.clone()
            };
            let mut loadgen = self.loadgens[index as usize].clone();
            let events = events.clone();
            tokio::spawn(async move {
                let stream = loadgen.run(spec).await;
                let mut stream = match stream {
                    Ok(response) => response.into_inner(),
                    Err(status) => {
                        let _ = events
                            .send((index, Err(failed("starting the storm")(status))))
                            .await;
                        return;
                    }
                };
                loop {
                    let item = match stream.message().await {
                        Ok(Some(event)) => Ok(event),
                        Ok(None) => break,
                        Err(status) => Err(failed("during the storm")(status)),
                    };
                    let stop = item.is_err();
                    if events.send((index, item)).await.is_err() || stop {
                        break;
                    }
                }
            });
        }
        drop(events);
        let mut latest = vec![(0u64, 0u64); generators as usize];
        let mut merged: Option<StormReport> = None;
        let mut summaries = 0;
        let mut lateness = Vec::with_capacity(generators as usize);
        while let Some((index, item)) = received.recv().await {
            match item?.event {
                Some(storm_event::Event::Progress(progress)) => {
                    latest[index as usize] =
                        (progress.completed_connections, progress.failed_connections);
                    (self.on_event)(Event::Progress {
                        run: self.planned,
                        warmup,
                        elapsed: Duration::from_millis(progress.elapsed_ms),
                        length,
                        completed: latest.iter().map(|l| l.0).sum(),
                        failed: latest.iter().map(|l| l.1).sum(),
                    });
                }
                Some(storm_event::Event::Summary(summary)) => {
                    lateness.push(summary.start_lateness_us);
                    let report =
                        from_summary(&summary).map_err(|e| RunError::Failed(e.to_string()))?;
                    match merged.as_mut() {
                        Some(merged) => merged
                            .merge(&report)
                            .map_err(|e| RunError::Failed(e.to_string()))?,
                        None => merged = Some(report),
                    }
                    summaries += 1;
                }
                None => {}
            }
        }
        match merged {
            Some(report) if summaries == generators => {
                let skew = (generators > 1).then(|| {
                    lateness.iter().max().unwrap_or(&0) - lateness.iter().min().unwrap_or(&0)
                });
                let summary = to_summary(&report).map_err(|e| RunError::Failed(e.to_string()))?;
                Ok((summary, skew))
            }
            _ => Err(RunError::Failed(format!(
                "{} of {generators} generators ended the storm without a summary",
                generators - summaries
            ))),
        }
    }
}

impl Measurement {
    /// Writes what was measured into a run record.
    pub(super) fn fill(self, record: &mut RunRecord) {
        let summary = self.summary;
        let window_seconds = summary.window_us as f64 / 1e6;
        let generator_cpu_seconds = summary.cpu_ns.map(|ns| ns as f64 / 1e9);
        let nginx = self.capture.nginx.unwrap_or_default();
        let tcp = self.capture.tcp.unwrap_or_default();
        let cpu = self.capture.cpu.unwrap_or_default();
        let noise = self.capture.noise.clone().unwrap_or_default();
        record.outcome = RunOutcome::Succeeded;
        record.started_at = self.started_at;
        record.finished_at = self.finished_at;
        record.window_seconds = window_seconds;
        record.completed_connections = to_i64(summary.completed_connections);
        record.failed_connections = to_i64(summary.failed_connections);
        record.warmup_connections = to_i64(self.warmup_connections);
        record.connections_per_second = if window_seconds > 0.0 {
            summary.completed_connections as f64 / window_seconds
        } else {
            0.0
        };
        record.errors = summary
            .errors
            .iter()
            .map(|e| (e.kind.clone(), e.count))
            .collect();
        record.connect_histogram = summary.connect_histogram;
        record.first_byte_histogram = summary.first_byte_histogram;
        record.total_histogram = summary.total_histogram;
        record.completed_per_second = summary
            .completed_per_second
            .into_iter()
            .map(to_i64)
            .collect();
        record.locks = self
            .capture
            .locks
            .iter()
            .map(|l| LockRecord {
                lock: l.lock.clone(),
                lock_type: l.lock_type.clone(),
                caller: l.caller.clone(),
                stack: l.stack.clone(),
                count: to_i64(l.count),
                wait_ns: to_i64(l.wait_ns),
                max_wait_ns: to_i64(l.max_wait_ns),
                epoll: l.epoll,
            })
            .collect();
        record.lock_contention_unavailable = Some(self.capture.lock_contention_unavailable.clone())
            .filter(|reason| !reason.is_empty());
        record.lock_source =
            Some(self.capture.lock_source.clone()).filter(|source| !source.is_empty());
        record.cpu_profile = self.capture.cpu_profile.as_ref().map(|p| ProfileRecord {
            frequency_hz: i32::try_from(p.frequency_hz).unwrap_or(i32::MAX),
            samples: to_i64(p.samples),
            idle_samples: to_i64(p.idle_samples),
            folded: p
                .stacks
                .iter()
                .map(|s| (s.stack.clone(), to_i64(s.samples)))
                .collect(),
            top_symbols: p
                .top_symbols
                .iter()
                .map(|s| SymbolRecord {
                    symbol: s.symbol.clone(),
                    self_samples: to_i64(s.self_samples),
                    total_samples: to_i64(s.total_samples),
                })
                .collect(),
        });
        record.generator_skew_us = self.generator_skew_us.map(to_i64);
        record.cpu_profile_unavailable =
            Some(self.capture.cpu_profile_unavailable.clone()).filter(|reason| !reason.is_empty());
        record.counters = WindowCounters {
            window_seconds: self.capture.window_ms as f64 / 1000.0,
            nginx_accepts: nginx.accepts,
            nginx_handled: nginx.handled,
            nginx_requests: nginx.requests,
            tcp_active_opens: tcp.active_opens,
            tcp_passive_opens: tcp.passive_opens,
            tcp_attempt_fails: tcp.attempt_fails,
            tcp_estab_resets: tcp.estab_resets,
            tcp_out_rsts: tcp.out_rsts,
            cpu_busy_share: cpu.busy_share,
            cpu_user_share: cpu.user_share,
            cpu_system_share: cpu.system_share,
            cpu_softirq_share: cpu.softirq_share,
            epoll: self.capture.epoll_calls.map(|e| EpollCounts {
                ctl_add: e.ctl_add,
                ctl_del: e.ctl_del,
                ctl_mod: e.ctl_mod,
                wait: e.wait,
                epmutex_acquisitions: e.epmutex_acquisitions,
            }),
            nginx_cpu_seconds: self.capture.nginx_cpu_ns.map(|ns| ns as f64 / 1e9),
            generator_cpu_seconds,
            steal_share: noise.steal_share,
            other_cpu_seconds: Some(noise.other_cpu_ns as f64 / 1e9),
            device_interrupts: Some(noise.device_interrupts),
            interrupt_cpus: noise.watched_cpus,
            conntrack_dropped: noise.conntrack_dropped,
            unpinned: self.unpinned,
        };
    }
}

/// A run record with its identity and settings and nothing measured yet: what a failed run
/// stores, and what a measurement fills in.
pub(super) fn unmeasured_run(
    experiment_id: Uuid,
    cohort: &str,
    planned: PlannedRun,
    node: &NodeRecord,
    file: &ExperimentFile,
    nginx: NginxSpec,
    started_at: DateTime<Utc>,
) -> Result<RunRecord, Error> {
    let to_json = |value: serde_json::Result<serde_json::Value>| {
        value.map_err(|e| Error::Internal(e.to_string()))
    };
    let empty =
        encode_histogram(&latency_histogram()).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(RunRecord {
        id: Uuid::new_v4(),
        experiment_id,
        cohort: cohort.to_string(),
        repetition: planned.repetition as i32,
        attempt: 1,
        sequence: planned.sequence as i32,
        node: node.clone(),
        outcome: RunOutcome::Failed {
            reason: "not measured".into(),
        },
        started_at,
        finished_at: Utc::now(),
        target: to_json(serde_json::to_value(nginx))?,
        load: to_json(serde_json::to_value(&file.spec.load))?,
        window_seconds: 0.0,
        completed_connections: 0,
        failed_connections: 0,
        warmup_connections: 0,
        connections_per_second: 0.0,
        errors: BTreeMap::new(),
        connect_histogram: empty.clone(),
        first_byte_histogram: empty.clone(),
        total_histogram: empty,
        completed_per_second: Vec::new(),
        counters: WindowCounters::default(),
        locks: Vec::new(),
        lock_contention_unavailable: None,
        lock_source: None,
        cpu_profile: None,
        cpu_profile_unavailable: None,
        generator_skew_us: None,
    })
}
