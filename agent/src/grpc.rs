//! The `loadlab.v1.Agent` service: node facts, nginx targets and captures of a measured window.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use loadlab_proto::v1::{self, agent_server};
use tokio::sync::{Mutex, OnceCell};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::counters::{
    NginxStatus, NodeCounters, USER_HZ, fetch_stub_status, processes_cpu_ticks, read_node_counters,
};
use crate::cpus::ProcessPinning;
use crate::facts::{NodeFacts, Presence, describe_from, logical_cpus};
use crate::kallsyms::KernelSymbols;
use crate::lockprobe::SourceChoice;
use crate::lockstat::Contention;
use crate::nginx::{NginxSettings, NginxTarget, WorkerCpus, find_nginx, nginx_version};
use crate::noise::{NoiseSnapshot, WindowNoise};
use crate::profile::CpuProfile;
use crate::traces::{TraceRequest, Traces};
use loadlab_proto::symbols::check_symbol_names;

/// Where the kernel describes CPU topology.
const SYS_CPUS: &str = "/sys/devices/system/cpu";

/// The opening snapshot of a capture.
#[derive(Debug)]
struct OpenCapture {
    target_id: String,
    started: Instant,
    nginx: NginxStatus,
    node: NodeCounters,
    traces: Traces,
    /// The target's processes and the CPU ticks they had used when the window opened.
    nginx_cpu: (Vec<u32>, u64),
    noise: NoiseSnapshot,
    /// nginx's CPUs when pinned: their interrupts are the ones counted.
    nginx_cpus: Vec<u32>,
}

#[derive(Debug, Default)]
struct State {
    targets: HashMap<String, NginxTarget>,
    captures: HashMap<String, OpenCapture>,
}

/// The agent of one node. Targets it started are stopped when it is dropped or shut down.
#[derive(Debug, Clone)]
pub struct AgentService {
    proc: PathBuf,
    state: Arc<Mutex<State>>,
    /// Kernel data symbols, read once: naming locks needs them after every window, and
    /// `kallsyms` is megabytes.
    data_symbols: Arc<OnceCell<KernelSymbols>>,
    /// Where targets listen: loopback on one machine, the pod's address on a cluster.
    target_address: IpAddr,
    /// Reported instead of the hostname (on a cluster the hostname is the pod's name).
    node_name: Option<String>,
    /// How long a capture or a target may wait for the call that ends it (see `Abandon`).
    abandon: Abandon,
}

/// A caller that disappears (killed, cut off) never stops what it started: the sampler and the lock
/// probe would sample and trace for ever, nginx hold its port. A window lasts at most an hour and a
/// run two of them (warm-up and measured), so anything left longer than this is abandoned and
/// stopped by the agent itself.
#[derive(Debug, Clone, Copy)]
pub struct Abandon {
    pub capture_after: Duration,
    pub target_after: Duration,
}

impl Default for Abandon {
    fn default() -> Self {
        Self {
            capture_after: Duration::from_secs(65 * 60),
            target_after: Duration::from_secs(130 * 60),
        }
    }
}

