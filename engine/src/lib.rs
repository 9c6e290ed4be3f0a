//! loadlab's experiment engine: the experiment file, the run schedule, and the orchestrator that
//! drives agents and generators through the run protocol and stores every run, on this machine
//! (`local`), in virtual machines (`guests`), on agent hosts, or on the pods an operator made;
//! bisection of kernels over it; and the run protocol's TLS and tokens.

#[cfg(feature = "in-process")]
pub mod backends;
pub mod bisect;
#[cfg(feature = "in-process")]
pub mod guests;
#[cfg(feature = "in-process")]
pub mod local;
pub mod orchestrator;
mod plan;
pub mod pod_tls;
pub mod spec;
pub mod status;
pub mod token;

pub use orchestrator::{Connection, Ending, Endpoints, Event, Fleet, RunOptions, run_experiment};
pub use spec::{Experiment, ExperimentFile, SpecError, parse_experiment};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Preflight(String),
    #[error("agent: {0}")]
    Agent(String),
    #[cfg(feature = "in-process")]
    #[error(transparent)]
    Vm(#[from] loadlab_vm::Error),
    #[error(transparent)]
    Results(#[from] loadlab_results::Error),
    #[error("internal error: {0}")]
    Internal(String),
}
