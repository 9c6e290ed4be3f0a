//! A cohort: where it runs (this machine, agent hosts, cluster nodes, a virtual machine) and
//! what it changes.

use super::*;

/// A cohort: where its runs happen and, optionally, nginx settings of its own. Either this
/// machine (`local: true`, for `loadlab run`) or, on a cluster, the nodes matching every
/// selector given: kernel version pattern, labels, names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CohortSpec {
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// This machine (`loadlab run` only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    /// Nodes whose `status.nodeInfo.kernelVersion` matches this pattern; `*` matches any run
    /// of characters, e.g. `6.1.0-47-*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub kernel: Option<String>,
    /// Nodes carrying all of these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_NODE_SELECTOR_LABELS), inner(length(max = 63)))]
    pub node_selector: BTreeMap<String, String>,
    /// Test control-plane nodes too (they are left out otherwise: tracing and storms there
    /// disturb the cluster, and the cluster disturbs what is measured).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_control_plane: bool,
    /// Nodes with these names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_NODES_PER_COHORT), inner(length(min = 1, max = 253)))]
    pub node_names: Vec<String>,
    /// Without a cluster: the agents (`loadlab agent serve`) of the cohort's hosts, as
    /// `host:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_NODES_PER_COHORT), inner(length(min = 3, max = 261)))]
    pub nodes: Vec<String>,
    /// A virtual machine on this machine that boots this kernel, with agent, nginx and
    /// generator inside (`loadlab run` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmSpec>,
    /// Settings that differ from the experiment's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetOverride>,
}

