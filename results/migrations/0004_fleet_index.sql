-- The fleet comparison sums conn/s of succeeded runs per node: serve it from an index.
CREATE INDEX runs_node_rate ON runs (node_id) INCLUDE (status, connections_per_second, experiment_id);
