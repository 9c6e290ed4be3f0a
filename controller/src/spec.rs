//! The experiment file: the same YAML is a Kubernetes `Experiment` and the input of
//! `loadlab run`. Parsing rejects unknown fields and impossible values with an error that names
//! the field.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::status::ExperimentStatus;

pub const API_VERSION: &str = "loadlab.dev/v1alpha1";
pub const KIND: &str = "Experiment";
/// Longest warm-up or measured window a run may ask for.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
pub const MAX_CONNECTIONS: u32 = 100_000;
pub const MAX_REPETITIONS: u32 = 1000;
pub const MAX_RETRIES: u32 = 10;
pub const MAX_COHORTS: usize = 64;
pub const MAX_GENERATORS: u32 = 64;
pub const MAX_REQUESTS_PER_CONNECTION: u32 = 1_000_000;
pub const MAX_RATE: f64 = 10_000_000.0;
pub const MAX_PROFILE_HZ: u32 = 10_000;
pub const MAX_PATH_BYTES: usize = 2048;
/// Agent hosts or node names one cohort may list.
pub const MAX_NODES_PER_COHORT: usize = 1000;
pub const MAX_NODE_SELECTOR_LABELS: usize = 64;

// What the controller refuses, the API server refuses too: the limits above go into the CRD's
// schema (ranges and lengths on the fields, CEL rules where fields depend on each other), so
// `kubectl apply` names the field, and no object the controller cannot read is ever stored.
const IMMUTABLE_SPEC: &str = "self == oldSelf";
const BASELINE_IS_A_COHORT: &str =
    "!has(self.baseline) || self.cohorts.exists(c, c.name == self.baseline)";
const COHORT_NAMES_UNIQUE: &str =
    "self.cohorts.all(c, self.cohorts.exists_one(d, d.name == c.name))";
const DURATION_IN_RANGE: &str =
    "duration(self.duration) > duration('0s') && duration(self.duration) <= duration('1h')";
const WARMUP_IN_RANGE: &str = "!has(self.warmup) || duration(self.warmup) <= duration('1h')";
const GENERATORS_AT_MOST_CONNECTIONS: &str =
    "!has(self.generators) || self.generators <= self.connections";
const RATE_IN_RANGE: &str = "!has(self.rate) || (self.rate > 0.0 && self.rate <= 10000000.0)";
const WORKERS_VALID: &str =
    "type(self) == string ? self == 'auto' : (int(self) >= 1 && int(self) <= 1024)";
const REPETITIONS_VALID: &str =
    "type(self) == string ? self == 'auto' : (int(self) >= 1 && int(self) <= 1000)";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExperimentFile {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ExperimentSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// An experiment: the load, the cohorts it compares, how often, and what is collected. The same
/// spec is the Kubernetes `Experiment` resource (`loadlab crd` prints its definition) and the
/// `spec` of a local experiment file.
// Each printer column repeats `type_ = "string"`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[kube(
    group = "loadlab.dev",
    version = "v1alpha1",
    kind = "Experiment",
    namespaced,
    status = "ExperimentStatus",
    shortname = "exp",
    category = "loadlab",
    doc = "A kernel comparison: connection storms against nginx on cohorts of nodes, repeated, with lock contention and CPU profiles",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Runs", type_ = "string", json_path = ".status.progress"),
    printcolumn(name = "Verdict", type_ = "string", json_path = ".status.verdict"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": IMMUTABLE_SPEC,
        "message": "an experiment's spec cannot change once applied: delete the experiment and apply it again (its results are kept)"
    },
    {
        "rule": BASELINE_IS_A_COHORT,
        "message": "spec.baseline must name one of the cohorts",
        "fieldPath": ".baseline"
    },
    {
        "rule": COHORT_NAMES_UNIQUE,
        "message": "spec.cohorts: each cohort needs a name of its own",
        "fieldPath": ".cohorts"
    }
]))]
pub struct ExperimentSpec {
    pub target: TargetSpec,
    pub load: LoadSpec,
    #[schemars(length(min = 1, max = MAX_COHORTS))]
    pub cohorts: Vec<CohortSpec>,
    /// Rounds of runs: a number, or `auto` to run rounds until every cohort's change against
    /// the baseline is decided (see `stopping`).
    #[serde(default)]
    pub repetitions: Repetitions,
    /// With `repetitions: auto`: the most rounds, and the smallest change that matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<StoppingSpec>,
    /// How many times a failed run is tried again before the experiment moves on; every
    /// attempt is stored with its reason.
    #[serde(default = "one")]
    #[schemars(range(max = MAX_RETRIES))]
    pub retries: u32,
    /// The cohort others are compared with; the first cohort when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(default)]
    pub collect: CollectSpec,
    /// Where the generator runs beside nginx (`local` cohorts: in loadlab's own process), give
    /// nginx's workers half the cores and loadlab the other half, so they do not take turns on
    /// one core: `auto` (the default) from 4 cores, `always` from 2, `never`.
    #[serde(default, skip_serializing_if = "PinCpus::is_auto")]
    pub pin_cpus: PinCpus,
    /// Without a cluster, for cohorts of `nodes`: the generators (`loadlab loadgen serve`) as
    /// `host:port`; every storm is split over all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_GENERATORS), inner(length(min = 3, max = 261)))]
    pub generators: Vec<String>,
}

/// Where an experiment's cohorts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CohortKind {
    /// This machine, agent and generator in process (`local: true`).
    Local,
    /// Cluster nodes chosen by the controller (`kernel`, `nodeSelector`, `nodeNames`).
    Cluster,
    /// Hosts running `loadlab agent serve`, reached over the network (`nodes`).
    Hosts,
    /// A virtual machine on this machine booting the cohort's kernel (`vm`; `loadlab run` only).
    Vm,
}

