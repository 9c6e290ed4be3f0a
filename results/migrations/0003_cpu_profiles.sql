-- CPU profile of a run's measured window: folded stacks (gzip) and the top symbols.
CREATE TABLE cpu_profiles (
    run_id       uuid    PRIMARY KEY REFERENCES runs (id),
    frequency_hz integer NOT NULL CHECK (frequency_hz > 0),
    samples      bigint  NOT NULL CHECK (samples >= 0),
    idle_samples bigint  NOT NULL CHECK (idle_samples >= 0),
    folded_gzip  bytea   NOT NULL,
    top_symbols  jsonb   NOT NULL
);

-- Why a run asked for a CPU profile and did not get it (NULL: collected, or not asked).
ALTER TABLE runs ADD COLUMN cpu_profile_unavailable text;
