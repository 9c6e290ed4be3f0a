//! Runs an experiment through the run protocol: for every planned run, PrepareTarget, warm-up,
//! StartCapture, the measured storm, StopCapture, StopTarget, then the run is stored. Agent and
//! generator are reached through their gRPC clients, whether they live in this process or not.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use loadlab_loadgen::StormReport;
use loadlab_loadgen::grpc::{from_summary, to_summary};
use loadlab_proto::auth::AttachToken;
use loadlab_proto::histogram::{encode_histogram, latency_histogram};
use loadlab_proto::v1::{
    self, agent_client::AgentClient, loadgen_client::LoadgenClient, storm_event,
};
use loadlab_results::model::{EpollCounts, WindowCounters};
use loadlab_results::sequential::{JudgedMetric, RoundJudgement, Rounds, all_decided};
use loadlab_results::{
    ExperimentStatus, LockRecord, NewExperiment, NodeRecord, ProfileRecord, RunOutcome, RunRecord,
    Store, SymbolRecord,
};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::Error;
use crate::plan::{PlannedRun, schedule};
use crate::spec::{
    CloseSpec, ExperimentFile, ExperimentSpec, HandshakeAckSpec, NginxSpec, PinCpus,
    StoppingMetric, StoppingSpec,
};

/// What an experiment reports while it runs.
#[derive(Debug, Clone)]
pub enum Event {
    Started {
        experiment_id: Uuid,
        /// Every node under test, described.
        nodes: Vec<v1::NodeFacts>,
        /// Runs this invocation will make (fewer than planned when resuming).
        runs: usize,
        /// Runs an earlier invocation finished: stored as succeeded, or failed with every
        /// attempt they may have.
        resumed: usize,
        /// Failed attempts stored by earlier invocations.
        failed_before: usize,
        /// `repetitions: auto`: `runs` is the most it may make; it may stop sooner.
        until_decided: bool,
    },
    RunStarted {
        run: PlannedRun,
        cohort: String,
        /// The node's name when its cohort has several nodes.
        node: Option<String>,
    },
    Progress {
        run: PlannedRun,
        warmup: bool,
        elapsed: Duration,
        length: Duration,
        completed: u64,
        failed: u64,
    },
    RunFinished {
        run: PlannedRun,
        record: Box<RunRecord>,
    },
    /// The results database does not answer; the finished run waits and is written as soon
    /// as it does.
    StoreUnavailable { error: String },
    /// With `repetitions: auto`: what the stopping rule says after a round, per cohort other
    /// than the baseline, and whether the experiment stops here.
    RoundJudged(RoundJudgement),
}

/// A gRPC channel whose every call carries the bearer token (when there is one).
pub type RpcChannel = InterceptedService<Channel, AttachToken>;

/// How agents and generators beyond this process are reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// Sent as `authorization: Bearer` on every call.
    pub token: Option<String>,
    /// TLS, trusting this PEM CA certificate; plain HTTP/2 without one.
    pub tls_ca: Option<Vec<u8>>,
    /// The name the peers' certificate must carry; the host of each address when unset.
    pub tls_server_name: Option<String>,
}

impl Connection {
    /// The pods of one experiment: its token, TLS with its authority and its pods' name.
    pub fn to_pods(token: String, trust: crate::pod_tls::PodTrust) -> Self {
        Self {
            token: Some(token),
            tls_ca: Some(trust.ca_pem.into_bytes()),
            tls_server_name: Some(trust.server_name),
        }
    }
}

/// Opens a lazily connected channel to `address` (`host:port`). Connection errors show up on
/// the first call.
pub fn rpc_channel(address: &str, connection: &Connection) -> Result<RpcChannel, Error> {
    let invalid = |e: &dyn std::fmt::Display| Error::Preflight(format!("{address}: {e}"));
    let scheme = if connection.tls_ca.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| invalid(&e))?
        .connect_timeout(Duration::from_secs(10))
        // A node that vanishes without a reset (powered off, a guest that panicked) would
        // otherwise hold a call until TCP gives up, a quarter of an hour later.
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if let Some(ca) = &connection.tls_ca {
        let host = connection.tls_server_name.as_deref().unwrap_or_else(|| {
            address
                .rsplit_once(':')
                .map_or(address, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
        });
        endpoint = endpoint
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                    .domain_name(host),
            )
            .map_err(|e| invalid(&e))?;
    }
    let attach = AttachToken::new(connection.token.as_deref())
        .map_err(|status| Error::Preflight(status.message().to_string()))?;
    Ok(InterceptedService::new(endpoint.connect_lazy(), attach))
}

