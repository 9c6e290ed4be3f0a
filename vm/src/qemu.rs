//! Booting a guest under QEMU and knowing when its agent and generator are up.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::kernel::{self, Kernel};
use crate::modules::{self, NETWORK_MODULES};
use crate::network::{NetworkChoice, TapNetwork, tap_possible};
use crate::rootfs::GuestAddressing;
use crate::rootfs::{GuestIdentity, GuestTools, RootFs};
use crate::{AGENT_PORT, Error, GUEST_ADDRESS, GUEST_GATEWAY, LOADGEN_PORT, READY_LINE};

/// How the guest's CPUs are provided, as asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AcceleratorChoice {
    /// KVM when `/dev/kvm` boots the guest, emulation otherwise.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

/// How the guest's CPUs were provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    Kvm,
    /// QEMU's emulator: instructions are translated, so timings say little about the kernel.
    Tcg,
}

impl Accelerator {
    pub fn name(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        }
    }

    fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Accelerator::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accelerator::Tcg => ["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }

    /// How long a boot may take until the agent and generator listen.
    fn boot_deadline(self) -> Duration {
        match self {
            // A guest KVM accepts is up in seconds; one it cannot run hangs silently, and the
            // wait is paid before falling back to emulation.
            Accelerator::Kvm => Duration::from_secs(15),
            Accelerator::Tcg => Duration::from_secs(300),
        }
    }
}

/// One cohort's virtual machine.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// An image path or a Debian kernel package name.
    pub kernel: String,
    pub cpus: u32,
    pub memory_mib: u32,
    pub accelerator: AcceleratorChoice,
    pub network: NetworkChoice,
    /// The guest's hostname, which names it as a node in the results.
    pub hostname: String,
}

/// The last console lines a guest printed.
#[derive(Debug, Clone, Default)]
struct Console(Arc<Mutex<VecDeque<String>>>);

const CONSOLE_LINES: usize = 40;

impl Console {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == CONSOLE_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn tail(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.is_empty() {
            return "  (nothing)".into();
        }
        lines
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A running guest. Dropping it kills the virtual machine and removes its files and network.
#[derive(Debug)]
pub struct Guest {
    process: Child,
    _files: tempfile::TempDir,
    /// Dropped after the process: the namespace goes once QEMU is killed.
    network: Option<TapNetwork>,
    console: Console,
    /// Cancelled when the guest's console closes: QEMU has exited.
    stopped: CancellationToken,
    pub kernel: Kernel,
    pub accelerator: Accelerator,
    /// The guest's agent and generator, forwarded to this machine's loopback.
    pub agent: SocketAddr,
    pub loadgen: SocketAddr,
    /// The bearer token both require.
    pub token: String,
    pub boot_time: Duration,
}

impl Guest {
    /// The guest's own address, when this machine reaches it directly (tap network): nginx in
    /// the guest listens there, so a generator here can load it.
    pub fn address(&self) -> Option<Ipv4Addr> {
        self.network.as_ref().map(|n| n.guest_address)
    }
}

/// Finds QEMU: `$LOADLAB_QEMU`, then `PATH`.
fn find_qemu() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("LOADLAB_QEMU") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::QemuMissing)
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .ok_or(Error::QemuMissing)
}

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

