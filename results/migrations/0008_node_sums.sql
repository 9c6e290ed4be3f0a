-- Per node, the sums the fleet comparison needs over its succeeded runs (count, conn/s, its
-- square, its log and the log's square), kept up to date in each run's own transaction, so a
-- fleet question reads one row per node instead of every run. Filled here from the runs stored
-- so far.
CREATE TABLE node_sums (
    node_id TEXT PRIMARY KEY REFERENCES nodes (id),
    runs BIGINT NOT NULL CHECK (runs >= 0),
    sum DOUBLE PRECISION NOT NULL,
    sum_squares DOUBLE PRECISION NOT NULL,
    sum_logs DOUBLE PRECISION NOT NULL,
    sum_log_squares DOUBLE PRECISION NOT NULL
);

INSERT INTO node_sums (node_id, runs, sum, sum_squares, sum_logs, sum_log_squares)
SELECT node_id, count(*), sum(connections_per_second), sum(connections_per_second ^ 2),
       sum(ln(connections_per_second)), sum(ln(connections_per_second) ^ 2)
FROM runs
WHERE status = 'succeeded' AND connections_per_second > 0
GROUP BY node_id;