/// The agent and generator of one node.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub agent: AgentClient<RpcChannel>,
    pub loadgen: LoadgenClient<RpcChannel>,
}

/// Everything an experiment drives: the agents of each cohort's nodes and the generators.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Per cohort, in the spec's order, the agents of its nodes.
    pub cohorts: Vec<Vec<AgentClient<RpcChannel>>>,
    /// Per cohort, the generators that load its nodes; every storm is split evenly over them,
    /// started together. Most fleets share one set; a virtual machine brings its own.
    pub generators: Vec<Vec<LoadgenClient<RpcChannel>>>,
    /// Per cohort, what a message calls each agent: its node's name on a cluster, its address
    /// for agent hosts. Where empty, "node N".
    pub agent_names: Vec<Vec<String>>,
    /// The generators run in the agent's own process (one machine): nginx and the generator
    /// are then kept on separate cores when the spec's `pinCpus` allows.
    pub generators_beside_agents: bool,
}

/// An agent's client, taking replies up to `MAX_MESSAGE_BYTES` (a capture with its profile).
pub fn agent_client(channel: RpcChannel) -> AgentClient<RpcChannel> {
    AgentClient::new(channel).max_decoding_message_size(loadlab_proto::MAX_MESSAGE_BYTES)
}

/// A generator's client, taking replies up to `MAX_MESSAGE_BYTES`.
pub fn loadgen_client(channel: RpcChannel) -> LoadgenClient<RpcChannel> {
    LoadgenClient::new(channel).max_decoding_message_size(loadlab_proto::MAX_MESSAGE_BYTES)
}

