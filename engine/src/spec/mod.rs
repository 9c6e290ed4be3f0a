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

mod builder;
mod cohort;
mod collect;
mod duration;
mod load;
mod repetitions;
mod target;

pub use builder::ExperimentBuilder;
pub use cohort::*;
pub use collect::*;
pub use duration::*;
pub use load::*;
pub use repetitions::*;
pub use target::*;

pub const API_VERSION: &str = "loadlab.dev/v1alpha1";
pub const KIND: &str = "Experiment";
/// Longest warm-up or measured window a run may ask for.
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(3600);
pub const MAX_CONNECTIONS: u32 = 100_000;
pub(crate) const MAX_REPETITIONS: u32 = 1000;
pub(crate) const MAX_RETRIES: u32 = 10;
pub(crate) const MAX_COHORTS: usize = 64;
pub(crate) const MAX_GENERATORS: u32 = 64;
pub(crate) const MAX_REQUESTS_PER_CONNECTION: u32 = 1_000_000;
pub(crate) const MAX_RATE: f64 = 10_000_000.0;
pub(crate) const MAX_PROFILE_HZ: u32 = 10_000;
pub(crate) const MAX_PATH_BYTES: usize = 2048;
/// Agent hosts or node names one cohort may list.
pub(crate) const MAX_NODES_PER_COHORT: usize = 1000;
pub(crate) const MAX_NODE_SELECTOR_LABELS: usize = 64;

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
    #[serde(default = "default_retries")]
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

/// One more attempt: a blip (a port taken, a slow start) is ridden out, a broken node is not
/// tried for long.
fn default_retries() -> u32 {
    1
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
        self.load.validate()?;
        self.collect.validate()?;
        validate_rounds(self.repetitions, self.stopping)?;
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
            && self.load.generators != 1
            && self.load.generators as usize != self.generators.len()
        {
            return Err(SpecError::at(
                "spec.load.generators",
                format!(
                    "is {} but {} generator addresses are given (leave it out)",
                    self.load.generators,
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
    pub(crate) fn nginx_for(&self, cohort: &CohortSpec) -> NginxSpec {
        let mut nginx = self.target.nginx;
        if let Some(over) = cohort.target.as_ref().map(|t| t.nginx) {
            nginx.workers = over.workers.unwrap_or(nginx.workers);
            nginx.reuseport = over.reuseport.unwrap_or(nginx.reuseport);
            nginx.backlog = over.backlog.or(nginx.backlog);
        }
        nginx
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
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), SpecError> {
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
mod tests;
