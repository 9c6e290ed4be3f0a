-- Where a run's lock contention was seen: "lock tracepoints" (Linux 5.19 and later) or
-- "kprobes on slow paths" (older kernels). Runs from before are NULL: they all used the
-- tracepoints.
ALTER TABLE runs ADD COLUMN lock_source text;
