//! Drives a cluster experiment whose pods are ready: the same run protocol as `loadlab run`,
//! over gRPC to the agent and generator pods, runs stored in Postgres under the
//! `Experiment`'s uid. Progress, the per-cohort summary and the verdict go to the status; when
//! the experiment ends its pods are deleted.
//!
//! After a controller restart the reconciler starts the runner again; the store already holds
//! the finished runs under the same id, so only the missing ones run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, Resource, ResourceExt};
use loadlab_results::report::ExperimentReport;
use loadlab_results::stats::Verdict;
use loadlab_results::{RunOutcome, Store};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events::Events;
use crate::objects::uid_selector;
use crate::orchestrator::{Event, Fleet, RunOptions, run_experiment};
use crate::reconcile::{ReadyFleet, Runner, key};
use crate::spec::{API_VERSION, Experiment, ExperimentFile, KIND, Metadata};
use crate::status::{CohortStatus, Condition, Phase, StatusPart};
use crate::status_apply::apply_status;
use crate::{Ending, Error};

pub(crate) const RUNNER_MANAGER: &str = "loadlab-runner";

/// How long an agent pod that refuses connections at a runner's start is waited for.
const AGENT_PATIENCE: Duration = Duration::from_secs(90);

/// Runs experiments in this process, one task each.
pub struct ProtocolRunner {
    client: Client,
    store: Store,
    running: Arc<Mutex<HashMap<String, Running>>>,
    started: std::sync::atomic::AtomicU64,
    /// Told whenever a runner task ends.
    ended: Arc<tokio::sync::Notify>,
    events: Events,
}

/// One experiment's runner task: stopped through `cancel`; `generation` tells a task that ends
/// late from the one that replaced it under the same key.
struct Running {
    cancel: CancellationToken,
    generation: u64,
    fleet: ReadyFleet,
}

impl ProtocolRunner {
    pub fn new(client: Client, store: Store) -> Self {
        Self {
            client: client.clone(),
            store,
            running: Arc::default(),
            started: std::sync::atomic::AtomicU64::new(0),
            ended: Arc::default(),
            events: Events::new(client.clone(), None),
        }
    }

    /// Events name this replica (its pod name) as their reporting instance.
    pub(crate) fn reporting_as(mut self, instance: &str) -> Self {
        self.events = Events::new(self.client.clone(), Some(instance.to_string()));
        self
    }

    /// Waits until every runner task has ended, at most `within`; whether they all did.
    pub(crate) async fn stopped_within(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before looking, so an end between the look and the wait is not missed.
            ended.as_mut().enable();
            if self.lock().is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return self.lock().is_empty();
            }
        }
    }

    /// Stops every experiment (on shutdown or lost leadership); stored runs stay, and the next
    /// leader resumes from them.
    pub(crate) fn stop_all(&self) {
        for running in self.lock().values() {
            running.cancel.cancel();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Runner for ProtocolRunner {
    fn is_running(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    fn fleet(&self, key: &str) -> Option<ReadyFleet> {
        self.lock().get(key).map(|r| r.fleet.clone())
    }

    fn start(&self, experiment: Arc<Experiment>, fleet: ReadyFleet) {
        let name = key(&experiment);
        let cancel = CancellationToken::new();
        let generation = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut running = self.lock();
            if running.contains_key(&name) {
                return;
            }
            running.insert(
                name.clone(),
                Running {
                    cancel: cancel.clone(),
                    generation,
                    fleet: fleet.clone(),
                },
            );
        }
        let nodes: Vec<Vec<String>> = fleet
            .agents
            .iter()
            .map(|cohort| cohort.iter().map(|(node, _)| node.clone()).collect())
            .collect();
        let client = self.client.clone();
        let store = self.store.clone();
        let running = self.running.clone();
        let ended = self.ended.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let namespace = experiment.namespace().unwrap_or_else(|| "default".into());
            let experiments: Api<Experiment> = Api::namespaced(client.clone(), &namespace);
            let (outcome, progress) =
                drive(&experiments, &store, &experiment, fleet, cancel.clone()).await;
            let finished = match outcome {
                Ok((_, Ending::Interrupted)) => None,
                Ok((id, Ending::Completed)) => Some(
                    finish(
                        &experiments,
                        &store,
                        &experiment,
                        id,
                        &nodes,
                        progress,
                        &events,
                    )
                    .await,
                ),
                Err(error) => {
                    let mut status = progress;
                    status.phase = Some(Phase::Failed);
                    status.with_condition(completed(false, "RunFailed", &error.to_string()));
                    warn_of_problems(&events, &experiment, &status).await;
                    Some(write_status(&experiments, &experiment.name_any(), &status).await)
                }
            };
            if let Some(Err(error)) = &finished {
                tracing::warn!(experiment = %experiment.name_any(), %error, "writing the final status");
            }
            if finished.is_some() {
                delete_pods(&client, &namespace, &experiment).await;
            }
            let mut running = running
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if running
                .get(&name)
                .is_some_and(|r| r.generation == generation)
            {
                running.remove(&name);
            }
            drop(running);
            ended.notify_waiters();
        });
    }

    fn stop(&self, key: &str) {
        if let Some(running) = self.lock().remove(key) {
            running.cancel.cancel();
        }
    }
}