impl Fleet {
    /// Clients for agents and generators at these addresses (`host:port`): per cohort, the
    /// agents of its nodes; then the generators.
    pub fn connect(
        agents: impl IntoIterator<Item = impl IntoIterator<Item = impl AsRef<str>>>,
        generators: impl IntoIterator<Item = impl AsRef<str>>,
        connection: &Connection,
    ) -> Result<Self, Error> {
        let agent_names: Vec<Vec<String>> = agents
            .into_iter()
            .map(|cohort| cohort.into_iter().map(|a| a.as_ref().to_string()).collect())
            .collect();
        let cohorts = agent_names
            .iter()
            .map(|cohort| {
                cohort
                    .iter()
                    .map(|a| Ok(agent_client(rpc_channel(a, connection)?)))
                    .collect::<Result<Vec<_>, Error>>()
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let shared = generators
            .into_iter()
            .map(|g| Ok(loadgen_client(rpc_channel(g.as_ref(), connection)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            generators: vec![shared; cohorts.len()],
            cohorts,
            agent_names,
            generators_beside_agents: false,
        })
    }

    /// The same fleet, its agents called by these names in messages (per cohort, in order).
    pub fn with_agent_names(mut self, names: Vec<Vec<String>>) -> Self {
        self.agent_names = names;
        self
    }

    /// The agent hosts and generators an experiment names (`nodes`, `generators`).
    pub fn hosts(spec: &ExperimentSpec, connection: &Connection) -> Result<Self, Error> {
        Self::connect(
            spec.cohorts.iter().map(|c| &c.nodes),
            &spec.generators,
            connection,
        )
    }

    /// One node per cohort with its own generator (a virtual machine's), running `generators`
    /// storms side by side.
    pub fn own_generators(nodes: Vec<Endpoints>, generators: u32) -> Self {
        let copies = generators.max(1) as usize;
        let (cohorts, generators) = nodes
            .into_iter()
            .map(|node| (vec![node.agent], vec![node.loadgen; copies]))
            .unzip();
        Self {
            cohorts,
            generators,
            agent_names: Vec::new(),
            generators_beside_agents: false,
        }
    }

    /// One node for every cohort, its generator running `generators` storms side by side.
    pub fn single(endpoints: Endpoints, cohorts: usize, generators: u32) -> Self {
        Self {
            cohorts: vec![vec![endpoints.agent]; cohorts],
            generators: vec![vec![endpoints.loadgen; generators.max(1) as usize]; cohorts],
            agent_names: Vec::new(),
            generators_beside_agents: true,
        }
    }
}

/// How an invocation relates to stored results.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Store under this id. When an experiment with this id is stored already, continue it:
    /// runs stored as succeeded are not repeated, failed ones are tried again as a new attempt.
    pub experiment_id: Option<Uuid>,
    /// An agent or generator that cannot be reached ends the experiment as interrupted (its
    /// failed run stored, the rest left to a resume) instead of being tried again at the same
    /// address: on a cluster the controller replaces the pod and resumes on the new one.
    pub end_when_unreachable: bool,
    /// How long an agent that cannot be reached at the start (connection refused, as while a
    /// pod restarts its network) is tried again before the experiment fails. Zero for
    /// `loadlab run`, where an address that refuses is most likely a typo.
    pub describe_patience: Duration,
}

/// How an experiment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    Interrupted,
}

/// Runs the whole experiment and returns its id. Nothing is stored until every node has been
/// described and can run targets; after that every run is stored as it ends, failed or not.
pub async fn run_experiment(
    file: &ExperimentFile,
    store: &Store,
    fleet: Fleet,
    options: RunOptions,
    cancel: CancellationToken,
    mut on_event: impl FnMut(Event),
) -> Result<(Uuid, Ending), Error> {
    if fleet.cohorts.len() != file.spec.cohorts.len()
        || fleet.cohorts.iter().any(Vec::is_empty)
        || fleet.generators.len() != fleet.cohorts.len()
        || fleet.generators.iter().any(Vec::is_empty)
    {
        return Err(Error::Internal(
            "every cohort needs at least one node and a generator".into(),
        ));
    }
    let Fleet {
        cohorts: mut agents,
        generators,
        agent_names,
        generators_beside_agents,
    } = fleet;
    let mut facts: Vec<Vec<v1::NodeFacts>> = Vec::with_capacity(agents.len());
    for (cohort_index, (cohort, cohort_agents)) in
        file.spec.cohorts.iter().zip(&mut agents).enumerate()
    {
        let mut described = Vec::with_capacity(cohort_agents.len());
        for (index, agent) in cohort_agents.iter_mut().enumerate() {
            let patience = tokio::time::Instant::now() + options.describe_patience;
            let described_node = loop {
                let answer = tokio::time::timeout(
                    AGENT_CALL_DEADLINE,
                    agent.describe(v1::DescribeRequest {
                        kernel_symbols: file.spec.collect.kernel_symbols.clone(),
                    }),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(tonic::Status::deadline_exceeded(format!(
                        "the agent did not describe its node within {} s",
                        AGENT_CALL_DEADLINE.as_secs()
                    )))
                });
                match answer {
                    // Refused (Unavailable), or the connection dropped before an answer
                    // (Cancelled, or Unknown for a transport error); an answer of the agent's
                    // own (a wrong token, say) is final.
                    Err(status)
                        if matches!(
                            status.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Cancelled
                                | tonic::Code::Unknown
                        ) && tokio::time::Instant::now() < patience
                            && !cancel.is_cancelled() =>
                    {
                        tracing::info!(cohort = %cohort.name, error = %status.message(), "an agent does not answer yet; trying again");
                        tokio::select! {
                            () = tokio::time::sleep(DESCRIBE_RETRY_EVERY) => {}
                            () = cancel.cancelled() => {}
                        }
                    }
                    answer => break answer,
                }
            };
            let node = described_node
                .map_err(|status| {
                    let at = agent_names
                        .get(cohort_index)
                        .and_then(|names| names.get(index))
                        .map_or_else(|| format!("node {}", index + 1), |a| format!("node {a}"));
                    Error::Agent(format!(
                        "cohort {}, {at}: {}",
                        cohort.name,
                        status.message()
                    ))
                })?
                .into_inner();
            if node.nginx_version.is_empty() {
                return Err(Error::Preflight(format!(
                    "nginx not found on node {}: install it with `apt-get install nginx-light` (or set LOADLAB_NGINX)",
                    node.hostname
                )));
            }
            described.push(node);
        }
        distinct_node_names(&cohort.name, &described)?;
        facts.push(described);
    }
    let nodes_per_cohort: Vec<usize> = agents.iter().map(Vec::len).collect();
    let (budget, stopping) = file.spec.rounds();
    let plan = schedule(&nodes_per_cohort, budget);
    let planned_runs = i64::try_from(plan.len()).ok();
    let experiment_id = options.experiment_id.unwrap_or_else(Uuid::new_v4);
    let created = store
        .create_experiment(&NewExperiment {
            id: experiment_id,
            name: file.metadata.name.clone(),
            spec: serde_json::to_value(file).map_err(|e| Error::Internal(e.to_string()))?,
            baseline: file.baseline().to_string(),
            cohorts: file.spec.cohorts.iter().map(|c| c.name.clone()).collect(),
            planned_runs,
        })
        .await?;
    if !created {
        store.reopen_experiment(experiment_id, planned_runs).await?;
    }
    let stored = if options.experiment_id.is_some() {
        store.experiment_runs(experiment_id).await?
    } else {
        Vec::new()
    };
    // Every planned run gets at most 1 + retries attempts in all, however often the experiment
    // is resumed: a peer that keeps failing (a generator unreachable while its pod looks
    // Ready) costs a bounded number of stored failures, not one per resume forever.
    let attempt_budget = 1 + i32::try_from(file.spec.retries).unwrap_or(0);
    // (whether the run needs no more attempts: it succeeded or used its budget; attempts made)
    let attempts_so_far = |planned: &PlannedRun| -> (bool, i32) {
        let cohort = &file.spec.cohorts[planned.cohort].name;
        let hostname = &facts[planned.cohort][planned.node].hostname;
        let same: Vec<&RunRecord> = stored
            .iter()
            .filter(|r| {
                &r.cohort == cohort
                    && r.repetition == planned.repetition as i32
                    && &r.node.hostname == hostname
            })
            .collect();
        let made = same.iter().map(|r| r.attempt).max().unwrap_or(0);
        let done = made >= attempt_budget
            || same
                .iter()
                .any(|r| matches!(r.outcome, RunOutcome::Succeeded));
        (done, made)
    };
    let resumed = plan.iter().filter(|p| attempts_so_far(p).0).count();
    on_event(Event::Started {
        experiment_id,
        nodes: facts.iter().flatten().cloned().collect(),
        runs: plan.len() - resumed,
        resumed,
        failed_before: stored
            .iter()
            .filter(|r| matches!(r.outcome, RunOutcome::Failed { .. }))
            .count(),
        until_decided: stopping.is_some(),
    });

