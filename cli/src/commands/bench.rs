//! `loadlab bench`: each benchmark in a module of its own.

use std::process::ExitCode;

use crate::args::{BenchArgs, BenchCommand};

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BenchCommand::Loadgen(args) => super::bench_loadgen::run(args).await?,
        BenchCommand::Calibrate(args) => super::bench_calibrate::run(args).await?,
        BenchCommand::Api(args) => super::bench_api::run(args).await?,
        BenchCommand::Plan(args) => super::bench_plan::run(args)?,
        BenchCommand::Agent(args) => super::bench_agent::run(args).await?,
        BenchCommand::Cluster(args) => super::bench_cluster::run(args).await?,
    }
    Ok(ExitCode::SUCCESS)
}
