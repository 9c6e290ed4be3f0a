//! Cohorts of virtual machines: one guest per cohort booting the cohort's kernel, its agent
//! and generator reached through loopback ports. The guests live as long as this value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::net::IpAddr;

use loadlab_loadgen::{LoadgenService, TargetPolicy};
use loadlab_vm::{Accelerator, AcceleratorChoice, Guest, GuestTools, NetworkChoice, VmConfig};

use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::local::LoopbackServer;
use crate::orchestrator::{
    Connection, Endpoints, Fleet, agent_client, loadgen_client, rpc_channel,
};
use crate::spec::{Accel, ExperimentSpec, GeneratorPlace, VmNetwork};

/// What booting tells the person waiting.
#[derive(Debug, Clone)]
pub enum BootEvent {
    Booting {
        cohort: String,
        kernel: String,
    },
    Booted {
        cohort: String,
        release: String,
        accelerator: Accelerator,
        took: Duration,
    },
}

/// A guest that stopped by itself while its experiment ran.
#[derive(Debug, Clone)]
pub struct StoppedGuest {
    pub cohort: String,
    pub kernel: String,
    /// Its last console lines.
    pub console: String,
}

/// The running guests of an experiment, in cohort order.
#[derive(Debug)]
pub struct GuestFleet {
    guests: Vec<Guest>,
    /// The cohort of each guest.
    cohorts: Vec<String>,
    /// Per cohort, whether its generator runs on this machine.
    generator_here: Vec<bool>,
    /// The generator served in this process for those cohorts, allowed to load exactly their
    /// guests.
    host_generator: Option<LoopbackServer>,
}

impl GuestFleet {
    /// Boots one guest per cohort, one after another (booting under emulation takes all the
    /// CPU there is). `loadlab` is the binary that runs inside the guests; kernel packages are
    /// cached under `cache`.
    pub async fn boot(
        spec: &ExperimentSpec,
        loadlab: PathBuf,
        cache: &Path,
        cancel: &CancellationToken,
        mut on_event: impl FnMut(BootEvent),
    ) -> Result<Self, Error> {
        let nginx = loadlab_agent::nginx::find_nginx()
            .map_err(|e| loadlab_vm::Error::Tools(e.to_string()))?;
        let tools = GuestTools::find(loadlab, nginx)?;
        let mut guests = Vec::with_capacity(spec.cohorts.len());
        for cohort in &spec.cohorts {
            let Some(vm) = &cohort.vm else {
                return Err(Error::Internal(format!("cohort {} has no vm", cohort.name)));
            };
            on_event(BootEvent::Booting {
                cohort: cohort.name.clone(),
                kernel: vm.kernel.clone(),
            });
            let config = VmConfig {
                kernel: vm.kernel.clone(),
                cpus: vm.cpus,
                memory_mib: vm.memory_mib,
                accelerator: match vm.accel {
                    Accel::Auto => AcceleratorChoice::Auto,
                    Accel::Kvm => AcceleratorChoice::Kvm,
                    Accel::Tcg => AcceleratorChoice::Tcg,
                },
                network: match vm.network {
                    VmNetwork::Auto => NetworkChoice::Auto,
                    VmNetwork::Tap => NetworkChoice::Tap,
                    VmNetwork::User => NetworkChoice::User,
                },
                hostname: guest_hostname(&cohort.name),
            };
            let guest = Guest::boot(&config, &tools, cache, cancel)
                .await
                .map_err(|error| match error {
                    loadlab_vm::Error::Interrupted => Error::Vm(error),
                    other => Error::Preflight(format!("cohort {}: {other}", cohort.name)),
                })?;
            on_event(BootEvent::Booted {
                cohort: cohort.name.clone(),
                release: guest.kernel.release.clone(),
                accelerator: guest.accelerator,
                took: guest.boot_time,
            });
            guests.push(guest);
        }
        let generator_here: Vec<bool> = spec
            .cohorts
            .iter()
            .map(|c| {
                c.vm.as_ref()
                    .is_some_and(|vm| vm.generator == GeneratorPlace::Host)
            })
            .collect();
        let mut allowed = Vec::new();
        for ((cohort, guest), here) in spec.cohorts.iter().zip(&guests).zip(&generator_here) {
            if !here {
                continue;
            }
            let address = guest.address().ok_or_else(|| {
                Error::Preflight(format!(
                    "cohort {}: `generator: host` loads the guest over a tap network, which needs root, /dev/net/tun and iproute2",
                    cohort.name
                ))
            })?;
            allowed.push(IpAddr::V4(address));
        }
        let host_generator = if allowed.is_empty() {
            None
        } else {
            let policy = TargetPolicy::loopback_only().and_allow(allowed);
            Some(
                LoopbackServer::start(
                    tonic::transport::Server::builder()
                        .add_service(LoadgenService::new(policy).into_server()),
                )
                .await?,
            )
        };
        Ok(Self {
            guests,
            cohorts: spec.cohorts.iter().map(|c| c.name.clone()).collect(),
            generator_here,
            host_generator,
        })
    }

    /// Clients for each guest's agent and generator; each cohort is loaded by its own guest's
    /// generator, so load never crosses between guests.
    pub fn fleet(&self, generators: u32) -> Result<Fleet, Error> {
        let nodes = self
            .guests
            .iter()
            .zip(&self.generator_here)
            .map(|(guest, here)| {
                let connection = Connection {
                    token: Some(guest.token.clone()),
                    tls_ca: None,
                    tls_server_name: None,
                };
                let loadgen = match (&self.host_generator, here) {
                    (Some(host), true) => {
                        rpc_channel(&host.address.to_string(), &Connection::default())?
                    }
                    _ => rpc_channel(&guest.loadgen.to_string(), &connection)?,
                };
                Ok(Endpoints {
                    agent: agent_client(rpc_channel(&guest.agent.to_string(), &connection)?),
                    loadgen: loadgen_client(loadgen),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Fleet::own_generators(nodes, generators))
    }

    /// Resolves when the first guest stops by itself (a kernel panic, QEMU crashing), naming it;
    /// never while every guest runs. Its runs then fail as their calls time out.
    pub fn first_stopped(&self) -> impl Future<Output = StoppedGuest> + Send + 'static {
        let watches: Vec<_> = self
            .guests
            .iter()
            .zip(&self.cohorts)
            .map(|(guest, cohort)| {
                let (cohort, kernel) = (cohort.clone(), guest.kernel.release.clone());
                let stopped = guest.stopped();
                Box::pin(async move {
                    StoppedGuest {
                        cohort,
                        kernel,
                        console: stopped.await,
                    }
                })
            })
            .collect();
        async move {
            if watches.is_empty() {
                std::future::pending::<()>().await;
            }
            futures::future::select_all(watches).await.0
        }
    }

    /// The last console lines of every guest, for a failed run's diagnosis.
    pub fn console_tails(&self) -> Vec<(String, String)> {
        self.guests
            .iter()
            .map(|g| (g.kernel.release.clone(), g.console_tail()))
            .collect()
    }

    pub async fn shutdown(self) {
        if let Some(host) = self.host_generator {
            host.stop().await;
        }
        for guest in self.guests {
            guest.shutdown().await;
        }
    }
}

/// A guest's hostname names its node in the results: the cohort's name, marked as a VM.
fn guest_hostname(cohort: &str) -> String {
    let mut name: String = cohort.chars().take(60).collect();
    name = name.trim_end_matches('-').to_string();
    format!("{name}-vm")
}