/// What the agent collects over each measured window besides counters (always collected).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CollectSpec {
    /// Kernel lock contention by lock and call path (needs root, or CAP_BPF and CAP_PERFMON, on the node).
    #[serde(default)]
    pub lock_contention: bool,
    /// Where lock contention is seen: `auto` (the lock tracepoints on Linux 5.19 and later,
    /// else kprobes on the mutex, rwsem and spinlock slow paths), `tracepoints` or `slowPaths`.
    /// Each run names the source it used.
    #[serde(default, skip_serializing_if = "LockSourceSpec::is_auto")]
    pub lock_source: LockSourceSpec,
    /// Sampled call stacks on every CPU (needs root and perf on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_profile: Option<CpuProfileSpec>,
    /// Kernel symbols whose presence each node reports in its facts, besides the epoll ones
    /// (`ep_clear_and_put`, `epmutex`, `epnested_mutex`). A data symbol can only be shown absent
    /// on kernels that list data in `/proc/kallsyms` (`CONFIG_KALLSYMS_ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = loadlab_agent::facts::MAX_EXTRA_SYMBOLS),
        inner(regex(pattern = r"^[A-Za-z0-9_.$]{1,128}$"))
    )]
    pub kernel_symbols: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CpuProfileSpec {
    /// Samples per second per CPU; 499 avoids lockstep with 100 Hz and 1000 Hz timers.
    #[serde(default = "default_profile_hz")]
    #[schemars(range(min = 1, max = MAX_PROFILE_HZ))]
    pub frequency_hz: u32,
    /// `system`: every CPU, whatever runs there (idle included); `target`: only the nginx
    /// target's processes.
    #[serde(default)]
    pub scope: ProfileScope,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LockSourceSpec {
    #[default]
    Auto,
    Tracepoints,
    SlowPaths,
}

impl LockSourceSpec {
    fn is_auto(&self) -> bool {
        *self == Self::Auto
    }

    /// The name the agent's protocol gives it.
    pub fn wire_name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Tracepoints => "tracepoints",
            Self::SlowPaths => "slow-paths",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProfileScope {
    #[default]
    System,
    Target,
}

fn default_profile_hz() -> u32 {
    499
}

/// How many rounds an experiment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repetitions {
    Fixed(u32),
    /// Until decided, within `stopping.maxRepetitions`.
    Auto,
}

impl Default for Repetitions {
    fn default() -> Self {
        Self::Fixed(3)
    }
}

impl fmt::Display for Repetitions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

impl JsonSchema for Repetitions {
    fn schema_name() -> Cow<'static, str> {
        "Repetitions".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        auto_or_number_schema(
            "Rounds of runs: a number from 1 to 1000, or `auto` (until decided; see stopping)",
            REPETITIONS_VALID,
            "repetitions must be `auto` or a number from 1 to 1000",
        )
    }
}

impl Serialize for Repetitions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::Fixed(n) => serializer.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Repetitions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            auto_or_number(deserializer, "repetitions", MAX_REPETITIONS)?
                .map_or(Self::Auto, Self::Fixed),
        )
    }
}

/// When `repetitions: auto` stops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoppingSpec {
    /// The most rounds: the budget the stopping rule's error rate is spread over.
    #[serde(default = "default_max_repetitions")]
    #[schemars(range(min = 3, max = MAX_REPETITIONS))]
    pub max_repetitions: u32,
    /// The smallest change that matters, in percent: a change is reported once the interval
    /// excludes none and the estimate reaches it, no change once the interval lies inside ±it.
    #[serde(default = "default_practical_change")]
    #[schemars(range(min = 0.1, max = 50.0))]
    pub practical_change_percent: f64,
    /// What a cohort is judged on: `connectionsPerSecond` (the default) or `cpuPerConnection`
    /// (the node's CPU time per connection, for a server the load does not saturate, where
    /// conn/s only follows the load).
    #[serde(default)]
    pub metric: StoppingMetric,
}

/// What `repetitions: auto` judges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StoppingMetric {
    #[default]
    ConnectionsPerSecond,
    CpuPerConnection,
}

impl Default for StoppingSpec {
    fn default() -> Self {
        Self {
            max_repetitions: default_max_repetitions(),
            practical_change_percent: default_practical_change(),
            metric: StoppingMetric::default(),
        }
    }
}

fn default_max_repetitions() -> u32 {
    20
}

fn default_practical_change() -> f64 {
    5.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub nginx: NginxSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NginxSpec {
    #[serde(default)]
    pub workers: Workers,
    #[serde(default)]
    pub reuseport: bool,
    /// Listen backlog; the agent's default (4096) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
}

/// nginx `worker_processes`: a number, or `auto` for one per logical CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    #[default]
    Auto,
    Count(u32),
}

impl Workers {
    /// The wire form: 0 means auto.
    pub fn as_wire(self) -> u32 {
        match self {
            Workers::Auto => 0,
            Workers::Count(n) => n,
        }
    }
}

impl fmt::Display for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workers::Auto => f.write_str("auto"),
            Workers::Count(n) => write!(f, "{n}"),
        }
    }
}

impl JsonSchema for Workers {
    fn schema_name() -> Cow<'static, str> {
        "Workers".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        auto_or_number_schema(
            "nginx worker_processes: `auto` (one per logical CPU) or a number from 1 to 1024",
            WORKERS_VALID,
            "workers must be `auto` or a number from 1 to 1024",
        )
    }
}

impl Serialize for Workers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Workers::Auto => serializer.serialize_str("auto"),
            Workers::Count(n) => serializer.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(auto_or_number(deserializer, "workers", 1024)?.map_or(Workers::Auto, Workers::Count))
    }
}

/// `auto` or a number from 1 to `max`, as `workers` and `repetitions` take it: `None` for auto.
fn auto_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
    what: &str,
    max: u32,
) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Count(i64),
        Text(String),
    }
    let invalid = |shown: String| {
        serde::de::Error::custom(format!(
            "invalid {what} {shown}: expected `auto` or a number from 1 to {max}"
        ))
    };
    match Raw::deserialize(deserializer)? {
        Raw::Text(text) if text == "auto" => Ok(None),
        Raw::Text(text) => Err(invalid(format!("{text:?}"))),
        Raw::Count(n) if (1..=i64::from(max)).contains(&n) => Ok(Some(n as u32)),
        Raw::Count(n) => Err(invalid(n.to_string())),
    }
}

