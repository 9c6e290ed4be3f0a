-- A bisection: an ordered list of kernels, a condition, and the experiments (steps) that found
-- the first kernel where it holds. Steps point at ordinary experiments, so each keeps its own
-- runs, report and evidence.
CREATE TABLE bisections (
    id            uuid PRIMARY KEY,
    name          text        NOT NULL,
    spec          jsonb       NOT NULL,
    kernels       text[]      NOT NULL,
    condition     text        NOT NULL,
    -- running; found (first_holding names the kernel); never (checked: not even the last);
    -- from_first (checked: already the first); undecided (a step could not decide);
    -- failed; interrupted.
    status        text        NOT NULL CHECK (status IN ('running', 'found', 'never', 'from_first', 'undecided', 'failed', 'interrupted')),
    first_holding text,
    -- Why it ended, in words.
    answer        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX bisections_created_at ON bisections (created_at DESC);

CREATE TABLE bisection_steps (
    bisection_id  uuid    NOT NULL REFERENCES bisections (id) ON DELETE CASCADE,
    step          integer NOT NULL CHECK (step >= 1),
    kernel_index  integer NOT NULL CHECK (kernel_index >= 0),
    kernel        text    NOT NULL,
    experiment_id uuid    NOT NULL REFERENCES experiments (id),
    -- NULL: the step could not decide.
    holds         boolean,
    value         double precision,
    decision      text    NOT NULL,
    PRIMARY KEY (bisection_id, step)
);
