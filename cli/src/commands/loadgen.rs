use std::process::ExitCode;

use loadlab_loadgen::{LoadgenService, TargetPolicy};

use crate::args::{LoadgenArgs, LoadgenCommand};
use crate::commands::{DrainWithin, GrpcListener};
use loadlab_proto::v1::loadgen_server::LoadgenServer;

pub async fn run(args: LoadgenArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LoadgenCommand::Serve {
            listen,
            allow,
            token_file,
            tls,
        } => {
            let service = LoadgenService::new(TargetPolicy::loopback_only().and_allow(allow));
            let GrpcListener {
                mut server,
                incoming,
                check,
                stop,
            } = GrpcListener::bind("loadgen", listen, token_file.as_deref(), &tls).await?;
            server
                .add_service(LoadgenServer::with_interceptor(service, check))
                .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned())
                .drain_within(&stop)
                .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
