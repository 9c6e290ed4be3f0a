pub mod agent;
pub mod bench;
pub mod bench_agent;
pub mod bench_api;
pub mod bench_calibrate;
pub mod bench_cluster;
pub mod bench_loadgen;
pub mod bench_plan;
pub mod bench_support;
pub mod bisect;
pub mod capture;
pub mod compare;
pub mod controller;
pub mod crd;
pub mod db;
pub mod flamegraph;
pub mod loadgen;
pub mod run;
pub mod serve;
pub mod storm;

use tokio_util::sync::CancellationToken;

/// A token cancelled on Ctrl-C or SIGTERM, so every long task can stop in order.
pub(crate) fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let sigterm = async {
            match terminate.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = sigterm => {}
        }
        cancel.cancel();
    });
    token
}

/// What `agent serve` and `loadgen serve` share: the bound socket, the token check (a token is
/// required beyond loopback: an agent starts processes and a generator makes load, neither
/// answers strangers), TLS when certificate and key are given, and the stop signal.
pub(crate) struct GrpcListener {
    pub server: tonic::transport::Server,
    pub incoming: tokio_stream::wrappers::TcpListenerStream,
    pub check: loadlab_proto::auth::RequireToken,
    pub stop: CancellationToken,
}

impl GrpcListener {
    pub async fn bind(
        what: &str,
        listen: std::net::SocketAddr,
        token_file: Option<&std::path::Path>,
        tls: &crate::args::TlsServerArgs,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let token = match token_file {
            Some(path) => {
                Some(loadlab_proto::auth::read_token_file(path).map_err(anyhow::Error::msg)?)
            }
            None if listen.ip().is_loopback() => None,
            None => anyhow::bail!("listening on {listen} (beyond loopback) needs --token-file"),
        };
        let mut server = tonic::transport::Server::builder();
        if let (Some(cert), Some(key)) = (&tls.tls_cert, &tls.tls_key) {
            let read = |path: &std::path::Path| {
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
            };
            let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
            server = server
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .with_context(|| format!("TLS with {} and {}", cert.display(), key.display()))?;
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        eprintln!("loadlab {what} listening on {}", listener.local_addr()?);
        Ok(Self {
            server,
            incoming: tokio_stream::wrappers::TcpListenerStream::new(listener),
            check: loadlab_proto::auth::RequireToken::when_given(token.as_deref()),
            stop: interrupt_token(),
        })
    }
}

/// How long open connections may keep a server alive after a stop signal.
pub(crate) const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Bounds a server's graceful shutdown: once `stop` fires, open connections get [`DRAIN`] to
/// close, then the server is dropped (a client that never disconnects cannot keep it alive).
pub(crate) trait DrainWithin: std::future::Future + Sized {
    fn drain_within(
        self,
        stop: &CancellationToken,
    ) -> impl std::future::Future<Output = anyhow::Result<()>>;
}

impl<F, E> DrainWithin for F
where
    F: std::future::Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    async fn drain_within(self, stop: &CancellationToken) -> anyhow::Result<()> {
        let deadline = async {
            stop.cancelled().await;
            tokio::time::sleep(DRAIN).await;
        };
        tokio::select! {
            result = self => result.map_err(Into::into),
            () = deadline => {
                eprintln!("connections still open {} s after the stop signal: closing them", DRAIN.as_secs());
                Ok(())
            }
        }
    }
}
