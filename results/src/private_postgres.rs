//! loadlab's private Postgres server (a Postgres "database cluster"), used when `DATABASE_URL` is unset: created with `initdb`,
//! started with `pg_ctl`, reachable only through a unix socket inside its own data directory,
//! and left running so the next command (or `loadlab serve`) reuses it.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{Gid, Uid, User};
use sqlx::postgres::PgConnectOptions;

use crate::Error;

/// The database role and database loadlab uses in its private cluster.
pub(crate) const ROLE: &str = "loadlab";
pub(crate) const DATABASE: &str = "loadlab";
/// The socket's port number; the cluster listens on no TCP port at all.
const SOCKET_PORT: u16 = 5432;

/// How long a starting or recovering cluster may take before it accepts connections.
const READY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(600);

/// The status a postmaster writes on its pid file's eighth line ("starting", "ready",
/// "stopping", padded), once it has written that line.
fn postmaster_status(pid_file: &str) -> Option<&str> {
    pid_file
        .lines()
        .nth(7)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[derive(Debug, Clone)]
pub struct PrivatePostgres {
    data_dir: PathBuf,
}

impl PrivatePostgres {
    /// The cluster under `data_dir/postgres`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.join("postgres"),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Connection options for the cluster's `loadlab` database (or another one).
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.data_dir)
            .port(SOCKET_PORT)
            .username(ROLE)
            .database(database)
    }

    /// A `postgres://` URL for the cluster's `loadlab` database, for `DATABASE_URL`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{ROLE}@localhost:{SOCKET_PORT}/{DATABASE}?host={}",
            self.data_dir.display()
        )
    }

    /// Creates the cluster if needed and starts it if it is not running. Several processes may
    /// call this at once: a lock file serialises them.
    pub fn ensure_running(&self) -> Result<(), Error> {
        let bin = postgres_bin_dir()?;
        let parent = self.data_dir.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent)
            .map_err(|e| Error::Cluster(format!("cannot create {}: {e}", parent.display())))?;
        let _lock = lock(&parent.join("postgres.lock"))?;
        let owner = ClusterOwner::for_this_process()?;

        if !self.data_dir.join("PG_VERSION").exists() {
            self.initdb(&bin, &owner)?;
        }
        let status = owner
            .command(bin.join("pg_ctl"))
            .arg("status")
            .arg("-D")
            .arg(&self.data_dir)
            .output();
        let running = matches!(status, Ok(ref out) if out.status.success());
        if !running {
            // A stale pid file after a crash or reboot: pg_ctl start copes with it.
            let log = self.data_dir.join("server.log");
            let output = owner
                .command(bin.join("pg_ctl"))
                .arg("start")
                .arg("-w")
                .args(["-t", &READY_DEADLINE.as_secs().to_string()])
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&log)
                .output();
            check(output, "pg_ctl start", Some(&log))?;
        }
        // Running is not accepting connections: a server recovering after an unclean stop (a
        // crash, a reboot) runs for a while before it does, and another process may have just
        // started it.
        self.wait_until_ready(READY_DEADLINE)
    }

    /// Waits until the postmaster's pid file says it accepts connections.
    fn wait_until_ready(&self, deadline: std::time::Duration) -> Result<(), Error> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let started = std::time::Instant::now();
        let mut told = false;
        loop {
            let status = fs::read_to_string(&pid_file).map_err(|e| {
                Error::Cluster(format!(
                    "postgres in {} is not running ({}: {e}); see {}",
                    self.data_dir.display(),
                    pid_file.display(),
                    self.data_dir.join("server.log").display()
                ))
            })?;
            match postmaster_status(&status) {
                Some("ready") => return Ok(()),
                Some("stopping") => {
                    return Err(Error::Cluster(format!(
                        "postgres in {} is shutting down; run the command again once it has stopped",
                        self.data_dir.display()
                    )));
                }
                _ => {}
            }
            if started.elapsed() > deadline {
                return Err(Error::Cluster(format!(
                    "postgres in {} did not accept connections within {} s; see {}",
                    self.data_dir.display(),
                    deadline.as_secs(),
                    self.data_dir.join("server.log").display()
                )));
            }
            if !told {
                eprintln!(
                    "loadlab: waiting for postgres in {} to accept connections (it may be recovering from an unclean stop)",
                    self.data_dir.display()
                );
                told = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Stops the cluster (fast shutdown: open sessions are ended), if it runs.
    pub fn stop(&self) -> Result<(), Error> {
        let bin = postgres_bin_dir()?;
        let owner = ClusterOwner::for_this_process()?;
        let output = owner
            .command(bin.join("pg_ctl"))
            .arg("stop")
            .args(["-m", "fast", "-w", "-t", "60"])
            .arg("-D")
            .arg(&self.data_dir)
            .output();
        check(output, "pg_ctl stop", None)
    }

    fn initdb(&self, bin: &Path, owner: &ClusterOwner) -> Result<(), Error> {
        if self.data_dir.exists() {
            // A half-made cluster from an interrupted initdb: start over.
            fs::remove_dir_all(&self.data_dir).map_err(|e| {
                Error::Cluster(format!("cannot clear {}: {e}", self.data_dir.display()))
            })?;
        }
        fs::create_dir(&self.data_dir).map_err(|e| {
            Error::Cluster(format!("cannot create {}: {e}", self.data_dir.display()))
        })?;
        fs::set_permissions(&self.data_dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
            Error::Cluster(format!("cannot restrict {}: {e}", self.data_dir.display()))
        })?;
        owner.take(&self.data_dir)?;
        let output = owner
            .command(bin.join("initdb"))
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", ROLE, "-A", "trust", "-E", "UTF8", "--no-instructions"])
            .output();
        check(output, "initdb", None)?;
        // Only the socket in the data directory (mode 0700) reaches the server: trust
        // authentication is then limited to this user (and root).
        let settings = format!(
            "\n# loadlab private cluster\nlisten_addresses = ''\nport = {SOCKET_PORT}\nunix_socket_directories = '{}'\nunix_socket_permissions = 0700\n",
            self.data_dir.display()
        );
        let conf = self.data_dir.join("postgresql.conf");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|e| Error::Cluster(format!("cannot open {}: {e}", conf.display())))?;
        std::io::Write::write_all(&mut file, settings.as_bytes())
            .map_err(|e| Error::Cluster(format!("cannot write {}: {e}", conf.display())))?;
        Ok(())
    }
}

