//! Which cluster nodes each cohort runs on and where the generators go: pure functions over a
//! snapshot of the nodes, so every rule is a table test and a 1,000-node fleet plans in
//! microseconds.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;

use crate::spec::{CohortSpec, ExperimentSpec};

/// What planning needs to know of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// `status.nodeInfo.kernelVersion` (what `uname -r` prints on the node).
    pub kernel_version: String,
    pub labels: BTreeMap<String, String>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Runs the cluster's control plane (its role label or taint).
    pub control_plane: bool,
}

/// The label and taint key that mark a control-plane node (`master` on older clusters).
const CONTROL_PLANE_KEYS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

impl NodeView {
    pub fn from_node(node: &Node) -> Self {
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            kernel_version: status
                .and_then(|s| s.node_info.as_ref())
                .map(|info| info.kernel_version.clone())
                .unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            ready,
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            control_plane: CONTROL_PLANE_KEYS.iter().any(|key| {
                node.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|labels| labels.contains_key(*key))
                    || node
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_some_and(|taints| taints.iter().any(|t| t.key == *key))
            }),
        }
    }

    fn usable(&self) -> bool {
        self.ready && !self.unschedulable
    }

    fn has_labels(&self, selector: &BTreeMap<String, String>) -> bool {
        selector
            .iter()
            .all(|(key, value)| self.labels.get(key) == Some(value))
    }
}

/// The nodes of one cohort, by name, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortNodes {
    pub cohort: String,
    pub nodes: Vec<String>,
}

/// Why an experiment cannot start as planned. Each names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    CohortWithoutNodes { cohort: String, detail: String },
    NodeInSeveralCohorts { node: String, cohorts: Vec<String> },
    NoGeneratorNodes { needed: u32 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::CohortWithoutNodes { cohort, detail } => {
                write!(f, "cohort {cohort:?} has no node: {detail}")
            }
            Problem::NodeInSeveralCohorts { node, cohorts } => write!(
                f,
                "node {node:?} matches cohorts {} which select different nodes: cohorts share all their nodes or none",
                cohorts.join(", ")
            ),
            Problem::NoGeneratorNodes { needed } => write!(
                f,
                "no Ready node outside the cohorts can carry the {needed} generator(s): label one for load.generatorPlacement.nodeSelector, or set load.generatorPlacement.allowNodesUnderTest"
            ),
        }
    }
}

impl Problem {
    /// A short CamelCase reason for a status condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Problem::CohortWithoutNodes { .. } => "CohortWithoutNodes",
            Problem::NodeInSeveralCohorts { .. } => "NodeInSeveralCohorts",
            Problem::NoGeneratorNodes { .. } => "NoGeneratorNodes",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// In the spec's cohort order.
    pub cohorts: Vec<CohortNodes>,
    /// One node per generator (a node may carry several).
    pub generators: Vec<String>,
    pub problems: Vec<Problem>,
}

