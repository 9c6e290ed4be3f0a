//! The generator against real servers on loopback, as one test binary: storms against nginx,
//! what each failure is called, and where the handshake's last ACK goes. Needs nginx.

mod error_kinds;
mod failures;
mod handshake_ack;
mod storm_against_nginx;