/// The CRD schema of an `auto`-or-number field, checked by a CEL `rule`.
fn auto_or_number_schema(description: &str, rule: &str, message: &str) -> Schema {
    json_schema!({
        "description": description,
        "x-kubernetes-int-or-string": true,
        // Bounds the string case, so the API server can bound the rule's cost.
        "maxLength": 4,
        "x-kubernetes-validations": [{ "rule": rule, "message": message }]
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": DURATION_IN_RANGE,
        "message": "spec.load.duration must be longer than zero and at most 1h",
        "fieldPath": ".duration"
    },
    {
        "rule": WARMUP_IN_RANGE,
        "message": "spec.load.warmup must be at most 1h",
        "fieldPath": ".warmup"
    },
    {
        "rule": GENERATORS_AT_MOST_CONNECTIONS,
        "message": "spec.load.generators must be at most the connections",
        "fieldPath": ".generators"
    },
    {
        "rule": RATE_IN_RANGE,
        "message": "spec.load.rate must be above 0 and at most 10,000,000 connections/s",
        "fieldPath": ".rate"
    }
]))]
pub struct LoadSpec {
    /// Concurrent connections, each a new TCP connection per request.
    #[schemars(range(min = 1, max = MAX_CONNECTIONS))]
    pub connections: u32,
    #[serde(default)]
    pub warmup: WrittenDuration,
    pub duration: WrittenDuration,
    /// Request path, `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PATH_BYTES), regex(pattern = r"^/\S*$"))]
    pub path: Option<String>,
    /// Open loop: connections started per second (split over the generators); closed loop
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// 1 is a connection storm; more sends that many keep-alive requests per connection.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = MAX_REQUESTS_PER_CONNECTION))]
    pub requests_per_connection: u32,
    /// Generators that share the load, started together.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = MAX_GENERATORS))]
    pub generators: u32,
    /// On a cluster: where the generators run.
    #[serde(default, skip_serializing_if = "GeneratorPlacement::is_default")]
    pub generator_placement: GeneratorPlacement,
    /// How the generator ends each connection once its response is read.
    #[serde(default, skip_serializing_if = "CloseSpec::is_default")]
    pub close: CloseSpec,
    /// How the generator finishes each TCP handshake.
    #[serde(default, skip_serializing_if = "HandshakeAckSpec::is_default")]
    pub handshake_ack: HandshakeAckSpec,
}

/// `separate`: the generator acknowledges the server's SYN-ACK at once, as real clients and
/// wrk do. `withRequest`: the acknowledgement rides on the request, fewer segments per
/// connection for both ends; nginx accepts and closes each connection as before, but finds the
/// request already queued, so compare kernels under one mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HandshakeAckSpec {
    #[default]
    Separate,
    WithRequest,
}

impl HandshakeAckSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `fin`: an orderly close; nginx, which closes first, keeps the TIME_WAIT, as with real
/// clients and wrk. `reset`: the generator answers with a RST (`SO_LINGER` 0), so nginx frees
/// the socket at once; its own close, and the epoll release in it, is unchanged, but the TCP
/// teardown is cheaper than real clients cause, so compare kernels under one mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CloseSpec {
    #[default]
    Fin,
    Reset,
}

impl CloseSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Where generator pods go on a cluster. By default on Ready nodes that no cohort tests, so
/// the generator never competes with the target for CPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GeneratorPlacement {
    /// Only nodes with these labels carry generators.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Let generators share nodes under test when no other node is free (noisier: the
    /// generator then takes CPU from nginx).
    #[serde(default)]
    pub allow_nodes_under_test: bool,
    /// Let generators run on control-plane nodes (kept off them otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_control_plane: bool,
}

impl GeneratorPlacement {
    fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// When nginx and a generator beside it get cores of their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PinCpus {
    /// From 4 cores: with 2, each side would get one core, and on the machine this was
    /// measured on that cost a third of the conn/s without steadying them (see README).
    #[default]
    Auto,
    /// From 2 cores.
    Always,
    Never,
}

impl PinCpus {
    fn is_auto(&self) -> bool {
        *self == PinCpus::Auto
    }

    /// The fewest cores the agent pins from; 0 never.
    pub fn from_cores(self) -> u32 {
        match self {
            PinCpus::Auto => 4,
            PinCpus::Always => 2,
            PinCpus::Never => 0,
        }
    }
}

fn one() -> u32 {
    1
}

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

pub const MAX_VM_CPUS: u32 = 64;
/// Below this the guest cannot hold its root file system (loadlab, nginx, perf and
/// their libraries) in memory.
pub const MIN_VM_MEMORY_MIB: u32 = 1024;

fn default_vm_cpus() -> u32 {
    2
}

fn default_vm_memory_mib() -> u32 {
    2048
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetOverride {
    pub nginx: NginxOverride,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NginxOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Workers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuseport: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u32>,
}

/// A length of time written as `10s`, `500ms`, `2m` or `1h` (decimals allowed: `1.5s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WrittenDuration(pub Duration);

impl WrittenDuration {
    pub fn parse(text: &str) -> Result<WrittenDuration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number.parse().map_err(|_| {
            format!("invalid duration {text:?}: write it like 10s, 500ms, 2m or 1h")
        })?;
        if value < 0.0 {
            return Err(format!("invalid duration {text:?}: must not be negative"));
        }
        let seconds = match unit.trim() {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: add a unit (ms, s, m or h)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m or h)"
                ));
            }
        };
        Duration::try_from_secs_f64(seconds)
            .map(WrittenDuration)
            .map_err(|_| format!("invalid duration {text:?}: out of range"))
    }
}

impl fmt::Display for WrittenDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl JsonSchema for WrittenDuration {
    fn schema_name() -> Cow<'static, str> {
        "WrittenDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A length of time such as 10s, 500ms, 2m or 1h",
            "type": "string",
            "maxLength": 20,
            "pattern": "^[0-9]{1,7}(\\.[0-9]{1,9})?(ms|s|m|h)$"
        })
    }
}

