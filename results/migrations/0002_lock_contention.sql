-- Kernel lock contention of a run's measured window, by lock and call path.
CREATE TABLE lock_contention (
    run_id      uuid    NOT NULL REFERENCES runs (id),
    lock        text    NOT NULL,
    lock_type   text    NOT NULL,
    caller      text    NOT NULL,
    stack       text    NOT NULL,
    count       bigint  NOT NULL CHECK (count >= 0),
    wait_ns     bigint  NOT NULL CHECK (wait_ns >= 0),
    max_wait_ns bigint  NOT NULL CHECK (max_wait_ns >= 0),
    epoll       boolean NOT NULL,
    PRIMARY KEY (run_id, lock, stack)
);

-- Why a run asked for lock contention and did not get it (NULL: collected, or not asked).
ALTER TABLE runs ADD COLUMN lock_contention_unavailable text;
