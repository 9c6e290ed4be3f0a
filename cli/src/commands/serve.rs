use std::future::IntoFuture;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use loadlab_api::{ApiState, app};
use loadlab_results::{Database, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::args::ServeArgs;
use crate::commands::{DrainWithin, interrupt_token};

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let tokens = ApiTokens {
        ingest: args.api_token.clone(),
        read: args.read_token.clone(),
    };
    let api = Api::open(args.listen, &tokens).await?;
    eprintln!(
        "loadlab dashboard on http://{}/ · API on http://{}/api/v1/experiments · results in {}",
        api.address, api.address, api.database
    );
    if args.api_token.is_none() {
        eprintln!("ingest is off (set LOADLAB_API_TOKEN to accept runs over HTTP)");
    }
    if args.read_token.is_some() {
        eprintln!("reads need the read token (LOADLAB_READ_TOKEN)");
    }
    let stop = interrupt_token();
    api.serve(&stop).await?;
    Ok(ExitCode::SUCCESS)
}

/// The API's tokens: one turns ingest on, the other puts reads behind it.
#[derive(Clone, Default)]
pub(crate) struct ApiTokens {
    pub ingest: Option<String>,
    pub read: Option<String>,
}

/// The REST API, ready to serve: its database open and its address bound.
pub struct Api {
    pub store: Store,
    pub address: SocketAddr,
    /// Where the results are, for people.
    pub database: String,
    listener: TcpListener,
    state: ApiState,
}

impl Api {
    /// Opens the results database (`DATABASE_URL` or the private cluster) and binds `listen`.
    /// An ingest token turns on ingest over HTTP; a read token puts reads behind it.
    pub async fn open(listen: SocketAddr, tokens: &ApiTokens) -> anyhow::Result<Self> {
        let database = Database::from_env();
        let store = database
            .open()
            .await
            .with_context(|| format!("results database ({})", database.describe()))?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let mut state = ApiState::new(store.clone());
        match tokens.ingest.as_deref().map(str::trim) {
            Some("") => anyhow::bail!("LOADLAB_API_TOKEN is set but empty"),
            Some(token) => state = state.with_ingest_token(token),
            None => {}
        }
        match tokens.read.as_deref().map(str::trim) {
            Some("") => anyhow::bail!("LOADLAB_READ_TOKEN is set but empty"),
            Some(token) => state = state.with_read_token(token),
            None => {}
        }
        Ok(Self {
            store,
            address: listener.local_addr()?,
            database: database.describe(),
            listener,
            state,
        })
    }

    /// Like [`Api::open`], but a database that does not accept connections yet (starting,
    /// or not reachable yet) is tried again every two seconds for up to `patience`, saying so.
    pub(crate) async fn open_waiting(
        listen: SocketAddr,
        tokens: &ApiTokens,
        patience: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let started = std::time::Instant::now();
        let mut said = false;
        loop {
            match Self::open(listen, tokens).await {
                Ok(api) => return Ok(api),
                Err(error) if started.elapsed() < patience && database_unreachable(&error) => {
                    if !said {
                        eprintln!(
                            "waiting up to {} s for the results database: {error:#}",
                            patience.as_secs()
                        );
                        said = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Serves until `stop`, then gives open connections a bounded time to finish.
    pub async fn serve(self, stop: &CancellationToken) -> anyhow::Result<()> {
        axum::serve(self.listener, app(self.state))
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future()
            .drain_within(stop)
            .await
    }
}

fn database_unreachable(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<loadlab_results::Error>())
        .any(loadlab_results::Error::is_transient)
}
