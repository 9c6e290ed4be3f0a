//! Flamegraphs of stored CPU profiles: a cohort's runs merged into one SVG, and differential
//! flamegraphs between two cohorts (red where the second spends more, blue where less).

use std::collections::BTreeMap;

use crate::Error;
use crate::model::{RunOutcome, RunRecord};

/// The folded stacks of a cohort's succeeded runs, added up, one `stack count` per line.
pub fn cohort_folded(runs: &[RunRecord], cohort: &str) -> String {
    let mut merged: BTreeMap<&str, i64> = BTreeMap::new();
    for run in runs
        .iter()
        .filter(|r| r.cohort == cohort && r.outcome == RunOutcome::Succeeded)
    {
        for (stack, count) in run.cpu_profile.iter().flat_map(|p| &p.folded) {
            *merged.entry(stack.as_str()).or_default() += count;
        }
    }
    merged
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}\n"))
        .collect()
}

fn no_profile(cohort: &str) -> Error {
    Error::NotFound(format!(
        "a CPU profile of cohort {cohort:?} (run it with collect.cpuProfile)"
    ))
}

/// A flamegraph of one cohort.
pub fn flamegraph_svg(title: &str, cohort: &str, folded: &str) -> Result<Vec<u8>, Error> {
    if folded.is_empty() {
        return Err(no_profile(cohort));
    }
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = "samples".into();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
        .map_err(|e| Error::Corrupt(format!("flamegraph: {e}")))?;
    Ok(svg)
}

/// A differential flamegraph: the frames of `after`, coloured by how their share changed from
/// `before` (both normalised to the same total, so a busier cohort is not all red).
pub fn differential_svg(
    title: &str,
    before: (&str, &str),
    after: (&str, &str),
) -> Result<Vec<u8>, Error> {
    let ((before_name, before_folded), (after_name, after_folded)) = (before, after);
    if before_folded.is_empty() {
        return Err(no_profile(before_name));
    }
    if after_folded.is_empty() {
        return Err(no_profile(after_name));
    }
    let mut diff = Vec::new();
    let options = inferno::differential::Options {
        normalize: true,
        strip_hex: true,
    };
    inferno::differential::from_readers(
        options,
        before_folded.as_bytes(),
        after_folded.as_bytes(),
        &mut diff,
    )
    .map_err(|e| Error::Corrupt(format!("differential flamegraph: {e}")))?;
    let diff = String::from_utf8_lossy(&diff);
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.subtitle = Some(format!(
        "{after_name} against {before_name}: red grew, blue shrank"
    ));
    options.count_name = "samples".into();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut options, diff.lines(), &mut svg)
        .map_err(|e| Error::Corrupt(format!("flamegraph: {e}")))?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "nginx;__fput;eventpoll_release_file;osq_lock 56\nnginx;tcp_v4_rcv 44\n";
    const AFTER: &str = "nginx;__fput;eventpoll_release_file 2\nnginx;tcp_v4_rcv 98\n";

    #[test]
    fn a_cohort_flamegraph_is_an_svg_with_its_frames() {
        let svg = String::from_utf8(flamegraph_svg("t", "a", BEFORE).unwrap()).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", &svg[..60]);
        assert!(svg.contains("osq_lock"));
    }

    #[test]
    fn a_differential_flamegraph_names_both_cohorts() {
        let svg = String::from_utf8(
            differential_svg("t", ("unpatched", BEFORE), ("patched", AFTER)).unwrap(),
        )
        .unwrap();
        assert!(svg.contains("patched against unpatched"));
        assert!(svg.contains("tcp_v4_rcv"));
    }

    #[test]
    fn no_profile_is_not_found() {
        assert!(matches!(
            flamegraph_svg("t", "a", ""),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            differential_svg("t", ("a", BEFORE), ("b", "")),
            Err(Error::NotFound(_))
        ));
    }
}
