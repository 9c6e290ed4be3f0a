//! The NetworkPolicy each experiment gets where the chart asks for one: its agents and
//! generators take gRPC from the controller's pods only, and its agents take load (nginx, on
//! whatever port the target names) only from its own generators. Everything else that would
//! reach them is dropped by a network plugin that enforces policies.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::Experiment;
use crate::objects::{
    COMPONENT_LABEL, EXPERIMENT_UID_LABEL, bounded_name, experiment_name, experiment_uid,
    owned_metadata, short_hash,
};
use loadlab_proto::{AGENT_PORT, LOADGEN_PORT};

/// The controller's pods: their namespace and the labels that select them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerPeer {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl ControllerPeer {
    /// From `key=value,key=value` (the chart passes its controller's selector labels).
    pub fn parse(namespace: &str, labels: &str) -> Result<Self, String> {
        let labels = labels
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    Ok((key.trim().to_string(), value.trim().to_string()))
                }
                _ => Err(format!("{pair:?} is not key=value")),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        if labels.is_empty() {
            return Err("the controller's labels are needed to admit it (key=value,...)".into());
        }
        Ok(Self {
            namespace: namespace.to_string(),
            labels,
        })
    }
}

pub(crate) fn network_policy_name(experiment: &Experiment) -> String {
    bounded_name(
        &experiment_name(experiment),
        "netpol",
        &short_hash(experiment_uid(experiment))[..6],
    )
}

fn selector(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    }
}

fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

pub fn network_policy(experiment: &Experiment, controller: &ControllerPeer) -> NetworkPolicy {
    let uid = experiment_uid(experiment).to_string();
    let this_experiment = BTreeMap::from([(EXPERIMENT_UID_LABEL.to_string(), uid.clone())]);
    let from_controller = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(selector(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                controller.namespace.clone(),
            )]))),
            pod_selector: Some(selector(controller.labels.clone())),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![tcp(AGENT_PORT), tcp(LOADGEN_PORT)]),
    };
    // The storm: generators to the agents' nginx, on any port (the target names it).
    let from_generators = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(selector(BTreeMap::from([
                (EXPERIMENT_UID_LABEL.to_string(), uid),
                (COMPONENT_LABEL.to_string(), "loadgen".to_string()),
            ]))),
            ..NetworkPolicyPeer::default()
        }]),
        ports: None,
    };
    NetworkPolicy {
        metadata: owned_metadata(
            experiment,
            network_policy_name(experiment),
            "network-policy",
            None,
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(this_experiment)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![from_controller, from_generators]),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_experiment;

    fn experiment() -> Experiment {
        let file = parse_experiment(
            "apiVersion: loadlab.dev/v1alpha1\nkind: Experiment\nmetadata: { name: e }\nspec:\n  target: { nginx: {} }\n  load: { connections: 8, duration: 1s }\n  cohorts: [{ name: a, kernel: \"6.*\" }]\n",
        )
        .unwrap();
        let mut experiment = Experiment::new("e", file.spec);
        experiment.metadata.namespace = Some("lab".into());
        experiment.metadata.uid = Some("5b1f0c1e-0000-4000-8000-000000000001".into());
        experiment
    }

    #[test]
    fn only_the_controller_reaches_grpc_and_only_the_experiments_generators_reach_nginx() {
        let controller = ControllerPeer::parse(
            "loadlab-system",
            "app.kubernetes.io/name=loadlab, app.kubernetes.io/instance=lab,app.kubernetes.io/component=controller",
        )
        .unwrap();
        let policy = serde_json::to_value(network_policy(&experiment(), &controller)).unwrap();
        let uid = "5b1f0c1e-0000-4000-8000-000000000001";
        assert_eq!(policy["metadata"]["namespace"], "lab");
        assert_eq!(
            policy["metadata"]["ownerReferences"][0]["kind"],
            "Experiment"
        );
        assert_eq!(
            policy["spec"]["podSelector"],
            serde_json::json!({ "matchLabels": { EXPERIMENT_UID_LABEL: uid } })
        );
        assert_eq!(
            policy["spec"]["policyTypes"],
            serde_json::json!(["Ingress"])
        );
        let rules = policy["spec"]["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "loadlab-system"
        );
        assert_eq!(
            rules[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
            "lab"
        );
        assert_eq!(
            rules[0]["ports"],
            serde_json::json!([{ "port": 7700, "protocol": "TCP" }, { "port": 7701, "protocol": "TCP" }])
        );
        assert_eq!(
            rules[1]["from"][0]["podSelector"]["matchLabels"],
            serde_json::json!({ EXPERIMENT_UID_LABEL: uid, COMPONENT_LABEL: "loadgen" })
        );
        assert!(rules[1]["from"][0].get("namespaceSelector").is_none());
    }

    #[test]
    fn controller_labels_must_be_pairs() {
        assert!(ControllerPeer::parse("ns", "").is_err());
        assert!(ControllerPeer::parse("ns", "a=b,c").is_err());
        assert!(ControllerPeer::parse("ns", "=b").is_err());
        assert_eq!(
            ControllerPeer::parse("ns", "a=b").unwrap().labels,
            BTreeMap::from([("a".to_string(), "b".to_string())])
        );
    }
}
