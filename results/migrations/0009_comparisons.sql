-- Each experiment's comparison at its own baseline, serialized as the API serves it. It is
-- written from the cohort summaries in the same transaction as every change that alters it (a
-- run, the status), after the revision bump that serializes those writers, so that reading a
-- comparison computes nothing. A row whose revision is not the experiment's current one is
-- never served; an experiment whose summaries do not hold all its runs has no row.
CREATE TABLE comparisons (
    experiment_id UUID PRIMARY KEY REFERENCES experiments (id),
    revision BIGINT NOT NULL,
    body BYTEA NOT NULL
);