impl Guest {
    /// Resolves the kernel (downloading a package into `cache` once), builds the guest's file
    /// system and boots it, returning once its agent and generator listen.
    pub async fn boot(
        config: &VmConfig,
        tools: &GuestTools,
        cache: &Path,
        cancel: &CancellationToken,
    ) -> Result<Self, Error> {
        let qemu = find_qemu()?;
        let kernel = {
            let (name, cache) = (config.kernel.clone(), cache.to_path_buf());
            tokio::task::spawn_blocking(move || kernel::resolve(&name, &cache))
                .await
                .map_err(|e| Error::Kernel(e.to_string()))??
        };
        let modules = match &kernel.modules {
            Some(dir) => modules::load_order(dir, &NETWORK_MODULES)?,
            None => {
                tracing::warn!(release = %kernel.release, "no modules directory for this kernel: its network drivers must be built in");
                Vec::new()
            }
        };
        let network = match config.network {
            NetworkChoice::User => None,
            NetworkChoice::Auto if !tap_possible() => None,
            NetworkChoice::Tap if !tap_possible() => {
                return Err(Error::Network(
                    "a tap network needs root, /dev/net/tun and iproute2 (`network: user` needs none)".into(),
                ));
            }
            NetworkChoice::Auto | NetworkChoice::Tap => Some(
                tokio::task::spawn_blocking(TapNetwork::create)
                    .await
                    .map_err(|e| Error::Network(e.to_string()))??,
            ),
        };
        let addressing = match &network {
            Some(tap) => GuestAddressing {
                address: tap.guest_address,
                gateway: tap.host_address,
                target_on_address: true,
            },
            None => GuestAddressing {
                address: GUEST_ADDRESS,
                gateway: GUEST_GATEWAY,
                target_on_address: false,
            },
        };
        let identity = GuestIdentity {
            addressing,
            hostname: config.hostname.clone(),
            token: format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
        };
        let files = tempfile::Builder::new()
            .prefix("loadlab-vm-")
            .tempdir()
            .map_err(|e| Error::Io(e.to_string()))?;
        let archive = files.path().join("initrd.cpio");
        {
            let (tools, identity, archive) = (tools.clone(), identity.clone(), archive.clone());
            tokio::task::spawn_blocking(move || {
                RootFs::guest(&tools, &modules, &identity)?.write_archive(&archive)
            })
            .await
            .map_err(|e| Error::Io(e.to_string()))??;
        }
        let accelerators = match config.accelerator {
            AcceleratorChoice::Auto if kvm_usable() => vec![Accelerator::Kvm, Accelerator::Tcg],
            AcceleratorChoice::Auto | AcceleratorChoice::Tcg => vec![Accelerator::Tcg],
            AcceleratorChoice::Kvm => vec![Accelerator::Kvm],
        };
        let mut last_error = None;
        for (i, accelerator) in accelerators.iter().copied().enumerate() {
            let launch = Launch {
                qemu: &qemu,
                kernel: &kernel,
                archive: &archive,
                config,
                accelerator,
                network: network.as_ref(),
            };
            match launch.run(cancel).await {
                Ok(running) => {
                    return Ok(Self {
                        process: running.process,
                        _files: files,
                        network,
                        console: running.console,
                        stopped: running.stopped,
                        kernel,
                        accelerator,
                        agent: running.agent,
                        loadgen: running.loadgen,
                        token: identity.token,
                        boot_time: running.boot_time,
                    });
                }
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(error) if i + 1 < accelerators.len() => {
                    tracing::warn!(kernel = %kernel.release, %error, "KVM did not boot the guest; emulating it with TCG instead");
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(Error::QemuMissing))
    }

    /// The guest's last console lines.
    pub fn console_tail(&self) -> String {
        self.console.tail()
    }

    /// Resolves when the guest stops without being asked (QEMU exited: a kernel panic, a crash,
    /// a signal from elsewhere), with its last console lines; never for a guest that runs on.
    pub fn stopped(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let (stopped, console) = (self.stopped.clone(), self.console.clone());
        async move {
            stopped.cancelled().await;
            console.tail()
        }
    }

    /// Powers the guest off (it holds nothing worth a clean shutdown).
    pub async fn shutdown(mut self) {
        let _ = self.process.start_kill();
        let _ = self.process.wait().await;
    }
}

struct Launch<'a> {
    qemu: &'a Path,
    kernel: &'a Kernel,
    archive: &'a Path,
    config: &'a VmConfig,
    accelerator: Accelerator,
    network: Option<&'a TapNetwork>,
}

struct Running {
    process: Child,
    console: Console,
    stopped: CancellationToken,
    agent: SocketAddr,
    loadgen: SocketAddr,
    boot_time: Duration,
}

impl Launch<'_> {
    async fn run(&self, cancel: &CancellationToken) -> Result<Running, Error> {
        let started = Instant::now();
        let (netdev, agent, loadgen) = match self.network {
            Some(tap) => (
                tap.qemu_netdev(),
                SocketAddr::from((tap.guest_address, AGENT_PORT)),
                SocketAddr::from((tap.guest_address, LOADGEN_PORT)),
            ),
            None => {
                let (agent_port, loadgen_port) = free_ports()?;
                (
                    format!(
                        "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{agent_port}-{GUEST_ADDRESS}:{AGENT_PORT},hostfwd=tcp:127.0.0.1:{loadgen_port}-{GUEST_ADDRESS}:{LOADGEN_PORT}"
                    ),
                    SocketAddr::from((Ipv4Addr::LOCALHOST, agent_port)),
                    SocketAddr::from((Ipv4Addr::LOCALHOST, loadgen_port)),
                )
            }
        };
        let cmdline = format!(
            "console=ttyS0 panic=-1 quiet loadlab.accel={}",
            self.accelerator.name()
        );
        // With a tap, QEMU runs inside the namespace that holds it.
        let mut command = match self.network {
            Some(tap) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &tap.namespace])
                    .arg(self.qemu);
                command
            }
            None => Command::new(self.qemu),
        };
        command
            .args(self.accelerator.qemu_args())
            .args(["-smp", &self.config.cpus.to_string()])
            .args(["-m", &format!("{}M", self.config.memory_mib)])
            .arg("-kernel")
            .arg(&self.kernel.image)
            .arg("-initrd")
            .arg(self.archive)
            .args(["-append", &cmdline])
            .args([
                "-nodefaults",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
            ])
            .args(["-netdev", &netdev])
            .args(["-device", "virtio-net-pci,netdev=net0,romfile="])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A Ctrl-C on the terminal goes to loadlab alone, which then ends the runs and
            // powers the guests off in order.
            .process_group(0)
            .kill_on_drop(true);
        tracing::debug!(?command, "booting");
        let mut process = command.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::QemuMissing,
            _ => Error::Io(format!("{}: {e}", self.qemu.display())),
        })?;
        let console = Console::default();
        let stopped = CancellationToken::new();
        let (ready_tx, mut ready_rx) = watch::channel(false);
        let ready_tx = Arc::new(ready_tx);
        if let Some(stdout) = process.stdout.take() {
            let (console, stopped) = (console.clone(), stopped.clone());
            let ready = Some(ready_tx.clone());
            tokio::spawn(async move {
                read_console(stdout, console, ready).await;
                stopped.cancel();
            });
        }
        if let Some(stderr) = process.stderr.take() {
            tokio::spawn(read_console(stderr, console.clone(), None));
        }
        let deadline = self.accelerator.boot_deadline();
        let kernel = self.kernel.release.clone();
        let outcome = tokio::select! {
            ready = ready_rx.wait_for(|ready| *ready) => match ready {
                Ok(_) => Ok(()),
                // The console closed: the process is gone; its exit status says more.
                Err(_) => Err(None),
            },
            status = process.wait() => Err(Some(status.map_or_else(|e| e.to_string(), |s| s.to_string()))),
            () = tokio::time::sleep(deadline) => {
                let _ = process.start_kill();
                return Err(Error::NeverAnswered { kernel, seconds: deadline.as_secs(), console: console.tail() });
            }
            () = cancel.cancelled() => return Err(Error::Interrupted),
        };
        match outcome {
            Ok(()) => Ok(Running {
                process,
                console,
                stopped,
                agent,
                loadgen,
                boot_time: started.elapsed(),
            }),
            Err(status) => {
                let status = match status {
                    Some(status) => status,
                    None => process
                        .wait()
                        .await
                        .map_or_else(|e| e.to_string(), |s| s.to_string()),
                };
                Err(Error::BootFailed {
                    kernel,
                    status,
                    console: console.tail(),
                })
            }
        }
    }
}

