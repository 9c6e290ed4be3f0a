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
}

/// Every (repetition, cohort) pair once; each repetition runs all cohorts, rotated by one
/// position per repetition.
pub fn schedule(cohorts: usize, repetitions: u32) -> Vec<PlannedRun> {
    let mut runs = Vec::with_capacity(cohorts * repetitions as usize);
    for repetition in 1..=repetitions {
        let shift = (repetition as usize - 1) % cohorts.max(1);
        for position in 0..cohorts {
            runs.push(PlannedRun {
                sequence: runs.len() as u32,
                repetition,
                cohort: (position + shift) % cohorts,
            });
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(cohorts: usize, repetitions: u32) -> Vec<usize> {
        schedule(cohorts, repetitions)
            .iter()
            .map(|r| r.cohort)
            .collect()
    }

    #[test]
    fn cohorts_interleave_and_rotate() {
        assert_eq!(order(2, 3), vec![0, 1, 1, 0, 0, 1]);
        assert_eq!(order(3, 3), vec![0, 1, 2, 1, 2, 0, 2, 0, 1]);
        assert_eq!(order(1, 2), vec![0, 0]);
        assert!(schedule(0, 3).is_empty());
    }

    #[test]
    fn every_cohort_runs_once_per_repetition_in_sequence_order() {
        let runs = schedule(4, 5);
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
