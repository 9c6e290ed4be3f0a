//! Which kernel a guest boots: an image on disk, or a Debian kernel package fetched once into
//! a cache, with the modules directory that goes with it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// A bootable kernel and what is known about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub image: PathBuf,
    /// `uname -r` of the kernel, read from the image's header.
    pub release: String,
    /// `lib/modules/<release>` for this kernel, when there is one.
    pub modules: Option<PathBuf>,
}

/// A Debian kernel package name rather than a path.
pub(crate) fn is_package_name(kernel: &str) -> bool {
    kernel.starts_with("linux-image-")
        && !kernel.contains('/')
        && kernel
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.+~".contains(&b))
}

/// Resolves `kernel` (a path or a Debian package name) to an image and its modules; packages
/// are downloaded and unpacked under `cache` once.
pub fn resolve(kernel: &str, cache: &Path) -> Result<Kernel, Error> {
    if is_package_name(kernel) {
        let root = unpacked_package(kernel, cache)?;
        let boot = root.join("boot");
        let image = std::fs::read_dir(&boot)
            .map_err(|e| Error::Kernel(format!("{}: {e}", boot.display())))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .ok_or_else(|| {
                Error::Kernel(format!("package {kernel} holds no boot/vmlinuz-* image"))
            })?;
        return describe_image(&image, Some(&root));
    }
    let image = PathBuf::from(kernel);
    if !image.is_file() {
        return Err(Error::Kernel(format!(
            "{kernel}: no such kernel image (give a vmlinuz/bzImage path or a Debian package name such as linux-image-6.1.0-47-cloud-amd64-unsigned)"
        )));
    }
    describe_image(&image, None)
}

fn describe_image(image: &Path, package_root: Option<&Path>) -> Result<Kernel, Error> {
    let bytes =
        std::fs::read(image).map_err(|e| Error::Kernel(format!("{}: {e}", image.display())))?;
    let release = bzimage_release(&bytes).ok_or_else(|| {
        Error::Kernel(format!(
            "{} is not an x86 bzImage (no kernel version in its boot header)",
            image.display()
        ))
    })?;
    // A package carries its modules; an image built elsewhere may sit in an unpacked tree
    // (`../lib/modules`) or be the host's own kind.
    let candidates: Vec<PathBuf> = match package_root {
        Some(root) => vec![root.join("lib/modules").join(&release)],
        None => {
            let beside = image
                .parent()
                .and_then(Path::parent)
                .map(|root| root.join("lib/modules").join(&release));
            beside
                .into_iter()
                .chain([Path::new("/lib/modules").join(&release)])
                .collect()
        }
    };
    let modules = candidates.into_iter().find(|dir| dir.is_dir());
    Ok(Kernel {
        image: image.to_path_buf(),
        release,
        modules,
    })
}

/// The release (`uname -r`) a bzImage names in its boot header: the header's `kernel_version`
/// field points at a string such as "6.1.0-47-cloud-amd64 (debian-kernel@...) #1 SMP ...".
pub(crate) fn bzimage_release(image: &[u8]) -> Option<String> {
    const SETUP_HEADER_MAGIC_AT: usize = 0x202;
    const KERNEL_VERSION_AT: usize = 0x20e;
    if image.get(SETUP_HEADER_MAGIC_AT..SETUP_HEADER_MAGIC_AT + 4)? != b"HdrS" {
        return None;
    }
    let pointer = u16::from_le_bytes([image[KERNEL_VERSION_AT], image[KERNEL_VERSION_AT + 1]]);
    let start = usize::from(pointer) + 0x200;
    let text = image.get(start..(start + 256).min(image.len()))?;
    let end = text.iter().position(|&b| b == 0)?;
    let release = std::str::from_utf8(&text[..end])
        .ok()?
        .split_whitespace()
        .next()?
        .to_string();
    (!release.is_empty()).then_some(release)
}

