-- A problem row seen night after night is stored once, in the last run that saw it
-- (0003), yet each of those nights still lists it: the record keeps the first run of
-- the unbroken series of runs that saw it, so `export --run N` of an earlier night of
-- the series finds it.

-- The first run of the series that saw this problem row, when it is earlier than
-- `run_id`: the record stands for every run with rows from this one to `run_id` that
-- read the same file (the runs between saw it, or the series would have ended). NULL
-- when only `run_id` saw it, and for every other row.
-- Records that 0003 removed before this migration cannot be recovered: an earlier
-- night whose problem row a later night saw again keeps only its count in
-- `run_counts`, as before; the series start counting from the next night.
ALTER TABLE rows ADD COLUMN first_seen_run INTEGER;
CREATE INDEX rows_first_seen ON rows (first_seen_run) WHERE first_seen_run IS NOT NULL;
