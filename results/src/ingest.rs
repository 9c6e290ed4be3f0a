//! Checks on runs and experiments arriving through the API, before anything is written: a
//! stored run is whole and sane, or it is not stored.

use loadlab_proto::histogram::decode_histogram;

use crate::model::{ExperimentRow, NewExperiment, RunOutcome, RunRecord};

/// Names become database keys, URL parts and Kubernetes names: DNS-1123 labels.
fn is_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Postgres text and jsonb cannot hold NUL; JSON can (`\u0000`).
fn has_nul(value: &impl serde::Serialize) -> bool {
    serde_json::to_string(value).is_ok_and(|json| json.contains("\\u0000"))
}

pub fn validate_experiment(experiment: &NewExperiment) -> Result<(), String> {
    if has_nul(experiment) {
        return Err("strings must not contain NUL characters".into());
    }
    if !is_label(&experiment.name) {
        return Err(format!(
            "name {:?} must be 1-63 lowercase letters, digits or '-'",
            experiment.name
        ));
    }
    if experiment.cohorts.is_empty() {
        return Err("cohorts must name at least one cohort".into());
    }
    for (i, cohort) in experiment.cohorts.iter().enumerate() {
        if !is_label(cohort) {
            return Err(format!(
                "cohort {cohort:?} must be 1-63 lowercase letters, digits or '-'"
            ));
        }
        if experiment.cohorts[..i].contains(cohort) {
            return Err(format!("cohort {cohort:?} is listed twice"));
        }
    }
    if !experiment.cohorts.contains(&experiment.baseline) {
        return Err(format!(
            "baseline {:?} is not one of the cohorts",
            experiment.baseline
        ));
    }
    if !experiment.spec.is_object() {
        return Err("spec must be a JSON object (the experiment file's spec)".into());
    }
    if experiment.planned_runs.is_some_and(|planned| planned < 0) {
        return Err("planned_runs must not be negative".into());
    }
    Ok(())
}

/// Checks a run against its experiment and for internal consistency.
pub fn validate_run(run: &RunRecord, experiment: &ExperimentRow) -> Result<(), String> {
    if has_nul(run) {
        return Err("strings must not contain NUL characters".into());
    }
    if !experiment.cohorts.contains(&run.cohort) {
        return Err(format!(
            "cohort {:?} is not a cohort of experiment {} (cohorts: {})",
            run.cohort,
            experiment.id,
            experiment.cohorts.join(", ")
        ));
    }
    if run.repetition < 1 || run.attempt < 1 || run.sequence < 0 {
        return Err("repetition and attempt start at 1, sequence at 0".into());
    }
    if run.finished_at < run.started_at {
        return Err("finished_at is before started_at".into());
    }
    let counts = [
        run.completed_connections,
        run.failed_connections,
        run.warmup_connections,
    ];
    if counts.iter().any(|c| *c < 0) {
        return Err("connection counts must not be negative".into());
    }
    if run.generator_skew_us.is_some_and(|skew| skew < 0) {
        return Err("generator_skew_us must not be negative".into());
    }
    for (name, value) in [
        ("window_seconds", run.window_seconds),
        ("connections_per_second", run.connections_per_second),
    ] {
        if !value.is_finite() || value < 0.0 {
            return Err(format!("{name} must be a finite, non-negative number"));
        }
    }
    if run.completed_per_second.iter().any(|c| *c < 0) {
        return Err("completed_per_second must not hold negative counts".into());
    }
    if let RunOutcome::Failed { reason } = &run.outcome
        && reason.trim().is_empty()
    {
        return Err("a failed run needs its reason".into());
    }
    for (name, bytes) in [
        ("connect_histogram", &run.connect_histogram),
        ("first_byte_histogram", &run.first_byte_histogram),
        ("total_histogram", &run.total_histogram),
    ] {
        decode_histogram(bytes).map_err(|e| format!("{name}: {e}"))?;
    }
    for lock in &run.locks {
        if lock.count < 0
            || lock.wait_ns < 0
            || lock.max_wait_ns < 0
            || lock.max_wait_ns > lock.wait_ns
        {
            return Err(format!(
                "lock {:?}: counts must be non-negative and max wait at most the total",
                lock.lock
            ));
        }
    }
    if let Some(profile) = &run.cpu_profile {
        let folded: i64 = profile.folded.iter().map(|(_, n)| *n).sum();
        if profile.frequency_hz <= 0
            || profile.idle_samples > profile.samples
            || folded != profile.samples
        {
            return Err("cpu_profile: positive frequency, idle samples at most all samples, folded stacks summing to samples".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_refused() {
        let experiment = NewExperiment {
            id: uuid::Uuid::new_v4(),
            name: "ok".into(),
            spec: serde_json::json!({"note": "a\u{0}b"}),
            baseline: "a".into(),
            cohorts: vec!["a".into()],
            planned_runs: None,
        };
        assert!(
            validate_experiment(&experiment)
                .unwrap_err()
                .contains("NUL")
        );
        let clean = NewExperiment {
            spec: serde_json::json!({}),
            ..experiment
        };
        assert!(validate_experiment(&clean).is_ok());
        let negative = NewExperiment {
            planned_runs: Some(-1),
            ..clean
        };
        assert!(
            validate_experiment(&negative)
                .unwrap_err()
                .contains("planned_runs")
        );
    }
}
