-- Undo, and what a run was asked to do: `bbinvite undo --run N` reverses what run N
-- changed in the portal, so the ledger keeps which run created each user, which run an
-- undo reverses, and the pace a run was given (the HTML report draws it).
-- Times are UTC text, ISO 8601 with milliseconds, as in 0001.

-- The run whose request (or whose look after an interrupted request) made the
-- invitation `invited`; NULL for every other state.
ALTER TABLE invitations ADD COLUMN invited_run INTEGER;
-- Invitations recorded before 0004: the last run that recorded an `invited` row for the
-- key and began before the invitation was done.
UPDATE invitations SET invited_run = (
    SELECT max(r.run_id) FROM rows r JOIN runs u ON u.id = r.run_id
    WHERE r.invitation_id = invitations.id AND r.status = 'invited'
      AND u.started_at <= invitations.done_at
) WHERE state = 'invited';
CREATE INDEX invitations_invited_run ON invitations (invited_run) WHERE invited_run IS NOT NULL;

-- An undo run: the run it reverses. NULL for every other command.
ALTER TABLE runs ADD COLUMN undoes INTEGER;
-- A sending run's --rate (requests per second) and --burst, as it began; NULL before 0004.
ALTER TABLE runs ADD COLUMN rate REAL;
ALTER TABLE runs ADD COLUMN burst INTEGER;
