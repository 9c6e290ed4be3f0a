use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use loadlab_engine::guests::{BootEvent, GuestFleet};
use loadlab_engine::local::LocalNode;
use loadlab_engine::spec::ExperimentFile;
use loadlab_engine::spec::{CloseSpec, CohortKind, HandshakeAckSpec};
use loadlab_engine::{Connection, Ending, Fleet, RunOptions, parse_experiment, run_experiment};
use loadlab_results::Database;
use loadlab_results::Store;
use loadlab_results::report::build_report;
use loadlab_vm::Accelerator;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::INTERRUPTED;
use crate::args::RunArgs;
use crate::commands::interrupt_token;
use crate::render::{self, RunProgress};

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
    Ok(match ending {
        Ending::Completed => ExitCode::SUCCESS,
        Ending::Interrupted => {
            eprintln!("interrupted: the runs finished so far are stored");
            ExitCode::from(INTERRUPTED)
        }
    })
}

/// How long a guest's agent, up by its own account, may refuse connections: a guest booted
/// right after another on the same network namespace name sometimes refused the first
/// connection (seen in bisections: two of three boots that followed another).
const GUEST_PATIENCE: Duration = Duration::from_secs(30);

/// Runs one experiment file on what its cohorts name (this machine, virtual machines or agent
/// hosts) and stops everything it started, whatever happened; `loadlab run` and each step of
/// `loadlab bisect`.
pub async fn execute(
    file: &ExperimentFile,
    store: &Store,
    resume: Option<Uuid>,
    hosts: &Connection,
    cancel: &CancellationToken,
) -> anyhow::Result<(Uuid, Ending)> {
    let local = match file.spec.kind() {
        CohortKind::Local => Some(LocalNode::start().await?),
        CohortKind::Hosts | CohortKind::Cluster | CohortKind::Vm => None,
    };
    let guests = match file.spec.kind() {
        CohortKind::Vm => Some(boot_guests(&file.spec, cancel).await?),
        _ => None,
    };
    let mut progress = RunProgress::new(
        std::io::stderr().is_terminal(),
        file.spec.cohorts.iter().map(|c| c.name.clone()).collect(),
    );
    let fleet = match (&local, &guests) {
        (Some(node), _) => Fleet::single(
            node.endpoints()?,
            file.spec.cohorts.len(),
            file.spec.load.generators,
        ),
        (None, Some(guests)) => guests.fleet(file.spec.load.generators)?,
        (None, None) => Fleet::hosts(&file.spec, hosts)?,
    };
    // A guest that dies mid-experiment is said at once, with its console: its runs fail only
    // as their calls time out.
    let guest_watch = guests.as_ref().map(|guests| {
        let stopped = guests.first_stopped();
        tokio::spawn(async move {
            let guest = stopped.await;
            render::clear_line();
            eprintln!(
                "cohort {}: the {} guest stopped (QEMU exited); its remaining runs will fail. Last console lines:\n{}",
                guest.cohort, guest.kernel, guest.console
            );
        })
    });
    let outcome = run_experiment(
        file,
        store,
        fleet,
        RunOptions {
            experiment_id: resume,
            describe_patience: if guests.is_some() {
                GUEST_PATIENCE
            } else {
                Duration::ZERO
            },
            ..RunOptions::default()
        },
        cancel.clone(),
        |event| progress.show(&event),
    )
    .await;
    // Stop nginx targets and servers before reporting, whatever happened.
    if let Some(node) = local {
        node.shutdown().await;
    }
    if let Some(watch) = guest_watch {
        watch.abort();
    }
    if let Some(guests) = guests {
        if outcome.is_err() {
            for (kernel, console) in guests.console_tails() {
                eprintln!("last console lines of the {kernel} guest:\n{console}");
            }
        }
        guests.shutdown().await;
    }
    outcome.map_err(Into::into)
}

/// Boots the experiment's virtual machines, saying what happens: a cold boot under emulation
/// takes a while.
async fn boot_guests(
    spec: &loadlab_engine::spec::ExperimentSpec,
    cancel: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<GuestFleet> {
    let loadlab = std::env::current_exe().context("cannot find the loadlab binary")?;
    let cache = loadlab_results::data_dir::default_data_dir();
    let fleet = GuestFleet::boot(spec, loadlab, &cache, cancel, |event| match event {
        BootEvent::Booting { cohort, kernel } => {
            eprintln!("cohort {cohort}: booting {kernel}");
        }
        BootEvent::Booted {
            cohort,
            release,
            accelerator,
            took,
        } => {
            let note = match accelerator {
                Accelerator::Kvm => "",
                Accelerator::Tcg => {
                    " (emulated: lock evidence holds, connection rates say little about the kernel)"
                }
            };
            eprintln!(
                "cohort {cohort}: {release} up under {} in {:.1} s{note}",
                accelerator.name().to_uppercase(),
                took.as_secs_f64()
            );
        }
    })
    .await?;
    Ok(fleet)
}
