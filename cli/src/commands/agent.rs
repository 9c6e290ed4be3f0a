use std::process::ExitCode;

use loadlab_agent::AgentService;
use std::path::Path;

use loadlab_agent::facts::describe_from;
use loadlab_agent::grpc::facts_to_proto;
use loadlab_agent::nginx::{find_nginx, nginx_version};
use loadlab_proto::symbols::check_symbol_names;

use crate::args::{AgentArgs, AgentCommand};
use crate::commands::{DrainWithin, GrpcListener};
use crate::render;
use loadlab_proto::v1::agent_server::AgentServer;

pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AgentCommand::Describe { symbols, json } => {
            check_symbol_names(&symbols)
                .map_err(|bad| anyhow::anyhow!("--symbol: {}", bad.message))?;
            let nginx = match find_nginx() {
                Ok(binary) => nginx_version(&binary).await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let facts = facts_to_proto(describe_from(Path::new("/proc"), &symbols)?, nginx);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&render::facts_json(&facts))?
                );
            } else {
                println!("{}", render::facts_line(&facts));
            }
        }
        AgentCommand::Capture(capture) => {
            crate::commands::capture::run(capture, crate::commands::interrupt_token()).await?;
        }
        AgentCommand::Serve {
            listen,
            token_file,
            target_address,
            node_name,
            tls,
        } => {
            let agent = AgentService::new()
                .with_target_address(target_address)
                .with_node_name(node_name);
            let GrpcListener {
                mut server,
                incoming,
                check,
                stop,
            } = GrpcListener::bind("agent", listen, token_file.as_deref(), &tls).await?;
            server
                .add_service(AgentServer::with_interceptor(agent.clone(), check))
                .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned())
                .drain_within(&stop)
                .await?;
            agent.stop_all_targets().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
