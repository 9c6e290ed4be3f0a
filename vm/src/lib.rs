//! Kernels as nodes on one machine. A cohort's `vm` names a kernel (an image or a Debian
//! package); loadlab builds a guest around it (busybox, loadlab, nginx, the tracing tools, the
//! network modules the kernel lacks), boots it under QEMU, and reaches the guest's agent and
//! generator over the guest's network: a tap in a network namespace the run creates (root), or
//! QEMU's user-mode network with `restrict=on` and ports forwarded on loopback. Either way the
//! guest's link reaches nothing but this machine.

mod cpio;
pub mod kernel;
mod modules;
mod network;
mod qemu;
mod rootfs;

pub use kernel::Kernel;
pub use network::NetworkChoice;
pub use qemu::{Accelerator, AcceleratorChoice, Guest, VmConfig};
pub use rootfs::GuestTools;

/// The guest's address on QEMU's user-mode network, and that network's gateway.
pub(crate) const GUEST_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 2, 15);
pub(crate) const GUEST_GATEWAY: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 2, 2);
/// Where the guest's agent and generator listen (inside the guest).
pub use loadlab_proto::{AGENT_PORT, LOADGEN_PORT};
/// What the guest's init prints on its console once the agent and the generator listen.
pub(crate) const READY_LINE: &str = "loadlab-guest: agent and generator listening";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kernel: {0}")]
    Kernel(String),
    #[error("guest modules: {0}")]
    Modules(String),
    #[error("{0}")]
    Tools(String),
    #[error("guest file system: {0}")]
    Io(String),
    #[error("guest network: {0}")]
    Network(String),
    #[error(
        "qemu-system-x86_64 not found: `apt-get install qemu-system-x86` (or set LOADLAB_QEMU)"
    )]
    QemuMissing,
    #[error("the guest booting {kernel} stopped ({status}); its last console lines:\n{console}")]
    BootFailed {
        kernel: String,
        status: String,
        console: String,
    },
    #[error(
        "the agent in the guest booting {kernel} did not answer within {seconds} s; its last console lines:\n{console}"
    )]
    NeverAnswered {
        kernel: String,
        seconds: u64,
        console: String,
    },
    #[error("interrupted while booting the guest")]
    Interrupted,
}