/// The experiment as the orchestrator reads it.
pub fn experiment_file(experiment: &Experiment) -> ExperimentFile {
    ExperimentFile {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: Metadata {
            name: experiment.name_any(),
            namespace: experiment.namespace(),
            labels: experiment.labels().clone(),
            annotations: Default::default(),
        },
        spec: experiment.spec.clone(),
    }
}

/// The results id: the resource's uid, so a restarted controller continues the same experiment.
pub fn results_id(experiment: &Experiment) -> Uuid {
    experiment
        .uid()
        .and_then(|uid| Uuid::parse_str(&uid).ok())
        .unwrap_or_else(Uuid::new_v4)
}

/// Runs the experiment; its outcome, and the progress last written to the status (the runner
/// applies its whole part of the status each time, so the final write carries it too).
async fn drive(
    experiments: &Api<Experiment>,
    store: &Store,
    experiment: &Experiment,
    ready: ReadyFleet,
    cancel: CancellationToken,
) -> (Result<(Uuid, Ending), Error>, StatusPart) {
    let id = results_id(experiment);
    let fleet = match Fleet::connect(
        ready
            .agents
            .iter()
            .map(|cohort| cohort.iter().map(|(_, address)| address.to_string())),
        ready.generators.iter().map(ToString::to_string),
        &ready.connection,
    ) {
        Ok(fleet) => fleet.with_agent_names(
            ready
                .agents
                .iter()
                .map(|cohort| cohort.iter().map(|(node, _)| node.clone()).collect())
                .collect(),
        ),
        Err(error) => return (Err(error), earlier_progress(experiment, id)),
    };
    let file = experiment_file(experiment);
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let name = experiment.name_any();
    let earlier = earlier_progress(experiment, id);
    let reporter = {
        let experiments = experiments.clone();
        tokio::spawn(async move {
            let mut progress = earlier;
            let (mut planned, mut resumed, mut failed) = (0usize, 0usize, 0usize);
            // A planned run counts once, however many attempts it took.
            let mut finished = std::collections::BTreeSet::new();
            // Once the database has failed a write, the status says so until the end, and
            // for how long it was away once it is back.
            let mut store_condition: Option<Condition> = None;
            let mut unavailable_since: Option<tokio::time::Instant> = None;
            let mut stopping: Option<String> = progress.stopping.clone();
            // With `repetitions: auto`, the verdict is the stopping rule's once it stops.
            let mut decided: Option<String> = None;
            while let Some(event) = received.recv().await {
                match event {
                    Event::StoreUnavailable { error } => {
                        unavailable_since = Some(tokio::time::Instant::now());
                        store_condition = Some(condition(
                            RESULTS_STORED,
                            false,
                            "DatabaseUnavailable",
                            &format!("a finished run waits for the results database: {error}"),
                        ));
                    }
                    Event::Started {
                        runs,
                        resumed: earlier,
                        failed_before,
                        ..
                    } => {
                        planned = runs + earlier;
                        resumed = earlier;
                        // Failed attempts stored before a resume count too.
                        failed = failed_before;
                    }
                    Event::RunFinished { run, record } => {
                        if let Some(since) = unavailable_since.take() {
                            store_condition = Some(condition(
                                RESULTS_STORED,
                                true,
                                "DatabaseBack",
                                &format!(
                                    "the results database was unreachable for {:.0} s; the run \
                                     that waited is stored",
                                    since.elapsed().as_secs_f64()
                                ),
                            ));
                        }
                        finished.insert(run.sequence);
                        if matches!(record.outcome, RunOutcome::Failed { .. }) {
                            failed += 1;
                        }
                    }
                    Event::RoundJudged(judged) => {
                        let cohorts = judged.lines().join("; ");
                        let mut line = format!(
                            "round {} of at most {}: {cohorts}",
                            judged.round, judged.budget
                        );
                        if let Some(reason) = judged.stop_reason() {
                            line.push_str(&format!(" · {reason}"));
                            // No run comes after this one: what is stored is what was planned.
                            planned = resumed + finished.len();
                            decided = Some(cohorts);
                        }
                        stopping = Some(line);
                    }
                    _ => continue,
                }
                let stored = resumed + finished.len();
                progress = StatusPart {
                    phase: Some(Phase::Running),
                    results_id: Some(id.to_string()),
                    progress: Some(format!("{stored}/{planned}")),
                    runs_planned: Some(planned as u32),
                    runs_stored: Some(stored as u32),
                    runs_failed: Some(failed as u32),
                    conditions: store_condition.clone().map(|store| vec![store]),
                    stopping: stopping.clone(),
                    verdict: decided.clone(),
                    ..StatusPart::default()
                };
                if let Err(error) = write_status(&experiments, &name, &progress).await {
                    tracing::warn!(experiment = %name, %error, "writing progress");
                }
            }
            progress
        })
    };
    let outcome = run_experiment(
        &file,
        store,
        fleet,
        RunOptions {
            experiment_id: Some(id),
            // The reconciler replaces a lost pod and starts the runner again.
            end_when_unreachable: true,
            // A pod that looked Ready may not take connections for a while (its network
            // restarting, a node under pressure): ride that out instead of failing for good.
            describe_patience: AGENT_PATIENCE,
        },
        cancel,
        move |event| {
            if matches!(
                event,
                Event::Started { .. }
                    | Event::RunFinished { .. }
                    | Event::StoreUnavailable { .. }
                    | Event::RoundJudged { .. }
            ) {
                let _ = events.send(event);
            }
        },
    )
    .await;
    let progress = reporter
        .await
        .unwrap_or_else(|_| earlier_progress(experiment, id));
    (outcome, progress)
}

