-- What a run sent and what it found already done, frozen when `compact` removes the
-- run's row records and attempts, which these counts are otherwise computed from: the
-- report of a compacted run stays true. NULL for a run not compacted.
ALTER TABLE runs ADD COLUMN sent INTEGER;
ALTER TABLE runs ADD COLUMN already_done INTEGER;
