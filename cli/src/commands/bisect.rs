//! `loadlab bisect FILE`: which kernel of an ordered list first shows a behaviour, by binary
//! search, each step an experiment on one kernel (in a virtual machine here, or on a cluster's
//! nodes of that kernel), stored with its decision; the whole search is stored as one bisection
//! (`GET /api/v1/bisections/{id}`).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use loadlab_controller::submit::{Submitted, run_on_cluster};
use loadlab_engine::bisect::{Answer, BisectionFile, Next, Search, judge, parse_bisection};
use loadlab_engine::{Connection, Ending, ExperimentFile};
use loadlab_results::Database;
use loadlab_results::Store;
use loadlab_results::bisections::{BisectionRow, BisectionStatus, BisectionStep, NewBisection};
use loadlab_results::report::build_report;
use uuid::Uuid;

use crate::INTERRUPTED;
use crate::args::BisectArgs;
use crate::commands::interrupt_token;
use crate::commands::run::execute;

/// Exit status when the search ended without an answer (a step could not decide).
const UNDECIDED: u8 = 3;

pub async fn run(args: BisectArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let file = parse_bisection(&text).with_context(|| format!("{}", args.file.display()))?;
    let spec = &file.spec;
    let most = Search::most_steps(spec.kernels.len(), spec.check_ends);
    eprintln!(
        "loadlab {} · bisection {} · {} kernels · first where {} · at most {most} steps",
        env!("CARGO_PKG_VERSION"),
        file.metadata.name,
        spec.kernels.len(),
        spec.holds.describe(),
    );
    let database = Database::from_env();
    let place = match &spec.cluster {
        None => StepPlace::Here,
        Some(cluster) => {
            // The controller stores each step's runs; the judgement reads them from there.
            if matches!(database, Database::Private(_)) {
                anyhow::bail!(
                    "{}: steps on a cluster are stored in the Postgres its loadlab controller writes to; set DATABASE_URL to it (e.g. `kubectl port-forward -n {ns} svc/loadlab-postgresql 5432` and the password in Secret loadlab-postgresql)",
                    args.file.display(),
                    ns = cluster.namespace
                );
            }
            let client = kube::Client::try_default()
                .await
                .context("a Kubernetes cluster for the steps (KUBECONFIG or in-cluster)")?;
            StepPlace::Cluster {
                client,
                namespace: cluster.namespace.clone(),
            }
        }
    };
    let store = database
        .open()
        .await
        .with_context(|| format!("results database ({})", database.describe()))?;
    let id = Uuid::new_v4();
    store
        .create_bisection(&NewBisection {
            id,
            name: file.metadata.name.clone(),
            spec: serde_json::to_value(spec)?,
            kernels: spec.kernels.clone(),
            condition: spec.holds.describe(),
        })
        .await?;
    eprintln!("bisection {id}");
    let cancel = interrupt_token();
    let started = Instant::now();
    let mut search = Search::new(spec.kernels.len(), spec.check_ends);
    let mut step = 0_u32;
    let ending = loop {
        let index = match search.next() {
            Next::Done(answer) => break Ok(answer),
            Next::Measure(index) => index,
        };
        step += 1;
        let kernel = &spec.kernels[index];
        eprintln!("\nstep {step} (at most {most}): {kernel}");
        let outcome = async {
            let experiment = file.step_experiment(index, step as usize - 1)?;
            let bisection = (file.metadata.name.as_str(), id);
            place
                .run(experiment, bisection, step, &store, &database, &cancel)
                .await
        }
        .await;
        let (experiment_id, ran) = match outcome {
            Ok(done) => done,
            Err(error) => {
                let why = format!("step {step} on {kernel}: {error:#}");
                eprintln!("error: {why}");
                break Err((BisectionStatus::Failed, why));
            }
        };
        if ran == Ending::Interrupted {
            break Err((
                BisectionStatus::Interrupted,
                format!("interrupted at step {step} on {kernel}; the steps before are stored"),
            ));
        }
        let report = build_report(
            store.experiment(experiment_id).await?,
            &store.experiment_runs(experiment_id).await?,
        )?;
        let judgement = judge(&spec.holds, &report);
        store
            .record_bisection_step(
                id,
                &BisectionStep {
                    step,
                    kernel_index: index as u32,
                    kernel: kernel.clone(),
                    experiment_id,
                    holds: judgement.holds,
                    value: judgement.value,
                    decision: judgement.decision.clone(),
                },
            )
            .await?;
        eprintln!("step {step}: {kernel}: {}", judgement.decision);
        match judgement.holds {
            Some(holds) => search.record(index, holds),
            None => {
                break Err((
                    BisectionStatus::Undecided,
                    format!(
                        "step {step} on {kernel} could not decide: {}",
                        judgement.decision
                    ),
                ));
            }
        }
    };
    let (status, first_holding, answer) = match ending {
        Ok(answer) => answer_in_words(&file, answer),
        Err((status, why)) => (status, None, why),
    };
    store
        .finish_bisection(id, status, first_holding.as_deref(), &answer)
        .await?;
    let stored = store.bisection(id).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stored)?);
    } else {
        print!("{}", bisection_table(&stored));
        println!(
            "\n{} steps in {:.0} s · results: bisection {id} in {}\n         with `loadlab serve`: GET http://127.0.0.1:8080/api/v1/bisections/{id}",
            stored.steps.len(),
            started.elapsed().as_secs_f64(),
            database.describe()
        );
    }
    Ok(match status {
        BisectionStatus::Found | BisectionStatus::Never | BisectionStatus::FromFirst => {
            ExitCode::SUCCESS
        }
        BisectionStatus::Interrupted => ExitCode::from(INTERRUPTED),
        BisectionStatus::Undecided => ExitCode::from(UNDECIDED),
        BisectionStatus::Failed | BisectionStatus::Running => ExitCode::FAILURE,
    })
}

