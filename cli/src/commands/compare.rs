use std::process::ExitCode;

use loadlab_results::Database;

use crate::args::{CompareArgs, ReportFormat};
use crate::render;

pub async fn run(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let store = Database::from_env().open().await?;
    let experiment = store.experiment(args.experiment).await?;
    let report = store.report(experiment).await?;
    let format = if args.json {
        ReportFormat::Json
    } else {
        args.format
    };
    match format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ReportFormat::Table => print!("{}", render::report_table(&report)),
        ReportFormat::Text => print!("{}", loadlab_results::paste::report_text(&report)),
    }
    Ok(ExitCode::SUCCESS)
}