/// The runner's part of the status as an earlier runner of this experiment left it: a runner
/// that fails before its first run (a node gone while the experiment was resumed) must not
/// write the counts of the runs stored so far away.
fn earlier_progress(experiment: &Experiment, id: Uuid) -> StatusPart {
    let id = id.to_string();
    let mut progress = StatusPart {
        results_id: Some(id.clone()),
        ..StatusPart::default()
    };
    if let Some(status) = experiment
        .status
        .as_ref()
        .filter(|s| s.results_id.as_deref() == Some(id.as_str()) && s.runs_planned > 0)
    {
        progress.progress = status.progress.clone();
        progress.runs_planned = Some(status.runs_planned);
        progress.runs_stored = Some(status.runs_stored);
        progress.runs_failed = Some(status.runs_failed);
    }
    progress
}

async fn finish(
    experiments: &Api<Experiment>,
    store: &Store,
    experiment: &Experiment,
    id: Uuid,
    nodes: &[Vec<String>],
    progress: StatusPart,
    events: &Events,
) -> Result<(), kube::Error> {
    let report = match store.experiment(id).await {
        Ok(row) => store.report(row).await.ok(),
        Err(_) => None,
    };
    let (mut cohorts, verdict) = report.as_ref().map(summarize).unwrap_or_default();
    // The report lists cohorts in the spec's order, as the fleet does.
    for (cohort, names) in cohorts.iter_mut().zip(nodes) {
        cohort.nodes = names.clone();
    }
    // Every run stored is not every run measured: a cohort none of whose runs succeeded has
    // nothing to compare, and the experiment has failed.
    let empty: Vec<String> = report
        .as_ref()
        .map(|r| {
            r.cohorts
                .iter()
                .filter(|c| c.runs_succeeded == 0)
                .map(|c| match c.failures.last() {
                    Some(why) => format!("{}: no run succeeded (last: {why})", c.name),
                    None => format!("{}: no run succeeded", c.name),
                })
                .collect()
        })
        .unwrap_or_else(|| vec!["the stored runs could not be read back".to_string()]);
    let (phase, condition) = if empty.is_empty() {
        (
            Phase::Succeeded,
            completed(true, "AllRunsStored", "every planned run is stored"),
        )
    } else {
        (
            Phase::Failed,
            completed(false, "CohortWithoutRuns", &empty.join("; ")),
        )
    };
    let mut status = progress;
    status.phase = Some(phase);
    status.cohorts = Some(cohorts);
    // With `repetitions: auto` the stopping rule's verdict stands.
    status.verdict = status.verdict.or(verdict);
    status.with_condition(condition);
    if let Some(report) = &report {
        status.with_condition(evidence_condition(report));
    }
    warn_of_problems(events, experiment, &status).await;
    write_status(experiments, &experiment.name_any(), &status).await
}