    let mut ending = Ending::Completed;
    let mut loadgens = generators;
    let mut rounds = RoundValues::new(file, &stored);
    let mut judged_through = 0;
    let mut stopped_after = None;
    for planned in plan {
        // A round is judged once every run of it is done, before the next round starts.
        if let Some(stopping) = stopping
            && planned.repetition > judged_through + 1
        {
            judged_through = planned.repetition - 1;
            if rounds.judge(judged_through, budget, stopping, &mut on_event) {
                stopped_after = Some(judged_through);
                break;
            }
        }
        let (done, previous_attempts) = attempts_so_far(&planned);
        if done {
            continue;
        }
        if cancel.is_cancelled() {
            ending = Ending::Interrupted;
            break;
        }
        let cohort = &file.spec.cohorts[planned.cohort];
        on_event(Event::RunStarted {
            run: planned,
            cohort: cohort.name.clone(),
            node: (facts[planned.cohort].len() > 1)
                .then(|| facts[planned.cohort][planned.node].hostname.clone()),
        });
        let nginx = file.spec.nginx_for(cohort);
        let node = node_record(&facts[planned.cohort][planned.node]);
        // A failed attempt is stored with its reason, then tried again up to `retries` times.
        for attempt_number in (previous_attempts + 1)..=attempt_budget {
            let mut attempt = RunAttempt {
                file,
                planned,
                nginx,
                agent: &mut agents[planned.cohort][planned.node],
                loadgens: &mut loadgens[planned.cohort],
                generators_beside_agents,
                cancel: &cancel,
                on_event: &mut on_event,
            };
            let started_at = Utc::now();
            let measured = attempt.execute().await;
            let mut record = unmeasured_run(
                experiment_id,
                &cohort.name,
                planned,
                &node,
                file,
                nginx,
                started_at,
            )?;
            record.attempt = attempt_number;
            let mut lost_peer = false;
            match measured {
                Ok(measurement) => measurement.fill(&mut record),
                Err(RunError::Interrupted) => {
                    ending = Ending::Interrupted;
                    break;
                }
                Err(RunError::Failed(reason)) => {
                    tracing::warn!(cohort = %cohort.name, repetition = planned.repetition, attempt = attempt_number, reason = %reason, "run failed");
                    record.outcome = RunOutcome::Failed { reason };
                }
                Err(RunError::Unreachable(reason)) => {
                    tracing::warn!(cohort = %cohort.name, repetition = planned.repetition, attempt = attempt_number, reason = %reason, "run failed: a peer is unreachable");
                    record.outcome = RunOutcome::Failed { reason };
                    lost_peer = options.end_when_unreachable;
                }
            }
            let succeeded = matches!(record.outcome, RunOutcome::Succeeded);
            record_run_patiently(store, &record, &cancel, &mut on_event).await?;
            rounds.add(&record);
            on_event(Event::RunFinished {
                run: planned,
                record: Box::new(record),
            });
            if succeeded {
                break;
            }
            if lost_peer {
                ending = Ending::Interrupted;
                break;
            }
        }
        if ending == Ending::Interrupted {
            break;
        }
    }
    if ending == Ending::Completed
        && let Some(stopping) = stopping
    {
        match stopped_after {
            // Stopped early: the runs it planned are the rounds it made.
            Some(round) => {
                let planned = nodes_per_cohort.iter().sum::<usize>() * round as usize;
                store
                    .reopen_experiment(experiment_id, i64::try_from(planned).ok())
                    .await?;
            }
            // The budget's last round, judged for the record: decided or not, it ends here.
            None => {
                rounds.judge(budget, budget, stopping, &mut on_event);
            }
        }
    }
    let status = match ending {
        Ending::Completed => ExperimentStatus::Completed,
        Ending::Interrupted => ExperimentStatus::Interrupted,
    };
    store.finish_experiment(experiment_id, status).await?;
    Ok((experiment_id, ending))
}