impl Serialize for WrittenDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WrittenDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        WrittenDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An experiment file that cannot be used, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// Dotted path of the field, such as `spec.cohorts[1].name`.
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub(crate) fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses and validates an experiment file.
pub fn parse_experiment(yaml: &str) -> Result<ExperimentFile, SpecError> {
    let file: ExperimentFile = parse_yaml(yaml)?;
    file.validate()?;
    Ok(file)
}

/// Reads a YAML file into `T`, an error naming the field that is wrong.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> Result<T, SpecError> {
    let deserializer = serde_yaml::Deserializer::from_str(yaml);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            "file".to_string()
        } else {
            path
        };
        let message = error.into_inner().to_string();
        // serde_yaml may start its message with a path of its own; the field already says it.
        let message = match message.split_once(": ") {
            Some((prefix, rest)) if !prefix.contains(' ') && field.starts_with(prefix) => {
                rest.to_string()
            }
            _ => message,
        };
        SpecError::at(field, message)
    })
}

/// A file's `apiVersion` and `kind` are loadlab's and the expected one.
pub(crate) fn check_header(api_version: &str, kind: &str, expected: &str) -> Result<(), SpecError> {
    if api_version != API_VERSION {
        return Err(SpecError::at(
            "apiVersion",
            format!("expected {API_VERSION}, got {api_version:?}"),
        ));
    }
    if kind != expected {
        return Err(SpecError::at(
            "kind",
            format!("expected {expected}, got {kind:?}"),
        ));
    }
    Ok(())
}

impl ExperimentFile {
    pub fn validate(&self) -> Result<(), SpecError> {
        check_header(&self.api_version, &self.kind, KIND)?;
        check_name("metadata.name", &self.metadata.name)?;
        self.spec.validate()
    }

    /// For `loadlab run`: cohorts on this machine or on agent hosts, not cluster nodes.
    pub fn require_local(&self) -> Result<(), SpecError> {
        match self.spec.kind() {
            CohortKind::Cluster => Err(SpecError::at(
                "spec.cohorts[0]",
                "selects cluster nodes; `loadlab run` runs cohorts on this machine (`local: true`) or on agent hosts (`nodes`): apply this experiment to a cluster with `kubectl apply -f`",
            )),
            CohortKind::Local | CohortKind::Hosts | CohortKind::Vm => Ok(()),
        }
    }

    /// The baseline cohort's name.
    pub fn baseline(&self) -> &str {
        self.spec
            .baseline
            .as_deref()
            .or_else(|| self.spec.cohorts.first().map(|c| c.name.as_str()))
            .unwrap_or_default()
    }
}

impl ExperimentSpec {
    /// The most rounds the experiment may run, and the stopping rule when it stops early.
    pub fn rounds(&self) -> (u32, Option<StoppingSpec>) {
        match self.repetitions {
            Repetitions::Fixed(n) => (n, None),
            Repetitions::Auto => {
                let stopping = self.stopping.unwrap_or_default();
                (stopping.max_repetitions, Some(stopping))
            }
        }
    }

    /// Where the cohorts run (all cohorts of a valid spec are of one kind).
    pub fn kind(&self) -> CohortKind {
        self.cohorts
            .first()
            .map_or(CohortKind::Local, CohortSpec::kind)
    }

