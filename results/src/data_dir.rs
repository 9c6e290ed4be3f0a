//! Where loadlab keeps what it makes on this machine: the private Postgres server's data,
//! downloaded kernels and built guest images.

use std::path::PathBuf;

use nix::unistd::Uid;

/// Where loadlab keeps its data: `$LOADLAB_DATA_DIR`, else `/var/lib/loadlab` for root, else
/// `$XDG_DATA_HOME/loadlab` (`~/.local/share/loadlab`).
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOADLAB_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if Uid::effective().is_root() {
        return PathBuf::from("/var/lib/loadlab");
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("loadlab");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/share/loadlab")
}
