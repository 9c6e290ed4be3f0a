use std::process::ExitCode;

use anyhow::Context;
use loadlab_loadgen::{LoadgenService, TargetPolicy};

use crate::args::{LoadgenArgs, LoadgenCommand};
use crate::commands::interrupt_token;

pub async fn run(args: LoadgenArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LoadgenCommand::Serve { listen, allow } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let policy = TargetPolicy::loopback_only().and_allow(allow);
            let stop = interrupt_token();
            eprintln!("loadlab loadgen listening on {}", listener.local_addr()?);
            tonic::transport::Server::builder()
                .add_service(LoadgenService::new(policy).into_server())
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
