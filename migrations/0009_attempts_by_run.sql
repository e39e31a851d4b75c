-- A run's attempts found by its id. What reads attempts asks by run: the end of each run
-- counts which of its done rows a request of the run made so (the invitations asked
-- for in the run, one range of this index, read without the table), `compact` finds
-- and removes old runs' attempts, the HTML report draws a run's requests. Nothing
-- looks attempts up by invitation alone, so this index takes the place of
-- `attempts_invitation` (0001): still one index entry an attempt, appended at the end
-- as a run writes them.
DROP INDEX attempts_invitation;
CREATE INDEX attempts_run ON attempts (run_id, invitation_id);
