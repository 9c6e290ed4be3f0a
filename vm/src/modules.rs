//! The kernel modules a guest must load before its network comes up, in dependency order.
//! Packages ship no `modules.dep` (depmod writes it at install), so dependencies come from each
//! module's own `.modinfo` section.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// What the guest needs for its network: the PCI transport and the virtio NIC.
pub(crate) const NETWORK_MODULES: [&str; 2] = ["virtio_pci", "virtio_net"];

/// A module ready to go into the guest: its name and its uncompressed bytes.
#[derive(Debug, Clone)]
pub(crate) struct Module {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The modules `wanted` needs that the kernel does not have built in, dependencies first.
pub(crate) fn load_order(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>, Error> {
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: HashSet<String> = builtin
        .lines()
        .filter_map(|line| line.rsplit('/').next())
        .map(|file| module_name(file).to_string())
        .collect();
    let files = index(modules_dir)?;
    let mut ordered = Vec::new();
    let mut seen = HashSet::new();
    for name in wanted {
        visit(name, &files, &builtin, &mut seen, &mut ordered, 0)?;
    }
    Ok(ordered)
}

fn visit(
    name: &str,
    files: &BTreeMap<String, PathBuf>,
    builtin: &HashSet<String>,
    seen: &mut HashSet<String>,
    ordered: &mut Vec<Module>,
    depth: usize,
) -> Result<(), Error> {
    let name = name.replace('-', "_");
    if builtin.contains(&name) || !seen.insert(name.clone()) {
        return Ok(());
    }
    if depth > 32 {
        return Err(Error::Modules(format!("{name}: dependency chain too deep")));
    }
    let Some(path) = files.get(&name) else {
        return Err(Error::Modules(format!(
            "module {name} is neither built in nor shipped with this kernel"
        )));
    };
    let bytes = read_module(path)?;
    for dependency in depends(&bytes) {
        visit(&dependency, files, builtin, seen, ordered, depth + 1)?;
    }
    ordered.push(Module { name, bytes });
    Ok(())
}

/// `virtio_net.ko.xz` → `virtio_net`; module names use `_` where files may use `-`.
fn module_name(file: &str) -> String {
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

fn index(modules_dir: &Path) -> Result<BTreeMap<String, PathBuf>, Error> {
    let mut files = BTreeMap::new();
    let mut pending = vec![modules_dir.join("kernel")];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| Error::Modules(format!("{}: {e}", dir.display())))?;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(file) = path.file_name().and_then(|n| n.to_str())
                && file.contains(".ko")
            {
                files.insert(module_name(file), path);
            }
        }
    }
    Ok(files)
}

/// A module's bytes, decompressed when it ships as `.ko.xz` or `.ko.zst` (busybox's `insmod`
/// takes plain ELF only).
fn read_module(path: &Path) -> Result<Vec<u8>, Error> {
    let name = path.to_string_lossy();
    let decompressor = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    let Some(tool) = decompressor else {
        return std::fs::read(path).map_err(|e| Error::Modules(format!("{name}: {e}")));
    };
    let output = Command::new(tool)
        .args(["-d", "-c"])
        .arg(path)
        .output()
        .map_err(|e| Error::Modules(format!("{tool} (to unpack {name}): {e}")))?;
    if !output.status.success() {
        return Err(Error::Modules(format!(
            "{tool} -d {name}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output.stdout)
}

/// The `depends=` entry of a module's `.modinfo` section: NUL-separated `key=value` strings.
pub fn depends(module: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = module.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &module[at + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(depends_on: &str) -> Vec<u8> {
        format!("\x7fELF...\0license=GPL\0depends={depends_on}\0retpoline=Y\0").into_bytes()
    }

    fn tree(modules: &[(&str, &str)], builtin: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("kernel/drivers");
        std::fs::create_dir_all(&kernel).unwrap();
        for (file, depends_on) in modules {
            std::fs::write(kernel.join(file), module(depends_on)).unwrap();
        }
        let builtin: String = builtin
            .iter()
            .map(|m| format!("kernel/drivers/{m}.ko\n"))
            .collect();
        std::fs::write(dir.path().join("modules.builtin"), builtin).unwrap();
        dir
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let dir = tree(
            &[
                ("virtio_net.ko", "virtio_ring,virtio,net_failover"),
                ("virtio_pci.ko", "virtio_ring,virtio_pci_modern_dev,virtio"),
                ("net_failover.ko", "failover"),
                ("failover.ko", ""),
                ("virtio.ko", ""),
                ("virtio_ring.ko", ""),
                ("virtio_pci_modern_dev.ko", ""),
            ],
            &[],
        );
        let order: Vec<String> = load_order(dir.path(), &NETWORK_MODULES)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(
            order,
            [
                "virtio_ring",
                "virtio_pci_modern_dev",
                "virtio",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net"
            ]
        );
    }

    #[test]
    fn built_in_drivers_need_no_module() {
        let dir = tree(&[("virtio_net.ko", "virtio")], &["virtio", "virtio_pci"]);
        let order: Vec<String> = load_order(dir.path(), &NETWORK_MODULES)
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(order, ["virtio_net"]);
    }

    #[test]
    fn a_missing_module_is_named() {
        let dir = tree(&[("virtio_net.ko", "virtio")], &["virtio_pci"]);
        let error = load_order(dir.path(), &NETWORK_MODULES).unwrap_err();
        assert!(
            error.to_string().contains("module virtio is neither"),
            "{error}"
        );
    }

    #[test]
    fn compressed_modules_are_unpacked() {
        let dir = tree(&[], &["virtio_pci"]);
        let plain = dir.path().join("kernel/drivers/virtio_net.ko");
        std::fs::write(&plain, module("")).unwrap();
        let status = Command::new("xz").arg(&plain).status().unwrap();
        assert!(status.success());
        let modules = load_order(dir.path(), &NETWORK_MODULES).unwrap();
        assert_eq!(modules.len(), 1);
        assert_eq!(modules[0].bytes, module(""));
    }
}
