//! The run schedule: repetitions interleave the cohorts (A B, B A, A B, ...) so that drift over
//! time (thermal, background work, page cache) is shared by every cohort instead of landing on
//! whichever ran last, and no cohort always runs first.

/// One run in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedRun {
    /// Position in the schedule, from 0.
    pub sequence: u32,
    /// From 1.
    pub repetition: u32,
    /// Index into the experiment's cohorts.
    pub cohort: usize,
    /// Index into the cohort's nodes.
    pub node: usize,
}

/// Every (repetition, cohort, node) once; each repetition runs every node of every cohort,
/// the cohorts rotated by one position per repetition and their nodes alternating with the
/// other cohorts' (A1 B1 A2 B2 ...), so a cohort's runs never bunch together.
pub fn schedule(nodes_per_cohort: &[usize], repetitions: u32) -> Vec<PlannedRun> {
    let cohorts = nodes_per_cohort.len();
    let widest = nodes_per_cohort.iter().copied().max().unwrap_or(0);
    let mut runs =
        Vec::with_capacity(nodes_per_cohort.iter().sum::<usize>() * repetitions as usize);
    for repetition in 1..=repetitions {
        let shift = (repetition as usize - 1) % cohorts.max(1);
        for node in 0..widest {
            for position in 0..cohorts {
                let cohort = (position + shift) % cohorts;
                if node < nodes_per_cohort[cohort] {
                    runs.push(PlannedRun {
                        sequence: runs.len() as u32,
                        repetition,
                        cohort,
                        node,
                    });
                }
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(cohorts: usize, repetitions: u32) -> Vec<usize> {
        schedule(&vec![1; cohorts], repetitions)
            .iter()
            .map(|r| r.cohort)
            .collect()
    }

    #[test]
    fn cohorts_interleave_and_rotate() {
        assert_eq!(order(2, 3), vec![0, 1, 1, 0, 0, 1]);
        assert_eq!(order(3, 3), vec![0, 1, 2, 1, 2, 0, 2, 0, 1]);
        assert_eq!(order(1, 2), vec![0, 0]);
        assert!(schedule(&[], 3).is_empty());
    }

    #[test]
    fn nodes_of_cohorts_alternate_and_each_runs_every_repetition() {
        let runs: Vec<(u32, usize, usize)> = schedule(&[2, 1], 2)
            .iter()
            .map(|r| (r.repetition, r.cohort, r.node))
            .collect();
        assert_eq!(
            runs,
            vec![
                (1, 0, 0),
                (1, 1, 0),
                (1, 0, 1),
                (2, 1, 0),
                (2, 0, 0),
                (2, 0, 1)
            ]
        );
    }

    #[test]
    fn every_cohort_runs_once_per_repetition_in_sequence_order() {
        let runs = schedule(&[1; 4], 5);
        assert_eq!(runs.len(), 20);
        for (i, run) in runs.iter().enumerate() {
            assert_eq!(run.sequence as usize, i);
        }
        for repetition in 1..=5 {
            let mut seen: Vec<usize> = runs
                .iter()
                .filter(|r| r.repetition == repetition)
                .map(|r| r.cohort)
                .collect();
            seen.sort();
            assert_eq!(seen, vec![0, 1, 2, 3]);
        }
    }
}