    /// For a cluster: every cohort must select nodes.
    pub fn require_cluster(&self) -> Result<(), SpecError> {
        match self.kind() {
            CohortKind::Cluster => Ok(()),
            CohortKind::Local => Err(SpecError::at(
                "spec.cohorts[0].local",
                "a cluster runs cohorts on its nodes: select them with `kernel`, `nodeSelector` or `nodeNames`",
            )),
            CohortKind::Hosts => Err(SpecError::at(
                "spec.cohorts[0].nodes",
                "agent hosts are for `loadlab run`; on a cluster select nodes with `kernel`, `nodeSelector` or `nodeNames`",
            )),
            CohortKind::Vm => Err(SpecError::at(
                "spec.cohorts[0].vm",
                "virtual machines are for `loadlab run` on one machine; on a cluster select nodes with `kernel`, `nodeSelector` or `nodeNames`",
            )),
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        let load = &self.load;
        if load.connections == 0 || load.connections > MAX_CONNECTIONS {
            return Err(SpecError::at(
                "spec.load.connections",
                format!(
                    "must be between 1 and {MAX_CONNECTIONS}, got {}",
                    load.connections
                ),
            ));
        }
        if load.duration.0.is_zero() {
            return Err(SpecError::at(
                "spec.load.duration",
                "must be longer than zero",
            ));
        }
        for (field, span) in [
            ("spec.load.duration", load.duration),
            ("spec.load.warmup", load.warmup),
        ] {
            if span.0 > MAX_WINDOW {
                return Err(SpecError::at(
                    field,
                    format!("must be at most {}", WrittenDuration(MAX_WINDOW)),
                ));
            }
        }
        if let Some(path) = &load.path
            && (!path.starts_with('/')
                || path.contains(char::is_whitespace)
                || path.len() > MAX_PATH_BYTES)
        {
            return Err(SpecError::at(
                "spec.load.path",
                format!(
                    "{path:?} must start with / and contain no spaces, at most {MAX_PATH_BYTES} bytes"
                ),
            ));
        }
        if let Some(rate) = load.rate
            && !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE)
        {
            return Err(SpecError::at(
                "spec.load.rate",
                format!("must be between 0 and 10,000,000 connections/s, got {rate}"),
            ));
        }
        if load.requests_per_connection == 0
            || load.requests_per_connection > MAX_REQUESTS_PER_CONNECTION
        {
            return Err(SpecError::at(
                "spec.load.requestsPerConnection",
                "must be between 1 and 1,000,000",
            ));
        }
        if load.generators == 0
            || load.generators > MAX_GENERATORS
            || load.generators > load.connections
        {
            return Err(SpecError::at(
                "spec.load.generators",
                format!(
                    "must be between 1 and {MAX_GENERATORS} and at most the connections, got {}",
                    load.generators
                ),
            ));
        }
        if let Some(profile) = self.collect.cpu_profile
            && !(1..=MAX_PROFILE_HZ).contains(&profile.frequency_hz)
        {
            return Err(SpecError::at(
                "spec.collect.cpuProfile.frequencyHz",
                format!(
                    "must be between 1 and {MAX_PROFILE_HZ}, got {}",
                    profile.frequency_hz
                ),
            ));
        }
        loadlab_agent::facts::check_symbol_names(&self.collect.kernel_symbols).map_err(|bad| {
            let field = match bad.index {
                Some(i) => format!("spec.collect.kernelSymbols[{i}]"),
                None => "spec.collect.kernelSymbols".to_string(),
            };
            SpecError::at(field, bad.message)
        })?;
        match (self.repetitions, self.stopping) {
            (Repetitions::Fixed(n), _) if n == 0 || n > MAX_REPETITIONS => {
                return Err(SpecError::at(
                    "spec.repetitions",
                    format!("must be between 1 and {MAX_REPETITIONS} or auto, got {n}"),
                ));
            }
            (Repetitions::Fixed(_), Some(_)) => {
                return Err(SpecError::at(
                    "spec.stopping",
                    "applies to repetitions: auto only (a fixed number of rounds never stops early)",
                ));
            }
            (Repetitions::Auto, Some(stopping))
                if !(3..=MAX_REPETITIONS).contains(&stopping.max_repetitions) =>
            {
                return Err(SpecError::at(
                    "spec.stopping.maxRepetitions",
                    format!(
                        "must be between 3 and {MAX_REPETITIONS}, got {}",
                        stopping.max_repetitions
                    ),
                ));
            }
            (Repetitions::Auto, Some(stopping))
                if !(0.1..=50.0).contains(&stopping.practical_change_percent) =>
            {
                return Err(SpecError::at(
                    "spec.stopping.practicalChangePercent",
                    format!(
                        "must be between 0.1 and 50, got {}",
                        stopping.practical_change_percent
                    ),
                ));
            }
            _ => {}
        }
        if self.retries > MAX_RETRIES {
            return Err(SpecError::at(
                "spec.retries",
                format!("must be at most {MAX_RETRIES}, got {}", self.retries),
            ));
        }
        if self.cohorts.is_empty() {
            return Err(SpecError::at(
                "spec.cohorts",
                "at least one cohort is needed",
            ));
        }
        if self.cohorts.len() > MAX_COHORTS {
            return Err(SpecError::at(
                "spec.cohorts",
                format!("at most {MAX_COHORTS} cohorts, got {}", self.cohorts.len()),
            ));
        }
        for (i, cohort) in self.cohorts.iter().enumerate() {
            let field = format!("spec.cohorts[{i}]");
            check_name(&format!("{field}.name"), &cohort.name)?;
            if self.cohorts[..i].iter().any(|c| c.name == cohort.name) {
                return Err(SpecError::at(
                    format!("{field}.name"),
                    format!("{:?} is used by another cohort", cohort.name),
                ));
            }
            cohort.validate_placement(&field)?;
            if i > 0 && cohort.kind() != self.cohorts[0].kind() {
                return Err(SpecError::at(
                    field,
                    "local, cluster, host and vm cohorts cannot be mixed in one experiment",
                ));
            }
        }
        match (self.kind(), self.generators.is_empty()) {
            (CohortKind::Hosts, true) => {
                return Err(SpecError::at(
                    "spec.generators",
                    "cohorts of agent hosts need generators: `generators: [\"host:port\"]` (`loadlab loadgen serve`)",
                ));
            }
            (CohortKind::Local | CohortKind::Cluster | CohortKind::Vm, false) => {
                return Err(SpecError::at(
                    "spec.generators",
                    "generator addresses go with cohorts of agent hosts (`nodes`); here use load.generators (a count)",
                ));
            }
            _ => {}
        }
        if self.generators.len() > MAX_GENERATORS as usize {
            return Err(SpecError::at(
                "spec.generators",
                format!(
                    "at most {MAX_GENERATORS} generators, got {}",
                    self.generators.len()
                ),
            ));
        }
        for (i, address) in self.generators.iter().enumerate() {
            check_address(&format!("spec.generators[{i}]"), address)?;
        }
        if !self.generators.is_empty()
            && load.generators != 1
            && load.generators as usize != self.generators.len()
        {
            return Err(SpecError::at(
                "spec.load.generators",
                format!(
                    "is {} but {} generator addresses are given (leave it out)",
                    load.generators,
                    self.generators.len()
                ),
            ));
        }
        if let Some(baseline) = &self.baseline
            && !self.cohorts.iter().any(|c| &c.name == baseline)
        {
            let names: Vec<&str> = self.cohorts.iter().map(|c| c.name.as_str()).collect();
            return Err(SpecError::at(
                "spec.baseline",
                format!(
                    "{baseline:?} is not a cohort (cohorts: {})",
                    names.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The nginx settings of a cohort: the experiment's, with the cohort's overrides applied.
    pub fn nginx_for(&self, cohort: &CohortSpec) -> NginxSpec {
        let mut nginx = self.target.nginx;
        if let Some(over) = cohort.target.as_ref().map(|t| t.nginx) {
            nginx.workers = over.workers.unwrap_or(nginx.workers);
            nginx.reuseport = over.reuseport.unwrap_or(nginx.reuseport);
            nginx.backlog = over.backlog.or(nginx.backlog);
        }
        nginx
    }
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

    fn validate_placement(&self, field: &str) -> Result<(), SpecError> {
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

/// `host:port`, with an IPv6 host in brackets.
fn check_address(field: &str, address: &str) -> Result<(), SpecError> {
    // 261: a 253-byte host name, or a bracketed IPv6 address, and a port.
    let valid = address.len() <= 261
        && address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && port.parse::<u16>().is_ok_and(|p| p > 0)
                && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')))
        });
    if valid {
        Ok(())
    } else {
        Err(SpecError::at(
            field,
            format!("{address:?} is not host:port (e.g. 10.0.0.5:7700 or [fd00::5]:7700)"),
        ))
    }
}

/// Names become database keys, URL parts and Kubernetes names: DNS-1123 labels.
fn check_name(field: &str, name: &str) -> Result<(), SpecError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(SpecError::at(
            field,
            format!(
                "{name:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: loadlab.dev/v1alpha1
kind: Experiment
metadata: { name: local }
spec:
  target: { nginx: { workers: auto, reuseport: false } }
  load: { connections: 64, warmup: 2s, duration: 10s }
  cohorts:
    - { name: one-worker, local: true, target: { nginx: { workers: 1 } } }
    - { name: two-workers-rp, local: true, target: { nginx: { workers: 2, reuseport: true } } }
  repetitions: 3
  baseline: one-worker
"#;

    fn error_of(yaml: &str) -> SpecError {
        parse_experiment(yaml).unwrap_err()
    }

    #[test]
    fn a_good_file_parses_with_overrides_applied() {
        let file = parse_experiment(GOOD).unwrap();
        assert_eq!(file.metadata.name, "local");
        assert_eq!(
            file.spec.load.duration,
            WrittenDuration(Duration::from_secs(10))
        );
        assert_eq!(file.baseline(), "one-worker");
        let rp = file.spec.nginx_for(&file.spec.cohorts[1]);
        assert_eq!(rp.workers, Workers::Count(2));
        assert!(rp.reuseport);
        let one = file.spec.nginx_for(&file.spec.cohorts[0]);
        assert_eq!((one.workers, one.reuseport), (Workers::Count(1), false));
    }

    #[test]
    fn connections_are_made_as_real_clients_make_them_unless_asked_otherwise() {
        let with_load =
            |extra: &str| GOOD.replace("duration: 10s }", &format!("duration: 10s{extra} }}"));
        let plain = parse_experiment(GOOD).unwrap().spec.load;
        assert_eq!(
            (plain.close, plain.handshake_ack),
            (CloseSpec::Fin, HandshakeAckSpec::Separate)
        );
        let lean = parse_experiment(&with_load(", close: reset, handshakeAck: withRequest"))
            .unwrap()
            .spec
            .load;
        assert_eq!(
            (lean.close, lean.handshake_ack),
            (CloseSpec::Reset, HandshakeAckSpec::WithRequest)
        );
        // A wrong value is named beside a value that would do.
        for (wrong, named) in [
            (", close: linger", ["linger", "reset"]),
            (", handshakeAck: never", ["never", "withRequest"]),
        ] {
            let message = error_of(&with_load(wrong)).to_string();
            assert!(named.iter().all(|n| message.contains(n)), "{message}");
        }
    }

    #[test]
    fn the_lock_source_is_auto_unless_named_and_named_ones_are_checked() {
        let with_collect = |collect: &str| {
            GOOD.replace(
                "  repetitions: 3\n",
                &format!("  repetitions: 3\n  collect: {collect}\n"),
            )
        };
        let auto = parse_experiment(&with_collect("{ lockContention: true }")).unwrap();
        assert_eq!(auto.spec.collect.lock_source, LockSourceSpec::Auto);
        let slow = parse_experiment(&with_collect(
            "{ lockContention: true, lockSource: slowPaths }",
        ))
        .unwrap();
        assert_eq!(slow.spec.collect.lock_source, LockSourceSpec::SlowPaths);
        assert_eq!(slow.spec.collect.lock_source.wire_name(), "slow-paths");
        let error = error_of(&with_collect(
            "{ lockContention: true, lockSource: bpftrace }",
        ));
        assert!(error.to_string().contains("lockSource"), "{error}");
    }

    #[test]
    fn auto_repetitions_take_the_stopping_defaults() {
        let auto = parse_experiment(&GOOD.replace("repetitions: 3", "repetitions: auto")).unwrap();
        assert_eq!(auto.spec.repetitions, Repetitions::Auto);
        let (budget, stopping) = auto.spec.rounds();
        assert_eq!(budget, 20);
        assert_eq!(stopping.unwrap().practical_change_percent, 5.0);
        let fixed = parse_experiment(GOOD).unwrap();
        assert_eq!(fixed.spec.rounds(), (3, None));
        // Written back as it was read.
        let again = parse_experiment(&serde_yaml::to_string(&auto).unwrap()).unwrap();
        assert_eq!(again, auto);
    }

    #[test]
    fn the_parsed_file_serializes_back_to_the_same_experiment() {
        let file = parse_experiment(GOOD).unwrap();
        let again = parse_experiment(&serde_yaml::to_string(&file).unwrap()).unwrap();
        assert_eq!(again, file);
    }

    #[test]
    fn vm_cohorts_take_defaults_and_refuse_impossible_machines() {
        let vm = |cohort: &str| {
            format!(
                "apiVersion: loadlab.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: v }}\nspec:\n  target: {{ nginx: {{}} }}\n  load: {{ connections: 8, duration: 1s }}\n  cohorts:\n    - {{ name: a, vm: {cohort} }}\n"
            )
        };
        let file =
            parse_experiment(&vm("{ kernel: linux-image-6.1.0-47-cloud-amd64-unsigned }")).unwrap();
        assert_eq!(file.spec.kind(), CohortKind::Vm);
        file.require_local().unwrap();
        let error = file.spec.require_cluster().unwrap_err();
        assert_eq!(error.field, "spec.cohorts[0].vm");
        let machine = file.spec.cohorts[0].vm.as_ref().unwrap();
        assert_eq!(
            (machine.cpus, machine.memory_mib, machine.accel),
            (2, 2048, Accel::Auto)
        );
        let tcg = parse_experiment(&vm(
            "{ kernel: /boot/vmlinuz, cpus: 1, memoryMiB: 1024, accel: tcg }",
        ))
        .unwrap();
        assert_eq!(tcg.spec.cohorts[0].vm.as_ref().unwrap().accel, Accel::Tcg);
        for (bad, field) in [
            ("{ kernel: '' }", "spec.cohorts[0].vm.kernel"),
            ("{ kernel: k, cpus: 0 }", "spec.cohorts[0].vm.cpus"),
            (
                "{ kernel: k, memoryMiB: 256 }",
                "spec.cohorts[0].vm.memoryMiB",
            ),
            (
                "{ kernel: k, network: user, generator: host }",
                "spec.cohorts[0].vm.generator",
            ),
        ] {
            assert_eq!(error_of(&vm(bad)).field, field, "{bad}");
        }
        let mixed = vm("{ kernel: k } }\n    - { name: b, local: true");
        let error = error_of(&mixed);
        assert!(error.message.contains("cannot be mixed"), "{error}");
        let both = vm("{ kernel: k }, local: true");
        assert!(error_of(&both).message.contains("choose one place"));
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let error = error_of(&GOOD.replace("duration: 10s", "duration: 10s, burst: 5"));
        assert_eq!(error.field, "spec.load.burst");
        assert!(error.message.contains("unknown field `burst`"), "{error}");
        let error = error_of(&GOOD.replace(
            "{ name: one-worker, local: true",
            "{ name: one-worker, container: {}, local: true",
        ));
        assert_eq!(error.field, "spec.cohorts[0].container");
        assert!(
            error.message.contains("unknown field `container`"),
            "{error}"
        );
    }

    #[test]
    fn impossible_values_are_rejected() {
        for (from, to, field, says) in [
            (
                "duration: 10s",
                "duration: -5s",
                "spec.load.duration",
                "negative",
            ),
            (
                "duration: 10s",
                "duration: 0s",
                "spec.load.duration",
                "longer than zero",
            ),
            (
                "duration: 10s",
                "duration: 10",
                "spec.load.duration",
                "unit",
            ),
            (
                "duration: 10s",
                "duration: 2d",
                "spec.load.duration",
                "unknown unit",
            ),
            ("warmup: 2s", "warmup: 2h", "spec.load.warmup", "at most"),
            (
                "connections: 64",
                "connections: 0",
                "spec.load.connections",
                "between",
            ),
            (
                "connections: 64",
                "connections: -1",
                "spec.load.connections",
                "expected u32",
            ),
            (
                "repetitions: 3",
                "repetitions: 0",
                "spec.repetitions",
                "a number from 1 to 1000",
            ),
            (
                "repetitions: 3",
                "repetitions: often",
                "spec.repetitions",
                "expected `auto`",
            ),
            (
                "repetitions: 3",
                "repetitions: 3\n  stopping: { maxRepetitions: 10 }",
                "spec.stopping",
                "repetitions: auto only",
            ),
            (
                "repetitions: 3",
                "repetitions: auto\n  stopping: { maxRepetitions: 2 }",
                "spec.stopping.maxRepetitions",
                "between 3 and 1000",
            ),
            (
                "repetitions: 3",
                "repetitions: auto\n  stopping: { practicalChangePercent: 0 }",
                "spec.stopping.practicalChangePercent",
                "between 0.1 and 50",
            ),
            (
                "baseline: one-worker",
                "baseline: nope",
                "spec.baseline",
                "not a cohort",
            ),
            (
                "workers: auto",
                "workers: many",
                "spec.target.nginx.workers",
                "expected `auto`",
            ),
            (
                "workers: 1 }",
                "workers: 0 }",
                "spec.cohorts[0].target.nginx.workers",
                "1 to 1024",
            ),
            (
                "name: local",
                "name: Local_Exp",
                "metadata.name",
                "lowercase",
            ),
            (
                "name: two-workers-rp",
                "name: one-worker",
                "spec.cohorts[1].name",
                "another cohort",
            ),
            (
                "{ name: one-worker, local: true,",
                "{ name: one-worker,",
                "spec.cohorts[0]",
                "local: true",
            ),
            (
                "kind: Experiment",
                "kind: Job",
                "kind",
                "expected Experiment",
            ),
            (
                "repetitions: 3",
                "repetitions: 3\n  collect: { kernelSymbols: [tcp_v4_connect, \"x; rm\"] }",
                "spec.collect.kernelSymbols[1]",
                "not a kernel symbol name",
            ),
        ] {
            assert!(GOOD.contains(from), "{from}");
            let error = error_of(&GOOD.replace(from, to));
            assert_eq!(error.field, field, "{to}: {error}");
            assert!(error.message.contains(says), "{to}: {error}");
        }
    }

    #[test]
    fn kernel_symbols_to_probe_are_read() {
        let file = parse_experiment(&GOOD.replace(
            "repetitions: 3",
            "repetitions: 3\n  collect: { kernelSymbols: [tcp_v4_connect, inet_csk_accept] }",
        ))
        .unwrap();
        assert_eq!(
            file.spec.collect.kernel_symbols,
            ["tcp_v4_connect", "inet_csk_accept"]
        );
    }

    #[test]
    fn broken_yaml_and_missing_fields_are_clear() {
        let error = error_of("apiVersion: [");
        assert!(!error.message.is_empty());
        let error = error_of(&GOOD.replace(
            "  load: { connections: 64, warmup: 2s, duration: 10s }\n",
            "",
        ));
        assert!(error.message.contains("missing field `load`"), "{error}");
    }

    #[test]
    fn cluster_cohorts_select_nodes_and_are_refused_by_a_local_run() {
        let cluster = GOOD
            .replace(
                "local: true, target: { nginx: { workers: 1 } }",
                "kernel: \"6.1.0-47-*\"",
            )
            .replace(
                "local: true, target: { nginx: { workers: 2, reuseport: true } }",
                "nodeSelector: { hw: big }, nodeNames: [n1]",
            );
        let file = parse_experiment(&cluster).unwrap();
        assert_eq!(file.spec.kind(), CohortKind::Cluster);
        assert_eq!(file.spec.cohorts[0].kernel.as_deref(), Some("6.1.0-47-*"));
        assert_eq!(file.spec.cohorts[1].node_names, vec!["n1".to_string()]);
        file.spec.require_cluster().unwrap();
        let error = file.require_local().unwrap_err();
        assert_eq!(error.field, "spec.cohorts[0]");
        assert!(error.message.contains("kubectl apply"), "{error}");

        let local = parse_experiment(GOOD).unwrap();
        let error = local.spec.require_cluster().unwrap_err();
        assert_eq!(error.field, "spec.cohorts[0].local");

        let mixed = GOOD.replace(
            "local: true, target: { nginx: { workers: 2, reuseport: true } }",
            "kernel: \"6.*\"",
        );
        let error = error_of(&mixed);
        assert_eq!(error.field, "spec.cohorts[1]");
        assert!(error.message.contains("mixed"), "{error}");

        let both = GOOD.replace(
            "local: true, target: { nginx: { workers: 1 } }",
            "local: true, kernel: x",
        );
        assert!(
            error_of(&both).message.contains("choose one place"),
            "{}",
            error_of(&both)
        );
        let spaced = cluster.replace("\"6.1.0-47-*\"", "\"6.1 47\"");
        assert_eq!(error_of(&spaced).field, "spec.cohorts[0].kernel");
    }

    #[test]
    fn host_cohorts_name_their_agents_and_need_generators() {
        let hosts = GOOD
            .replace(
                "local: true, target: { nginx: { workers: 1 } }",
                "nodes: [\"10.77.0.2:7700\", \"[fd00::2]:7700\"]",
            )
            .replace(
                "local: true, target: { nginx: { workers: 2, reuseport: true } }",
                "nodes: [\"host-b:7700\"]",
            );
        let with_generators = format!("{hosts}  generators: [\"10.77.0.9:7701\"]\n");
        let file = parse_experiment(&with_generators).unwrap();
        assert_eq!(file.spec.kind(), CohortKind::Hosts);
        file.require_local().unwrap();
        assert!(file.spec.require_cluster().is_err());
        assert_eq!(file.spec.cohorts[0].nodes.len(), 2);

        assert_eq!(error_of(&hosts).field, "spec.generators");
        let bad = with_generators.replace("host-b:7700", "host-b");
        assert_eq!(error_of(&bad).field, "spec.cohorts[1].nodes[0]");
        let bad = with_generators.replace("10.77.0.9:7701", "10.77.0.9:0");
        assert_eq!(error_of(&bad).field, "spec.generators[0]");
        let stray = format!("{GOOD}  generators: [\"10.77.0.9:7701\"]\n");
        assert!(
            error_of(&stray).message.contains("agent hosts"),
            "{}",
            error_of(&stray)
        );
    }

    #[test]
    fn spans_read_and_print() {
        assert_eq!(
            WrittenDuration::parse("500ms").unwrap(),
            WrittenDuration(Duration::from_millis(500))
        );
        assert_eq!(
            WrittenDuration::parse("1.5s").unwrap(),
            WrittenDuration(Duration::from_millis(1500))
        );
        assert_eq!(
            WrittenDuration::parse("2m").unwrap(),
            WrittenDuration(Duration::from_secs(120))
        );
        assert_eq!(
            WrittenDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(WrittenDuration(Duration::from_secs(10)).to_string(), "10s");
        assert!(WrittenDuration::parse("s").is_err());
    }

    /// The spec's schema as the API server gets it.
    fn spec_schema() -> serde_json::Value {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(Experiment::crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    }

    #[test]
    fn the_crd_schema_carries_the_limits_the_controller_checks() {
        let spec = spec_schema();
        let load = &spec["properties"]["load"];
        let connections = &load["properties"]["connections"];
        assert_eq!(
            (
                connections["minimum"].as_f64(),
                connections["maximum"].as_f64()
            ),
            (Some(1.0), Some(f64::from(MAX_CONNECTIONS)))
        );
        let stopping = &spec["properties"]["stopping"]["properties"];
        assert_eq!(
            stopping["maxRepetitions"]["maximum"].as_f64(),
            Some(f64::from(MAX_REPETITIONS))
        );
        assert_eq!(
            spec["properties"]["cohorts"]["maxItems"].as_u64(),
            Some(MAX_COHORTS as u64)
        );
        let rules = |schema: &serde_json::Value| -> Vec<String> {
            schema["x-kubernetes-validations"]
                .as_array()
                .map(|rules| {
                    rules
                        .iter()
                        .map(|r| r["rule"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        for rule in [IMMUTABLE_SPEC, BASELINE_IS_A_COHORT, COHORT_NAMES_UNIQUE] {
            assert!(rules(&spec).contains(&rule.to_string()), "{rule}");
        }
        for rule in [
            DURATION_IN_RANGE,
            WARMUP_IN_RANGE,
            GENERATORS_AT_MOST_CONNECTIONS,
            RATE_IN_RANGE,
        ] {
            assert!(rules(load).contains(&rule.to_string()), "{rule}");
        }
        let workers = &spec["properties"]["target"]["properties"]["nginx"]["properties"]["workers"];
        assert!(
            rules(workers).contains(&WORKERS_VALID.to_string()),
            "{workers}"
        );
        let repetitions = &spec["properties"]["repetitions"];
        assert!(
            rules(repetitions).contains(&REPETITIONS_VALID.to_string()),
            "{repetitions}"
        );
    }

    #[test]
    fn lists_past_their_limits_are_refused_with_the_field() {
        let spec = |cohort: &str| {
            format!(
                "apiVersion: loadlab.dev/v1alpha1\nkind: Experiment\nmetadata: {{ name: x }}\nspec:\n  target: {{ nginx: {{ workers: 1 }} }}\n  load: {{ connections: 8, duration: 1s }}\n  cohorts:\n    - {cohort}\n"
            )
        };
        let names: Vec<String> = (0..=MAX_NODES_PER_COHORT)
            .map(|i| format!("n{i}"))
            .collect();
        let too_many_names = spec(&format!("{{ name: a, nodeNames: [{}] }}", names.join(", ")));
        let error = parse_experiment(&too_many_names).unwrap_err().to_string();
        assert!(
            error.contains("spec.cohorts[0].nodeNames: at most 1000"),
            "{error}"
        );
        let many_cohorts: String = (0..=MAX_COHORTS)
            .map(|i| format!("{{ name: c{i}, local: true }}"))
            .collect::<Vec<_>>()
            .join("\n    - ");
        let error = parse_experiment(&spec(&many_cohorts))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("spec.cohorts: at most 64 cohorts"),
            "{error}"
        );
    }
}
