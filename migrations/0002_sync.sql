-- Sync: what `bbinvite sync` does to access users besides inviting them. Invitations
-- made by sync stay in `invitations`, like those of `run`; this adds the other actions,
-- each recorded like an invitation (state, attempts, last error) so a sync that dies
-- midway resumes without repeating one, and `status`/`export --actions` show each night.
-- Times are UTC text, ISO 8601 with milliseconds, as in 0001.

-- One row per action a sync run decided on, for one access user.
CREATE TABLE actions (
    id             INTEGER PRIMARY KEY,
    run_id         INTEGER NOT NULL REFERENCES runs (id),
    customer_id    INTEGER NOT NULL,
    email_key      TEXT NOT NULL,             -- lower-cased, trimmed e-mail, as invitations.email_key
    email          TEXT NOT NULL,             -- as the access list spells it
    kind           TEXT NOT NULL,             -- resend | suspend | reactivate | prune (a suspension of a user not in the sheet)
    access_user_id INTEGER NOT NULL,
    row_id         INTEGER REFERENCES rows (id), -- the input row that asked for it; NULL for prune
    state          TEXT NOT NULL,             -- pending | sending | done | failed | skipped (prune without --yes) | refused (prune guard)
    why            TEXT NOT NULL,             -- what the plan saw, in words
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_http      INTEGER,
    last_error     TEXT,
    unsure         INTEGER NOT NULL DEFAULT 0, -- a call may have acted without our seeing the answer
    sent_at        TEXT,                      -- when it was first marked sending: a resend counts from here
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    done_at        TEXT,
    UNIQUE (run_id, customer_id, access_user_id, kind)
);
-- A user's last resend, for --resend-after.
CREATE INDEX actions_key ON actions (customer_id, email_key, kind);
CREATE INDEX actions_run ON actions (run_id, state);

-- Every request made for an action, for audit (the attempts table is for invitations).
CREATE TABLE action_attempts (
    id          INTEGER PRIMARY KEY,
    action_id   INTEGER NOT NULL REFERENCES actions (id),
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    at          TEXT NOT NULL,
    http_status INTEGER,
    latency_ms  INTEGER NOT NULL,
    class       TEXT NOT NULL,                -- ok | 4xx | 5xx | 429 | timeout | transport | auth | decode
    error       TEXT
);
CREATE INDEX action_attempts_action ON action_attempts (action_id);