impl Placement {
    pub fn is_ready(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Matches a kernel version against a pattern where `*` stands for any run of characters.
pub(crate) fn kernel_matches(pattern: &str, version: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = version.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn cohort_matches(cohort: &CohortSpec, node: &NodeView) -> bool {
    cohort
        .kernel
        .as_deref()
        .is_none_or(|pattern| kernel_matches(pattern, &node.kernel_version))
        && node.has_labels(&cohort.node_selector)
        && (cohort.node_names.is_empty() || cohort.node_names.contains(&node.name))
}

/// Plans an experiment on a snapshot of the cluster's nodes.
pub fn place(spec: &ExperimentSpec, nodes: &[NodeView]) -> Placement {
    let mut sorted: Vec<&NodeView> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut problems = Vec::new();
    let mut cohorts = Vec::with_capacity(spec.cohorts.len());
    let mut owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for cohort in &spec.cohorts {
        let matching: Vec<&NodeView> = sorted
            .iter()
            .copied()
            .filter(|node| cohort_matches(cohort, node))
            .collect();
        // Agent pods tolerate every taint (the user chose the nodes), so the control plane is
        // kept out here unless the cohort asks for it: tracing and storms there disturb the
        // cluster, and the cluster disturbs what is measured.
        let usable: Vec<String> = matching
            .iter()
            .filter(|node| node.usable() && (cohort.allow_control_plane || !node.control_plane))
            .map(|node| node.name.clone())
            .collect();
        if usable.is_empty() {
            let detail = if matching.is_empty() {
                format!("no node matches {}", describe_selection(cohort))
            } else {
                let unusable: Vec<String> = matching
                    .iter()
                    .map(|n| {
                        let why = if !n.ready {
                            "NotReady"
                        } else if n.unschedulable {
                            "unschedulable"
                        } else {
                            "control plane: set allowControlPlane: true on the cohort to test it"
                        };
                        format!("{} ({why})", n.name)
                    })
                    .collect();
                format!(
                    "the nodes matching {} are not usable: {}",
                    describe_selection(cohort),
                    unusable.join(", ")
                )
            };
            problems.push(Problem::CohortWithoutNodes {
                cohort: cohort.name.clone(),
                detail,
            });
        }
        for node in &usable {
            owner
                .entry(node.clone())
                .or_default()
                .push(cohort.name.clone());
        }
        cohorts.push(CohortNodes {
            cohort: cohort.name.clone(),
            nodes: usable,
        });
    }
    // Cohorts that select exactly the same nodes compare settings on those nodes (one agent
    // serves them all, a run at a time); a node in cohorts that otherwise differ would mix
    // what is compared.
    let nodes_of = |name: &str| cohorts.iter().find(|c| c.cohort == name).map(|c| &c.nodes);
    for (node, names) in &owner {
        let same_nodes = names.iter().all(|n| nodes_of(n) == nodes_of(&names[0]));
        if names.len() > 1 && !same_nodes {
            problems.push(Problem::NodeInSeveralCohorts {
                node: node.clone(),
                cohorts: names.clone(),
            });
        }
    }

    let placement = &spec.load.generator_placement;
    let candidates = |allow_under_test: bool| -> Vec<String> {
        sorted
            .iter()
            .filter(|n| n.usable() && n.has_labels(&placement.node_selector))
            .filter(|n| placement.allow_control_plane || !n.control_plane)
            .filter(|n| allow_under_test || !owner.contains_key(&n.name))
            .map(|n| n.name.clone())
            .collect()
    };
    let mut hosts = candidates(false);
    if hosts.is_empty() && placement.allow_nodes_under_test {
        hosts = candidates(true);
    }
    let needed = spec.load.generators.max(1);
    let generators = if hosts.is_empty() {
        problems.push(Problem::NoGeneratorNodes { needed });
        Vec::new()
    } else {
        (0..needed as usize)
            .map(|i| hosts[i % hosts.len()].clone())
            .collect()
    };
    Placement {
        cohorts,
        generators,
        problems,
    }
}

fn describe_selection(cohort: &CohortSpec) -> String {
    let mut parts = Vec::new();
    if let Some(kernel) = &cohort.kernel {
        parts.push(format!("kernel {kernel:?}"));
    }
    if !cohort.node_selector.is_empty() {
        let labels: Vec<String> = cohort
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.push(format!("labels {}", labels.join(",")));
    }
    if !cohort.node_names.is_empty() {
        parts.push(format!("names {}", cohort.node_names.join(",")));
    }
    parts.join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ExperimentBuilder;
    use serde_json::{Value, json};

    fn node(name: &str, kernel: &str, labels: &[(&str, &str)]) -> NodeView {
        NodeView {
            name: name.into(),
            kernel_version: kernel.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ready: true,
            unschedulable: false,
            control_plane: false,
        }
    }

    /// An experiment with these cohorts, `generators` generators and, unless `Value::Null`,
    /// this `load.generatorPlacement`.
    fn spec(cohorts: &[Value], generator_placement: Value, generators: u32) -> ExperimentSpec {
        let mut experiment = ExperimentBuilder::new("t")
            .set("target.nginx", json!({}))
            .set("load.generators", generators);
        if !generator_placement.is_null() {
            experiment = experiment.set("load.generatorPlacement", generator_placement);
        }
        for cohort in cohorts {
            experiment = experiment.cohort(cohort.clone());
        }
        experiment.build().unwrap().spec
    }

    fn by_kernel() -> Vec<Value> {
        vec![
            json!({ "name": "unpatched", "kernel": "6.1.0-47-*" }),
            json!({ "name": "patched", "kernel": "6.1.0-56-*" }),
        ]
    }

    #[test]
    fn control_plane_nodes_are_left_out_unless_a_cohort_or_the_generators_ask() {
        let mut nodes = vec![
            node("cp-1", "6.1.0-47-cloud-amd64", &[]),
            node("old-1", "6.1.0-47-cloud-amd64", &[]),
            node("new-1", "6.1.0-56-cloud-amd64", &[]),
            node("gen-1", "6.12.57", &[]),
        ];
        nodes[0].control_plane = true;
        let plan = place(&spec(&by_kernel(), Value::Null, 1), &nodes);
        assert!(plan.is_ready(), "{:?}", plan.problems);
        assert_eq!(plan.cohorts[0].nodes, vec!["old-1"]);
        assert_eq!(plan.generators, vec!["gen-1"]);

        // Only the control plane matches: named, with what to set.
        nodes.remove(1);
        let plan = place(&spec(&by_kernel(), Value::Null, 1), &nodes);
        let problem = plan.problems[0].to_string();
        assert!(
            problem.contains("cp-1 (control plane: set allowControlPlane: true on the cohort"),
            "{problem}"
        );
        let asked = [
            json!({ "name": "unpatched", "kernel": "6.1.0-47-*", "allowControlPlane": true }),
            json!({ "name": "patched", "kernel": "6.1.0-56-*" }),
        ];
        let plan = place(&spec(&asked, Value::Null, 1), &nodes);
        assert!(plan.is_ready(), "{:?}", plan.problems);
        assert_eq!(plan.cohorts[0].nodes, vec!["cp-1"]);

        // Generators too: only with generatorPlacement.allowControlPlane.
        nodes[2].control_plane = true;
        let plan = place(&spec(&asked, Value::Null, 1), &nodes);
        assert!(!plan.is_ready());
        let placement = json!({ "allowControlPlane": true });
        let plan = place(&spec(&asked, placement, 1), &nodes);
        assert_eq!(plan.generators, vec!["gen-1"]);
    }

    #[test]
    fn kernel_patterns_match_like_shell_globs() {
        for (pattern, version, expected) in [
            ("6.1.0-47-*", "6.1.0-47-cloud-amd64", true),
            ("6.1.0-47-*", "6.1.0-470-cloud-amd64", false),
            ("6.1.0-47-*", "16.1.0-47-cloud", false),
            ("*cloud*", "6.1.0-56-cloud-amd64", true),
            ("6.12.*+deb12-*", "6.12.57+deb12-cloud-amd64", true),
            ("6.12.*+deb12-*", "6.12.57+deb13-cloud-amd64", false),
            ("6.1.0-56-cloud-amd64", "6.1.0-56-cloud-amd64", true),
            ("6.1.0-56", "6.1.0-56-cloud-amd64", false),
            ("*", "", true),
            ("a*a", "a", false),
        ] {
            assert_eq!(
                kernel_matches(pattern, version),
                expected,
                "{pattern} ~ {version}"
            );
        }
    }

    #[test]
    fn cohorts_take_matching_ready_nodes_and_generators_take_the_rest() {
        let mut nodes = vec![
            node("b-old", "6.1.0-47-cloud-amd64", &[]),
            node("a-old", "6.1.0-47-cloud-amd64", &[]),
            node("new", "6.1.0-56-cloud-amd64", &[]),
            node("gen", "6.12.57+deb12-cloud-amd64", &[]),
            node("cordoned", "6.12.57+deb12-cloud-amd64", &[]),
            node("down", "6.1.0-56-cloud-amd64", &[]),
        ];
        nodes[4].unschedulable = true;
        nodes[5].ready = false;
        let placement = place(&spec(&by_kernel(), Value::Null, 2), &nodes);
        assert!(placement.is_ready(), "{:?}", placement.problems);
        assert_eq!(placement.cohorts[0].nodes, vec!["a-old", "b-old"]);
        assert_eq!(placement.cohorts[1].nodes, vec!["new"]);
        assert_eq!(placement.generators, vec!["gen", "gen"]);
    }

    #[test]
    fn a_cohort_without_nodes_is_named_with_the_reason() {
        let mut nodes = vec![
            node("old", "6.1.0-47-cloud-amd64", &[]),
            node("new", "6.1.0-56-cloud-amd64", &[]),
            node("gen", "6.12.1", &[]),
        ];
        nodes[1].ready = false;
        let placement = place(&spec(&by_kernel(), Value::Null, 1), &nodes);
        assert_eq!(
            placement.problems,
            vec![Problem::CohortWithoutNodes {
                cohort: "patched".into(),
                detail: "the nodes matching kernel \"6.1.0-56-*\" are not usable: new (NotReady)"
                    .into()
            }]
        );
        let placement = place(&spec(&by_kernel(), Value::Null, 1), &nodes[..1]);
        let messages: Vec<String> = placement.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            messages[0].contains("\"patched\" has no node: no node matches kernel"),
            "{messages:?}"
        );
        assert_eq!(
            placement.problems[1],
            Problem::NoGeneratorNodes { needed: 1 }
        );
    }

    #[test]
    fn selectors_combine_and_a_node_in_two_cohorts_is_a_problem() {
        let nodes = vec![
            node("x1", "6.1.0-47-a", &[("hw", "big")]),
            node("x2", "6.1.0-47-a", &[("hw", "small")]),
            node("g", "6.1.0-47-a", &[("role", "load")]),
        ];
        let cohorts = [
            json!({ "name": "big", "kernel": "6.1.0-47-*", "nodeSelector": { "hw": "big" } }),
            json!({ "name": "named", "nodeNames": ["x2", "x1"] }),
        ];
        let placement = place(
            &spec(&cohorts, json!({ "nodeSelector": { "role": "load" } }), 1),
            &nodes,
        );
        assert_eq!(placement.cohorts[0].nodes, vec!["x1"]);
        assert_eq!(placement.cohorts[1].nodes, vec!["x1", "x2"]);
        assert_eq!(
            placement.problems,
            vec![Problem::NodeInSeveralCohorts {
                node: "x1".into(),
                cohorts: vec!["big".into(), "named".into()]
            }]
        );
        assert_eq!(placement.generators, vec!["g"]);
    }

    #[test]
    fn cohorts_on_exactly_the_same_nodes_share_them() {
        let nodes = vec![
            node("n1", "6.18.4", &[]),
            node("n2", "6.18.4", &[]),
            node("g", "6.1.0-47-a", &[("role", "load")]),
        ];
        let cohorts = [
            json!({ "name": "one-worker", "kernel": "6.18.*" }),
            json!({
                "name": "two-workers", "kernel": "6.18.*",
                "target": { "nginx": { "workers": 2 } },
            }),
        ];
        let placement = place(
            &spec(&cohorts, json!({ "nodeSelector": { "role": "load" } }), 1),
            &nodes,
        );
        assert!(placement.is_ready(), "{:?}", placement.problems);
        assert_eq!(placement.cohorts[0].nodes, vec!["n1", "n2"]);
        assert_eq!(placement.cohorts[1].nodes, vec!["n1", "n2"]);
        assert_eq!(placement.generators, vec!["g"]);
    }

    #[test]
    fn generators_share_nodes_under_test_only_when_allowed() {
        let nodes = vec![
            node("old", "6.1.0-47-cloud-amd64", &[]),
            node("new", "6.1.0-56-cloud-amd64", &[]),
        ];
        let refused = place(&spec(&by_kernel(), Value::Null, 3), &nodes);
        assert_eq!(
            refused.problems,
            vec![Problem::NoGeneratorNodes { needed: 3 }]
        );
        let allowed = place(
            &spec(&by_kernel(), json!({ "allowNodesUnderTest": true }), 3),
            &nodes,
        );
        assert!(allowed.is_ready());
        assert_eq!(allowed.generators, vec!["new", "old", "new"]);
    }

    #[test]
    fn node_views_read_kernel_readiness_and_cordons() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "n1", "labels": { "hw": "big" } },
            "spec": { "unschedulable": true },
            "status": {
                "nodeInfo": {
                    "kernelVersion": "6.1.0-47-cloud-amd64", "architecture": "amd64",
                    "bootID": "", "containerRuntimeVersion": "", "kubeProxyVersion": "",
                    "kubeletVersion": "", "machineID": "", "operatingSystem": "linux",
                    "osImage": "", "systemUUID": ""
                },
                "conditions": [{ "type": "Ready", "status": "True" }]
            }
        }))
        .unwrap();
        let view = NodeView::from_node(&node);
        assert_eq!(view.kernel_version, "6.1.0-47-cloud-amd64");
        assert!(view.ready && view.unschedulable);
        assert_eq!(view.labels["hw"], "big");
    }
}
