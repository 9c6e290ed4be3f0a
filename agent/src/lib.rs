//! loadlab's node agent: describes the node, runs the nginx target and captures counters over
//! a measured window. [`grpc`] serves it as `loadlab.v1.Agent`; the rest knows no gRPC.

pub mod conntrack;
pub mod counters;
pub mod cpus;
pub mod facts;
pub mod grpc;
pub mod kallsyms;
mod libbpf_log;
pub mod lockprobe;
pub mod lockstat;
pub mod nginx;
mod noise;
mod perf_event;
mod platform;
mod privilege;
mod probe_thread;
pub mod profile;
mod sampler;
pub mod traces;
mod usersyms;

use std::path::PathBuf;

pub use grpc::AgentService;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unexpected format in {0}")]
    Malformed(String),
    #[error(
        "nginx not found (looked at $LOADLAB_NGINX, PATH and /usr/sbin): install it with `apt-get install nginx-light`"
    )]
    NginxMissing,
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{reason}; nginx error log:\n{log}")]
    NginxFailed { reason: String, log: String },
    #[error("cannot find a free port on {address} for nginx: {source}")]
    Bind {
        address: std::net::IpAddr,
        source: std::io::Error,
    },
    #[error("cannot read nginx stub_status from {endpoint}: {reason}")]
    StubStatus {
        endpoint: std::net::SocketAddr,
        reason: String,
    },
}
