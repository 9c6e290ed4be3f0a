use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use loadlab_results::Database;
use loadlab_results::flamegraph::{cohort_folded, differential_svg, flamegraph_svg};
use loadlab_results::store::RunParts;

use crate::args::FlamegraphArgs;

pub async fn run(args: FlamegraphArgs) -> anyhow::Result<ExitCode> {
    let store = Database::from_env().open().await?;
    let experiment = store.experiment(args.experiment).await?;
    for cohort in std::iter::once(&args.cohort).chain(&args.against) {
        if !experiment.cohorts.contains(cohort) {
            bail!(
                "experiment {} has no cohort {cohort:?} (cohorts: {})",
                experiment.id,
                experiment.cohorts.join(", ")
            );
        }
    }
    let cohorts: Vec<String> = std::iter::once(args.cohort.clone())
        .chain(args.against.clone())
        .collect();
    let parts = RunParts::profiles_of(&cohorts);
    let runs = store.runs_with(args.experiment, parts).await?;
    let folded = cohort_folded(&runs, &args.cohort);
    let title = format!("{} · {}", experiment.name, args.cohort);
    let svg = match &args.against {
        None => flamegraph_svg(&title, &args.cohort, &folded)?,
        Some(before) => differential_svg(
            &format!("{} · {} against {before}", experiment.name, args.cohort),
            (before, &cohort_folded(&runs, before)),
            (&args.cohort, &folded),
        )?,
    };
    let output = args.output.unwrap_or_else(|| {
        let suffix = args
            .against
            .as_ref()
            .map(|b| format!("-vs-{b}"))
            .unwrap_or_default();
        PathBuf::from(format!("{}-{}{suffix}.svg", experiment.id, args.cohort))
    });
    std::fs::write(&output, svg).with_context(|| format!("cannot write {}", output.display()))?;
    println!("{}", output.display());
    Ok(ExitCode::SUCCESS)
}
