use std::process::ExitCode;

use loadlab_results::Database;
use loadlab_results::report::build_report;

use crate::args::CompareArgs;
use crate::render;

pub async fn run(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let store = Database::from_env().open().await?;
    let experiment = store.experiment(args.experiment).await?;
    let runs = store.experiment_runs(args.experiment).await?;
    let report = build_report(experiment, &runs)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::report_table(&report));
    }
    Ok(ExitCode::SUCCESS)
}
