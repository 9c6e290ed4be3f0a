-- One experiment file run once: its spec as given, its cohorts and baseline.
CREATE TABLE experiments (
    id          uuid PRIMARY KEY,
    name        text        NOT NULL,
    spec        jsonb       NOT NULL,
    baseline    text        NOT NULL,
    cohorts     text[]      NOT NULL,
    status      text        NOT NULL CHECK (status IN ('running', 'completed', 'interrupted', 'failed')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX experiments_created_at ON experiments (created_at DESC);

-- A machine as it was when measured: a new kernel or CPU makes a new node row.
CREATE TABLE nodes (
    id             text PRIMARY KEY,
    hostname       text        NOT NULL,
    kernel_release text        NOT NULL,
    kernel_version text        NOT NULL,
    cpu_model      text        NOT NULL,
    logical_cpus   integer     NOT NULL,
    memory_bytes   bigint      NOT NULL,
    facts          jsonb       NOT NULL,
    first_seen     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now()
);

-- One measured window of one cohort in one repetition. Written once, whole, by its id.
CREATE TABLE runs (
    id                     uuid PRIMARY KEY,
    experiment_id          uuid        NOT NULL REFERENCES experiments (id),
    cohort                 text        NOT NULL,
    repetition             integer     NOT NULL CHECK (repetition >= 1),
    attempt                integer     NOT NULL CHECK (attempt >= 1),
    sequence               integer     NOT NULL CHECK (sequence >= 0),
    node_id                text        NOT NULL REFERENCES nodes (id),
    status                 text        NOT NULL CHECK (status IN ('succeeded', 'failed')),
    failure_reason         text,
    started_at             timestamptz NOT NULL,
    finished_at            timestamptz NOT NULL,
    target                 jsonb       NOT NULL,
    load                   jsonb       NOT NULL,
    window_seconds         double precision NOT NULL CHECK (window_seconds >= 0),
    completed_connections  bigint      NOT NULL CHECK (completed_connections >= 0),
    failed_connections     bigint      NOT NULL CHECK (failed_connections >= 0),
    warmup_connections     bigint      NOT NULL CHECK (warmup_connections >= 0),
    connections_per_second double precision NOT NULL,
    errors                 jsonb       NOT NULL,
    connect_histogram      bytea       NOT NULL,
    first_byte_histogram   bytea       NOT NULL,
    total_histogram        bytea       NOT NULL,
    completed_per_second   bigint[]    NOT NULL,
    counters               jsonb       NOT NULL,
    UNIQUE (experiment_id, cohort, repetition, attempt),
    CHECK ((status = 'failed') = (failure_reason IS NOT NULL))
);
CREATE INDEX runs_experiment ON runs (experiment_id, sequence);
CREATE INDEX runs_node ON runs (node_id);