/// Two loopback ports free now, for the guest's forwarded agent and generator. Another process
/// could take one before QEMU binds it; QEMU then fails at once and says so on the console.
fn free_ports() -> Result<(u16, u16), Error> {
    let bind = || {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| Error::Io(format!("no free port: {e}")))
    };
    let (a, b) = (bind()?, bind()?);
    let ports = (
        a.local_addr().map_err(|e| Error::Io(e.to_string()))?.port(),
        b.local_addr().map_err(|e| Error::Io(e.to_string()))?.port(),
    );
    Ok(ports)
}

async fn read_console(
    stream: impl AsyncRead + Unpin,
    console: Console,
    ready: Option<Arc<watch::Sender<bool>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = printable(&line);
        if line.is_empty() {
            continue;
        }
        if let Some(ready) = &ready
            && line == READY_LINE
        {
            ready.send_replace(true);
        }
        tracing::trace!(target: "loadlab::guest", "{line}");
        console.push(line);
    }
}

/// A console line without terminal escape sequences and control characters (the firmware
/// clears the screen before the kernel starts).
pub fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // A control sequence (`ESC [ ... letter`) or a two-character escape (`ESC c`).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_lose_escape_sequences() {
        assert_eq!(
            printable("\u{1b}c\u{1b}[?7l\u{1b}[2Jloadlab-guest: kernel 6.1.0-47-cloud-amd64\r"),
            "loadlab-guest: kernel 6.1.0-47-cloud-amd64"
        );
        assert_eq!(printable("  plain  "), "plain");
    }

    #[test]
    fn the_console_keeps_its_last_lines() {
        let console = Console::default();
        for i in 0..(CONSOLE_LINES + 5) {
            console.push(format!("line {i}"));
        }
        let tail = console.tail();
        assert!(!tail.contains("line 4\n"));
        assert!(tail.starts_with("  | line 5"));
        assert!(tail.ends_with(&format!("line {}", CONSOLE_LINES + 4)));
    }
}
