//! A kernel as a real node: `scripts/cluster.sh node add` boots a Debian kernel under QEMU with
//! containerd and a kubelet that joins the API server with TLS both ways; pods pinned to it run,
//! talk with pods on this machine, and reach nothing else; the scheduler keeps other pods off.

use std::process::Command;

use serde_json::Value;

use crate::harness::{KernelNode, apply_json, kubectl, kubectl_json, try_run};

/// The unpatched kernel of the seed experiment.
const KERNEL_PACKAGE: &str = "linux-image-6.1.0-47-cloud-amd64-unsigned";
const KERNEL_RELEASE: &str = "6.1.0-47-cloud-amd64";

struct Namespace(String);

impl Namespace {
    fn create(name: &str) -> Self {
        let _ = try_run("kubectl", &["delete", "namespace", name, "--wait=true"]);
        kubectl(&["create", "namespace", name]);
        kubectl(&[
            "-n",
            name,
            "wait",
            "--for=create",
            "serviceaccount/default",
            "--timeout=60s",
        ]);
        Namespace(name.into())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = try_run("kubectl", &["delete", "namespace", &self.0, "--wait=false"]);
    }
}

fn pod(name: &str, namespace: &str, spec: Value) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    })
    .to_string()
}

#[test]
#[ignore = "needs cluster"]
fn a_debian_kernel_joins_as_a_node_and_runs_pods_confined_to_the_cluster() {
    let began = std::time::Instant::now();
    let node = KernelNode::add("kernel-join", KERNEL_PACKAGE);
    eprintln!(
        "kernel node Ready {:.0} s after `node add` (disks cached or not)",
        began.elapsed().as_secs_f64()
    );
    let namespace = Namespace::create("loadlab-kernel-node");
    let ns = namespace.0.as_str();

    let described = kubectl_json(&["get", "node", &node.name]);
    assert_eq!(
        described["status"]["nodeInfo"]["kernelVersion"], KERNEL_RELEASE,
        "{described}"
    );
    assert_eq!(described["metadata"]["labels"]["lab/kind"], "kernel");
    assert_eq!(
        described["metadata"]["labels"]["loadlab.dev/kernel"],
        KERNEL_RELEASE
    );
    let taints = described["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == "loadlab.dev/kernel-node" && t["effect"] == "NoSchedule"),
        "{taints:?}"
    );

    // nginx on the guest node, pinned as agent pods are; what it can reach is printed first.
    apply_json(&pod(
        "guest-nginx",
        ns,
        serde_json::json!({
            "nodeName": node.name,
            "restartPolicy": "Never",
            "tolerations": [{ "operator": "Exists" }],
            "containers": [{
                "name": "nginx",
                "image": "loadlab/loadlab:0.1.0",
                "imagePullPolicy": "Never",
                "command": ["sh", "-c",
                    "uname -r; cat /proc/sys/kernel/perf_event_paranoid; \
                     ip route get 192.0.2.1 2>&1; echo routes:; ip route; \
                     exec nginx -g 'daemon off;'"],
                "readinessProbe": { "tcpSocket": { "port": 80 }, "periodSeconds": 2 },
            }],
        }),
    ));
    kubectl(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "pod/guest-nginx",
        "--timeout=300s",
    ]);
    // Read through the API server, which verifies the kubelet's serving certificate.
    let logs = kubectl(&["-n", ns, "logs", "guest-nginx"]);
    let mut lines = logs.lines();
    assert_eq!(lines.next(), Some(KERNEL_RELEASE), "{logs}");
    // The guest keeps its Debian default: perf events only with CAP_SYS_ADMIN.
    assert_eq!(lines.next(), Some("3"), "{logs}");
    assert!(
        logs.contains("Network is unreachable"),
        "a guest pod has a route off the cluster: {logs}"
    );
    assert!(!logs.contains("default"), "{logs}");
    let guest_ip = kubectl(&[
        "-n",
        ns,
        "get",
        "pod",
        "guest-nginx",
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    assert!(guest_ip.starts_with("10.234."), "{guest_ip}");
    assert!(!guest_ip.starts_with("10.234.0."), "{guest_ip}");

    // A pod on this machine fetches nginx's page from the guest node's pod.
    apply_json(&pod(
        "host-client",
        ns,
        serde_json::json!({
            "nodeSelector": { "lab/kind": "real" },
            "restartPolicy": "Never",
            "containers": [{
                "name": "client",
                "image": "loadlab/loadlab:0.1.0",
                "imagePullPolicy": "Never",
                "command": ["bash", "-c",
                    "exec 3<>/dev/tcp/$0/80 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 60 cat <&3",
                    guest_ip],
            }],
        }),
    ));
    let (succeeded, said) = try_run(
        "kubectl",
        &[
            "-n",
            ns,
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pod/host-client",
            "--timeout=180s",
        ],
    );
    let fetched = kubectl(&["-n", ns, "logs", "host-client"]);
    assert!(succeeded, "{said}: {fetched}");
    assert!(fetched.contains("Welcome to nginx"), "{fetched}");

    // The scheduler keeps pods that were not sent there off the kernel node.
    apply_json(&pod(
        "unsent",
        ns,
        serde_json::json!({
            "nodeSelector": { "lab/kind": "kernel" },
            "containers": [{
                "name": "idle",
                "image": "loadlab/loadlab:0.1.0",
                "imagePullPolicy": "Never",
                "command": ["true"],
            }],
        }),
    ));
    kubectl(&[
        "-n",
        ns,
        "wait",
        "--for=condition=PodScheduled=False",
        "pod/unsent",
        "--timeout=120s",
    ]);
    let unsent = kubectl_json(&["-n", ns, "get", "pod", "unsent"]);
    let message = unsent["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
        .map(|c| c["message"].to_string())
        .unwrap_or_default();
    assert!(message.contains("untolerated taint"), "{unsent}");

    // Removing the node removes its Node object, its link and its route.
    // The guest's link is llg<N> for the node at 10.234.0.(200 + N), its pods in 10.234.N.0/24.
    let address = described["status"]["addresses"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .and_then(|a| a["address"].as_str())
        .unwrap_or_default()
        .to_string();
    let index: u32 = address
        .strip_prefix("10.234.0.")
        .and_then(|last| last.parse().ok())
        .and_then(|last: u32| last.checked_sub(200))
        .unwrap_or_else(|| panic!("guest address {address}"));
    assert!(
        guest_ip.starts_with(&format!("10.234.{index}.")),
        "{guest_ip}"
    );
    let tap = format!("llg{index}");
    let pod_route = format!("10.234.{index}.0/24");
    let ip = |args: &[&str]| {
        String::from_utf8_lossy(&Command::new("ip").args(args).output().unwrap().stdout)
            .into_owned()
    };
    assert!(ip(&["-o", "link", "show"]).contains(&tap));
    assert!(ip(&["route"]).contains(&pod_route));

    let name = node.name.clone();
    drop(node);
    let (exists, _) = try_run("kubectl", &["get", "node", &name]);
    assert!(!exists, "the Node object outlived its guest");
    let links = ip(&["-o", "link", "show"]);
    assert!(!links.contains(&format!("{tap}:")), "{links}");
    let routes = ip(&["route"]);
    assert!(!routes.contains(&pod_route), "{routes}");
}
