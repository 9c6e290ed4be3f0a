//! What the real-cluster tests share: `kubectl` and `helm` as a user runs them, a release of the
//! chart installed into a namespace of its own (removed again, with everything in it, when the
//! test ends, pass or fail), and waiting on the API server's watch rather than on time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use kube::runtime::wait::{Condition, await_condition};
use kube::{Api, Client};
use loadlab_controller::Experiment;
use serde_json::Value;

/// The chart's bundled database, as `scripts/cluster.sh images` imports it.
pub const POSTGRES_IMAGE: &str = "loadlab/postgresql:15";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a program to its end; its standard output when it succeeds, a panic naming the
/// command and everything it printed when it does not.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is needed (scripts/cluster.sh puts it on PATH): {e}")
        });
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a program and returns whether it succeeded, with everything it printed.
pub fn try_run(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program).args(args).output().unwrap();
    (output.status.success(), text(&output))
}

pub fn kubectl(args: &[&str]) -> String {
    run("kubectl", args)
}

pub fn kubectl_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(&all)).unwrap()
}

/// One installed release of the chart, in its own namespace.
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub client: Client,
}

impl Release {
    /// `helm install --wait` of the chart as it is in the repository, with the images this
    /// machine built (`pullPolicy: Never`: nothing may be pulled) and any extra `--set`s.
    pub async fn install(namespace: &str, extra: &[&str]) -> Release {
        let chart = repo().join("helm/loadlab");
        let name = "loadlab".to_string();
        // A namespace left by an earlier, interrupted run goes first.
        let _ = try_run(
            "kubectl",
            &["delete", "namespace", namespace, "--wait=true"],
        );
        kubectl(&["create", "namespace", namespace]);
        let release = Release {
            name: name.clone(),
            namespace: namespace.to_string(),
            client: Client::try_default()
                .await
                .expect("KUBECONFIG names the cluster (scripts/cluster.sh up)"),
        };
        release.bind_volume();
        let mut args = vec![
            "install",
            name.as_str(),
            chart.to_str().unwrap(),
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "10m",
            "--set",
            "image.pullPolicy=Never",
        ];
        let postgres = format!("postgresql.image={POSTGRES_IMAGE}");
        args.extend(["--set", postgres.as_str()]);
        for value in extra {
            args.extend(["--set", value]);
        }
        let (ok, printed) = try_run("helm", &args);
        if !ok {
            panic!("helm install: {printed}\n{}", release.diagnose());
        }
        release
    }