impl Default for AgentService {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentService {
    pub fn new() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            state: Arc::default(),
            data_symbols: Arc::default(),
            target_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            node_name: None,
            abandon: Abandon::default(),
        }
    }

    /// Stops captures and targets whose caller has not ended them after these (tests shorten
    /// them).
    pub fn with_abandon(mut self, abandon: Abandon) -> Self {
        self.abandon = abandon;
        self
    }

    /// Whether a capture of this id is still open.
    pub async fn has_capture(&self, id: &str) -> bool {
        self.state.lock().await.captures.contains_key(id)
    }

    /// Whether a target of this id is still running.
    pub async fn has_target(&self, id: &str) -> bool {
        self.state.lock().await.targets.contains_key(id)
    }

    /// The processes (master and workers) of target `id`; empty when there is none.
    pub async fn target_processes(&self, id: &str) -> Vec<u32> {
        match self.state.lock().await.targets.get(id) {
            Some(target) => target.processes(&self.proc),
            None => Vec::new(),
        }
    }

    /// Ends the capture `id` once `abandon.capture_after` has passed, unless its caller ended
    /// it first. Dropping a capture detaches its sampler and its lock probe.
    fn end_capture_if_abandoned(&self, id: String) {
        let (state, after) = (Arc::downgrade(&self.state), self.abandon.capture_after);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(state) = state.upgrade() else { return };
            if state.lock().await.captures.remove(&id).is_some() {
                tracing::warn!(capture_id = %id, "a capture nobody stopped was abandoned: its traces are stopped");
            }
        });
    }

    /// Stops the target `id` once `abandon.target_after` has passed, unless its caller stopped
    /// it first.
    fn stop_target_if_abandoned(&self, id: String) {
        let (state, after) = (Arc::downgrade(&self.state), self.abandon.target_after);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(state) = state.upgrade() else { return };
            if let Some(target) = take_target(&state, &id).await {
                tracing::warn!(target_id = %id, "a target nobody stopped was abandoned: nginx is stopped");
                if let Err(error) = target.stop().await {
                    tracing::warn!(target_id = %id, %error, "stopping an abandoned nginx target");
                }
            }
        });
    }

    /// Targets listen on `address` instead of loopback, for generators on other hosts.
    pub fn with_target_address(mut self, address: IpAddr) -> Self {
        self.target_address = address;
        self
    }

    /// Names the node `name` in its facts instead of by its hostname.
    pub fn with_node_name(mut self, name: Option<String>) -> Self {
        self.node_name = name.filter(|n| !n.is_empty());
        self
    }

    pub fn into_server(self) -> agent_server::AgentServer<Self> {
        agent_server::AgentServer::new(self)
    }

    /// Stops every target this agent started. Call on shutdown.
    pub async fn stop_all_targets(&self) {
        let targets: Vec<_> = self.state.lock().await.targets.drain().collect();
        for (id, target) in targets {
            if let Err(error) = target.stop().await {
                tracing::warn!(target_id = %id, error = %error, "stopping nginx target");
            }
        }
    }

    async fn data_symbols(&self) -> &KernelSymbols {
        let kallsyms = self.proc.join("kallsyms");
        self.data_symbols
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || KernelSymbols::read(&kallsyms))
                    .await
                    .unwrap_or_default()
            })
            .await
    }

    async fn endpoint_of(&self, target_id: &str) -> Result<std::net::SocketAddr, Status> {
        let state = self.state.lock().await;
        state
            .targets
            .get(target_id)
            .map(NginxTarget::endpoint)
            .ok_or_else(|| Status::not_found(format!("no target {target_id:?} on this agent")))
    }
}

/// Removes a target and the captures of it (their traces end as they drop).
async fn take_target(state: &Mutex<State>, id: &str) -> Option<NginxTarget> {
    let mut state = state.lock().await;
    state.captures.retain(|_, capture| capture.target_id != id);
    state.targets.remove(id)
}

pub fn facts_to_proto(facts: NodeFacts, nginx_version: String) -> v1::NodeFacts {
    v1::NodeFacts {
        hostname: facts.hostname,
        kernel_release: facts.kernel_release,
        kernel_version: facts.kernel_version,
        cpu_model: facts.cpu_model,
        logical_cpus: facts.logical_cpus,
        memory_bytes: facts.memory_bytes,
        kernel_symbols: facts
            .kernel_symbols
            .into_iter()
            .map(|(name, presence)| v1::KernelSymbol {
                name,
                presence: match presence {
                    Presence::Present => v1::SymbolPresence::Present,
                    Presence::Absent => v1::SymbolPresence::Absent,
                    Presence::Unknown => v1::SymbolPresence::Unknown,
                } as i32,
            })
            .collect(),
        nginx_version,
        cmdline: facts.platform.cmdline,
        cpu_vulnerabilities: facts.platform.cpu_vulnerabilities.into_iter().collect(),
        scaling_governor: facts.platform.scaling_governor,
        smt: facts.platform.smt,
        numa_nodes: facts.platform.numa_nodes,
        virtualization: facts.platform.virtualization,
        emulated: facts.platform.emulated,
        nic_drivers: facts.platform.nic_drivers.into_iter().collect(),
        sysctls: facts.platform.sysctls.into_iter().collect(),
    }
}

