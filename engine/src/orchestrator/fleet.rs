//! The fleet an experiment runs on: agents and generators, reached over gRPC with a token and,
//! beyond this process, TLS.

use std::time::Duration;

use loadlab_proto::auth::AttachToken;
use loadlab_proto::v1::{agent_client::AgentClient, loadgen_client::LoadgenClient};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Error;
use crate::spec::ExperimentSpec;

/// A gRPC channel whose every call carries the bearer token (when there is one).
pub type RpcChannel = InterceptedService<Channel, AttachToken>;

/// How agents and generators beyond this process are reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// Sent as `authorization: Bearer` on every call.
    pub token: Option<String>,
    /// TLS, trusting this PEM CA certificate; plain HTTP/2 without one.
    pub tls_ca: Option<Vec<u8>>,
    /// The name the peers' certificate must carry; the host of each address when unset.
    pub tls_server_name: Option<String>,
}

impl Connection {
    /// The pods of one experiment: its token, TLS with its authority and its pods' name.
    pub fn to_pods(token: String, trust: crate::pod_tls::PodTrust) -> Self {
        Self {
            token: Some(token),
            tls_ca: Some(trust.ca_pem.into_bytes()),
            tls_server_name: Some(trust.server_name),
        }
    }
}

/// Opens a lazily connected channel to `address` (`host:port`). Connection errors show up on
/// the first call.
pub fn rpc_channel(address: &str, connection: &Connection) -> Result<RpcChannel, Error> {
    let invalid = |e: &dyn std::fmt::Display| Error::Preflight(format!("{address}: {e}"));
    let scheme = if connection.tls_ca.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| invalid(&e))?
        .connect_timeout(Duration::from_secs(10))
        // A node that vanishes without a reset (powered off, a guest that panicked) would
        // otherwise hold a call until TCP gives up, a quarter of an hour later.
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if let Some(ca) = &connection.tls_ca {
        let host = connection.tls_server_name.as_deref().unwrap_or_else(|| {
            address
                .rsplit_once(':')
                .map_or(address, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
        });
        endpoint = endpoint
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                    .domain_name(host),
            )
            .map_err(|e| invalid(&e))?;
    }
    let attach = AttachToken::new(connection.token.as_deref())
        .map_err(|status| Error::Preflight(status.message().to_string()))?;
    Ok(InterceptedService::new(endpoint.connect_lazy(), attach))
}

/// The agent and generator of one node.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub agent: AgentClient<RpcChannel>,
    pub loadgen: LoadgenClient<RpcChannel>,
}

/// Everything an experiment drives: the agents of each cohort's nodes and the generators.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Per cohort, in the spec's order, the agents of its nodes.
    pub cohorts: Vec<Vec<AgentClient<RpcChannel>>>,
    /// Per cohort, the generators that load its nodes; every storm is split evenly over them,
    /// started together. Most fleets share one set; a virtual machine brings its own.
    pub generators: Vec<Vec<LoadgenClient<RpcChannel>>>,
    /// Per cohort, what a message calls each agent: its node's name on a cluster, its address
    /// for agent hosts. Where empty, "node N".
    pub agent_names: Vec<Vec<String>>,
    /// The generators run in the agent's own process (one machine): nginx and the generator
    /// are then kept on separate cores when the spec's `pinCpus` allows.
    pub generators_beside_agents: bool,
}

/// An agent's client, taking replies up to `MAX_MESSAGE_BYTES` (a capture with its profile).
pub fn agent_client(channel: RpcChannel) -> AgentClient<RpcChannel> {
    AgentClient::new(channel).max_decoding_message_size(loadlab_proto::MAX_MESSAGE_BYTES)
}

/// A generator's client, taking replies up to `MAX_MESSAGE_BYTES`.
pub fn loadgen_client(channel: RpcChannel) -> LoadgenClient<RpcChannel> {
    LoadgenClient::new(channel).max_decoding_message_size(loadlab_proto::MAX_MESSAGE_BYTES)
}

impl Fleet {
    /// Clients for agents and generators at these addresses (`host:port`): per cohort, the
    /// agents of its nodes; then the generators.
    pub fn connect(
        agents: impl IntoIterator<Item = impl IntoIterator<Item = impl AsRef<str>>>,
        generators: impl IntoIterator<Item = impl AsRef<str>>,
        connection: &Connection,
    ) -> Result<Self, Error> {
        let agent_names: Vec<Vec<String>> = agents
            .into_iter()
            .map(|cohort| cohort.into_iter().map(|a| a.as_ref().to_string()).collect())
            .collect();
        let cohorts = agent_names
            .iter()
            .map(|cohort| {
                cohort
                    .iter()
                    .map(|a| Ok(agent_client(rpc_channel(a, connection)?)))
                    .collect::<Result<Vec<_>, Error>>()
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let shared = generators
            .into_iter()
            .map(|g| Ok(loadgen_client(rpc_channel(g.as_ref(), connection)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            generators: vec![shared; cohorts.len()],
            cohorts,
            agent_names,
            generators_beside_agents: false,
        })
    }

    /// The same fleet, its agents called by these names in messages (per cohort, in order).
    pub fn with_agent_names(mut self, names: Vec<Vec<String>>) -> Self {
        self.agent_names = names;
        self
    }

    /// The agent hosts and generators an experiment names (`nodes`, `generators`).
    pub fn hosts(spec: &ExperimentSpec, connection: &Connection) -> Result<Self, Error> {
        Self::connect(
            spec.cohorts.iter().map(|c| &c.nodes),
            &spec.generators,
            connection,
        )
    }

    /// One node per cohort with its own generator (a virtual machine's), running `generators`
    /// storms side by side.
    #[cfg(feature = "in-process")]
    pub(crate) fn own_generators(nodes: Vec<Endpoints>, generators: u32) -> Self {
        let copies = generators.max(1) as usize;
        let (cohorts, generators) = nodes
            .into_iter()
            .map(|node| (vec![node.agent], vec![node.loadgen; copies]))
            .unzip();
        Self {
            cohorts,
            generators,
            agent_names: Vec::new(),
            generators_beside_agents: false,
        }
    }

    /// One node for every cohort, its generator running `generators` storms side by side.
    pub fn single(endpoints: Endpoints, cohorts: usize, generators: u32) -> Self {
        Self {
            cohorts: vec![vec![endpoints.agent]; cohorts],
            generators: vec![vec![endpoints.loadgen; generators.max(1) as usize]; cohorts],
            agent_names: Vec::new(),
            generators_beside_agents: true,
        }
    }
}
