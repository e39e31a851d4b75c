-- Fewer index entries moved per invitation. On its way from admitted to done an
-- invitation changes state twice (pending, sending, invited) and its row once
-- (pending, invited): each change moved an entry of `invitations_state` and of
-- `rows_run` (keyed by status), and with the two partial indexes below those moves were
-- about a third of the instructions the ledger spent per invitation on a first run.
--
-- Nothing looks invitations up by state often enough to keep an index for it: `status`
-- counts them in one pass over the table, `retry` and `compact` read the table for the
-- unfinished ones, and the done keys a rerun loads are read from the table in id order.
DROP INDEX invitations_state;

-- A run's rows, found by its id alone: the entry is written once, as the row is, and a
-- change of status leaves it where it is. Counting a run's rows by status reads them.
DROP INDEX rows_run;
CREATE INDEX rows_run ON rows (run_id);

-- The latest row of an unfinished invitation, which `retry` sends again from, is found
-- among the invitation's rows: one entry a row, written with it and left where it is
-- when the row's status changes. The partial index this replaces (0008) took an entry as
-- each row was admitted pending and gave it back as its invitation ended done: two
-- writes for nearly every row of a first run.
DROP INDEX rows_unfinished;
CREATE INDEX rows_invitation ON rows (invitation_id);

-- The invitations a run made `invited`, which `undo` alone asks for, are found by
-- reading the table; an index took an entry for each invitation as it was made.
DROP INDEX invitations_invited_run;