fn contention_to_proto(c: Contention) -> v1::LockContention {
    v1::LockContention {
        lock: c.lock,
        lock_type: c.lock_type,
        caller: c.caller,
        stack: c.stack,
        count: c.count,
        wait_ns: c.wait_ns,
        max_wait_ns: c.max_wait_ns,
        epoll: c.epoll,
    }
}

fn profile_to_proto(profile: CpuProfile) -> v1::CpuProfile {
    v1::CpuProfile {
        frequency_hz: profile.frequency_hz,
        samples: profile.samples,
        idle_samples: profile.idle_samples,
        stacks: profile
            .folded
            .into_iter()
            .map(|(stack, samples)| v1::FoldedStack { stack, samples })
            .collect(),
        top_symbols: profile
            .top_symbols
            .into_iter()
            .map(|s| v1::SymbolSamples {
                symbol: s.symbol,
                self_samples: s.self_samples,
                total_samples: s.total_samples,
            })
            .collect(),
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::NginxMissing => Status::failed_precondition(error.to_string()),
            Error::NginxFailed { .. } => Status::unavailable(error.to_string()),
            _ => Status::internal(error.to_string()),
        }
    }
}

#[tonic::async_trait]
impl agent_server::Agent for AgentService {
    async fn describe(
        &self,
        request: Request<v1::DescribeRequest>,
    ) -> Result<Response<v1::NodeFacts>, Status> {
        let extra = request.into_inner().kernel_symbols;
        check_symbol_names(&extra).map_err(|bad| Status::invalid_argument(bad.message))?;
        let mut facts = describe_from(&self.proc, &extra)?;
        if let Some(name) = &self.node_name {
            facts.hostname = name.clone();
        }
        let version = match find_nginx() {
            Ok(binary) => nginx_version(&binary).await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        Ok(Response::new(facts_to_proto(facts, version)))
    }

    async fn prepare_target(
        &self,
        request: Request<v1::TargetSpec>,
    ) -> Result<Response<v1::PreparedTarget>, Status> {
        let spec = request.into_inner();
        if spec.workers > 1024 {
            return Err(Status::invalid_argument(format!(
                "workers must be at most 1024 (0 for one per CPU), got {}",
                spec.workers
            )));
        }
        let settings = NginxSettings {
            workers: (spec.workers > 0).then_some(spec.workers),
            reuseport: spec.reuseport,
            backlog: (spec.backlog > 0).then_some(spec.backlog),
        };
        let binary = find_nginx()?;
        // Runs on a node are sequential: a target still here belongs to a run whose caller went
        // away (killed or cut off) and would only take CPU and a port from this one.
        let stale: Vec<_> = {
            let mut state = self.state.lock().await;
            state.captures.clear();
            state.targets.drain().collect()
        };
        for (id, target) in stale {
            tracing::warn!(target_id = %id, "stopping a target left by an earlier run");
            if let Err(error) = target.stop().await {
                tracing::warn!(target_id = %id, error = %error, "stopping a stale nginx target");
            }
        }
        let (pinning, unpinned) = if spec.pin_from_cores > 0 {
            match ProcessPinning::take(Path::new(SYS_CPUS), spec.pin_from_cores as usize) {
                Ok(pinning) => (Some(pinning), String::new()),
                Err(reason) => (None, reason),
            }
        } else {
            (None, String::new())
        };
        let (cpus, other_cpus) = match &pinning {
            Some(pinning) => (
                WorkerCpus::Pinned(pinning.split().nginx.clone()),
                pinning.split().rest.clone(),
            ),
            None => (
                WorkerCpus::Any {
                    logical_cpus: logical_cpus(&self.proc)?,
                },
                Vec::new(),
            ),
        };
        let mut target = NginxTarget::start(&binary, &settings, &cpus, self.target_address).await?;
        if let Some(pinning) = pinning {
            target.hold(pinning);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let prepared = v1::PreparedTarget {
            target_id: id.clone(),
            endpoint: target.endpoint().to_string(),
            workers: target.workers(),
            nginx_cpus: target.pinned_cpus().to_vec(),
            other_cpus,
            unpinned,
        };
        tracing::info!(target_id = %id, endpoint = %prepared.endpoint, workers = prepared.workers, reuseport = spec.reuseport, nginx_cpus = ?prepared.nginx_cpus, unpinned = %prepared.unpinned, "nginx target started");
        self.state.lock().await.targets.insert(id.clone(), target);
        self.stop_target_if_abandoned(id);
        Ok(Response::new(prepared))
    }

    async fn stop_target(
        &self,
        request: Request<v1::TargetRef>,
    ) -> Result<Response<v1::StopTargetResponse>, Status> {
        let id = request.into_inner().target_id;
        let target = take_target(&self.state, &id).await;
        let target =
            target.ok_or_else(|| Status::not_found(format!("no target {id:?} on this agent")))?;
        target.stop().await?;
        Ok(Response::new(v1::StopTargetResponse {}))
    }

    async fn start_capture(
        &self,
        request: Request<v1::StartCaptureRequest>,
    ) -> Result<Response<v1::CaptureHandle>, Status> {
        let request = request.into_inner();
        let target_id = request.target_id;
        let endpoint = self.endpoint_of(&target_id).await?;
        // Tracing attaches first, so the whole window is traced.
        // nginx's processes, read once: for a target-only profile and for their CPU time.
        let (processes, nginx_cpus) = {
            let state = self.state.lock().await;
            let target = state
                .targets
                .get(&target_id)
                .ok_or_else(|| Status::not_found(format!("no target {target_id}")))?;
            (target.processes(&self.proc), target.pinned_cpus().to_vec())
        };
        let profile_processes = (request.cpu_profile_hz > 0 && request.cpu_profile_target_only)
            .then(|| processes.clone());
        let no_symbols = KernelSymbols::default();
        let symbols = if request.lock_contention {
            self.data_symbols().await
        } else {
            &no_symbols
        };
        let traces = Traces::start(
            &TraceRequest {
                lock_contention: request.lock_contention,
                lock_source: source_choice(&request.lock_source)?,
                cpu_profile_hz: request.cpu_profile_hz,
                profile_processes,
            },
            symbols,
        )
        .await;
        // stub_status first, node counters second: the opening status request is then not in
        // the node-wide TCP deltas (see `stop_capture` for the closing order).
        let nginx = fetch_stub_status(endpoint).await?;
        let node = read_node_counters(&self.proc)?;
        let ticks = processes_cpu_ticks(&self.proc, &processes);
        let noise = NoiseSnapshot::read(&self.proc);
        let capture = OpenCapture {
            target_id,
            started: Instant::now(),
            nginx,
            node,
            traces,
            nginx_cpu: (processes, ticks),
            noise,
            nginx_cpus,
        };
        let id = uuid::Uuid::new_v4().to_string();
        self.state.lock().await.captures.insert(id.clone(), capture);
        self.end_capture_if_abandoned(id.clone());
        Ok(Response::new(v1::CaptureHandle { capture_id: id }))
    }

    async fn stop_capture(
        &self,
        request: Request<v1::CaptureHandle>,
    ) -> Result<Response<v1::Capture>, Status> {
        let id = request.into_inner().capture_id;
        let opened = self
            .state
            .lock()
            .await
            .captures
            .remove(&id)
            .ok_or_else(|| Status::not_found(format!("no open capture {id:?} on this agent")))?;
        let mut opened = opened;
        let window = opened.started.elapsed();
        opened.traces.end_window().await;
        let node = read_node_counters(&self.proc)?;
        let (processes, ticks_before) = &opened.nginx_cpu;
        let nginx_ticks = processes_cpu_ticks(&self.proc, processes).saturating_sub(*ticks_before);
        let nginx_cpu_ns = (!processes.is_empty()).then(|| nginx_ticks * (1_000_000_000 / USER_HZ));
        let noise = WindowNoise::between(
            (&opened.noise, &NoiseSnapshot::read(&self.proc)),
            (&opened.node.cpu, &node.cpu),
            nginx_ticks,
            &opened.nginx_cpus,
        );
        let endpoint = self.endpoint_of(&opened.target_id).await?;
        let nginx = fetch_stub_status(endpoint).await?;
        // The closing status request is itself one accepted connection and one request.
        let own_request = 1;
        let no_symbols = KernelSymbols::default();
        let symbols = if opened.traces.traces_locks() {
            self.data_symbols().await
        } else {
            &no_symbols
        };
        let traced = opened.traces.collect(symbols).await;
        let lock_source = match &traced.locks {
            Some(Ok(report)) => report.source.describe().to_string(),
            _ => String::new(),
        };
        let (locks, epoll_calls, lock_contention_unavailable) = match traced.locks {
            None => (Vec::new(), None, String::new()),
            Some(Err(error)) => (Vec::new(), None, error.to_string()),
            Some(Ok(report)) => (
                report
                    .contentions
                    .into_iter()
                    .map(contention_to_proto)
                    .collect(),
                report.epoll_calls.map(|calls| v1::EpollCalls {
                    ctl_add: calls.ctl_add,
                    ctl_del: calls.ctl_del,
                    ctl_mod: calls.ctl_mod,
                    wait: calls.wait,
                    epmutex_acquisitions: calls.epmutex_acquisitions,
                }),
                String::new(),
            ),
        };
        let (cpu_profile, cpu_profile_unavailable) = match traced.profile {
            None => (None, String::new()),
            Some(Err(error)) => (None, error.to_string()),
            Some(Ok(profile)) => (Some(profile_to_proto(profile)), String::new()),
        };
        let cpu = node.cpu.shares_since(&opened.node.cpu);
        let tcp = node.tcp.since(&opened.node.tcp);
        Ok(Response::new(v1::Capture {
            window_ms: loadlab_proto::millis(window),
            nginx: Some(v1::NginxCounters {
                accepts: nginx
                    .accepts
                    .saturating_sub(opened.nginx.accepts + own_request),
                handled: nginx
                    .handled
                    .saturating_sub(opened.nginx.handled + own_request),
                requests: nginx
                    .requests
                    .saturating_sub(opened.nginx.requests + own_request),
            }),
            tcp: Some(v1::TcpCounters {
                active_opens: tcp.active_opens,
                passive_opens: tcp.passive_opens,
                attempt_fails: tcp.attempt_fails,
                estab_resets: tcp.estab_resets,
                out_rsts: tcp.out_rsts,
            }),
            cpu: Some(v1::CpuUsage {
                busy_share: cpu.busy,
                user_share: cpu.user,
                system_share: cpu.system,
                softirq_share: cpu.softirq,
            }),
            locks,
            lock_contention_unavailable,
            lock_source,
            nginx_cpu_ns,
            noise: Some(v1::WindowNoise {
                steal_share: noise.steal_share,
                other_cpu_ns: noise.other_cpu_ns,
                device_interrupts: noise.device_interrupts,
                watched_cpus: noise.watched_cpus,
                conntrack_dropped: noise.conntrack_dropped,
            }),
            epoll_calls,
            cpu_profile,
            cpu_profile_unavailable,
        }))
    }
}

/// The lock source a capture asks for, by the names the proto gives.
fn source_choice(name: &str) -> Result<SourceChoice, Status> {
    match name {
        "" | "auto" => Ok(SourceChoice::Auto),
        "tracepoints" => Ok(SourceChoice::Tracepoints),
        "slow-paths" => Ok(SourceChoice::SlowPaths),
        other => Err(Status::invalid_argument(format!(
            "lock source {other:?}: auto, tracepoints or slow-paths"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_sources_are_named_as_the_protocol_says() {
        assert_eq!(source_choice("").unwrap(), SourceChoice::Auto);
        assert_eq!(source_choice("auto").unwrap(), SourceChoice::Auto);
        assert_eq!(
            source_choice("tracepoints").unwrap(),
            SourceChoice::Tracepoints
        );
        assert_eq!(
            source_choice("slow-paths").unwrap(),
            SourceChoice::SlowPaths
        );
        let refused = source_choice("bpftrace").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(
            refused
                .message()
                .contains("auto, tracepoints or slow-paths")
        );
    }
}
