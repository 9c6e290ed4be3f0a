//! loadlab's load generator: connection storms against an HTTP server, measured honestly.
//!
//! The engine ([`storm`]) knows nothing of gRPC; [`grpc`] adapts it to the `loadlab.v1.Loadgen`
//! service and enforces which targets may be loaded.

pub mod grpc;
pub mod http;
mod outcome;
mod ports;
mod report;
mod sockopt;
pub mod storm;

pub use grpc::{LoadgenService, TargetPolicy};
pub use outcome::{ErrorCounts, ErrorKind};
pub use report::StormReport;
pub use storm::{CloseMode, HandshakeAck, Progress, StormConfig, StormError, run_storm};
