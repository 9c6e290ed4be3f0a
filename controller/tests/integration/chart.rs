//! The Helm chart, checked with a real `helm` (lint, template) and `kubernetes-validate`
//! (every rendered object, and the pods the controller creates, against Kubernetes' schemas).
//! `scripts/install-deps.sh` installs both; set LOADLAB_HELM to use another helm.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;

use loadlab_controller::pods::{PerfEvents, PodSettings, agent_pod, loadgen_pod, token_secret};
use loadlab_controller::{Experiment, parse_experiment};

const KUBERNETES_VERSION: &str = "1.33.0";

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/loadlab")
}

fn tool(variable: &str, name: &str) -> String {
    let program = std::env::var(variable).unwrap_or_else(|_| name.to_string());
    let found = Command::new(&program).arg("--help").output().is_ok();
    assert!(
        found,
        "{name} is needed for the chart tests: run scripts/install-deps.sh (or set {variable})"
    );
    program
}

fn helm(args: &[&str]) -> Output {
    Command::new(tool("LOADLAB_HELM", "helm"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn render(values: &[&str]) -> String {
    let chart = chart();
    let mut args = vec!["template", "lab", chart.to_str().unwrap(), "--include-crds"];
    for value in values {
        args.extend(["--set", value]);
    }
    let output = helm(&args);
    assert!(
        output.status.success(),
        "helm template {values:?}: {}",
        text(&output)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn validate(yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("objects.yaml");
    std::fs::write(&path, yaml).unwrap();
    let output = Command::new(tool("LOADLAB_KUBERNETES_VALIDATE", "kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubernetes-validate: {}",
        text(&output)
    );
}

#[test]
fn the_chart_lints_strictly_with_bundled_and_external_databases() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for extra in [
        vec![],
        vec![
            "--set",
            "postgresql.enabled=false",
            "--set",
            "database.existingSecret=lab-db",
        ],
    ] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend(extra.iter().copied());
        let output = helm(&args);
        assert!(
            output.status.success(),
            "helm lint {extra:?}: {}",
            text(&output)
        );
    }
}

#[test]
fn default_values_render_valid_objects_with_a_bundled_postgres() {
    let rendered = render(&[]);
    for kind in [
        "kind: CustomResourceDefinition",
        "kind: Deployment",
        "kind: StatefulSet",
        "kind: ClusterRole",
        "kind: Role",
        "helm.sh/hook: test",
    ] {
        assert!(rendered.contains(kind), "{kind} missing");
    }
    assert!(rendered.contains("@lab-loadlab-postgresql:5432/loadlab"));
    // The controller's token key: a Secret of the chart's, or the one named instead.
    assert!(
        rendered.contains("name: lab-loadlab-token-key"),
        "{rendered}"
    );
    validate(&rendered);
    let own = render(&["controller.tokenKey.existingSecret=lab-key"]);
    assert!(!own.contains("lab-loadlab-token-key"), "{own}");
    assert!(own.contains("name: lab-key"), "{own}");
    // Agents open perf events with CAP_PERFMON unless the chart is told the nodes need more.
    let perf_events = |rendered: &str| {
        let at = rendered.find("name: LOADLAB_AGENT_PERF_EVENTS").unwrap();
        rendered[at..].lines().nth(1).unwrap().trim().to_string()
    };
    assert_eq!(perf_events(&rendered), r#"value: "perfmon""#);
    let debian = render(&["agent.perfEvents=sysAdmin"]);
    assert_eq!(perf_events(&debian), r#"value: "sysAdmin""#);
    // Agent and generator pods get the chart's resources, and agents no CPU limit (it would
    // throttle the nginx being measured).
    for (variable, memory_limit) in [
        ("LOADLAB_AGENT_RESOURCES", "2Gi"),
        ("LOADLAB_LOADGEN_RESOURCES", "512Mi"),
    ] {
        let at = rendered.find(&format!("name: {variable}")).unwrap();
        let line = rendered[at..].lines().nth(1).unwrap().trim();
        let json: String = serde_yaml::from_str(line.strip_prefix("value: ").unwrap()).unwrap();
        let resources: k8s_openapi::api::core::v1::ResourceRequirements =
            serde_json::from_str(&json).unwrap();
        let limits = resources.limits.unwrap();
        assert_eq!(limits["memory"].0, memory_limit, "{variable}");
        assert!(!limits.contains_key("cpu"), "{variable}");
    }
}

#[test]
fn two_replicas_get_a_disruption_budget_and_spread_over_nodes() {
    let one = render(&[]);
    assert!(!one.contains("kind: PodDisruptionBudget"), "{one}");
    assert!(!one.contains("podAntiAffinity"), "{one}");
    let two = render(&["controller.replicas=2"]);
    assert!(two.contains("kind: PodDisruptionBudget"), "{two}");
    assert!(two.contains("minAvailable: 1"), "{two}");
    assert!(two.contains("podAntiAffinity"), "{two}");
    assert!(two.contains("topologyKey: kubernetes.io/hostname"), "{two}");
    validate(&two);
}

#[test]
fn an_external_database_renders_without_postgres() {
    let rendered = render(&[
        "postgresql.enabled=false",
        "database.existingSecret=lab-db",
        "apiToken.existingSecret=lab-token",
        "controller.replicas=2",
    ]);
    assert!(!rendered.contains("kind: StatefulSet"));
    assert!(rendered.contains("name: lab-db"));
    assert!(rendered.contains("LOADLAB_API_TOKEN"));
    validate(&rendered);
}

#[test]
fn impossible_values_are_refused_with_the_reason() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for (values, says) in [
        (vec!["postgresql.enabled=false"], "database.existingSecret"),
        (vec!["controller.replicas=0"], "replicas"),
        (vec!["image.pullPolicy=Sometimes"], "pullPolicy"),
        (vec!["agent.perfEvents=root"], "perfEvents"),
        (vec!["surprise=1"], "surprise"),
    ] {
        let mut args = vec!["template", "lab", chart];
        for value in &values {
            args.extend(["--set", value]);
        }
        let output = helm(&args);
        assert!(!output.status.success(), "{values:?} rendered");
        assert!(
            text(&output).contains(says),
            "{values:?}: {}",
            text(&output)
        );
    }
}

#[test]
fn the_pods_the_controller_creates_are_valid_kubernetes_objects() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/epoll-refcount.yaml"),
    )
    .unwrap();
    let mut experiment = Experiment::new("epoll-refcount", parse_experiment(&text).unwrap().spec);
    experiment.metadata.namespace = Some("lab".into());
    experiment.metadata.uid = Some("0d6c3f7e-6f43-4c36-9a4f-1f2b4f7d7a01".into());
    let settings = PodSettings {
        image: "loadlab/loadlab:0.1.0".into(),
        perf_events: PerfEvents::Perfmon,
        agent_resources: None,
        loadgen_resources: None,
        network_policy: None,
        image_pull_policy: Some("IfNotPresent".into()),
    };
    let key = loadlab_controller::token::TokenKey::new(&"k".repeat(32)).unwrap();
    let (_, identity) =
        loadlab_controller::pod_tls::issue(&key, "0d6c3f7e-6f43-4c36-9a4f-1f2b4f7d7a01").unwrap();
    let objects = [
        serde_yaml::to_string(&agent_pod(&experiment, &["unpatched"], "node-a", &settings))
            .unwrap(),
        serde_yaml::to_string(&loadgen_pod(
            &experiment,
            0,
            "node-g",
            &["10.0.0.7".parse().unwrap()],
            &settings,
        ))
        .unwrap(),
        serde_yaml::to_string(&token_secret(&experiment, "t0ken", &identity)).unwrap(),
    ];
    validate(&objects.join("---\n"));
}

/// The resources a rendered Role or ClusterRole may create, keyed by its kind and namespace.
fn creatable(rendered: &str) -> Vec<(String, String, Vec<String>)> {
    let mut found = Vec::new();
    for document in serde_yaml::Deserializer::from_str(rendered) {
        let object = serde_yaml::Value::deserialize(document).unwrap();
        let kind = object["kind"].as_str().unwrap_or_default();
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("*");
        let resources = object["rules"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|rule| {
                rule["verbs"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|verb| verb == "create")
            })
            .flat_map(|rule| rule["resources"].as_sequence().unwrap().clone())
            .map(|resource| resource.as_str().unwrap().to_string())
            .collect();
        found.push((kind.to_string(), namespace.to_string(), resources));
    }
    found
}

#[test]
fn pods_and_secrets_are_made_only_in_the_namespaces_the_chart_names() {
    let experiment_resources = |grants: &[(String, String, Vec<String>)], kind: &str| {
        grants
            .iter()
            .filter(|(k, _, resources)| k == kind && resources.iter().any(|r| r == "pods"))
            .map(|(_, namespace, resources)| (namespace.clone(), resources.clone()))
            .collect::<Vec<_>>()
    };
    let everything = ["pods", "secrets", "networkpolicies"];
    // By default the release's namespace only, through a Role; the ClusterRole creates Events
    // (anywhere, to explain a refusal) and nothing else.
    let default = creatable(&render(&[]));
    assert_eq!(
        experiment_resources(&default, "Role"),
        vec![(
            "default".to_string(),
            everything.iter().map(|r| r.to_string()).collect()
        )]
    );
    assert!(experiment_resources(&default, "ClusterRole").is_empty());
    let cluster_role = default.iter().find(|(k, _, _)| k == "ClusterRole").unwrap();
    assert_eq!(cluster_role.2, vec!["events".to_string()]);

    let two = creatable(&render(&["experimentNamespaces={perf-a,perf-b}"]));
    let namespaces: Vec<String> = experiment_resources(&two, "Role")
        .into_iter()
        .map(|(namespace, _)| namespace)
        .collect();
    assert_eq!(namespaces, vec!["perf-a", "perf-b"]);

    let anywhere = creatable(&render(&["experimentNamespaces={*}"]));
    assert!(experiment_resources(&anywhere, "Role").is_empty());
    assert_eq!(experiment_resources(&anywhere, "ClusterRole").len(), 1);
    let rendered = render(&["experimentNamespaces={perf-a,perf-b}"]);
    assert!(
        rendered.contains(
            "name: LOADLAB_EXPERIMENT_NAMESPACES\n              value: \"perf-a,perf-b\""
        ),
        "the controller is not told its namespaces"
    );

    // `*` beside names, and what is no namespace name, are refused at install.
    for (value, says) in [
        ("experimentNamespaces={*,perf-a}", "stands alone"),
        ("experimentNamespaces={Perf}", "does not match pattern"),
    ] {
        let chart = chart();
        let output = helm(&["template", "lab", chart.to_str().unwrap(), "--set", value]);
        assert!(!output.status.success(), "{value} rendered");
        assert!(text(&output).contains(says), "{value}: {}", text(&output));
    }
}