/// Every condition of the final status that is False is also an Event.
async fn warn_of_problems(events: &Events, experiment: &Experiment, status: &StatusPart) {
    let object = experiment.object_ref(&());
    for condition in status.conditions() {
        if condition.status == "False" {
            events
                .warn(
                    &object,
                    &condition.type_,
                    &condition.reason,
                    &condition.message,
                )
                .await;
        }
    }
}

/// The runner's condition on the evidence the experiment asked for.
pub(crate) const EVIDENCE_COLLECTED: &str = "EvidenceCollected";
/// The most reasons a condition message lists; the report has them all.
const REASONS_SHOWN: usize = 4;

/// Whether every run's lock contention and CPU profile (those asked for) were collected; when
/// not, why, per cohort, as the agents said it (which capability or sysctl is missing, and
/// what to set), so `kubectl describe` shows it.
pub(crate) fn evidence_condition(report: &ExperimentReport) -> Condition {
    let reasons: Vec<String> = report
        .cohorts
        .iter()
        .flat_map(|cohort| {
            cohort
                .lock_contention_unavailable
                .iter()
                .chain(&cohort.cpu_profile_unavailable)
                .map(move |reason| format!("{}: {reason}", cohort.name))
        })
        .collect();
    if reasons.is_empty() {
        return condition(
            EVIDENCE_COLLECTED,
            true,
            "Collected",
            "every run collected the evidence asked for",
        );
    }
    let mut message = reasons[..reasons.len().min(REASONS_SHOWN)].join("; ");
    if reasons.len() > REASONS_SHOWN {
        message.push_str(&format!(
            "; and {} more in the report",
            reasons.len() - REASONS_SHOWN
        ));
    }
    condition(EVIDENCE_COLLECTED, false, "EvidenceUnavailable", &message)
}

/// Per-cohort lines and one verdict line, e.g. `patched: faster +61.2% [+55.0%, +67.8%]`.
pub fn summarize(report: &ExperimentReport) -> (Vec<CohortStatus>, Option<String>) {
    let mut verdicts = Vec::new();
    let cohorts = report
        .cohorts
        .iter()
        .map(|cohort| {
            let versus = cohort.comparison.as_ref().map(|c| {
                let percent = |r: f64| format!("{:+.1}%", (r - 1.0) * 100.0);
                let interval = c
                    .ci95
                    .map(|(low, high)| format!(" [{}, {}]", percent(low), percent(high)))
                    .unwrap_or_default();
                let detects = match (c.verdict, c.min_detectable_change) {
                    (Verdict::NoDetectableChange, Some(d)) => {
                        format!(" (detects ±{:.1}%)", d * 100.0)
                    }
                    _ => String::new(),
                };
                format!(
                    "{} {}{interval}{detects}",
                    c.verdict.as_str(),
                    percent(c.ratio)
                )
            });
            if let Some(line) = &versus {
                verdicts.push(format!("{}: {line}", cohort.name));
            }
            CohortStatus {
                name: cohort.name.clone(),
                nodes: Vec::new(),
                runs: cohort.runs_succeeded as u32,
                connections_per_second: cohort.summary.map(|s| s.mean),
                versus_baseline: versus,
            }
        })
        .collect();
    let verdict = (!verdicts.is_empty()).then(|| verdicts.join("; "));
    (cohorts, verdict)
}

/// The runner's condition on the results database, present once a write has failed.
pub const RESULTS_STORED: &str = "ResultsStored";

/// The runner's own condition on the experiment's end.
fn completed(done: bool, reason: &str, message: &str) -> Condition {
    condition("Completed", done, reason, message)
}

