use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use loadlab_engine::backends::{self, Notices};
use loadlab_engine::spec::ExperimentFile;
use loadlab_engine::spec::{CloseSpec, HandshakeAckSpec};
use loadlab_engine::{Connection, Ending, parse_experiment};
use loadlab_results::Database;
use loadlab_results::Store;
use loadlab_results::report::build_report;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::args::RunArgs;
use crate::commands::interrupt_token;
use crate::render::{self, RunProgress};
use crate::{COHORT_UNMEASURED, INTERRUPTED};

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let file = parse_experiment(&text)
        .and_then(|file| file.require_local().map(|()| file))
        .with_context(|| format!("{}", args.file.display()))?;
    let load = &file.spec.load;
    eprintln!(
        "loadlab {} · experiment {} · {} cohorts × {} repetitions · {} each (+{} warm-up) · {} connections{}",
        env!("CARGO_PKG_VERSION"),
        file.metadata.name,
        file.spec.cohorts.len(),
        match file.spec.rounds() {
            (budget, Some(stopping)) => format!(
                "auto (until decided, ±{}%, at most {budget})",
                stopping.practical_change_percent
            ),
            (fixed, None) => fixed.to_string(),
        },
        load.duration,
        load.warmup,
        load.connections,
        render::connection_modes(
            load.handshake_ack == HandshakeAckSpec::WithRequest,
            load.close == CloseSpec::Reset
        )
    );

    let database = Database::from_env();
    let store = database
        .open()
        .await
        .with_context(|| format!("results database ({})", database.describe()))?;
    if let Some(id) = args.resume {
        let stored = store.experiment(id).await.map_err(|error| match error {
            loadlab_results::Error::NotFound(_) => {
                anyhow::anyhow!(
                    "--resume {id}: no such experiment in {}",
                    database.describe()
                )
            }
            other => other.into(),
        })?;
        let cohorts: Vec<String> = file.spec.cohorts.iter().map(|c| c.name.clone()).collect();
        anyhow::ensure!(
            stored.name == file.metadata.name && stored.cohorts == cohorts,
            "--resume {id}: that experiment is {:?} with cohorts {}, not {:?} with cohorts {}",
            stored.name,
            stored.cohorts.join(", "),
            file.metadata.name,
            cohorts.join(", ")
        );
    }
    let token = args
        .token_file
        .as_deref()
        .map(loadlab_proto::auth::read_token_file)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let tls_ca = args
        .tls_ca
        .as_deref()
        .map(|path| std::fs::read(path).with_context(|| format!("cannot read {}", path.display())))
        .transpose()?;
    let hosts = Connection {
        token,
        tls_ca,
        tls_server_name: None,
    };
    let (experiment_id, ending) =
        execute(&file, &store, args.resume, &hosts, &interrupt_token()).await?;

    let report = build_report(
        store.experiment(experiment_id).await?,
        &store.experiment_runs(experiment_id).await?,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::report_table(&report));
        println!(
            "\nresults: experiment {experiment_id} in {}\n         `loadlab compare {experiment_id}` prints this report again; with `loadlab serve`:\n         GET http://127.0.0.1:8080/api/v1/experiments/{experiment_id}/comparison",
            database.describe()
        );
    }
    let unmeasured: Vec<&str> = report
        .cohorts
        .iter()
        .filter(|cohort| cohort.runs_succeeded == 0)
        .map(|cohort| cohort.name.as_str())
        .collect();
    Ok(match ending {
        Ending::Interrupted => {
            eprintln!("interrupted: the runs finished so far are stored");
            ExitCode::from(INTERRUPTED)
        }
        Ending::Completed if !unmeasured.is_empty() => {
            eprintln!(
                "no run of {} succeeded (the failed runs above say why): nothing to compare it by",
                unmeasured.join(", ")
            );
            ExitCode::from(COHORT_UNMEASURED)
        }
        Ending::Completed => ExitCode::SUCCESS,
    })
}

/// Runs one experiment file on what its cohorts name (this machine, virtual machines or agent
/// hosts), showing its progress; `loadlab run` and each step of `loadlab bisect` on this machine.
pub async fn execute(
    file: &ExperimentFile,
    store: &Store,
    resume: Option<Uuid>,
    hosts: &Connection,
    cancel: &CancellationToken,
) -> anyhow::Result<(Uuid, Ending)> {
    let mut progress = RunProgress::new(
        std::io::stderr().is_terminal(),
        file.spec.cohorts.iter().map(|c| c.name.clone()).collect(),
    );
    let notices: Notices = Arc::new(render::backend_notice);
    backends::execute(file, store, resume, hosts, cancel, notices, |event| {
        progress.show(&event)
    })
    .await
    .map_err(Into::into)
}