    /// The chart's Postgres claims a volume; this cluster has no provisioner, so each release
    /// gets a local one of its own, bound to its claim before the claim exists.
    fn bind_volume(&self) {
        let path = format!("{}/volumes/{}", cluster_dir(), self.namespace);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        let volume = format!("loadlab-{}", self.namespace);
        let _ = try_run("kubectl", &["delete", "pv", &volume, "--wait=true"]);
        let manifest = format!(
            r#"{{"apiVersion":"v1","kind":"PersistentVolume","metadata":{{"name":"{volume}"}},
"spec":{{"capacity":{{"storage":"8Gi"}},"accessModes":["ReadWriteOnce"],"storageClassName":"local",
"persistentVolumeReclaimPolicy":"Retain","hostPath":{{"path":"{path}","type":"Directory"}},
"claimRef":{{"namespace":"{ns}","name":"data-{release}-postgresql-0"}}}}}}"#,
            ns = self.namespace,
            release = self.name,
        );
        apply_json(&manifest);
    }

    pub fn experiments(&self) -> Api<Experiment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["--namespace", self.namespace.as_str()];
        all.extend(args);
        kubectl(&all)
    }

    pub fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--namespace", self.namespace.as_str()];
        all.extend(args);
        kubectl_json(&all)
    }

    /// `http://<ClusterIP>:<port>` of the chart's Service: this machine reaches Services the
    /// way pods do, through kube-proxy's rules.
    pub fn api_base(&self) -> String {
        let service = self.kubectl_json(&["get", "service", &self.name]);
        format!(
            "http://{}:{}",
            service["spec"]["clusterIP"].as_str().unwrap(),
            service["spec"]["ports"][0]["port"]
        )
    }

    /// GET through the Service: (status, body).
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let url = format!("{}{path}", self.api_base());
        let output = Command::new("curl")
            // A Service whose pods just became ready may refuse for a moment, until
            // kube-proxy has their endpoints.
            .args([
                "-sS",
                "--max-time",
                "60",
                "--retry",
                "10",
                "--retry-connrefused",
                "-w",
                "\n%{http_code}",
                &url,
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "curl {url}: {}", text(&output));
        let mut body = output.stdout;
        let at = body.iter().rposition(|b| *b == b'\n').unwrap();
        let status = String::from_utf8_lossy(&body[at + 1..])
            .trim()
            .parse()
            .unwrap();
        body.truncate(at);
        (status, body)
    }

    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap()
    }

    /// Waits (on a watch) until the experiment satisfies `condition`, for at most `limit`.
    pub async fn wait_experiment(
        &self,
        name: &str,
        limit: Duration,
        what: &str,
        condition: impl Condition<Experiment>,
    ) -> Experiment {
        self.wait_experiment_in(&self.namespace, name, limit, what, condition)
            .await
    }

    /// [`Release::wait_experiment`] for an experiment in another namespace.
    pub async fn wait_experiment_in(
        &self,
        namespace: &str,
        name: &str,
        limit: Duration,
        what: &str,
        condition: impl Condition<Experiment>,
    ) -> Experiment {
        let experiments = Api::<Experiment>::namespaced(self.client.clone(), namespace);
        match tokio::time::timeout(limit, await_condition(experiments, name, condition)).await {
            Ok(Ok(Some(experiment))) => experiment,
            Ok(other) => panic!("watching {name}: {other:?}"),
            Err(_) => panic!("{name}: not {what} within {limit:?}\n{}", self.diagnose()),
        }
    }

    /// What a person would look at when something hangs: pods, events, the experiments and the
    /// controllers' last log lines.
    pub fn diagnose(&self) -> String {
        let ns = self.namespace.as_str();
        let mut report = String::new();
        for args in [
            vec!["get", "pods", "-o", "wide", "-n", ns],
            // A node's taints and pressures say why pods wait (a crowded disk, a node not ready).
            vec![
                "get",
                "nodes",
                "-o",
                "custom-columns=NODE:.metadata.name,\
                 READY:.status.conditions[?(@.type==\"Ready\")].status,\
                 DISK_PRESSURE:.status.conditions[?(@.type==\"DiskPressure\")].status,\
                 TAINTS:.spec.taints[*].key",
            ],
            vec!["get", "experiments", "-o", "yaml", "-n", ns],
            vec!["get", "events", "--sort-by=.lastTimestamp", "-n", ns],
            vec![
                "logs",
                "-n",
                ns,
                "-l",
                "app.kubernetes.io/component=controller",
                "--tail",
                "40",
                "--prefix",
            ],
            vec![
                "logs",
                "-n",
                ns,
                "-l",
                "app.kubernetes.io/component=agent",
                "--tail",
                "20",
                "--prefix",
            ],
        ] {
            let (_, printed) = try_run("kubectl", &args);
            report.push_str(&format!("$ kubectl {}\n{printed}\n", args.join(" ")));
        }
        let (_, free) = try_run("df", &["-h", "/var/lib"]);
        report.push_str(&format!("$ df -h /var/lib\n{free}\n"));
        report
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let ns = self.namespace.as_str();
        // Experiments first, while their controller still runs to release its finalizer.
        let _ = try_run(
            "kubectl",
            &["delete", "experiments", "--all", "-n", ns, "--timeout=120s"],
        );
        let _ = try_run("helm", &["uninstall", &self.name, "-n", ns, "--wait"]);
        let _ = try_run("kubectl", &["delete", "namespace", ns, "--timeout=300s"]);
        let _ = try_run(
            "kubectl",
            &["delete", "pv", &format!("loadlab-{ns}"), "--timeout=60s"],
        );
    }
}

