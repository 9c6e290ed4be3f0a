use std::process::ExitCode;

use anyhow::Context;
use loadlab_agent::AgentService;
use loadlab_agent::facts::describe;
use loadlab_agent::grpc::facts_to_proto;
use loadlab_agent::nginx::{find_nginx, nginx_version};

use crate::args::{AgentArgs, AgentCommand};
use crate::commands::{DrainWithin, grpc_server, interrupt_token, server_token};
use crate::render;
use loadlab_proto::auth::RequireToken;
use loadlab_proto::v1::agent_server::AgentServer;

pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AgentCommand::Describe { json } => {
            let nginx = match find_nginx() {
                Ok(binary) => nginx_version(&binary).await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let facts = facts_to_proto(describe()?, nginx);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&render::facts_json(&facts))?
                );
            } else {
                println!("{}", render::facts_line(&facts));
            }
        }
        AgentCommand::Serve {
            listen,
            token_file,
            target_address,
            node_name,
            tls,
        } => {
            let token = server_token(listen, token_file.as_deref())?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let agent = AgentService::new()
                .with_target_address(target_address)
                .with_node_name(node_name);
            let stop = interrupt_token();
            eprintln!("loadlab agent listening on {}", listener.local_addr()?);
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let mut server = grpc_server(&tls)?;
            match token {
                Some(token) => {
                    server
                        .add_service(AgentServer::with_interceptor(
                            agent.clone(),
                            RequireToken::new(&token),
                        ))
                        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned())
                        .drain_within(&stop)
                        .await?
                }
                None => {
                    server
                        .add_service(agent.clone().into_server())
                        .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned())
                        .drain_within(&stop)
                        .await?
                }
            }
            agent.stop_all_targets().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