/// The succeeded runs' conn/s by round, and the stopping rule applied to them.
struct RoundValues<'a> {
    file: &'a ExperimentFile,
    metric: JudgedMetric,
    rounds: Rounds,
}

impl<'a> RoundValues<'a> {
    fn new(file: &'a ExperimentFile, stored: &[RunRecord]) -> Self {
        let metric = match file.spec.stopping.unwrap_or_default().metric {
            StoppingMetric::ConnectionsPerSecond => JudgedMetric::ConnectionsPerSecond,
            StoppingMetric::CpuPerConnection => JudgedMetric::CpuPerConnection,
        };
        let mut values = Self {
            file,
            metric,
            rounds: Rounds::of(metric),
        };
        for record in stored {
            values.add(record);
        }
        values
    }

    fn add(&mut self, record: &RunRecord) {
        if matches!(record.outcome, RunOutcome::Succeeded) {
            let round = u32::try_from(record.repetition).unwrap_or(0);
            if let Some(value) = record.judged_value(self.metric) {
                self.rounds.add(&record.cohort, round, value);
            }
        }
    }

    /// Judges rounds 1..=`through`; true when the experiment stops early (every cohort
    /// decided before the budget's last round).
    fn judge(
        &self,
        through: u32,
        budget: u32,
        stopping: StoppingSpec,
        on_event: &mut impl FnMut(Event),
    ) -> bool {
        let cohorts: Vec<String> = self
            .file
            .spec
            .cohorts
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let threshold = stopping.practical_change_percent / 100.0;
        let judgements =
            self.rounds
                .judge(&cohorts, self.file.baseline(), through, budget, threshold);
        let stops = through >= budget || all_decided(&judgements);
        on_event(Event::RoundJudged(RoundJudgement {
            round: through,
            budget,
            threshold,
            judgements,
            stops,
        }));
        stops && through < budget
    }
}

/// A node's runs are told apart from the other nodes' of its cohort by its name (the agent's
/// `--node-name`, or its hostname): two agents of one cohort must not share one, or resuming
/// and retrying would count one node's runs as the other's.
fn distinct_node_names(cohort: &str, nodes: &[v1::NodeFacts]) -> Result<(), Error> {
    for (index, node) in nodes.iter().enumerate() {
        if let Some(earlier) = nodes[..index]
            .iter()
            .position(|n| n.hostname == node.hostname)
        {
            return Err(Error::Preflight(format!(
                "cohort {cohort}: nodes {} and {} both call themselves {:?}; start each agent \
                 with its own --node-name",
                earlier + 1,
                index + 1,
                node.hostname
            )));
        }
    }
    Ok(())
}