/// The newest PostgreSQL server binaries installed under `/usr/lib/postgresql`.
pub(crate) fn postgres_bin_dir() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("LOADLAB_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| Error::PostgresMissing)?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(Error::PostgresMissing)
}

/// Who runs the cluster: this user, or, for root (which initdb and postgres refuse), the
/// `postgres` system user.
struct ClusterOwner {
    switch_to: Option<(Uid, Gid)>,
}

impl ClusterOwner {
    fn for_this_process() -> Result<Self, Error> {
        if !Uid::effective().is_root() {
            return Ok(Self { switch_to: None });
        }
        let user = User::from_name("postgres").ok().flatten().ok_or_else(|| {
            Error::Cluster(
                "running as root needs the `postgres` system user (apt-get install postgresql)"
                    .into(),
            )
        })?;
        Ok(Self {
            switch_to: Some((user.uid, user.gid)),
        })
    }

    fn command(&self, program: PathBuf) -> Command {
        let mut command = Command::new(program);
        command.current_dir("/");
        if let Some((uid, gid)) = self.switch_to {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
        command
    }

    fn take(&self, path: &Path) -> Result<(), Error> {
        if let Some((uid, gid)) = self.switch_to {
            chown(path, Some(uid.as_raw()), Some(gid.as_raw())).map_err(|e| {
                Error::Cluster(format!("cannot hand {} to postgres: {e}", path.display()))
            })?;
        }
        Ok(())
    }
}

fn lock(path: &Path) -> Result<Flock<File>, Error> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::Cluster(format!("cannot open {}: {e}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| Error::Cluster(format!("cannot lock {}: {errno}", path.display())))
}

fn check(output: std::io::Result<Output>, what: &str, log: Option<&Path>) -> Result<(), Error> {
    let output = output.map_err(|e| Error::Cluster(format!("cannot run {what}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if let Some(log) = log {
        let text = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        detail.push_str(&format!(
            "\n{}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    Err(Error::Cluster(format!(
        "{what} failed ({}): {detail}",
        output.status
    )))
}

#[cfg(test)]
mod tests {
    use super::postmaster_status;

    #[test]
    fn the_pid_files_status_line_is_read_once_written() {
        let ready = "30159\n/var/lib/loadlab/postgres\n1796166496\n5432\n/var/lib/loadlab/postgres\n\n   854229     32777\nready   \n";
        assert_eq!(postmaster_status(ready), Some("ready"));
        let starting = ready.replace("ready   ", "starting");
        assert_eq!(postmaster_status(&starting), Some("starting"));
        // Written in steps: before its last line there is no status yet.
        assert_eq!(
            postmaster_status("30159\n/var/lib/loadlab/postgres\n"),
            None
        );
    }
}