/// A condition as of now: the runner applies its whole part each time (one left out would be
/// removed), so its conditions carry the time of that write.
fn condition(type_: &str, holds: bool, reason: &str, message: &str) -> Condition {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Condition::new(type_, holds, reason, message, &now)
}

async fn write_status(
    experiments: &Api<Experiment>,
    name: &str,
    status: &StatusPart,
) -> Result<(), kube::Error> {
    apply_status(experiments, name, RUNNER_MANAGER, status).await
}

/// A finished experiment frees its nodes: agent and generator pods go (the Secret stays with
/// the resource).
async fn delete_pods(client: &Client, namespace: &str, experiment: &Experiment) {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    // By uid: a new experiment of the same name keeps its pods.
    let selector = ListParams::default().labels(&uid_selector(experiment));
    if let Err(error) = pods
        .delete_collection(&DeleteParams::default(), &selector)
        .await
    {
        tracing::warn!(experiment = %experiment.name_any(), %error, "deleting the experiment's pods");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadlab_results::report::CohortAccumulator;
    use serde_json::json;

    fn report(reasons: &[(&str, &str)]) -> ExperimentReport {
        let mut cohorts: Vec<_> = ["unpatched", "patched"]
            .map(|name| CohortAccumulator::new(name).finish())
            .into();
        for (cohort, reason) in reasons {
            let cohort = cohorts.iter_mut().find(|c| c.name == *cohort).unwrap();
            cohort.cpu_profile_unavailable.push(reason.to_string());
        }
        ExperimentReport {
            experiment: loadlab_results::model::ExperimentRow {
                id: Uuid::nil(),
                name: "e".into(),
                baseline: "unpatched".into(),
                cohorts: vec!["unpatched".into(), "patched".into()],
                status: "completed".into(),
                created_at: chrono::Utc::now(),
                finished_at: None,
                planned_runs: None,
                revision: 0,
                stopping: None,
            },
            cohorts,
            nodes: Vec::new(),
            stopping: None,
        }
    }

    #[test]
    fn missing_evidence_is_a_condition_that_names_the_cohort_and_the_agents_reason() {
        let fine = evidence_condition(&report(&[]));
        assert_eq!(
            (fine.status.as_str(), fine.reason.as_str()),
            ("True", "Collected")
        );
        let debian = "CPU profile unavailable: ... set `sysctl kernel.perf_event_paranoid=2`";
        let missing = evidence_condition(&report(&[("patched", debian)]));
        assert_eq!(missing.status, "False");
        assert_eq!(missing.reason, "EvidenceUnavailable");
        assert_eq!(missing.message, format!("patched: {debian}"));
        let many: Vec<(&str, &str)> = vec![
            ("unpatched", "a"),
            ("unpatched", "b"),
            ("patched", "c"),
            ("patched", "d"),
            ("patched", "e"),
        ];
        let message = evidence_condition(&report(&many)).message;
        assert!(message.ends_with("; and 1 more in the report"), "{message}");
    }

    #[test]
    fn a_resumed_runner_keeps_the_counts_an_earlier_one_wrote_for_the_same_results() {
        let file = crate::parse_experiment(
            "apiVersion: loadlab.dev/v1alpha1\nkind: Experiment\nmetadata: { name: e }\nspec:\n  target: { nginx: {} }\n  load: { connections: 8, duration: 1s }\n  cohorts: [{ name: a, kernel: \"6.*\" }]\n",
        )
        .unwrap();
        let mut experiment = Experiment::new("e", file.spec);
        let id = Uuid::from_u128(7);
        experiment.status = Some(crate::status::ExperimentStatus {
            results_id: Some(id.to_string()),
            progress: Some("3/4".into()),
            runs_planned: 4,
            runs_stored: 3,
            runs_failed: 1,
            ..Default::default()
        });
        // What is applied: exactly the runner's fields, no more.
        let applied = |id| serde_json::to_value(earlier_progress(&experiment, id)).unwrap();
        assert_eq!(
            applied(id),
            json!({
                "resultsId": id.to_string(), "progress": "3/4",
                "runsPlanned": 4, "runsStored": 3, "runsFailed": 1,
            })
        );
        // Another results id (the experiment deleted and made again) starts from nothing.
        let other = Uuid::from_u128(8);
        assert_eq!(applied(other), json!({ "resultsId": other.to_string() }));
    }
}
