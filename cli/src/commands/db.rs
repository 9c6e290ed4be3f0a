use std::process::ExitCode;

use loadlab_results::Database;

use crate::args::{DbArgs, DbCommand};

pub async fn run(args: DbArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DbCommand::Url => {
            let database = Database::from_env();
            println!("{}", database.url().await?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
