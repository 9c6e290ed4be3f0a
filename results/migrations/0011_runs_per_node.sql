-- A cohort is a set of nodes, and every node runs every repetition: a run is identified by
-- its experiment, cohort, repetition, node and attempt. The old key left the node out, so the
-- second node of a cohort could not store its first run. Every stored run keeps its row.
ALTER TABLE runs DROP CONSTRAINT runs_experiment_id_cohort_repetition_attempt_key;
ALTER TABLE runs ADD CONSTRAINT runs_one_attempt_per_node
    UNIQUE (experiment_id, cohort, repetition, node_id, attempt);

-- How many runs the experiment plans (repetitions × nodes of every cohort), written by whoever
-- knows its nodes. Rows from before are left NULL and read as repetitions × cohorts, which is
-- what they planned: a cohort of several nodes could not store its runs then.
ALTER TABLE experiments ADD COLUMN planned_runs bigint CHECK (planned_runs >= 0);
