//! The controller's tests that need no cluster, as one binary (each test binary links the
//! workspace again): the chart, the CRD and examples, the reconciler against a mocked API server,
//! and the runner against a real agent and generator on loopback. Needs Postgres and nginx;
//! `helm` and `kubeconform` for the chart. The real-cluster tests are `tests/real_cluster`.

mod chart;
mod common;
mod crd;
mod reconcile;
mod runner;
