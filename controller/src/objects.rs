//! How every object the controller creates is named, labelled and owned: by its `Experiment`
//! (deleting the experiment deletes it), found by the experiment's uid, and named within a DNS
//! label. Pods, Secrets and NetworkPolicies all follow it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::spec::Experiment;

pub(crate) const EXPERIMENT_LABEL: &str = "loadlab.dev/experiment";
pub(crate) const EXPERIMENT_UID_LABEL: &str = "loadlab.dev/experiment-uid";
pub(crate) const COHORT_LABEL: &str = "loadlab.dev/cohort";
pub(crate) const COHORTS_ANNOTATION: &str = "loadlab.dev/cohorts";
pub(crate) const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// On every pod and Secret the controller creates, with [`MANAGER`]: what its pod watch selects.
pub(crate) const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub(crate) const MANAGER: &str = "loadlab-controller";

pub fn experiment_uid(experiment: &Experiment) -> &str {
    experiment.metadata.uid.as_deref().unwrap_or_default()
}

/// Whether `pod` belongs to this very experiment (its owner's uid), not merely to one of the
/// same name.
pub(crate) fn is_owned_by(pod: &Pod, experiment: &Experiment) -> bool {
    let uid = experiment_uid(experiment);
    !uid.is_empty()
        && pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|owner| owner.uid == uid)
}

/// The label that finds an experiment's pods: by its uid, so a new experiment of the same name
/// never counts (or deletes) its predecessor's.
pub(crate) fn uid_selector(experiment: &Experiment) -> String {
    format!("{EXPERIMENT_UID_LABEL}={}", experiment_uid(experiment))
}

pub fn experiment_name(experiment: &Experiment) -> String {
    experiment.metadata.name.clone().unwrap_or_default()
}

pub(crate) fn owned_metadata(
    experiment: &Experiment,
    name: String,
    component: &str,
    cohort: Option<&str>,
) -> ObjectMeta {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "loadlab".to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
        (COMPONENT_LABEL.to_string(), component.to_string()),
        (EXPERIMENT_LABEL.to_string(), experiment_name(experiment)),
        (
            EXPERIMENT_UID_LABEL.to_string(),
            experiment_uid(experiment).to_string(),
        ),
    ]);
    if let Some(cohort) = cohort {
        labels.insert(COHORT_LABEL.to_string(), cohort.to_string());
    }
    ObjectMeta {
        name: Some(name),
        namespace: experiment.metadata.namespace.clone(),
        labels: Some(labels),
        owner_references: experiment.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// `{experiment}-{role}[-{suffix}]`, cut to 63 characters (a DNS label, so it is also a valid
/// hostname and label value) without a trailing '-'.
pub(crate) fn bounded_name(experiment: &str, role: &str, suffix: &str) -> String {
    let tail = if suffix.is_empty() {
        format!("-{role}")
    } else {
        format!("-{role}-{suffix}")
    };
    let room = 63usize.saturating_sub(tail.len());
    let head: String = experiment.chars().take(room).collect();
    format!("{}{tail}", head.trim_end_matches('-'))
}

/// FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
pub(crate) fn short_hash(text: &str) -> String {
    let hash = text.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    format!("{hash:08x}")
}
