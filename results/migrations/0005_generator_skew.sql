-- How far apart the generators of a run started, as each measured against the shared start
-- instant on its own clock (NULL with one generator, and for runs stored before this column).
ALTER TABLE runs ADD COLUMN generator_skew_us BIGINT CHECK (generator_skew_us >= 0);
