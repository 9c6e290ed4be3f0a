//! loadlab's Kubernetes controller: it reconciles `Experiment` resources (nodes chosen by
//! kernel, agent and generator pods made, the experiment run by the engine on them, the status
//! written), with leader election, and serves the results. The experiment itself (file, plan,
//! orchestrator) is `loadlab-engine`'s.

pub mod cache;
pub mod crd;
mod events;
mod leader;
pub mod namespaces;
pub mod netpol;
mod objects;
pub mod operator;
pub mod placement;
pub mod pods;
pub mod reconcile;
pub mod runner;
mod status_apply;
pub mod submit;
mod unreadable;

pub use loadlab_engine::{
    Connection, Ending, Endpoints, Error, Event, Experiment, ExperimentFile, Fleet, RunOptions,
    SpecError, orchestrator, parse_experiment, pod_tls, run_experiment, spec, status, token,
};
