-- The ledger: every run, every input row, every invitation and every attempt.
-- Times are UTC text, ISO 8601 with milliseconds, so they sort and read alike.

-- One row per command that touched the ledger.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    command     TEXT NOT NULL,                -- run | validate | retry | sync
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    base_url    TEXT NOT NULL,
    files       TEXT NOT NULL DEFAULT '[]',   -- JSON array of the input files' names
    dry_run     INTEGER NOT NULL DEFAULT 0,
    outcome     TEXT,                         -- completed | aborted: <reason>
    exit_code   INTEGER
);

-- One row per (customer, lower-cased email): a user is invited to a customer once,
-- whatever file or run asks for it.
CREATE TABLE invitations (
    id             INTEGER PRIMARY KEY,
    customer_id    INTEGER NOT NULL,
    email_key      TEXT NOT NULL,             -- lower-cased, trimmed e-mail
    email          TEXT NOT NULL,             -- as last sent
    name           TEXT NOT NULL,
    user_id        INTEGER,                   -- the `id` asked for, if any
    access_status  TEXT,                      -- the `status` asked for, if any
    state          TEXT NOT NULL,             -- pending | sending | invited | exists | failed | rejected
    access_user_id INTEGER,
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_http      INTEGER,
    last_error     TEXT,
    unsure         INTEGER NOT NULL DEFAULT 0, -- a call may have acted without our seeing the answer
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    done_at        TEXT,                      -- when it became invited or exists
    UNIQUE (customer_id, email_key)
);
CREATE INDEX invitations_state ON invitations (state);

-- The header of each input file of each run (a JSONL file may grow a few).
CREATE TABLE sources (
    id       INTEGER PRIMARY KEY,
    run_id   INTEGER NOT NULL REFERENCES runs (id),
    file     TEXT NOT NULL,
    columns  TEXT NOT NULL                    -- JSON array of column names, in order
);

-- One row per input row of each run, with the row's own cells kept for export.
CREATE TABLE rows (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES runs (id),
    source_id     INTEGER NOT NULL REFERENCES sources (id),
    line          INTEGER NOT NULL,
    cells         TEXT NOT NULL,              -- JSON array of the cells, aligned to the source's columns
    email         TEXT,
    customer_id   INTEGER,
    invitation_id INTEGER REFERENCES invitations (id),
    status        TEXT NOT NULL,              -- a row status, see ledger::RowStatus
    error         TEXT,
    updated_at    TEXT NOT NULL
);
CREATE INDEX rows_run ON rows (run_id, status);
-- Finds the latest row of an unfinished invitation (retry). Rows that ended done or
-- duplicate are never looked up this way, so they stay out: a rerun of a million
-- finished rows then writes no entry here.
CREATE INDEX rows_unfinished ON rows (invitation_id)
    WHERE status IN ('pending', 'sending', 'failed', 'rejected');

-- Every request made for an invitation, for audit.
CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY,
    invitation_id INTEGER NOT NULL REFERENCES invitations (id),
    run_id        INTEGER NOT NULL REFERENCES runs (id),
    at            TEXT NOT NULL,
    action        TEXT NOT NULL,              -- invite | confirm
    http_status   INTEGER,
    latency_ms    INTEGER NOT NULL,
    class         TEXT NOT NULL,              -- ok | 4xx | 5xx | 429 | timeout | transport | auth
    error         TEXT
);
CREATE INDEX attempts_invitation ON attempts (invitation_id);

-- The customer directory as last fetched from one base URL.
CREATE TABLE customers (
    base_url   TEXT NOT NULL,
    id         INTEGER NOT NULL,
    name       TEXT NOT NULL,
    reference  TEXT,
    status     TEXT NOT NULL,
    PRIMARY KEY (base_url, id)
);
CREATE TABLE customer_fetches (
    base_url   TEXT PRIMARY KEY,
    fetched_at TEXT NOT NULL,
    fetched_unix INTEGER NOT NULL
);
