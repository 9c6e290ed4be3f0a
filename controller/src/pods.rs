//! What the controller creates for an experiment, as pure functions: the token Secret, one
//! agent pod per node under test and the generator pods. Every object is owned by its
//! `Experiment`, so deleting the experiment deletes them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HostPathVolumeSource,
    ObjectFieldSelector, Pod, PodSpec, Probe, ResourceRequirements, SecretVolumeSource,
    SecurityContext, TCPSocketAction, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::objects::{
    COHORTS_ANNOTATION, bounded_name, experiment_name, experiment_uid, owned_metadata, short_hash,
};
use crate::pod_tls::PodIdentity;
use crate::spec::Experiment;

pub use loadlab_proto::{AGENT_PORT, LOADGEN_PORT};
pub const TOKEN_KEY: &str = "token";
/// The pods' TLS certificate and key, beside the token in the same Secret.
pub(crate) const TLS_CERT_KEY: &str = "tls.crt";
pub(crate) const TLS_KEY_KEY: &str = "tls.key";
const TOKEN_DIR: &str = "/etc/loadlab/token";

/// How the controller's pods are made, from the chart's values.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSettings {
    /// The `loadlab` image; agents and generators are the same binary.
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub perf_events: PerfEvents,
    /// Requests and limits of agent pods (the chart's `agent.resources`).
    pub agent_resources: Option<ResourceRequirements>,
    /// Requests and limits of generator pods (the chart's `loadgen.resources`).
    pub loadgen_resources: Option<ResourceRequirements>,
    /// Where the controller runs, when each experiment gets a NetworkPolicy that admits only
    /// it to the experiment's pods (the chart's `networkPolicy.enabled`).
    pub network_policy: Option<crate::netpol::ControllerPeer>,
}

/// The capability agent pods open perf events with (the chart's `agent.perfEvents`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PerfEvents {
    /// CAP_PERFMON, the least that works where `kernel.perf_event_paranoid` is 2 or less
    /// (upstream's default, and wherever it was lowered).
    #[default]
    Perfmon,
    /// CAP_SYS_ADMIN as well: Debian's and Ubuntu's kernels refuse every perf event without it
    /// at their default paranoid level (3 and 4).
    SysAdmin,
}

/// The agent needs to start nginx (which hands its temporary directories to, and switches its
/// workers to, an unprivileged user), load BPF programs and read kernel stacks and symbols:
/// nothing more. No SYS_RESOURCE: since Linux 5.11 BPF memory is charged to the cgroup, not to
/// RLIMIT_MEMLOCK, and nodes that withhold SYS_RESOURCE from their runtime (sandboxed ones do)
/// could not start a pod asking for it.
const AGENT_CAPABILITIES: [&str; 7] = [
    "BPF",
    "PERFMON",
    "SYSLOG",
    // Naming other processes' user-space frames: their memory maps and their files through
    // `/proc/PID/root`, which root may not read for another user's process (nginx's workers)
    // without it.
    "SYS_PTRACE",
    "CHOWN",
    "SETUID",
    "SETGID",
];

/// Named for this very resource: an experiment deleted and applied again at once must not
/// find its predecessor's Secret (not yet collected), whose token is another's.
pub(crate) fn token_secret_name(experiment: &Experiment) -> String {
    let uid = experiment.metadata.uid.as_deref().unwrap_or_default();
    bounded_name(&experiment_name(experiment), "token", &short_hash(uid)[..6])
}

/// Pod names carry a hash of the experiment's uid: two experiments whose long names share the
/// first 50 characters, or one deleted and applied again under its name, never meet each
/// other's pods.
pub(crate) fn agent_pod_name(experiment: &Experiment, node: &str) -> String {
    bounded_name(
        &experiment_name(experiment),
        "agent",
        &short_hash(&format!("{}/{node}", experiment_uid(experiment))),
    )
}