pub fn apply_json(manifest: &str) {
    let mut child = Command::new("kubectl")
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "kubectl apply: {}", text(&output));
}

/// A short experiment with these cohorts, its generator beside nginx (the real node is the one
/// node that runs anything): 16 connections, 1 s of warm-up, 3 s measured.
pub fn real_node_experiment(
    name: &str,
    namespace: &str,
    cohorts: Value,
    repetitions: u32,
) -> String {
    serde_json::json!({
        "apiVersion": "loadlab.dev/v1alpha1",
        "kind": "Experiment",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "target": { "nginx": { "workers": 1 } },
            "load": {
                "connections": 16, "warmup": "1s", "duration": "3s", "generators": 1,
                "generatorPlacement": { "allowNodesUnderTest": true }
            },
            "cohorts": cohorts,
            "repetitions": repetitions,
            "baseline": cohorts[0]["name"],
        }
    })
    .to_string()
}

/// Where `scripts/cluster.sh` keeps the cluster's files (`scripts/cluster/common.sh`).
fn cluster_dir() -> String {
    std::env::var("LOADLAB_CLUSTER_DIR").unwrap_or_else(|_| "/var/lib/loadlab-cluster".to_string())
}

/// `scripts/cluster.sh ARGS`: whether it succeeded, and everything it printed.
pub fn cluster_script(args: &[&str]) -> (bool, String) {
    let script = repo().join("scripts/cluster.sh");
    let output = Command::new("bash")
        .arg(&script)
        .args(args)
        .output()
        .expect("bash runs scripts/cluster.sh");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// A kernel node for one test, removed with everything it made when the test ends.
pub struct KernelNode {
    pub name: String,
}

impl KernelNode {
    pub fn add(name: &str, kernel: &str) -> Self {
        let node = KernelNode { name: name.into() };
        let (ok, said) = cluster_script(&["node", "add", name, kernel]);
        assert!(ok, "cluster.sh node add {name} {kernel}: {said}");
        node
    }

    /// The last lines of the guest's serial console: its kernel's warnings, the OOM killer,
    /// a panic.
    pub fn console_tail(&self) -> String {
        let path = format!("{}/nodes/{}/console.log", cluster_dir(), self.name);
        match std::fs::read_to_string(&path) {
            Ok(console) => {
                let lines: Vec<&str> = console.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                // A stalled network card repeats one warning until the tail holds nothing
                // else: what came before its first one says more.
                let before_watchdog = lines
                    .iter()
                    .position(|l| l.contains("NETDEV WATCHDOG"))
                    .map(|first| {
                        let from = first.saturating_sub(30);
                        format!(
                            "$ the 30 lines before the first NETDEV WATCHDOG\n{}\n",
                            lines[from..=first].join("\n")
                        )
                    })
                    .unwrap_or_default();
                format!("{before_watchdog}$ tail -n 40 {path}\n{tail}\n")
            }
            Err(error) => format!("{path}: {error}\n"),
        }
    }
}

impl Drop for KernelNode {
    fn drop(&mut self) {
        let (ok, said) = cluster_script(&["node", "remove", &self.name]);
        if !ok {
            eprintln!("cluster.sh node remove {}: {said}", self.name);
        }
    }
}

/// The condition of this type in the experiment's status.
pub fn condition<'a>(
    experiment: &'a Experiment,
    type_: &str,
) -> Option<&'a loadlab_controller::status::Condition> {
    experiment
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether the experiment has reached a final phase (`wait_experiment`'s condition).
pub fn finished(e: Option<&Experiment>) -> bool {
    e.and_then(|e| e.status.as_ref())
        .is_some_and(|s| s.phase.is_finished())
}
