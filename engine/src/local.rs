//! The local backend: an agent and a generator served in this process over gRPC on loopback
//! (port 0), so a single-machine run speaks the same protocol as a fleet.

use std::net::SocketAddr;

use loadlab_agent::AgentService;
use loadlab_loadgen::{LoadgenService, TargetPolicy};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Router;

use crate::Error;
use crate::orchestrator::{Connection, Endpoints, agent_client, loadgen_client, rpc_channel};

/// gRPC services served in this process on a loopback port the kernel chooses.
#[derive(Debug)]
pub(crate) struct LoopbackServer {
    pub(crate) address: SocketAddr,
    stop: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl LoopbackServer {
    pub(crate) async fn start(services: Router) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Internal(format!("cannot listen on loopback: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let stop = CancellationToken::new();
        let server = tokio::spawn(services.serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        ));
        Ok(Self {
            address,
            stop,
            server,
        })
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.server.await;
    }
}

/// In-process agent and generator. `shutdown` stops both servers and every nginx target.
#[derive(Debug)]
pub struct LocalNode {
    agent: AgentService,
    server: LoopbackServer,
}

impl LocalNode {
    pub async fn start() -> Result<Self, Error> {
        let agent = AgentService::new();
        let server = LoopbackServer::start(
            tonic::transport::Server::builder()
                .add_service(agent.clone().into_server())
                .add_service(LoadgenService::new(TargetPolicy::loopback_only()).into_server()),
        )
        .await?;
        Ok(Self { agent, server })
    }

    pub fn address(&self) -> SocketAddr {
        self.server.address
    }

    pub fn endpoints(&self) -> Result<Endpoints, Error> {
        let channel = rpc_channel(&self.server.address.to_string(), &Connection::default())?;
        Ok(Endpoints {
            agent: agent_client(channel.clone()),
            loadgen: loadgen_client(channel),
        })
    }

    pub async fn shutdown(self) {
        self.agent.stop_all_targets().await;
        self.server.stop().await;
    }
}
