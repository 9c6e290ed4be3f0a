//! The fleet tests' lab: network namespaces joined by a bridge stand in for hosts, with
//! `loadlab agent serve` and `loadlab loadgen serve` inside; and the steps the failure tests
//! share (kill once a target is up, resume to the end).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use loadlab_engine::spec::ExperimentBuilder;
use loadlab_results::private_postgres::PrivatePostgres;
use loadlab_results::{RunOutcome, Store};
use serde_json::json;

pub(crate) const TOKEN: &str = "fleet-test-token";

pub(crate) fn sh(args: &[&str]) {
    let output = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A bridge in a hub namespace; hosts and the root namespace attach to it by veth pairs.
pub(crate) struct Lab {
    pub(crate) tag: String,
    pub(crate) subnet: String,
    pub(crate) hosts: Vec<String>,
    pub(crate) processes: Vec<Child>,
    pub(crate) dir: tempfile::TempDir,
}

static LABS: AtomicU32 = AtomicU32::new(0);

impl Lab {
    pub(crate) fn new() -> Self {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "the fleet tests build network namespaces and need root"
        );
        let index = LABS.fetch_add(1, Ordering::SeqCst);
        let tag = format!("ll{}{index}", std::process::id() % 10_000);
        let subnet = format!("10.231.{}", (std::process::id() * 7 + index) % 250 + 1);
        let hub = format!("{tag}hub");
        sh(&["ip", "netns", "add", &hub]);
        sh(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        let lab = Self {
            tag,
            subnet,
            hosts: Vec::new(),
            processes: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        // The root namespace's leg, for the orchestrator: .1
        lab.attach("1", None);
        std::fs::write(lab.token_file(), TOKEN).unwrap();
        lab
    }

    pub(crate) fn hub(&self) -> String {
        format!("{}hub", self.tag)
    }

    pub(crate) fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// A veth from `namespace` (the root namespace when None) to the bridge, addressed .`host`.
    pub(crate) fn attach(&self, host: &str, namespace: Option<&str>) {
        let outside = format!("{}o{host}", self.tag);
        let inside = format!("{}i{host}", self.tag);
        sh(&[
            "ip", "link", "add", &inside, "type", "veth", "peer", "name", &outside,
        ]);
        sh(&["ip", "link", "set", &outside, "netns", &self.hub()]);
        sh(&[
            "ip",
            "-n",
            &self.hub(),
            "link",
            "set",
            &outside,
            "master",
            "br0",
            "up",
        ]);
        let address = format!("{}.{host}/24", self.subnet);
        match namespace {
            Some(namespace) => {
                sh(&["ip", "link", "set", &inside, "netns", namespace]);
                sh(&[
                    "ip", "-n", namespace, "addr", "add", &address, "dev", &inside,
                ]);
                sh(&["ip", "-n", namespace, "link", "set", &inside, "up"]);
                sh(&["ip", "-n", namespace, "link", "set", "lo", "up"]);
            }
            None => {
                sh(&["ip", "addr", "add", &address, "dev", &inside]);
                sh(&["ip", "link", "set", &inside, "up"]);
            }
        }
    }

    /// A new host namespace at .`host`; returns its address.
    pub(crate) fn host(&mut self, host: u8) -> String {
        let namespace = format!("{}h{host}", self.tag);
        sh(&["ip", "netns", "add", &namespace]);
        self.attach(&host.to_string(), Some(&namespace));
        self.hosts.push(namespace);
        format!("{}.{host}", self.subnet)
    }

    /// Starts `loadlab ARGS` inside the host at `address` and waits for it to say it listens.
    pub(crate) fn serve(&mut self, address: &str, args: &[&str]) -> usize {
        self.serve_with(address, args, &[])
    }

    pub(crate) fn serve_with(
        &mut self,
        address: &str,
        args: &[&str],
        env: &[(&str, &Path)],
    ) -> usize {
        let host = address.rsplit('.').next().unwrap();
        let namespace = format!("{}h{host}", self.tag);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &namespace, env!("CARGO_BIN_EXE_loadlab")])
            .args(args)
            .arg("--token-file")
            .arg(self.token_file())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("listening on") {
            line.clear();
        }
        assert!(
            line.contains("listening on"),
            "{args:?} did not start: {line}"
        );
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in stderr.lines() {});
        self.processes.push(child);
        self.processes.len() - 1
    }

    pub(crate) fn agent(&mut self, address: &str) -> (String, usize) {
        self.named_agent(address, None)
    }

    /// An agent that names its node `name` (the lab's hosts share this machine's hostname).
    pub(crate) fn named_agent(&mut self, address: &str, name: Option<&str>) -> (String, usize) {
        let listen = format!("{address}:7700");
        let mut args = vec![
            "agent",
            "serve",
            "--listen",
            &listen,
            "--target-address",
            address,
        ];
        if let Some(name) = name {
            args.extend(["--node-name", name]);
        }
        let process = self.serve(address, &args);
        (listen, process)
    }

    pub(crate) fn loadgen(
        &mut self,
        address: &str,
        port: u16,
        targets: &[&str],
    ) -> (String, usize) {
        let listen = format!("{address}:{port}");
        let mut args = vec!["loadgen", "serve", "--listen", &listen];
        for target in targets {
            args.extend(["--allow", target]);
        }
        let process = self.serve(address, &args);
        (listen, process)
    }

    /// TCP listeners in host .`host`: its agent's, plus its nginx target's while one runs.
    pub(crate) fn listeners(&self, host: u8) -> usize {
        let namespace = format!("{}h{host}", self.tag);
        let output = Command::new("ip")
            .args(["netns", "exec", &namespace, "ss", "-Hltn"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).lines().count()
    }

    /// Waits until host .`host` has its nginx target listening, i.e. a run is under way there.
    pub(crate) async fn target_up(&self, host: u8, run: &mut Child) {
        let mut checks = tokio::time::interval(std::time::Duration::from_millis(20));
        while self.listeners(host) < 2 {
            checks.tick().await;
            assert!(run.try_wait().unwrap().is_none(), "loadlab run ended early");
        }
    }

    /// Processes running in a host namespace.
    pub(crate) fn pids(&self, namespace: &str) -> Vec<i32> {
        let output = Command::new("ip")
            .args(["netns", "pids", namespace])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    pub(crate) fn kill(&mut self, process: usize) {
        let child = &mut self.processes[process];
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts `loadlab run FILE` with the lab's token, stderr piped; `database` says where
    /// results go.
    pub(crate) fn spawn_run(&self, file: &Path, database: impl FnOnce(&mut Command)) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_loadlab"));
        command
            .arg("run")
            .arg(file)
            .arg("--token-file")
            .arg(self.token_file())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        database(&mut command);
        command.spawn().unwrap()
    }

    pub(crate) fn run(&self, yaml: &str, database_url: &str, extra: &[&str]) -> Output {
        let file = self.dir.path().join("experiment.yaml");
        std::fs::write(&file, yaml).unwrap();
        Command::new(env!("CARGO_BIN_EXE_loadlab"))
            .arg("run")
            .arg(&file)
            .arg("--token-file")
            .arg(self.token_file())
            .args(extra)
            .env("DATABASE_URL", database_url)
            .output()
            .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for child in &mut self.processes {
            let _ = child.wait();
        }
        // Whatever outlived its agent (an nginx whose agent was killed) goes with the lab.
        for namespace in &self.hosts {
            for pid in self.pids(namespace) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Deleting a namespace deletes its end of each veth, and with it the peer.
        for namespace in self.hosts.iter().chain([&self.hub()]) {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
    }
}

/// Hosts a (.10) and b (.20) with agents, a generator host (.30) allowed to load both.
pub(crate) struct Hosts {
    pub(crate) agent_a: String,
    pub(crate) agent_b: String,
    pub(crate) agent_b_process: usize,
    pub(crate) generator: String,
    pub(crate) generator_process: usize,
}

impl Hosts {
    /// Writes the two-cohort experiment over these hosts into the lab's directory.
    pub(crate) fn experiment_file(&self, lab: &Lab, duration: &str, repetitions: u32) -> PathBuf {
        let file = lab.dir.path().join("experiment.yaml");
        let yaml = experiment(
            &self.agent_a,
            &self.agent_b,
            std::slice::from_ref(&self.generator),
            duration,
            repetitions,
        );
        std::fs::write(&file, yaml).unwrap();
        file
    }
}

pub(crate) fn two_hosts_and_a_generator(lab: &mut Lab) -> Hosts {
    let a = lab.host(10);
    let b = lab.host(20);
    let g = lab.host(30);
    let (agent_a, _) = lab.agent(&a);
    let (agent_b, agent_b_process) = lab.agent(&b);
    let (generator, generator_process) = lab.loadgen(&g, 7701, &[&a, &b]);
    Hosts {
        agent_a,
        agent_b,
        agent_b_process,
        generator,
        generator_process,
    }
}

pub(crate) fn experiment(
    a: &str,
    b: &str,
    generators: &[String],
    duration: &str,
    repetitions: u32,
) -> String {
    experiment_of(
        &[("host-a", &[a]), ("host-b", &[b])],
        generators,
        duration,
        repetitions,
    )
}

/// An experiment whose cohorts are agent hosts, given as (name, agents).
pub(crate) fn experiment_of(
    cohorts: &[(&str, &[&str])],
    generators: &[String],
    duration: &str,
    repetitions: u32,
) -> String {
    let mut experiment = ExperimentBuilder::new("fleet")
        .set("load.warmup", "200ms")
        .set("load.duration", duration)
        .set("generators", generators)
        .set("repetitions", repetitions);
    for (name, agents) in cohorts {
        experiment = experiment.cohort(json!({ "name": name, "nodes": agents }));
    }
    experiment.yaml()
}

pub(crate) struct Stopped<'a>(pub(crate) &'a PrivatePostgres);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// Reads `loadlab run`'s stderr until a line starts with `last`: the experiment id it announced
/// and the finished runs' lines up to that one.
pub(crate) fn announced_until(run: &mut Child, last: &str) -> (uuid::Uuid, Vec<String>) {
    let mut stderr = BufReader::new(run.stderr.take().unwrap());
    let mut line = String::new();
    let mut id = None;
    let mut finished = Vec::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.strip_prefix("experiment ") {
            id = rest
                .split(':')
                .next()
                .map(|s| uuid::Uuid::parse_str(s).unwrap());
        }
        if line.starts_with('[') {
            finished.push(line.clone());
        }
        if line.starts_with(last) {
            break;
        }
        line.clear();
    }
    (id.expect("the experiment id is announced"), finished)
}

/// Once host .`host` has its target listening (its storm under way), kills `loadlab run`
/// outright; returns the runs stored by then, which must be two.
pub(crate) async fn kill_once_target_up(
    lab: &Lab,
    host: u8,
    run: &mut Child,
    store: &Store,
    id: uuid::Uuid,
) -> Vec<uuid::Uuid> {
    lab.target_up(host, run).await;
    run.kill().unwrap();
    run.wait().unwrap();
    let before: Vec<uuid::Uuid> = store
        .experiment_runs(id)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(before.len(), 2);
    before
}

/// Resumes experiment `id` of `planned` runs, two of them (`before`) stored already: the rest
/// run, all succeed, and what was stored is kept. Returns every run.
pub(crate) async fn resume_to_the_end(
    lab: &Lab,
    yaml: &str,
    url: &str,
    store: &Store,
    id: uuid::Uuid,
    before: &[uuid::Uuid],
    planned: usize,
) -> Vec<loadlab_results::RunRecord> {
    let output = lab.run(yaml, url, &["--resume", &id.to_string()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{} runs to go, 2 stored already", planned - 2)),
        "{stderr}"
    );
    let runs = store.experiment_runs(id).await.unwrap();
    assert_eq!(runs.len(), planned, "{stderr}");
    assert!(runs.iter().all(|r| r.outcome == RunOutcome::Succeeded));
    assert!(before.iter().all(|id| runs.iter().any(|r| &r.id == id)));
    runs
}

/// A cohort of two hosts (.10 and .11) beside a cohort of one (.20), one generator (.30).
pub(crate) fn two_node_cohort(
    lab: &mut Lab,
    names: [Option<&str>; 2],
    duration: &str,
    repetitions: u32,
) -> String {
    let a1 = lab.host(10);
    let a2 = lab.host(11);
    let b = lab.host(20);
    let g = lab.host(30);
    let (agent_a1, _) = lab.named_agent(&a1, names[0]);
    let (agent_a2, _) = lab.named_agent(&a2, names[1]);
    let (agent_b, _) = lab.named_agent(&b, Some("node-b"));
    let (generator, _) = lab.loadgen(&g, 7701, &[&a1, &a2, &b]);
    experiment_of(
        &[
            ("fleet-a", &[&agent_a1, &agent_a2]),
            ("host-b", &[&agent_b]),
        ],
        &[generator],
        duration,
        repetitions,
    )
}
