//! Socket options that `nix` does not wrap. The one module of the workspace allowed `unsafe`:
//! each call hands the kernel a pointer to a local integer and that integer's size, nothing else.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

use nix::libc;

/// Holds back a connecting socket's last handshake segment (the ACK of the SYN-ACK) until the
/// socket's first data, so the ACK rides on the request instead of crossing the network alone.
///
/// Linux does this for a connecting socket whose `TCP_DEFER_ACCEPT` is set (the option is meant
/// for listeners; on a client it is read when the SYN-ACK arrives). The connection is
/// established for the client as before; if no data followed, the kernel would send the bare
/// ACK when its delayed-ACK timer fires (`TCP_DELACK_MAX`, 200 ms).
pub(crate) fn defer_handshake_ack(socket: &impl AsFd) -> std::io::Result<()> {
    // Any positive number of seconds turns the deferral on; the count matters to listeners only.
    let seconds: libc::c_int = 1;
    // SAFETY: the pointer is to a live `c_int` and the length is its size; the descriptor is
    // borrowed, so it stays open for the call.
    let result = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const seconds).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
