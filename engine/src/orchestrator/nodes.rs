//! A node's facts as the results store keeps them.

use std::collections::BTreeMap;

use loadlab_proto::v1::{self};
use loadlab_results::NodeRecord;

/// The node as the results store keeps it.
pub fn node_record(facts: &v1::NodeFacts) -> NodeRecord {
    NodeRecord {
        hostname: facts.hostname.clone(),
        kernel_release: facts.kernel_release.clone(),
        kernel_version: facts.kernel_version.clone(),
        cpu_model: facts.cpu_model.clone(),
        logical_cpus: i32::try_from(facts.logical_cpus).unwrap_or(i32::MAX),
        memory_bytes: to_i64(facts.memory_bytes),
        facts: node_details(facts),
    }
}

/// What a node's facts say beyond its identity (hostname, kernel, CPU, memory): stored with
/// the node, and printed by `loadlab agent describe --json`.
pub fn node_details(facts: &v1::NodeFacts) -> serde_json::Value {
    let symbols: BTreeMap<&str, &str> = facts
        .kernel_symbols
        .iter()
        .map(|s| (s.name.as_str(), s.presence_word()))
        .collect();
    serde_json::json!({
        "kernel_symbols": symbols,
        "epoll_refcount_patch": facts.epoll_refcount_patch().as_str(),
        "cmdline": facts.cmdline,
        "cpu_vulnerabilities": facts.cpu_vulnerabilities.iter().collect::<BTreeMap<_, _>>(),
        "scaling_governor": facts.scaling_governor,
        "smt": facts.smt,
        "numa_nodes": facts.numa_nodes,
        "virtualization": facts.virtualization,
        "emulated": facts.emulated,
        "nic_drivers": facts.nic_drivers.iter().collect::<BTreeMap<_, _>>(),
        "sysctls": facts.sysctls.iter().collect::<BTreeMap<_, _>>(),
        "nginx_version": facts.nginx_version,
    })
}

pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
