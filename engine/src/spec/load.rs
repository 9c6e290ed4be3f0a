//! The load: connections, pacing, the measured window, how connections are made and ended, and
//! where generators run.

use super::*;

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
    #[serde(default = "one_request")]
    #[schemars(range(min = 1, max = MAX_REQUESTS_PER_CONNECTION))]
    pub requests_per_connection: u32,
    /// Generators that share the load, started together.
    #[serde(default = "one_generator")]
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

impl LoadSpec {
    pub(super) fn validate(&self) -> Result<(), SpecError> {
        let load = self;
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
        Ok(())
    }
}

/// A connection storm: one request per connection.
fn one_request() -> u32 {
    1
}

fn one_generator() -> u32 {
    1
}
