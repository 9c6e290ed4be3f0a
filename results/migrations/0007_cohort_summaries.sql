-- JSON, not JSONB: these are written and read whole, never queried inside, and plain JSON is
-- stored and returned as the text it was given.
-- Each cohort's runs folded into the accumulator its report is computed from (see
-- report::CohortAccumulator), and that report, updated in the same transaction as each run
-- written after this migration. `runs` counts the runs folded in; a report trusts these rows only while their runs
-- add up to the experiment's stored runs, and otherwise reads the runs themselves.
CREATE TABLE cohort_summaries (
    experiment_id UUID NOT NULL REFERENCES experiments (id),
    cohort TEXT NOT NULL,
    runs BIGINT NOT NULL CHECK (runs >= 0),
    accumulator JSON NOT NULL,
    -- What reports read: the cohort's finished report (without its comparison, which depends
    -- on the baseline) and the nodes its runs ran on.
    report JSON NOT NULL,
    nodes JSON NOT NULL,
    PRIMARY KEY (experiment_id, cohort)
);
