-- Every write that changes what an experiment's report is computed from (a run, the status)
-- bumps the experiment's revision in the same transaction. The API serves a computed report only
-- while the revision it was computed at is current; the fleet comparison checks all of them.
ALTER TABLE experiments ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