pub(crate) fn loadgen_pod_name(experiment: &Experiment, index: usize) -> String {
    bounded_name(
        &experiment_name(experiment),
        "loadgen",
        &format!("{index}-{}", &short_hash(experiment_uid(experiment))[..5]),
    )
}

/// The Secret holding the bearer token agents and generators require, and the TLS identity
/// they serve with.
pub fn token_secret(experiment: &Experiment, token: &str, tls: &PodIdentity) -> Secret {
    let entry = |key: &str, value: &str| (key.to_string(), ByteString(value.as_bytes().to_vec()));
    Secret {
        metadata: owned_metadata(experiment, token_secret_name(experiment), "token", None),
        data: Some(BTreeMap::from([
            entry(TOKEN_KEY, token),
            entry(TLS_CERT_KEY, &tls.cert_pem),
            entry(TLS_KEY_KEY, &tls.key_pem),
        ])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// The agent pod of one node under test, pinned to it. nginx targets run inside it, started by
/// the agent for each run (see ARCHITECTURE.md), listening on the pod's address. A node in
/// several cohorts (same nodes, other settings) has one agent for all of them: the cohort
/// label names its cohort when it has one, the cohorts annotation lists them all.
pub fn agent_pod(
    experiment: &Experiment,
    cohorts: &[&str],
    node: &str,
    settings: &PodSettings,
) -> Pod {
    let mut container = loadlab_container(
        "agent",
        settings,
        vec![
            "agent".into(),
            "serve".into(),
            "--listen".into(),
            format!("0.0.0.0:{AGENT_PORT}"),
        ]
        .into_iter()
        .chain(credential_args())
        .collect(),
        AGENT_PORT,
    );
    container.env = Some(vec![
        field_env("LOADLAB_TARGET_ADDRESS", "status.podIP"),
        field_env("LOADLAB_NODE_NAME", "spec.nodeName"),
    ]);
    container.resources = settings.agent_resources.clone();
    container.security_context = Some(SecurityContext {
        run_as_user: Some(0),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: Some(
                AGENT_CAPABILITIES
                    .iter()
                    .copied()
                    .chain((settings.perf_events == PerfEvents::SysAdmin).then_some("SYS_ADMIN"))
                    .map(str::to_string)
                    .collect(),
            ),
        }),
        ..SecurityContext::default()
    });
    container
        .volume_mounts
        .get_or_insert_default()
        .push(VolumeMount {
            name: "tracefs".into(),
            mount_path: "/sys/kernel/tracing".into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    let mut volumes = vec![token_volume(experiment)];
    volumes.push(Volume {
        name: "tracefs".into(),
        host_path: Some(HostPathVolumeSource {
            path: "/sys/kernel/tracing".into(),
            type_: Some("Directory".into()),
        }),
        ..Volume::default()
    });
    let only_cohort = match cohorts {
        [cohort] => Some(*cohort),
        _ => None,
    };
    let mut metadata = owned_metadata(
        experiment,
        agent_pod_name(experiment, node),
        "agent",
        only_cohort,
    );
    metadata.annotations = Some(BTreeMap::from([(
        COHORTS_ANNOTATION.to_string(),
        cohorts.join(","),
    )]));
    Pod {
        metadata,
        spec: Some(PodSpec {
            node_name: Some(node.to_string()),
            containers: vec![container],
            volumes: Some(volumes),
            ..pinned_pod_spec()
        }),
        ..Pod::default()
    }
}

/// A generator pod. It may load only the agents' addresses given here.
pub fn loadgen_pod(
    experiment: &Experiment,
    index: usize,
    node: &str,
    targets: &[IpAddr],
    settings: &PodSettings,
) -> Pod {
    let mut args = vec![
        "loadgen".into(),
        "serve".into(),
        "--listen".into(),
        format!("0.0.0.0:{LOADGEN_PORT}"),
    ];
    args.extend(credential_args());
    for target in targets {
        args.push("--allow".into());
        args.push(target.to_string());
    }
    let mut container = loadlab_container("loadgen", settings, args, LOADGEN_PORT);
    container.resources = settings.loadgen_resources.clone();
    container.security_context = Some(SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    });
    Pod {
        metadata: owned_metadata(
            experiment,
            loadgen_pod_name(experiment, index),
            "loadgen",
            None,
        ),
        spec: Some(PodSpec {
            node_name: Some(node.to_string()),
            containers: vec![container],
            volumes: Some(vec![token_volume(experiment)]),
            ..pinned_pod_spec()
        }),
        ..Pod::default()
    }
}

/// A pod that runs once on the node it names. A restarted agent would have lost its targets,
/// so a pod that dies is a failure the controller reports rather than something to retry.
/// Every taint is tolerated: the user chose these nodes for the experiment.
fn pinned_pod_spec() -> PodSpec {
    PodSpec {
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(15),
        tolerations: Some(vec![Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]),
        ..PodSpec::default()
    }
}

fn loadlab_container(
    name: &str,
    settings: &PodSettings,
    args: Vec<String>,
    port: u16,
) -> Container {
    Container {
        name: name.into(),
        image: Some(settings.image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("grpc".into()),
            container_port: i32::from(port),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(i32::from(port)),
                host: None,
            }),
            period_seconds: Some(2),
            ..Probe::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "token".into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// The token and TLS identity from the mounted Secret.
fn credential_args() -> [String; 6] {
    [
        "--token-file".into(),
        format!("{TOKEN_DIR}/{TOKEN_KEY}"),
        "--tls-cert".into(),
        format!("{TOKEN_DIR}/{TLS_CERT_KEY}"),
        "--tls-key".into(),
        format!("{TOKEN_DIR}/{TLS_KEY_KEY}"),
    ]
}

fn token_volume(experiment: &Experiment) -> Volume {
    Volume {
        name: "token".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(token_secret_name(experiment)),
            default_mode: Some(0o400),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
        value: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::COHORT_LABEL;
    use crate::spec::ExperimentBuilder;

    fn experiment(name: &str) -> Experiment {
        let file = ExperimentBuilder::new(name)
            .set("target.nginx", serde_json::json!({}))
            .cohort(serde_json::json!({ "name": "a", "kernel": "6.*" }))
            .build()
            .unwrap();
        let mut experiment = Experiment::new(name, file.spec);
        experiment.metadata.namespace = Some("lab".into());
        experiment.metadata.uid = Some("5b1f0c1e-0000-4000-8000-000000000001".into());
        experiment
    }

    fn settings() -> PodSettings {
        PodSettings {
            perf_events: PerfEvents::Perfmon,
            agent_resources: None,
            loadgen_resources: None,
            network_policy: None,
            image: "ghcr.io/example/loadlab:0.1.0".into(),
            image_pull_policy: None,
        }
    }

    #[test]
    fn the_agent_pod_is_pinned_owned_and_least_privileged() {
        let exp = experiment("epoll");
        let pod = agent_pod(&exp, &["a"], "node-1", &settings());
        let meta = &pod.metadata;
        assert_eq!(meta.namespace.as_deref(), Some("lab"));
        assert_eq!(meta.labels.as_ref().unwrap()[COHORT_LABEL], "a");
        let shared = agent_pod(&exp, &["a", "b"], "node-1", &settings()).metadata;
        assert!(!shared.labels.as_ref().unwrap().contains_key(COHORT_LABEL));
        assert_eq!(shared.annotations.unwrap()[COHORTS_ANNOTATION], "a,b");
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Experiment", Some(true))
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let container = &spec.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.privileged, None);
        let caps = security.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(!caps.add.as_ref().unwrap().iter().any(|c| c == "SYS_ADMIN"));
        let env = container.env.as_ref().unwrap();
        assert_eq!(
            env[0]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "status.podIP"
        );
        assert_eq!(agent_pod_name(&exp, "node-1"), meta.name.clone().unwrap());
    }

    #[test]
    fn pods_carry_the_resources_the_chart_gives() {
        let agent: ResourceRequirements =
            serde_json::from_str(r#"{"limits":{"memory":"2Gi"},"requests":{"cpu":"100m"}}"#)
                .unwrap();
        let loadgen: ResourceRequirements =
            serde_json::from_str(r#"{"limits":{"memory":"512Mi"}}"#).unwrap();
        let settings = PodSettings {
            agent_resources: Some(agent.clone()),
            loadgen_resources: Some(loadgen.clone()),
            network_policy: None,
            ..settings()
        };
        let exp = experiment("epoll");
        let container = |pod: Pod| pod.spec.unwrap().containers[0].clone();
        let agent_pod = container(agent_pod(&exp, &["a"], "node-1", &settings));
        assert_eq!(agent_pod.resources, Some(agent));
        let targets = ["10.1.0.5".parse().unwrap()];
        let loadgen_pod = container(loadgen_pod(&exp, 0, "gen-node", &targets, &settings));
        assert_eq!(loadgen_pod.resources, Some(loadgen));
    }

    #[test]
    fn sys_admin_is_added_only_when_the_chart_asks_for_it() {
        let added = |perf_events| {
            let pod = agent_pod(
                &experiment("epoll"),
                &["a"],
                "node-1",
                &PodSettings {
                    perf_events,
                    ..settings()
                },
            );
            pod.spec.unwrap().containers[0]
                .security_context
                .as_ref()
                .unwrap()
                .capabilities
                .as_ref()
                .unwrap()
                .add
                .clone()
                .unwrap()
        };
        let perfmon = added(PerfEvents::Perfmon);
        let sys_admin = added(PerfEvents::SysAdmin);
        assert!(perfmon.contains(&"PERFMON".to_string()));
        assert!(!perfmon.contains(&"SYS_ADMIN".to_string()));
        assert_eq!(sys_admin[..perfmon.len()], perfmon[..]);
        assert_eq!(sys_admin[perfmon.len()..], ["SYS_ADMIN".to_string()]);
    }

    #[test]
    fn generators_may_load_only_the_agents() {
        let exp = experiment("epoll");
        let targets: Vec<IpAddr> = vec!["10.1.0.5".parse().unwrap(), "10.1.0.6".parse().unwrap()];
        let pod = loadgen_pod(&exp, 1, "gen-node", &targets, &settings());
        let args = pod.spec.unwrap().containers[0].args.clone().unwrap();
        assert_eq!(
            args[args.len() - 4..],
            ["--allow", "10.1.0.5", "--allow", "10.1.0.6"]
        );
        let name = pod.metadata.name.unwrap();
        assert!(name.starts_with("epoll-loadgen-1-"), "{name}");
    }

    #[test]
    fn names_fit_a_dns_label_and_differ_per_node() {
        let long = "x".repeat(63);
        let exp = experiment(&long);
        for name in [
            agent_pod_name(&exp, "node-a"),
            loadgen_pod_name(&exp, 12),
            token_secret_name(&exp),
        ] {
            assert!(name.len() <= 63 && !name.contains("--"), "{name}");
        }
        assert_ne!(
            agent_pod_name(&exp, "node-a"),
            agent_pod_name(&exp, "node-b")
        );
        assert_eq!(short_hash("node-a"), short_hash("node-a"));
        let mut again = experiment(&long);
        again.metadata.uid = Some("another-uid".into());
        assert_ne!(token_secret_name(&exp), token_secret_name(&again));
        // Applied again under its name, or another whose name shares the first 50
        // characters: pods of their own.
        let mut sharing = experiment(&format!("{}-second", "x".repeat(50)));
        sharing.metadata.uid = Some("yet-another-uid".into());
        for other in [&again, &sharing] {
            assert_ne!(
                agent_pod_name(&exp, "node-a"),
                agent_pod_name(other, "node-a")
            );
            assert_ne!(loadgen_pod_name(&exp, 0), loadgen_pod_name(other, 0));
        }
    }
}
