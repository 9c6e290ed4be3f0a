-- Runs are pooled across experiments only when they ran the same workload: the same load
-- (connections, requests per connection, close and handshake modes, rate, generators and
-- where they ran), the same target settings (nginx workers, reuseport, backlog) and the same
-- collectors (tracing and profiling cost CPU). A run's workload is those three as one jsonb
-- value, which compares by meaning (key order and spacing do not matter).
ALTER TABLE runs ADD COLUMN workload jsonb;
UPDATE runs r
   SET workload = jsonb_build_object('load', r.load, 'target', r.target,
                                     'collect', coalesce(e.spec #> '{spec,collect}', 'null'::jsonb))
  FROM experiments e
 WHERE e.id = r.experiment_id;
ALTER TABLE runs ALTER COLUMN workload SET NOT NULL;

-- The fleet sums, per node and now per workload too.
DROP TABLE node_sums;
CREATE TABLE node_sums (
    node_id TEXT NOT NULL REFERENCES nodes (id),
    workload jsonb NOT NULL,
    runs BIGINT NOT NULL CHECK (runs >= 0),
    sum DOUBLE PRECISION NOT NULL,
    sum_squares DOUBLE PRECISION NOT NULL,
    sum_logs DOUBLE PRECISION NOT NULL,
    sum_log_squares DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, workload)
);

INSERT INTO node_sums (node_id, workload, runs, sum, sum_squares, sum_logs, sum_log_squares)
SELECT node_id, workload, count(*), sum(connections_per_second), sum(connections_per_second ^ 2),
       sum(ln(connections_per_second)), sum(ln(connections_per_second) ^ 2)
FROM runs
WHERE status = 'succeeded' AND connections_per_second > 0
GROUP BY node_id, workload;
