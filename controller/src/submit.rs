//! An experiment run by a cluster's loadlab controller on behalf of a command on this machine
//! (`loadlab bisect` with `cluster`): the Experiment object is created, its status followed to
//! the end, and its results are then in the store that controller writes to.

use std::time::Duration;

use futures::StreamExt;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::spec::{Experiment, ExperimentFile};
use crate::status::{ExperimentStatus, Phase};

/// How long an Experiment may sit without any status before the caller is told that nothing
/// seems to pick it up (it keeps waiting: a controller may be starting).
const UNCLAIMED_WARNING: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("cannot create Experiment {name} in namespace {namespace}: {source}")]
    Create {
        name: String,
        namespace: String,
        source: kube::Error,
    },
    #[error("Experiment {name} was deleted before it finished")]
    Deleted { name: String },
    #[error("Experiment {name} failed: {why}")]
    Failed { name: String, why: String },
    #[error("Experiment {name} succeeded without naming its results")]
    NoResults { name: String },
    #[error("watching Experiment {name}: the watch ended")]
    WatchEnded { name: String },
}

/// How a submitted experiment ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// It succeeded; its results are stored under this id.
    Succeeded {
        results_id: Uuid,
        status: Box<ExperimentStatus>,
    },
    /// The caller was interrupted: the object was deleted, which stops its runs.
    Interrupted,
}

/// Creates `file` as an Experiment object in `namespace` and follows it to the end, telling
/// `progress` each new line worth a person's attention: runs stored, conditions that do not
/// hold, nothing picking the object up.
pub async fn run_on_cluster(
    client: Client,
    namespace: &str,
    file: &ExperimentFile,
    cancel: &CancellationToken,
    mut progress: impl FnMut(&str),
) -> Result<Submitted, SubmitError> {
    let name = file.metadata.name.clone();
    let experiments = Api::<Experiment>::namespaced(client, namespace);
    let mut object = Experiment::new(&name, file.spec.clone());
    object.metadata.labels = Some(file.metadata.labels.clone()).filter(|l| !l.is_empty());
    object.metadata.annotations = Some(file.metadata.annotations.clone()).filter(|a| !a.is_empty());
    experiments
        .create(&PostParams::default(), &object)
        .await
        .map_err(|source| SubmitError::Create {
            name: name.clone(),
            namespace: namespace.to_string(),
            source,
        })?;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(experiments.clone(), config)
        .default_backoff()
        .boxed();
    let unclaimed = tokio::time::sleep(UNCLAIMED_WARNING);
    tokio::pin!(unclaimed);
    // Whether the object has a status yet, or the warning was said: either way, said no more.
    let mut claimed_or_warned = false;
    let mut said = std::collections::BTreeSet::new();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => {
                // Deleting the object is how a user stops an experiment; its stored runs stay.
                let _ = experiments.delete(&name, &DeleteParams::default()).await;
                return Ok(Submitted::Interrupted);
            }
            _ = &mut unclaimed, if !claimed_or_warned => {
                progress(&format!(
                    "nothing has taken Experiment {name} in namespace {namespace} after {} s: is loadlab's controller installed there and watching it?",
                    UNCLAIMED_WARNING.as_secs()
                ));
                claimed_or_warned = true;
                continue;
            }
            event = events.next() => event,
        };
        let experiment = match event {
            None => return Err(SubmitError::WatchEnded { name }),
            // The backoff retries; an error only says the watch is being re-established.
            Some(Err(_)) => continue,
            Some(Ok(watcher::Event::Delete(_))) => return Err(SubmitError::Deleted { name }),
            Some(Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e))) => e,
            Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => continue,
        };
        let Some(status) = experiment.status else {
            continue;
        };
        claimed_or_warned = true;
        for line in worth_saying(&status) {
            if said.insert(line.clone()) {
                progress(&line);
            }
        }
        match status.phase {
            Phase::Succeeded => {
                let results_id = status
                    .results_id
                    .as_deref()
                    .and_then(|id| Uuid::parse_str(id).ok())
                    .ok_or_else(|| SubmitError::NoResults { name: name.clone() })?;
                return Ok(Submitted::Succeeded {
                    results_id,
                    status: Box::new(status),
                });
            }
            Phase::Failed => {
                let why = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Completed")
                    .map(|c| c.message.clone())
                    .unwrap_or_else(|| "no reason given".into());
                return Err(SubmitError::Failed { name, why });
            }
            _ => {}
        }
    }
}

/// What a person following along needs from a status: why it waits or fails (a kernel no node
/// runs, pods not ready) and the runs stored.
fn worth_saying(status: &ExperimentStatus) -> Vec<String> {
    let mut lines: Vec<String> = status
        .conditions
        .iter()
        .filter(|c| c.status == "False")
        .map(|c| format!("{}: {}", c.type_, c.message))
        .collect();
    lines.extend(
        status
            .progress
            .as_deref()
            .map(|p| format!("runs stored {p}")),
    );
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_says_why_it_waits_and_how_many_runs_are_stored() {
        let mut status = ExperimentStatus {
            progress: Some("1/3".into()),
            ..ExperimentStatus::default()
        };
        status.set_condition("SpecValid", true, "Valid", "fine", "t");
        status.set_condition(
            "NodesPlanned",
            false,
            "NoNodes",
            "cohort \"6-1-0-53\" has no node: no node matches kernel 6.1.0-53-*",
            "t",
        );
        assert_eq!(
            worth_saying(&status),
            [
                "NodesPlanned: cohort \"6-1-0-53\" has no node: no node matches kernel 6.1.0-53-*",
                "runs stored 1/3"
            ]
        );
    }
}