/// Where a bisection's steps run.
enum StepPlace {
    /// On this machine: each step's cohorts are virtual machines.
    Here,
    /// As Experiment objects that a cluster's controller runs on its nodes.
    Cluster {
        client: kube::Client,
        namespace: String,
    },
}

impl StepPlace {
    /// Runs one step's experiment of `bisection` (its name and id) to its end: the step's
    /// stored id and how it ended.
    async fn run(
        &self,
        mut experiment: ExperimentFile,
        bisection: (&str, Uuid),
        step: u32,
        store: &Store,
        database: &Database,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<(Uuid, Ending)> {
        let (client, namespace) = match self {
            Self::Here => {
                return execute(&experiment, store, None, &Connection::default(), cancel).await;
            }
            Self::Cluster { client, namespace } => (client, namespace),
        };
        experiment.metadata.name = cluster_step_name(bisection.0, bisection.1, step);
        eprintln!(
            "  Experiment {} in namespace {namespace}",
            experiment.metadata.name
        );
        let submitted = run_on_cluster(client.clone(), namespace, &experiment, cancel, |line| {
            eprintln!("  {line}")
        })
        .await?;
        let Submitted::Succeeded { results_id, .. } = submitted else {
            return Ok((Uuid::nil(), Ending::Interrupted));
        };
        store.experiment(results_id).await.with_context(|| {
            format!(
                "the controller stored the step as experiment {results_id}, which is not in {}: DATABASE_URL must be the Postgres that controller writes to",
                database.describe()
            )
        })?;
        Ok((results_id, Ending::Completed))
    }
}

/// A step's Experiment name on a cluster: the bisection's name, its id's first characters (a
/// bisection run again makes new objects) and the step, within a label's 63 characters (names
/// are checked to be ASCII, so cutting at a byte is cutting at a character).
fn cluster_step_name(bisection_name: &str, bisection: Uuid, step: u32) -> String {
    let mut base = bisection_name.to_string();
    base.truncate(40);
    let id = bisection.simple().to_string();
    format!("{}-{}-step-{step}", base.trim_end_matches('-'), &id[..8])
}

/// The answer as stored: its status, the first kernel that holds, and a sentence that says
/// what was measured and what was assumed.
fn answer_in_words(
    file: &BisectionFile,
    answer: Answer,
) -> (BisectionStatus, Option<String>, String) {
    let spec = &file.spec;
    let condition = spec.holds.describe();
    let kernels = &spec.kernels;
    let assumed = if spec.check_ends {
        String::new()
    } else {
        format!(
            " (taken, not measured: it does not hold on the first kernel, {}, and holds on the last, {}; checkEnds: true measures both)",
            kernels[0],
            kernels[kernels.len() - 1]
        )
    };
    match answer {
        Answer::FirstHolds(index) => (
            BisectionStatus::Found,
            Some(kernels[index].clone()),
            format!(
                "{} is the first kernel where {condition}; {} is the last where it does not{assumed}",
                kernels[index],
                kernels[index - 1]
            ),
        ),
        Answer::NeverHolds => (
            BisectionStatus::Never,
            None,
            format!(
                "{condition}: not even on the last kernel, {}",
                kernels[kernels.len() - 1]
            ),
        ),
        Answer::HoldsFromFirst => (
            BisectionStatus::FromFirst,
            Some(kernels[0].clone()),
            format!("{condition}: already on the first kernel, {}", kernels[0]),
        ),
    }
}

/// The steps as a table, then the answer.
pub(crate) fn bisection_table(bisection: &BisectionRow) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nbisection {} · first kernel where {}",
        bisection.name, bisection.condition
    );
    let width = bisection
        .steps
        .iter()
        .map(|s| s.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(
        out,
        "{:>4}  {:<width$}  {:<7}  decision",
        "step", "kernel", "holds"
    );
    for step in &bisection.steps {
        let holds = match step.holds {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let _ = writeln!(
            out,
            "{:>4}  {:<width$}  {:<7}  {} (experiment {})",
            step.step, step.kernel, holds, step.decision, step.experiment_id
        );
    }
    let _ = writeln!(
        out,
        "\n{}: {}",
        status_word(bisection.status),
        bisection.answer.as_deref().unwrap_or("")
    );
    out
}

fn status_word(status: BisectionStatus) -> &'static str {
    match status {
        BisectionStatus::Found => "answer",
        BisectionStatus::Never | BisectionStatus::FromFirst => "no change in the list",
        BisectionStatus::Undecided => "undecided",
        BisectionStatus::Failed => "failed",
        BisectionStatus::Interrupted => "interrupted",
        BisectionStatus::Running => "running",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_on_a_cluster_is_named_for_its_bisection_and_fits_a_label() {
        let id = Uuid::parse_str("0123abcd-0000-4000-8000-000000000000").unwrap();
        assert_eq!(
            cluster_step_name("epoll-refcount", id, 3),
            "epoll-refcount-0123abcd-step-3"
        );
        let long = "a-very-long-bisection-name-".repeat(3);
        let name = cluster_step_name(&long, id, 12);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-0123abcd-step-12"), "{name}");
        assert!(!name.contains("--"), "{name}");
    }
}