/// How often an agent that does not answer at the start is asked again.
const DESCRIBE_RETRY_EVERY: Duration = Duration::from_secs(2);

/// How long a finished run waits for an unreachable database before the experiment gives up.
const STORE_PATIENCE: Duration = Duration::from_secs(600);

/// Writes a run, waiting out a database restart: a measured run is never dropped because the
/// database blinked. Writing is idempotent by run id, so a retry after an unclear failure
/// cannot store it twice.
async fn record_run_patiently(
    store: &Store,
    record: &RunRecord,
    cancel: &CancellationToken,
    on_event: &mut impl FnMut(Event),
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + STORE_PATIENCE;
    let mut told = false;
    loop {
        match store.record_run(record).await {
            Ok(_) => return Ok(()),
            Err(error)
                if error.is_transient()
                    && tokio::time::Instant::now() < deadline
                    && !cancel.is_cancelled() =>
            {
                if !told {
                    on_event(Event::StoreUnavailable {
                        error: error.to_string(),
                    });
                    told = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = cancel.cancelled() => {}
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// How far ahead several generators are given their shared start instant.
const GENERATOR_START_LEAD: Duration = Duration::from_millis(250);
/// How long stopping a target may take before the run moves on without the answer.
const TARGET_STOP_DEADLINE: Duration = Duration::from_secs(30);

enum RunError {
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
const AGENT_CALL_DEADLINE: Duration = Duration::from_secs(600);

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

struct RunAttempt<'a, F> {
    file: &'a ExperimentFile,
    planned: PlannedRun,
    nginx: NginxSpec,
    agent: &'a mut AgentClient<RpcChannel>,
    loadgens: &'a mut [LoadgenClient<RpcChannel>],
    generators_beside_agents: bool,
    cancel: &'a CancellationToken,
    on_event: &'a mut F,
}

/// What one successful run measured.
struct Measurement {
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
    async fn execute(&mut self) -> Result<Measurement, RunError> {
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
    fn fill(self, record: &mut RunRecord) {
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
            unpinned: self.unpinned,
        };
    }
}

/// A run record with its identity and settings and nothing measured yet: what a failed run
/// stores, and what a measurement fills in.
fn unmeasured_run(
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

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The node as the results store keeps it.
pub fn node_record(facts: &v1::NodeFacts) -> NodeRecord {
    NodeRecord {
        hostname: facts.hostname.clone(),
        kernel_release: facts.kernel_release.clone(),
        kernel_version: facts.kernel_version.clone(),
        cpu_model: facts.cpu_model.clone(),
        logical_cpus: i32::try_from(facts.logical_cpus).unwrap_or(i32::MAX),
        memory_bytes: to_i64(facts.memory_bytes),
        facts: node_details(facts),
    }
}

/// What a node's facts say beyond its identity (hostname, kernel, CPU, memory): stored with
/// the node, and printed by `loadlab agent describe --json`.
pub fn node_details(facts: &v1::NodeFacts) -> serde_json::Value {
    let symbols: BTreeMap<&str, &str> = facts
        .kernel_symbols
        .iter()
        .map(|s| (s.name.as_str(), s.presence_word()))
        .collect();
    serde_json::json!({
        "kernel_symbols": symbols,
        "epoll_refcount_patch": facts.epoll_refcount_patch().as_str(),
        "cmdline": facts.cmdline,
        "cpu_vulnerabilities": facts.cpu_vulnerabilities.iter().collect::<BTreeMap<_, _>>(),
        "scaling_governor": facts.scaling_governor,
        "smt": facts.smt,
        "numa_nodes": facts.numa_nodes,
        "virtualization": facts.virtualization,
        "emulated": facts.emulated,
        "nic_drivers": facts.nic_drivers.iter().collect::<BTreeMap<_, _>>(),
        "sysctls": facts.sysctls.iter().collect::<BTreeMap<_, _>>(),
        "nginx_version": facts.nginx_version,
    })
}
