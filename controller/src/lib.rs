//! loadlab's controller: the experiment model, the run schedule, and the orchestrator that
//! drives agents and generators through the run protocol and stores every run.

pub mod bisect;
pub mod cache;
pub mod crd;
pub mod events;
pub mod guests;
pub mod leader;
pub mod local;
pub mod namespaces;
pub mod netpol;
pub mod operator;
pub mod orchestrator;
pub mod placement;
pub mod plan;
pub mod pod_tls;
pub mod pods;
pub mod reconcile;
pub mod runner;
pub mod spec;
pub mod status;
pub mod token;
pub mod unreadable;

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
    #[error(transparent)]
    Vm(#[from] loadlab_vm::Error),
    #[error(transparent)]
    Results(#[from] loadlab_results::Error),
    #[error("internal error: {0}")]
    Internal(String),
}