/// A cohort's virtual machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VmSpec {
    /// A kernel image (`vmlinuz`, `bzImage`) path, or a Debian kernel package name such as
    /// `linux-image-6.1.0-47-cloud-amd64-unsigned`, downloaded once into loadlab's cache.
    #[schemars(length(min = 1, max = 4096))]
    pub kernel: String,
    #[serde(default = "default_vm_cpus")]
    #[schemars(range(min = 1, max = MAX_VM_CPUS))]
    pub cpus: u32,
    #[serde(default = "default_vm_memory_mib", rename = "memoryMiB")]
    #[schemars(range(min = MIN_VM_MEMORY_MIB))]
    pub memory_mib: u32,
    /// `auto` tries KVM and falls back to emulation (TCG) when KVM does not boot the guest.
    #[serde(default)]
    pub accel: Accel,
    /// `tap`: a tap device in a network namespace the run creates (needs root); `user`: QEMU's
    /// user-mode network, reached through loopback-forwarded ports; `auto`: tap when possible.
    #[serde(default)]
    pub network: VmNetwork,
    /// Where the cohort's generator runs: inside the guest (`guest`, the least noise under
    /// emulation) or on this machine, loading the guest over its tap network (`host`).
    #[serde(default)]
    pub generator: GeneratorPlace,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VmNetwork {
    #[default]
    Auto,
    Tap,
    User,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GeneratorPlace {
    #[default]
    Guest,
    Host,
}

/// How a virtual machine's CPUs are provided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

pub(crate) const MAX_VM_CPUS: u32 = 64;
/// Below this the guest cannot hold its root file system (loadlab, nginx, perf and
/// their libraries) in memory.
pub(crate) const MIN_VM_MEMORY_MIB: u32 = 1024;

fn default_vm_cpus() -> u32 {
    2
}

fn default_vm_memory_mib() -> u32 {
    2048
}

impl CohortSpec {
    fn selects_cluster_nodes(&self) -> bool {
        self.kernel.is_some() || !self.node_selector.is_empty() || !self.node_names.is_empty()
    }

    /// The cohort's kind; a cohort that says more than one is refused by validation.
    pub fn kind(&self) -> CohortKind {
        if self.local {
            CohortKind::Local
        } else if !self.nodes.is_empty() {
            CohortKind::Hosts
        } else if self.vm.is_some() {
            CohortKind::Vm
        } else {
            CohortKind::Cluster
        }
    }

    pub(super) fn validate_placement(&self, field: &str) -> Result<(), SpecError> {
        let said = [
            self.local,
            self.selects_cluster_nodes(),
            !self.nodes.is_empty(),
            self.vm.is_some(),
        ]
        .iter()
        .filter(|&&said| said)
        .count();
        if said == 0 {
            return Err(SpecError::at(
                field,
                "say where the cohort runs: `local: true` for this machine, `nodes: [\"host:port\"]` for agent hosts, `vm: { kernel: ... }` for a virtual machine, or `kernel`, `nodeSelector` or `nodeNames` for cluster nodes",
            ));
        }
        if said > 1 {
            return Err(SpecError::at(
                field,
                "choose one place: `local: true`, agent hosts (`nodes`), a virtual machine (`vm`) or cluster nodes (`kernel`, `nodeSelector`, `nodeNames`)",
            ));
        }
        if self.allow_control_plane && !self.selects_cluster_nodes() {
            return Err(SpecError::at(
                format!("{field}.allowControlPlane"),
                "is for cohorts of cluster nodes (`kernel`, `nodeSelector`, `nodeNames`)",
            ));
        }
        for (list, count, most) in [
            ("nodes", self.nodes.len(), MAX_NODES_PER_COHORT),
            ("nodeNames", self.node_names.len(), MAX_NODES_PER_COHORT),
            (
                "nodeSelector",
                self.node_selector.len(),
                MAX_NODE_SELECTOR_LABELS,
            ),
        ] {
            if count > most {
                return Err(SpecError::at(
                    format!("{field}.{list}"),
                    format!("at most {most} entries, got {count}"),
                ));
            }
        }
        for (j, address) in self.nodes.iter().enumerate() {
            check_address(&format!("{field}.nodes[{j}]"), address)?;
        }
        if let Some(vm) = &self.vm {
            vm.validate(&format!("{field}.vm"))?;
        }
        if let Some(pattern) = &self.kernel
            && (pattern.is_empty()
                || pattern.len() > 256
                || pattern.contains(|c: char| c.is_control() || c.is_whitespace()))
        {
            return Err(SpecError::at(
                format!("{field}.kernel"),
                format!("{pattern:?} must be 1-256 characters without spaces, e.g. `6.1.0-47-*`"),
            ));
        }
        for (key, value) in &self.node_selector {
            if key.is_empty() || key.len() > 317 || value.len() > 63 {
                return Err(SpecError::at(
                    format!("{field}.nodeSelector"),
                    format!("{key:?}: {value:?} is not a valid label"),
                ));
            }
        }
        for (j, name) in self.node_names.iter().enumerate() {
            if name.is_empty() || name.len() > 253 || name.contains(char::is_whitespace) {
                return Err(SpecError::at(
                    format!("{field}.nodeNames[{j}]"),
                    format!("{name:?} is not a node name"),
                ));
            }
        }
        Ok(())
    }
}

impl VmSpec {
    fn validate(&self, field: &str) -> Result<(), SpecError> {
        if self.kernel.trim().is_empty()
            || self.kernel.len() > 4096
            || self.kernel.contains(char::is_control)
        {
            return Err(SpecError::at(
                format!("{field}.kernel"),
                "a kernel image path or a Debian kernel package name (e.g. linux-image-6.1.0-47-cloud-amd64-unsigned)",
            ));
        }
        if self.cpus == 0 || self.cpus > MAX_VM_CPUS {
            return Err(SpecError::at(
                format!("{field}.cpus"),
                format!("must be between 1 and {MAX_VM_CPUS}, got {}", self.cpus),
            ));
        }
        if self.generator == GeneratorPlace::Host && self.network == VmNetwork::User {
            return Err(SpecError::at(
                format!("{field}.generator"),
                "a generator on this machine loads the guest over its tap network: use `network: tap` or `auto`, or `generator: guest`",
            ));
        }
        if self.memory_mib < MIN_VM_MEMORY_MIB {
            return Err(SpecError::at(
                format!("{field}.memoryMiB"),
                format!(
                    "must be at least {MIN_VM_MEMORY_MIB} (the guest's files live in memory), got {}",
                    self.memory_mib
                ),
            ));
        }
        Ok(())
    }
}