/// `cache/kernels/<package>`, downloaded with `apt-get download` and unpacked with `dpkg-deb`
/// the first time. A partly unpacked package never takes the final name.
fn unpacked_package(package: &str, cache: &Path) -> Result<PathBuf, Error> {
    let kernels = cache.join("kernels");
    let root = kernels.join(package);
    if root.join("boot").is_dir() {
        return Ok(root);
    }
    std::fs::create_dir_all(&kernels)
        .map_err(|e| Error::Kernel(format!("{}: {e}", kernels.display())))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&kernels)
        .map_err(|e| Error::Kernel(format!("{}: {e}", kernels.display())))?;
    tracing::info!(package, "downloading the kernel package");
    let download = Command::new("apt-get")
        .args(["-q", "-o", "APT::Sandbox::User=root", "download", package])
        .current_dir(work.path())
        .output()
        .map_err(|e| Error::Kernel(format!("apt-get: {e} (is this Debian or Ubuntu?)")))?;
    if !download.status.success() {
        let said = String::from_utf8_lossy(&download.stderr);
        let said = said
            .lines()
            .filter(|l| l.starts_with("E:"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::Kernel(format!(
            "kernel package {package} not found: `apt-get download {package}` said: {} (is the name right? `apt-get update` refreshes the package lists)",
            if said.is_empty() { "nothing" } else { &said }
        )));
    }
    let deb = std::fs::read_dir(work.path())
        .map_err(|e| Error::Kernel(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| Error::Kernel(format!("apt-get download {package} left no .deb")))?;
    let unpacked = work.path().join("root");
    let extract = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .output()
        .map_err(|e| Error::Kernel(format!("dpkg-deb: {e}")))?;
    if !extract.status.success() {
        return Err(Error::Kernel(format!(
            "dpkg-deb -x {}: {}",
            deb.display(),
            String::from_utf8_lossy(&extract.stderr).trim()
        )));
    }
    match std::fs::rename(&unpacked, &root) {
        Ok(()) => Ok(root),
        // Another run unpacked it meanwhile.
        Err(_) if root.join("boot").is_dir() => Ok(root),
        Err(e) => Err(Error::Kernel(format!("{}: {e}", root.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut image = vec![0u8; 0x4000];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        let at: u16 = 0x3000;
        image[0x20e..0x210].copy_from_slice(&at.to_le_bytes());
        let start = usize::from(at) + 0x200;
        image[start..start + version.len()].copy_from_slice(version.as_bytes());
        image
    }

    #[test]
    fn the_release_comes_from_the_boot_header() {
        let image = fake_bzimage("6.1.0-47-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP");
        assert_eq!(
            bzimage_release(&image).as_deref(),
            Some("6.1.0-47-cloud-amd64")
        );
        let mut not_a_kernel = image.clone();
        not_a_kernel[0x202] = b'X';
        assert_eq!(bzimage_release(&not_a_kernel), None);
        assert_eq!(bzimage_release(&image[..0x100]), None);
    }

    #[test]
    fn package_names_and_paths_are_told_apart() {
        assert!(is_package_name("linux-image-6.1.0-47-cloud-amd64-unsigned"));
        assert!(is_package_name(
            "linux-image-6.12.38+deb12-cloud-amd64-unsigned"
        ));
        assert!(!is_package_name("/boot/vmlinuz-6.1.0-47-cloud-amd64"));
        assert!(!is_package_name("bzImage"));
        assert!(!is_package_name("linux-image-x; rm -rf /"));
    }

    #[test]
    fn an_image_path_finds_its_modules_beside_it() {
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("boot")).unwrap();
        std::fs::create_dir_all(tree.path().join("lib/modules/6.1.0-47-cloud-amd64")).unwrap();
        let image = tree.path().join("boot/vmlinuz");
        std::fs::write(&image, fake_bzimage("6.1.0-47-cloud-amd64 #1")).unwrap();
        let kernel = resolve(image.to_str().unwrap(), tree.path()).unwrap();
        assert_eq!(kernel.release, "6.1.0-47-cloud-amd64");
        assert_eq!(
            kernel.modules,
            Some(tree.path().join("lib/modules/6.1.0-47-cloud-amd64"))
        );
    }

    #[test]
    fn a_missing_image_or_a_non_kernel_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = resolve("/nonexistent/vmlinuz", dir.path()).unwrap_err();
        assert!(
            missing.to_string().contains("no such kernel image"),
            "{missing}"
        );
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello").unwrap();
        let not_kernel = resolve(text.to_str().unwrap(), dir.path()).unwrap_err();
        assert!(
            not_kernel.to_string().contains("not an x86 bzImage"),
            "{not_kernel}"
        );
    }
}
