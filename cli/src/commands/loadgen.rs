use std::process::ExitCode;

use anyhow::Context;
use loadlab_loadgen::{LoadgenService, TargetPolicy};

use crate::args::{LoadgenArgs, LoadgenCommand};
use crate::commands::{DrainWithin, grpc_server, interrupt_token, server_token};
use loadlab_proto::auth::RequireToken;
use loadlab_proto::v1::loadgen_server::LoadgenServer;

pub async fn run(args: LoadgenArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LoadgenCommand::Serve {
            listen,
            allow,
            token_file,
            tls,
        } => {
            let token = server_token(listen, token_file.as_deref())?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let policy = TargetPolicy::loopback_only().and_allow(allow);
            let stop = interrupt_token();
            eprintln!("loadlab loadgen listening on {}", listener.local_addr()?);
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let service = LoadgenService::new(policy);
            let mut server = grpc_server(&tls)?;
            match token {
                Some(token) => {
                    server
                        .add_service(LoadgenServer::with_interceptor(
                            service,
                            RequireToken::new(&token),
                        ))
                        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned())
                        .drain_within(&stop)
                        .await?
                }
                None => {
                    server
                        .add_service(service.into_server())
                        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned())
                        .drain_within(&stop)
                        .await?
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
