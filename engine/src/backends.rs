//! What an experiment runs on, started for it and stopped after it whatever happened: loadlab's
//! own agent and generator in this process for `local` cohorts, one virtual machine per cohort
//! for `vm`, agent hosts already running for `hosts`. `loadlab run` and each step of a
//! bisection on this machine go through [`execute`]; on a cluster the controller makes pods
//! instead.

use std::sync::Arc;
use std::time::Duration;

use loadlab_results::Store;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::guests::{BootEvent, GuestFleet, StoppedGuest};
use crate::local::LocalNode;
use crate::spec::{CohortKind, ExperimentFile, ExperimentSpec};
use crate::{Connection, Ending, Error, Event, Fleet, RunOptions, run_experiment};

/// How long a guest's agent, up by its own account, may refuse connections: a guest booted
/// right after another on the same network namespace name sometimes refused the first
/// connection (seen in bisections: two of three boots that followed another).
const GUEST_PATIENCE: Duration = Duration::from_secs(30);

/// What happens to the machines an experiment runs on, for the person watching.
#[derive(Debug, Clone)]
pub enum BackendNotice {
    Boot(BootEvent),
    /// A guest stopped by itself mid-experiment (QEMU exited): its remaining runs will fail as
    /// their calls time out, so it is said at once.
    GuestStopped(StoppedGuest),
    /// A guest's last console lines, after an experiment that failed.
    GuestConsole {
        kernel: String,
        console: String,
    },
}

/// Where notices go; called from the experiment's task and from the guest watch.
pub type Notices = Arc<dyn Fn(BackendNotice) + Send + Sync>;

/// Runs one experiment file on what its cohorts name and stops everything started for it,
/// whatever happened. `hosts` is how agent hosts are reached (token, TLS); `on_event` sees
/// the run protocol's events, `notices` the machines'.
pub async fn execute(
    file: &ExperimentFile,
    store: &Store,
    resume: Option<Uuid>,
    hosts: &Connection,
    cancel: &CancellationToken,
    notices: Notices,
    on_event: impl FnMut(Event),
) -> Result<(Uuid, Ending), Error> {
    let backends = Backends::start(&file.spec, cancel, &notices).await?;
    let fleet = match backends.fleet(&file.spec, hosts) {
        Ok(fleet) => fleet,
        Err(error) => {
            backends.shutdown(false, &notices).await;
            return Err(error);
        }
    };
    let guest_watch = backends.guests.as_ref().map(|guests| {
        let stopped = guests.first_stopped();
        let notices = notices.clone();
        tokio::spawn(async move { notices(BackendNotice::GuestStopped(stopped.await)) })
    });
    let options = RunOptions {
        experiment_id: resume,
        describe_patience: if backends.guests.is_some() {
            GUEST_PATIENCE
        } else {
            Duration::ZERO
        },
        ..RunOptions::default()
    };
    let outcome = run_experiment(file, store, fleet, options, cancel.clone(), on_event).await;
    if let Some(watch) = guest_watch {
        watch.abort();
    }
    backends.shutdown(outcome.is_err(), &notices).await;
    outcome
}

/// The in-process node or the guests an experiment needs; hosts need nothing started.
struct Backends {
    local: Option<LocalNode>,
    guests: Option<GuestFleet>,
}

impl Backends {
    async fn start(
        spec: &ExperimentSpec,
        cancel: &CancellationToken,
        notices: &Notices,
    ) -> Result<Self, Error> {
        Ok(match spec.kind() {
            CohortKind::Local => Self {
                local: Some(LocalNode::start().await?),
                guests: None,
            },
            CohortKind::Vm => Self {
                local: None,
                guests: Some(boot_guests(spec, cancel, notices).await?),
            },
            CohortKind::Hosts | CohortKind::Cluster => Self {
                local: None,
                guests: None,
            },
        })
    }

    fn fleet(&self, spec: &ExperimentSpec, hosts: &Connection) -> Result<Fleet, Error> {
        match (&self.local, &self.guests) {
            (Some(node), _) => Ok(Fleet::single(
                node.endpoints()?,
                spec.cohorts.len(),
                spec.load.generators,
            )),
            (None, Some(guests)) => guests.fleet(spec.load.generators),
            (None, None) => Fleet::hosts(spec, hosts),
        }
    }

    /// Stops nginx targets, servers and guests; after a failure, each guest's last console
    /// lines are said first.
    async fn shutdown(self, failed: bool, notices: &Notices) {
        if let Some(node) = self.local {
            node.shutdown().await;
        }
        if let Some(guests) = self.guests {
            if failed {
                for (kernel, console) in guests.console_tails() {
                    notices(BackendNotice::GuestConsole { kernel, console });
                }
            }
            guests.shutdown().await;
        }
    }
}

/// Boots the experiment's virtual machines with this very binary inside them.
async fn boot_guests(
    spec: &ExperimentSpec,
    cancel: &CancellationToken,
    notices: &Notices,
) -> Result<GuestFleet, Error> {
    let loadlab = std::env::current_exe()
        .map_err(|e| Error::Preflight(format!("cannot find the loadlab binary: {e}")))?;
    let cache = loadlab_results::data_dir::default_data_dir();
    GuestFleet::boot(spec, loadlab, &cache, cancel, |event| {
        notices(BackendNotice::Boot(event))
    })
    .await
}
