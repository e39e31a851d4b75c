-- How far a run read its input. A `run` that sends is begun with the command that
-- continues it (the same files, ledger and API); the mark is cleared once it has read
-- every row, so a run stopped early (a signal, the breaker, a crash) keeps it, with
-- where its reading stopped, for its summary and for `retry` to tell.

-- The command that reads the rest of the run's input; NULL once it was read to the end
-- (and for runs that read no file).
ALTER TABLE runs ADD COLUMN continue_with TEXT;
-- Where reading stopped, in words ("read 6,144 rows, up to line 6,145 of big.csv");
-- NULL while running, when read to the end, or when the process died.
ALTER TABLE runs ADD COLUMN stopped_reading TEXT;
