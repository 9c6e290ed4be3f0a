//! Runs an experiment through the run protocol: for every planned run, PrepareTarget, warm-up,
//! StartCapture, the measured storm, StopCapture, StopTarget, then the run is stored. Agent and
//! generator are reached through their gRPC clients, whether they live in this process or not.

use std::time::Duration;

use chrono::Utc;
use loadlab_proto::v1::{self};
use loadlab_results::sequential::{JudgedMetric, RoundJudgement, Rounds, all_decided};
use loadlab_results::{ExperimentStatus, NewExperiment, RunOutcome, RunRecord, Store};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Error;
use crate::plan::{PlannedRun, schedule};
use crate::spec::{ExperimentFile, StoppingMetric, StoppingSpec};

mod attempt;
mod fleet;
mod nodes;

use attempt::{AGENT_CALL_DEADLINE, RunAttempt, RunError, unmeasured_run};
pub use fleet::{
    Connection, Endpoints, Fleet, RpcChannel, agent_client, loadgen_client, rpc_channel,
};
pub use nodes::{node_details, node_record};

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
