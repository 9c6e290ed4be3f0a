//! The guest's whole file system, held in its initramfs: busybox, loadlab, nginx and the tracing
//! tools with every shared library they load, the network modules, and an init that mounts the
//! kernel's file systems, brings the network up and starts the agent and the generator.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::{Kind, Writer};
use crate::modules::Module;
use crate::{AGENT_PORT, Error, LOADGEN_PORT, READY_LINE};

/// Programs copied into the guest at the same path as on this machine.
#[derive(Debug, Clone)]
pub struct GuestTools {
    pub busybox: PathBuf,
    pub loadlab: PathBuf,
    pub nginx: PathBuf,
}

impl GuestTools {
    /// The tools of this machine; `loadlab` is the binary that goes into the guest, `nginx` the
    /// one its agent will start (found by the caller as the agent finds it: the VM crate does
    /// not compile the agent for one lookup).
    pub fn find(loadlab: PathBuf, nginx: PathBuf) -> Result<Self, Error> {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Tools("busybox not found: `apt-get install busybox-static`".into())
            })?;
        Ok(Self {
            busybox,
            loadlab,
            nginx,
        })
    }
}

/// What a guest is told at boot.
#[derive(Debug, Clone)]
pub(crate) struct GuestIdentity {
    pub hostname: String,
    /// The bearer token its agent and generator require.
    pub token: String,
    pub addressing: GuestAddressing,
}

/// The guest's address on its network, and where its nginx listens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestAddressing {
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// nginx listens on the guest's address, so a generator outside the guest can load it
    /// (the generator inside is allowed that address); on loopback otherwise.
    pub target_on_address: bool,
}

#[derive(Debug)]
enum Content {
    Directory,
    HostFile(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug)]
struct Entry {
    content: Content,
    permissions: u32,
}

/// A file tree to be written as one cpio archive.
#[derive(Debug, Default)]
pub(crate) struct RootFs {
    entries: BTreeMap<String, Entry>,
}

impl RootFs {
    /// The tree a guest boots from.
    pub fn guest(
        tools: &GuestTools,
        modules: &[Module],
        identity: &GuestIdentity,
    ) -> Result<Self, Error> {
        let mut root = Self::default();
        for dir in [
            "proc",
            "sys",
            "dev",
            "tmp",
            "run",
            "root",
            "etc/loadlab",
            "var/log",
        ] {
            root.directory(dir);
        }
        root.host_file("bin/busybox", &tools.busybox, 0o755);
        // Lock contention and CPU profiles need nothing more: their BPF programs are inside
        // loadlab.
        for program in [&tools.loadlab, &tools.nginx] {
            root.program_with_libraries(program)?;
        }
        let mut module_names = Vec::new();
        for (index, module) in modules.iter().enumerate() {
            let file = format!("lib/loadlab-modules/{:02}-{}.ko", index + 1, module.name);
            root.bytes(&file, module.bytes.clone(), 0o644);
            module_names.push(format!("/{file}"));
        }
        root.bytes(
            "etc/loadlab/token",
            identity.token.clone().into_bytes(),
            0o600,
        );
        root.bytes(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n".to_vec(),
            0o644,
        );
        root.bytes(
            "etc/group",
            b"root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\nnobody:x:65534:\n".to_vec(),
            0o644,
        );
        root.bytes(
            "etc/nsswitch.conf",
            b"passwd: files\ngroup: files\nhosts: files\n".to_vec(),
            0o644,
        );
        root.bytes(
            "etc/hosts",
            format!(
                "127.0.0.1 localhost\n{} {}\n",
                identity.addressing.address, identity.hostname
            )
            .into_bytes(),
            0o644,
        );
        let loadlab = tools.loadlab.to_string_lossy();
        root.bytes(
            "init",
            init_script(
                &identity.hostname,
                &module_names,
                &loadlab,
                &identity.addressing,
            )
            .into_bytes(),
            0o755,
        );
        Ok(root)
    }

