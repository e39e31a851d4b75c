-- A ledger that lasts years of nightly runs: what a run writes is in proportion to what
-- changed. A row whose invitation is already done, with the same cells as the row the
-- ledger last recorded for that key, is counted in `run_counts`, not copied into `rows`.
-- Times are UTC text, ISO 8601 with milliseconds, as in 0001.

-- A 64-bit FNV-1a hash of the cells (the JSON array `rows.cells` holds) of the last
-- input row recorded for this key; NULL for keys recorded before 0003, so their next
-- row is recorded once more and the hash set.
ALTER TABLE invitations ADD COLUMN cells_hash INTEGER;

-- A problem row (invalid, unresolved, duplicate, still rejected) is recorded in full
-- each night it is seen, but the same row seen the night before (same file, columns,
-- line, cells, status and reason: the same hash) gives up its record, so a bad row
-- seen for a year is stored once, in the last run that saw it; the run it left keeps
-- its count in `run_counts`. NULL for every other row.
ALTER TABLE rows ADD COLUMN seen_hash INTEGER;
CREATE INDEX rows_seen ON rows (seen_hash) WHERE seen_hash IS NOT NULL;

-- Rows of a run counted but not recorded one by one (already done, cells unchanged),
-- and, once `compact` removed a run's row records, what those records counted. A run's
-- counts per status are its `rows` plus these.
CREATE TABLE run_counts (
    run_id  INTEGER NOT NULL REFERENCES runs (id),
    status  TEXT NOT NULL,                    -- a row status, see ledger::RowStatus
    n       INTEGER NOT NULL,
    PRIMARY KEY (run_id, status)
) WITHOUT ROWID;
