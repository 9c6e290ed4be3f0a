//! The `loadlab` binary as a user runs it, as one test binary (each links the workspace again):
//! `run`, `bisect`'s refusals, `compare` and the fleet view, the dashboard in Chromium, `serve`'s
//! authentication, `storm`, `agent capture`, the controller command and interrupts. Needs
//! Postgres and nginx; root for the tracing parts. By hand: `tests/vm.rs` (QEMU) and
//! `tests/cluster_bisect.rs` (a cluster with kernel nodes).

mod capture;
mod controller;
mod dashboard;
mod fleet;
mod fleet_lab;
mod interrupt;
mod run;
mod serve_auth;
mod storm;
mod support;