    fn directory(&mut self, path: &str) {
        let path = path.trim_matches('/');
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.entries.entry(prefix.clone()).or_insert(Entry {
                content: Content::Directory,
                permissions: 0o755,
            });
        }
    }

    fn insert(&mut self, path: &str, content: Content, permissions: u32) {
        let path = path.trim_start_matches('/').to_string();
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.directory(parent);
        }
        self.entries.insert(
            path,
            Entry {
                content,
                permissions,
            },
        );
    }

    fn host_file(&mut self, path: &str, source: &Path, permissions: u32) {
        self.insert(path, Content::HostFile(source.to_path_buf()), permissions);
    }

    fn bytes(&mut self, path: &str, bytes: Vec<u8>, permissions: u32) {
        self.insert(path, Content::Bytes(bytes), permissions);
    }

    /// A program at its own path, and the shared libraries and loader it needs at theirs.
    fn program_with_libraries(&mut self, program: &Path) -> Result<(), Error> {
        let path = program.to_string_lossy().into_owned();
        self.host_file(&path, program, 0o755);
        let output = Command::new("ldd")
            .arg(program)
            .output()
            .map_err(|e| Error::Tools(format!("ldd {path}: {e}")))?;
        let listing = String::from_utf8_lossy(&output.stdout);
        for library in shared_libraries(&listing).map_err(|missing| {
            Error::Tools(format!("{path} needs {missing}, which is not installed"))
        })? {
            let guest = library.to_string_lossy().into_owned();
            self.host_file(&guest, &library, 0o755);
        }
        Ok(())
    }

    /// Writes the tree as an uncompressed cpio archive (the kernel unpacks it without a
    /// decompressor, and the guest never keeps a second, compressed copy in memory).
    pub(crate) fn write_archive(&self, path: &Path) -> Result<u64, Error> {
        let file = File::create(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let mut writer = Writer::new(BufWriter::new(file));
        let mut total = 0;
        for (name, entry) in &self.entries {
            let failed = |e: io::Error| Error::Io(format!("{name}: {e}"));
            match &entry.content {
                Content::Directory => writer
                    .entry(
                        name,
                        Kind::Directory,
                        entry.permissions,
                        0,
                        &mut io::empty(),
                    )
                    .map_err(failed)?,
                Content::Bytes(bytes) => writer
                    .entry(
                        name,
                        Kind::File,
                        entry.permissions,
                        bytes.len() as u64,
                        &mut bytes.as_slice(),
                    )
                    .map_err(failed)?,
                Content::HostFile(source) => {
                    let mut file = File::open(source)
                        .map_err(|e| Error::Io(format!("{}: {e}", source.display())))?;
                    let size = file.metadata().map_err(failed)?.len();
                    total += size;
                    writer
                        .entry(name, Kind::File, entry.permissions, size, &mut file)
                        .map_err(failed)?;
                }
            }
        }
        writer.finish().map_err(|e| Error::Io(e.to_string()))?;
        Ok(total)
    }

    #[cfg(test)]
    fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

/// Absolute paths of the libraries and loader in `ldd` output; `Err` names one not found.
pub(crate) fn shared_libraries(ldd: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries = Vec::new();
    for line in ldd.lines().map(str::trim) {
        let path = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    return Err(name.trim().to_string());
                }
                target.split_whitespace().next().unwrap_or_default()
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// The guest's PID 1, a busybox shell script. Everything it prints goes to the serial console,
/// which the host reads: [`READY_LINE`] says the agent and the generator listen.
pub(crate) fn init_script(
    hostname: &str,
    modules: &[String],
    loadlab: &str,
    addressing: &GuestAddressing,
) -> String {
    let GuestAddressing {
        address,
        gateway,
        target_on_address,
    } = *addressing;
    let (target, allow) = if target_on_address {
        (
            format!(" --target-address {address}"),
            format!(" --allow {address}"),
        )
    } else {
        (String::new(), String::new())
    };
    let modules = modules
        .iter()
        .map(|m| format!("insmod {m} || echo \"loadlab-guest: insmod {m} failed\"\n"))
        .collect::<String>();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
echo "loadlab-guest: kernel $(uname -r)"
{modules}hostname {hostname}
ip link set lo up
if ! ip link set eth0 up; then
  echo "loadlab-guest: no network device eth0: the kernel has no virtio_net built in and none was found among its modules"
  poweroff -f
fi
ip addr add {address}/24 dev eth0
ip route add default via {gateway}
ulimit -n 1048576
{loadlab} agent serve --listen 0.0.0.0:{AGENT_PORT} --token-file /etc/loadlab/token --node-name {hostname}{target} >/var/log/agent.log 2>&1 &
agent=$!
{loadlab} loadgen serve --listen 0.0.0.0:{LOADGEN_PORT} --token-file /etc/loadlab/token{allow} >/var/log/loadgen.log 2>&1 &
loadgen=$!
# Each writes its own log, so their "listening" lines cannot interleave on the console.
until grep -q "listening on" /var/log/agent.log && grep -q "listening on" /var/log/loadgen.log; do
  for server in agent loadgen; do
    eval pid=\$$server
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "loadlab-guest: the $server exited:"
      cat /var/log/$server.log
      poweroff -f
    fi
  done
  sleep 0.1
done
echo "{READY_LINE}"
tail -f /var/log/agent.log /var/log/loadgen.log &
wait $agent $loadgen
echo "loadlab-guest: agent and generator exited"
poweroff -f
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibpcre2-8.so.0 => /lib/x86_64-linux-gnu/libpcre2-8.so.0 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            shared_libraries(listing).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libpcre2-8.so.0",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(
            shared_libraries("\tstatically linked\n")
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            shared_libraries("\tlibfoo.so.1 => not found\n").unwrap_err(),
            "libfoo.so.1"
        );
    }

    #[test]
    fn init_loads_modules_in_order_then_starts_agent_and_generator() {
        let tap = GuestAddressing {
            address: Ipv4Addr::new(10, 233, 7, 2),
            gateway: Ipv4Addr::new(10, 233, 7, 1),
            target_on_address: true,
        };
        let script = init_script(
            "patched-vm",
            &[
                "/lib/loadlab-modules/01-virtio.ko".into(),
                "/lib/loadlab-modules/02-virtio_net.ko".into(),
            ],
            "/usr/local/bin/loadlab",
            &tap,
        );
        assert!(script.contains("ip addr add 10.233.7.2/24 dev eth0"));
        assert!(script.contains("--target-address 10.233.7.2"));
        assert!(script.contains("--allow 10.233.7.2"));
        let user = GuestAddressing {
            target_on_address: false,
            ..tap
        };
        let loopback = init_script("g", &[], "/l", &user);
        assert!(!loopback.contains("--target-address") && !loopback.contains("--allow"));
        let first = script.find("01-virtio.ko").unwrap();
        let second = script.find("02-virtio_net.ko").unwrap();
        let network = script.find("ip link set eth0 up").unwrap();
        let agent = script.find("agent serve").unwrap();
        assert!(first < second && second < network && network < agent);
        assert!(script.contains("--node-name patched-vm"));
        assert!(script.contains("--token-file /etc/loadlab/token"));
        assert!(script.contains("mount -t tracefs"));
    }

    #[test]
    fn the_guest_tree_holds_programs_their_libraries_and_parents_first() {
        let dir = tempfile::tempdir().unwrap();
        let tools = GuestTools {
            busybox: PathBuf::from("/bin/sh"),
            loadlab: PathBuf::from("/bin/true"),
            nginx: PathBuf::from("/bin/ls"),
        };
        let identity = GuestIdentity {
            hostname: "guest".into(),
            token: "secret".into(),
            addressing: GuestAddressing {
                address: Ipv4Addr::new(10, 0, 2, 15),
                gateway: Ipv4Addr::new(10, 0, 2, 2),
                target_on_address: false,
            },
        };
        let module = Module {
            name: "virtio_net".into(),
            bytes: b"elf".to_vec(),
        };
        let root = RootFs::guest(&tools, &[module], &identity).unwrap();
        let paths: Vec<&str> = root.paths().collect();
        for expected in [
            "init",
            "bin/busybox",
            "bin/true",
            "bin/ls",
            "etc/loadlab/token",
            "lib/loadlab-modules/01-virtio_net.ko",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
        assert!(paths.iter().any(|p| p.contains("libc.so")), "{paths:?}");
        let archive = dir.path().join("initrd.cpio");
        let bytes = root.write_archive(&archive).unwrap();
        assert!(bytes > 0);
        let written = std::fs::read(&archive).unwrap();
        let text = String::from_utf8_lossy(&written);
        let etc = text.find("etc\0").unwrap();
        let token = text.find("etc/loadlab/token\0").unwrap();
        assert!(etc < token, "a directory comes before what it holds");
    }
}
