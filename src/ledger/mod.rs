//! The ledger: the only SQL in the crate.
//!
//! One SQLite file remembers every run, every input row, every invitation (keyed by
//! customer id and lower-cased e-mail) and every attempt, and answers what a rerun
//! still has to do. The schema lives in `migrations/`, applied in order on open.
//! This module decides nothing about HTTP: it stores what the send stage reports and
//! hands back the work that is not done.

mod admit;
mod checkpoint;
mod compact;
mod done_keys;
mod lock;
mod query;
mod reading;
mod report_data;
mod spool;
mod sync;
mod undo;
mod writer;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::api::types::{AccessStatus, Customer, CustomerStatus, NewAccessUser};
use crate::domain::{Existing, Job, Outcome, RowStatus, RunId, State, Verdict, email_key};

pub use admit::cells_hash;
pub use checkpoint::Checkpointer;
pub use compact::Compacted;
pub use lock::LedgerLock;
pub use query::{ExportRow, ExportTable, RunInfo, StatusCounts};
pub use reading::UnreadInput;
pub use report_data::{AttemptPoint, AttentionRow, CustomerRows, RunAccount, RunTallies};
pub use sync::{ActionRow, KeyView, Present};
pub use undo::{Change, UndoFacts, UndoTarget};
pub use writer::{Writer, WriterThread};

/// The migrations, in order. Never edit one that has landed: add the next.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_ledger",
        include_str!("../../migrations/0001_ledger.sql"),
    ),
    ("0002_sync", include_str!("../../migrations/0002_sync.sql")),
    (
        "0003_growth",
        include_str!("../../migrations/0003_growth.sql"),
    ),
    ("0004_undo", include_str!("../../migrations/0004_undo.sql")),
    (
        "0005_reading",
        include_str!("../../migrations/0005_reading.sql"),
    ),
    (
        "0006_run_tallies",
        include_str!("../../migrations/0006_run_tallies.sql"),
    ),
    (
        "0007_seen_runs",
        include_str!("../../migrations/0007_seen_runs.sql"),
    ),
    (
        "0008_send_path",
        include_str!("../../migrations/0008_send_path.sql"),
    ),
    (
        "0009_attempts_by_run",
        include_str!("../../migrations/0009_attempts_by_run.sql"),
    ),
    (
        "0010_lighter_writes",
        include_str!("../../migrations/0010_lighter_writes.sql"),
    ),
];

/// The rows of unfinished invitations: `retry` sends each again from its latest, found
/// among its invitation's rows (`rows_invitation`, 0010).
const UNFINISHED_ROW: &str =
    "(status = 'pending' OR status = 'sending' OR status = 'failed' OR status = 'rejected')";

/// A run's problem rows: what `status`, the summary and the report list as needing
/// attention.
pub(crate) const PROBLEM_ROW: &str =
    "(status = 'failed' OR status = 'rejected' OR status = 'invalid' OR status = 'unresolved')";

/// A row `r`'s status as people read it: a row recorded `pending` whose invitation is
/// marked `sending` reads `sending` (the mark writes the invitation alone). Only a
/// pending row looks its invitation up.
pub(crate) const ROW_STATUS: &str = "CASE WHEN r.status = 'pending'
     AND (SELECT state FROM invitations WHERE id = r.invitation_id) = 'sending'
     THEN 'sending' ELSE r.status END";

/// SQLite's page cache, in KiB.
const CACHE_KIB: i64 = 32 * 1024;
/// How long a statement waits for another connection's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL pages between automatic checkpoints when no run is writing (4 KiB pages: 16 MiB).
const CHECKPOINT_PAGES: i64 = 4096;
/// The size a WAL file is cut back to when it starts over: it never stays bigger.
const WAL_KEEP_BYTES: i64 = 16 * 1024 * 1024;

/// Errors of the ledger. Each says which file, so a person knows where to look.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another bbinvite holds the ledger.
    #[error("the ledger {path} is in use by another bbinvite ({holder}); wait for it to finish")]
    Busy { path: PathBuf, holder: String },
    /// The file could not be created, opened or locked.
    #[error("cannot open the ledger {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A reading command named a ledger that is not there.
    #[error("no ledger at {path}; run `bbinvite run FILE` first, or name one with --ledger")]
    Missing { path: PathBuf },
    /// The rows kept aside for `--results` could not be written or read back.
    #[error("cannot keep the rows for the results in a temporary file: {0}")]
    Spool(std::io::Error),
    /// The ledger's folder does not exist.
    #[error(
        "cannot create the ledger {path}: its folder does not exist; create the folder or choose another --ledger"
    )]
    NoFolder { path: PathBuf },
    /// A write failed during a run (a full disk, an I/O error): the run stops.
    #[error("the ledger {path} could not be written ({reason})")]
    Unwritable { path: PathBuf, reason: String },
    /// The file at the ledger's path is no longer the one the run opened.
    #[error("the ledger {path} was deleted or replaced while this run was writing it")]
    Gone { path: PathBuf },
    /// SQLite refused something.
    #[error("ledger {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// Writing what was read from the ledger failed (export, results).
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    /// The ledger belongs to another API.
    #[error(
        "the ledger {path} records invitations sent to {recorded}, not {now}; customer ids of two APIs are not the same customers, so use another --ledger for {now}"
    )]
    OtherApi {
        path: PathBuf,
        recorded: String,
        now: String,
    },
    /// The file was written by a newer bbinvite.
    #[error(
        "the ledger {path} has schema version {found}, newer than this bbinvite knows ({known}); upgrade bbinvite"
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// An input row on its way into the ledger.
#[derive(Debug, Clone)]
pub struct NewRow {
    pub source: i64,
    pub line: u64,
    /// JSON array of the row's cells.
    pub cells: String,
    pub email: Option<String>,
    pub verdict: Verdict,
}

/// The columns of `invitations` that [`Existing::read`] reads, in its order.
pub(crate) const EXISTING_COLUMNS: &str =
    "state, email, name, user_id, access_status, unsure, last_error";

impl Existing {
    /// Reads [`EXISTING_COLUMNS`] starting at column `at` of a result row.
    pub(crate) fn read(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Existing> {
        Ok(Existing {
            state: read_state(r, at)?,
            email: r.get(at + 1)?,
            name: r.get(at + 2)?,
            user_id: r.get(at + 3)?,
            access_status: r.get(at + 4)?,
            unsure: r.get(at + 5)?,
            last_error: r.get(at + 6)?,
        })
    }
}

/// An invitation's state at column `at`, read without copying its text; an unknown one
/// reads as pending, so it is sent (after a look, if it may have acted).
pub(crate) fn read_state(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<State> {
    Ok(match r.get_ref(at)? {
        rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(State::parse),
        _ => None,
    }
    .unwrap_or(State::Pending))
}

/// Runs `f` in a savepoint and commits it: atomic alone, and nested in the group
/// transaction of the ledger's thread when there is one. An error rolls back whatever
/// `f` wrote, and names the ledger's file.
pub(crate) fn write_in<T>(
    conn: &mut Connection,
    path: &Path,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T> {
    let run = || {
        let sp = conn.savepoint()?;
        let out = f(&sp)?;
        sp.commit()?;
        Ok(out)
    };
    run().map_err(|source| Error::Sql {
        path: path.to_path_buf(),
        source,
    })
}
/// An open ledger.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    /// The invitations the current run's input has named so far: a second row with
    /// the same key is a duplicate. In memory (a bit per invitation id), not a write
    /// per row.
    seen: (RunId, done_keys::IdSet),
    /// The keys done when the current run started, loaded at its first batch.
    done: (RunId, done_keys::DoneKeys),
    /// Rows of the current run counted and not recorded, kept aside for `--results`.
    spool: Option<spool::Spool>,
    /// Opened by a reading command: nothing is written.
    read_only: bool,
    /// The run lock, for a ledger opened to write. Declared last: it must be released
    /// after the connection is closed (see [`LedgerLock`]).
    lock: Option<LedgerLock>,
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn time_text(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Ledger {
    /// Opens (creating with mode 0600) and migrates the ledger at `path`.
    pub fn open(path: &Path) -> Result<Ledger> {
        create_private(path).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(path).map_err(|source| Error::Sql {
            path: path.to_path_buf(),
            source,
        })?;
        Ledger::setup(conn, path.to_path_buf())
    }

    /// Locks the ledger file for this process (creating it with mode 0600), then opens
    /// and migrates it: a second writer fails at once with [`Error::Busy`].
    pub fn open_locked(path: &Path) -> Result<Ledger> {
        let lock = LedgerLock::acquire(path)?;
        let mut ledger = Ledger::open(path)?;
        ledger.lock = Some(lock);
        ledger.check_still_there()?;
        Ok(ledger)
    }

    /// Fails with [`Error::Gone`] when the ledger's path no longer names the file this
    /// run locked and writes. Always fine for a ledger opened without the lock.
    pub fn check_still_there(&self) -> Result<()> {
        match &self.lock {
            Some(lock) => lock.check_still_at(&self.path),
            None => Ok(()),
        }
    }

    /// A ledger in memory, for tests.
    pub fn open_in_memory() -> Result<Ledger> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| Error::Sql {
            path: path.clone(),
            source,
        })?;
        Ledger::setup(conn, path)
    }

    /// Opens the ledger at `path` for reading only (`status`, `export`, `customers`):
    /// no lock is taken and no file is created or written, not even a `-wal` or `-shm`,
    /// so it works while a run writes the ledger and on a file the user may only read.
    /// With no WAL beside the file (no run going, none killed) it is read as immutable;
    /// otherwise through the WAL and its index, as the run left or keeps them. A ledger
    /// of an older schema is first brought forward once, as a writing command would.
    pub fn open_read_only(path: &Path) -> Result<Ledger> {
        if !path.is_file() {
            return Err(Error::Missing {
                path: path.to_path_buf(),
            });
        }
        let mut ledger = Ledger::reader(path)?;
        let version = ledger.schema_version()?;
        if version < MIGRATIONS.len() {
            drop(ledger);
            drop(Ledger::open_locked(path)?);
            ledger = Ledger::reader(path)?;
        } else if version > MIGRATIONS.len() {
            return Err(Error::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        Ok(ledger)
    }

    /// A read-only connection to `path`, see [`Ledger::open_read_only`].
    fn reader(path: &Path) -> Result<Ledger> {
        use rusqlite::OpenFlags;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let immutable = !Path::new(&wal).exists();
        let uri = format!(
            "file:{}?mode=ro{}",
            uri_path(path),
            if immutable { "&immutable=1" } else { "" }
        );
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let sql_err = |source| Error::Sql {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(&uri, flags).map_err(sql_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_err)?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .map_err(sql_err)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(sql_err)?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
            seen: (0, done_keys::IdSet::default()),
            done: (0, done_keys::DoneKeys::default()),
            spool: None,
            read_only: true,
            lock: None,
        })
    }

    fn schema_version(&mut self) -> Result<usize> {
        self.sql(|c| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)))
            .map(|v| v as usize)
    }

    fn setup(conn: Connection, path: PathBuf) -> Result<Ledger> {
        let mut ledger = Ledger {
            conn,
            path,
            seen: (0, done_keys::IdSet::default()),
            done: (0, done_keys::DoneKeys::default()),
            spool: None,
            read_only: false,
            lock: None,
        };
        ledger.sql(|c| {
            c.busy_timeout(BUSY_TIMEOUT)?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "NORMAL")?;
            // A bigger page cache and fewer, larger checkpoints: a run touches the
            // invitation index all over, and each checkpoint ends in an fsync.
            c.pragma_update(None, "cache_size", -CACHE_KIB)?;
            c.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
            c.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
            // Savepoints inside a group keep their undo pages here, not in temp files.
            c.pragma_update(None, "temp_store", "MEMORY")?;
            c.pragma_update(None, "foreign_keys", "ON")?;
            Ok(())
        })?;
        ledger.migrate()?;
        Ok(ledger)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a savepoint of its own, see [`write_in`].
    pub(crate) fn write<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        write_in(&mut self.conn, &self.path, f)
    }

    fn sql<T>(&mut self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        f(&mut self.conn).map_err(|source| Error::Sql {
            path: self.path.clone(),
            source,
        })
    }

    fn migrate(&mut self) -> Result<()> {
        let version = self.schema_version()?;
        if version > MIGRATIONS.len() {
            return Err(Error::TooNew {
                path: self.path.clone(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        if version == MIGRATIONS.len() {
            return Ok(());
        }
        // Every step in one transaction: one commit (one sync) for a new ledger, and a
        // ledger is never left between two versions.
        self.sql(|c| {
            let tx = c.transaction()?;
            for (_, sql) in &MIGRATIONS[version..] {
                tx.execute_batch(sql)?;
            }
            tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
            tx.commit()
        })
    }

    /// Opens a group transaction: the savepoints of the calls made until
    /// [`Ledger::commit_group`] become durable together, with one WAL write.
    pub fn begin_group(&mut self) -> Result<()> {
        self.sql(|c| c.execute_batch("BEGIN IMMEDIATE"))
    }

    /// Commits the group transaction.
    pub fn commit_group(&mut self) -> Result<()> {
        self.sql(|c| c.execute_batch("COMMIT"))
    }

    /// Abandons the group transaction after a failed commit.
    pub fn rollback_group(&mut self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    /// Refuses an API other than the one this ledger's invitations were sent to: keys
    /// are customer ids, and customer 42 of one account is not customer 42 of another,
    /// so mixing them would skip invitations as already done.
    pub fn check_same_api(&mut self, api: &str) -> Result<()> {
        let recorded: Option<String> = self.sql(|c| {
            c.query_row(
                "SELECT base_url FROM runs WHERE command IN ('run', 'retry', 'sync')
                 AND (EXISTS (SELECT 1 FROM rows WHERE rows.run_id = runs.id)
                      OR EXISTS (SELECT 1 FROM run_counts WHERE run_counts.run_id = runs.id))
                 ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
        })?;
        match recorded {
            Some(recorded) if recorded != api => Err(Error::OtherApi {
                path: self.path.clone(),
                recorded,
                now: api.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Starts a run and returns its id.
    pub fn begin_run(
        &mut self,
        command: &str,
        base_url: &str,
        files: &[String],
        dry_run: bool,
    ) -> Result<RunId> {
        let files = serde_json::to_string(files).unwrap_or_else(|_| "[]".into());
        self.sql(|c| {
            c.execute(
                "INSERT INTO runs (command, started_at, base_url, files, dry_run) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![command, now_text(), base_url, files, dry_run],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Closes a run with how it ended.
    pub fn finish_run(&mut self, run: RunId, outcome: &str, exit_code: i32) -> Result<()> {
        self.sql(|c| {
            c.execute(
                "UPDATE runs SET finished_at = ?2, outcome = ?3, exit_code = ?4 WHERE id = ?1",
                params![run, now_text(), outcome, exit_code],
            )
            .map(|_| ())
        })
    }

    /// Registers an input file's header for a run; rows point at it.
    pub fn add_source(&mut self, run: RunId, file: &str, columns: &[String]) -> Result<i64> {
        let columns = serde_json::to_string(columns).unwrap_or_else(|_| "[]".into());
        self.sql(|c| {
            c.execute(
                "INSERT INTO sources (run_id, file, columns) VALUES (?1, ?2, ?3)",
                params![run, file, columns],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Marks a batch `sending` in one transaction, before any of its requests leave.
    /// Only the invitations are written: a row waiting on an invitation in flight reads
    /// `sending` (as the readers of rows spell it), and its own status is next written
    /// with the outcome.
    ///
    /// Ids that follow one another (as a first run admits and marks them) are marked by
    /// range, one statement for each run of them.
    pub fn mark_sending(&mut self, invitation_ids: &[i64]) -> Result<()> {
        let now = now_text();
        self.write(|c| {
            let mut inv = c.prepare_cached(MARK_SENDING)?;
            for (first, last) in consecutive(invitation_ids) {
                inv.execute(params![first, last, now])?;
            }
            Ok(())
        })
    }

    /// Records a batch of outcomes, their rows and their attempts, in one transaction.
    pub fn record(&mut self, run: RunId, outcomes: &[Outcome]) -> Result<()> {
        self.write(|c| record_in(c, run, outcomes))
    }

    /// [`Ledger::record`] inside the group transaction the caller opened
    /// ([`Ledger::begin_group`]) and rolls back whole on an error: no savepoint of its
    /// own, so SQLite keeps no copy of each page it changes.
    pub fn record_in_group(&mut self, run: RunId, outcomes: &[Outcome]) -> Result<()> {
        self.sql(|c| record_in(c, run, outcomes))
    }

    /// Looks a key up without changing anything.
    pub fn peek(&mut self, customer_id: i64, email: &str) -> Result<Option<Existing>> {
        let key = email_key(email);
        self.sql(|c| {
            c.prepare_cached(&format!(
                "SELECT {EXISTING_COLUMNS} FROM invitations WHERE customer_id = ?1 AND email_key = ?2"
            ))?
            .query_row(params![customer_id, key], |r| Existing::read(r, 0))
            .optional()
        })
    }

    /// The invitations that `retry` re-attempts (failed, pending, and `sending` left by a
    /// process that died), each re-attached to a new row of `run` that copies the latest
    /// input row that asked for it, so results and export show the input's columns.
    pub fn requeue_unfinished(&mut self, run: RunId, include_rejected: bool) -> Result<Vec<Job>> {
        let now = now_text();
        let states = if include_rejected {
            "('failed', 'pending', 'sending', 'rejected')"
        } else {
            "('failed', 'pending', 'sending')"
        };
        self.write(|c| {
            let mut select = c.prepare(&format!(
                "SELECT i.id, i.customer_id, i.email, i.name, i.user_id, i.access_status, i.state, i.unsure,
                        r.source_id, r.line, r.cells, s.file
                 FROM invitations i
                 JOIN rows r ON r.id = (
                     SELECT max(id) FROM rows
                     WHERE invitation_id = i.id AND {UNFINISHED_ROW})
                 JOIN sources s ON s.id = r.source_id
                 WHERE i.state IN {states}
                 ORDER BY i.id"
            ))?;
            let mut insert_row = c.prepare_cached(
                "INSERT INTO rows (run_id, source_id, line, cells, email, customer_id, invitation_id, status, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
            )?;
            let mut jobs = Vec::new();
            let mut found = select.query([])?;
            while let Some(r) = found.next()? {
                let (id, customer_id, email): (i64, i64, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
                let (source, line, cells): (i64, i64, String) = (r.get(8)?, r.get(9)?, r.get(10)?);
                insert_row.execute(params![run, source, line, cells, email, customer_id, id, now])?;
                let status: Option<String> = r.get(5)?;
                let sending = r.get::<_, String>(6)? == "sending";
                jobs.push(Job {
                    invitation_id: id,
                    row_id: c.last_insert_rowid(),
                    customer_id,
                    user: NewAccessUser {
                        email,
                        name: r.get(3)?,
                        id: r.get(4)?,
                        status: status.as_deref().and_then(AccessStatus::parse_loose),
                    },
                    check_first: r.get::<_, bool>(7)? || sending,
                    origin: format!("{}:{line}", r.get::<_, String>(11)?),
                });
            }
            Ok(jobs)
        })
    }

    /// The cached customer directory for `base_url`, if younger than `ttl`.
    pub fn cached_customers(
        &mut self,
        base_url: &str,
        ttl: Duration,
    ) -> Result<Option<Vec<Customer>>> {
        let fetched: Option<i64> = self.sql(|c| {
            c.query_row(
                "SELECT fetched_unix FROM customer_fetches WHERE base_url = ?1",
                [base_url],
                |r| r.get(0),
            )
            .optional()
        })?;
        let Some(fetched) = fetched else {
            return Ok(None);
        };
        if unix_now().saturating_sub(fetched) > ttl.as_secs() as i64 {
            return Ok(None);
        }
        self.sql(|c| {
            let mut stmt = c.prepare(
                "SELECT id, name, reference, status FROM customers WHERE base_url = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([base_url], |r| {
                Ok(Customer {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    reference: r.get(2)?,
                    email: None,
                    kind: None,
                    status: CustomerStatus::parse(&r.get::<_, String>(3)?),
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map(Some)
        })
    }

    /// Replaces the cached directory for `base_url`. A ledger opened read-only keeps
    /// no copy: nothing is written, and the directory is fetched again next time.
    pub fn store_customers(&mut self, base_url: &str, customers: &[Customer]) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.write(|c| {
            c.execute("DELETE FROM customers WHERE base_url = ?1", [base_url])?;
            let mut insert = c.prepare(
                "INSERT OR REPLACE INTO customers (base_url, id, name, reference, status) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for cu in customers {
                insert.execute(params![base_url, cu.id, cu.name, cu.reference, cu.status.as_str()])?;
            }
            c.execute(
                "INSERT OR REPLACE INTO customer_fetches (base_url, fetched_at, fetched_unix) VALUES (?1, ?2, ?3)",
                params![base_url, now_text(), unix_now()],
            )?;
            Ok(())
        })
    }
}

/// `ids` as runs of consecutive ids, `(first, last)` each, in the order given: every id
/// in a run is in `ids`, and every id of `ids` is in a run.
fn consecutive(ids: &[i64]) -> impl Iterator<Item = (i64, i64)> + '_ {
    let mut rest = ids;
    std::iter::from_fn(move || {
        let (&first, tail) = rest.split_first()?;
        let mut last = first;
        let mut len = 0;
        while tail
            .get(len)
            .is_some_and(|&id| last.checked_add(1) == Some(id))
        {
            last += 1;
            len += 1;
        }
        rest = &tail[len..];
        Some((first, last))
    })
}

/// Marks the invitations with ids `?1..=?2` `sending` at `?3`.
const MARK_SENDING: &str =
    "UPDATE invitations SET state = 'sending', updated_at = ?3 WHERE id BETWEEN ?1 AND ?2";

/// An invitation's outcome: its state, what the answer said, and when it became done.
const INVITATION_OUTCOME: &str =
    "UPDATE invitations SET state = ?2, access_user_id = COALESCE(?3, access_user_id),
            attempts = attempts + ?4, last_http = COALESCE(?5, last_http), last_error = ?6,
            unsure = ?7, updated_at = ?8,
            done_at = CASE WHEN ?2 IN ('invited', 'exists') THEN ?8 ELSE done_at END,
            invited_run = CASE WHEN ?2 = 'invited' THEN ?9 ELSE invited_run END
     WHERE id = ?1";

/// A row's outcome: its status and error.
const ROW_OUTCOME: &str = "UPDATE rows SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1";

/// Writes outcomes, their rows and their attempts, in whatever transaction is open.
fn record_in(c: &Connection, run: RunId, outcomes: &[Outcome]) -> rusqlite::Result<()> {
    let now = now_text();
    let mut inv = c.prepare_cached(INVITATION_OUTCOME)?;
    let mut row = c.prepare_cached(ROW_OUTCOME)?;
    let mut attempt = c.prepare_cached(
        "INSERT INTO attempts (invitation_id, run_id, at, action, http_status, latency_ms, class, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for o in outcomes {
        let invites = o.attempts.iter().filter(|a| a.action == "invite").count() as i64;
        let state = o.state.as_str();
        inv.execute(params![
            o.invitation_id,
            state,
            o.access_user_id,
            invites,
            o.http_status,
            o.error,
            o.unsure,
            now,
            run
        ])?;
        row.execute(params![
            o.row_id,
            RowStatus::from_state(o.state).as_str(),
            o.error,
            now
        ])?;
        for a in &o.attempts {
            let latency = a.latency.as_millis() as i64;
            attempt.execute(params![
                o.invitation_id,
                run,
                time_text(a.at),
                a.action,
                a.http_status,
                latency,
                a.class,
                a.error
            ])?;
        }
    }
    Ok(())
}

/// A path as the path of an SQLite `file:` URI: the characters a URI gives a meaning
/// to are escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for ch in path.to_string_lossy().chars() {
        match ch {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// Creates the ledger file readable by its owner only; it holds names and e-mails.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::{Admission, AdmitOptions, Outcome};

    fn user(email: &str, name: &str) -> NewAccessUser {
        NewAccessUser {
            email: email.into(),
            name: name.into(),
            id: None,
            status: None,
        }
    }

    pub(super) fn invite_row(source: i64, line: u64, customer_id: i64, email: &str) -> NewRow {
        NewRow {
            source,
            line,
            cells: format!("[\"{email}\"]"),
            email: Some(email.into()),
            verdict: Verdict::invite_of(customer_id, email, None),
        }
    }

    /// The invitations of `jobs`, as [`Ledger::mark_sending`] takes them.
    pub(super) fn ids(jobs: &[Job]) -> Vec<i64> {
        jobs.iter().map(|j| j.invitation_id).collect()
    }

    pub(super) fn jobs(adm: &[Admission]) -> Vec<Job> {
        adm.iter()
            .filter_map(|a| match a {
                Admission::Send(j) => Some(j.clone()),
                Admission::Settled { .. } => None,
            })
            .collect()
    }

    /// Each job ended in `state`, with no attempt recorded.
    pub(super) fn outcomes(jobs: &[Job], state: State) -> Vec<Outcome> {
        jobs.iter().map(|j| answered(j, state, None)).collect()
    }

    /// `job` ended in `state` after one request of the run (`action`), or after none.
    pub(super) fn answered(job: &Job, state: State, action: Option<&'static str>) -> Outcome {
        Outcome {
            invitation_id: job.invitation_id,
            row_id: job.row_id,
            state,
            access_user_id: Some(7),
            error: None,
            http_status: Some(201),
            unsure: false,
            attempts: action
                .map(|action| crate::domain::Attempt {
                    at: SystemTime::now(),
                    action,
                    http_status: Some(201),
                    latency: Duration::from_millis(3),
                    class: "ok",
                    error: None,
                })
                .into_iter()
                .collect(),
        }
    }

    fn settle(l: &mut Ledger, run: RunId, jobs: &[Job], state: State) {
        l.record(run, &outcomes(jobs, state)).unwrap();
    }

    #[test]
    fn migrations_apply_once_and_set_the_version() {
        let mut l = Ledger::open_in_memory().unwrap();
        l.migrate().unwrap();
        let v: i64 = l
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
    }

    /// The opcodes of `sql`'s program.
    fn opcodes(l: &Ledger, sql: &str) -> Vec<String> {
        let mut stmt = l.conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
        stmt.query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(1))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn writing_a_row_builds_no_lookup_table() {
        let l = Ledger::open_in_memory().unwrap();
        for sql in [
            ROW_OUTCOME,
            "INSERT INTO rows (run_id, source_id, line, cells, email, customer_id, invitation_id, status, error, updated_at, seen_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        ] {
            let ops = opcodes(&l, sql);
            assert!(!ops.iter().any(|op| op == "OpenEphemeral"), "{sql}: {ops:?}");
        }
    }

    /// A ledger in memory with a run that admitted `n` invitations (u0@x.io, u1@x.io, …)
    /// to send.
    fn admitted(n: u64) -> (Ledger, RunId, Vec<Job>) {
        let mut l = Ledger::open_in_memory().unwrap();
        let run = l.begin_run("run", "http://x", &[], false).unwrap();
        let src = l.add_source(run, "a.csv", &["email".into()]).unwrap();
        let rows: Vec<NewRow> = (0..n)
            .map(|i| invite_row(src, i + 2, 1, &format!("u{i}@x.io")))
            .collect();
        let js = jobs(&l.admit(run, &rows, AdmitOptions::default()).unwrap());
        (l, run, js)
    }

    proptest::proptest! {
        #[test]
        fn runs_of_consecutive_ids_give_back_every_id_in_order(
            ids in proptest::collection::vec(-3i64..40, 0..60),
        ) {
            let expanded: Vec<i64> = consecutive(&ids).flat_map(|(a, b)| a..=b).collect();
            proptest::prop_assert_eq!(expanded, ids);
        }
    }

    #[test]
    fn ids_that_follow_one_another_are_marked_by_range() {
        assert_eq!(
            consecutive(&[7, 8, 9, 3, 4, 4, 12]).collect::<Vec<_>>(),
            [(7, 9), (3, 4), (4, 4), (12, 12)]
        );
        assert_eq!(
            consecutive(&[i64::MAX - 1, i64::MAX, 1]).collect::<Vec<_>>(),
            [(i64::MAX - 1, i64::MAX), (1, 1)]
        );
    }

    #[test]
    fn a_mark_by_range_marks_the_ids_given_and_no_other() {
        let (mut l, _, js) = admitted(7);
        let ids = ids(&js);
        // Two runs and a lone id, out of order; ids[2] and ids[5] are left between them.
        l.mark_sending(&[ids[3], ids[4], ids[0], ids[1], ids[6]])
            .unwrap();
        let sending: Vec<i64> = l
            .conn
            .prepare("SELECT id FROM invitations WHERE state = 'sending' ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(sending, [ids[0], ids[1], ids[3], ids[4], ids[6]]);
    }

    #[test]
    fn a_change_of_state_moves_no_index_entry_keyed_by_state() {
        let l = Ledger::open_in_memory().unwrap();
        let index_writes = |sql: &str| {
            let ops = opcodes(&l, sql);
            let n = |name: &str| ops.iter().filter(|op| *op == name).count();
            (n("IdxDelete"), n("IdxInsert"))
        };
        // The mark rewrites the invitation's record alone.
        assert_eq!(index_writes(MARK_SENDING), (0, 0));
        // An outcome rewrites the invitation's record and the row's, and moves no index
        // entry: no index is keyed by a state or a status, or kept for some states alone.
        for sql in [INVITATION_OUTCOME, ROW_OUTCOME] {
            assert_eq!(index_writes(sql), (0, 0), "{sql}");
        }
        let keyed: i64 = l
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master m, pragma_index_info(m.name) i
                 WHERE m.type = 'index' AND m.tbl_name IN ('invitations', 'rows')
                   AND i.name IN ('state', 'status')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(keyed, 0);
    }

    #[test]
    fn the_whole_ledger_is_counted_by_state_with_its_commonest_errors() {
        let (mut l, run, js) = admitted(8);
        let ends = [
            (State::Invited, None),
            (State::Invited, None),
            (State::Exists, None),
            (State::Failed, Some("timeout")),
            (State::Failed, Some("timeout")),
            (State::Failed, Some("HTTP 503")),
            (State::Rejected, Some("HTTP 422: bad e-mail")),
        ];
        let outcomes: Vec<Outcome> = js
            .iter()
            .zip(ends)
            .map(|(job, (state, error))| Outcome {
                error: error.map(String::from),
                ..answered(job, state, Some("invite"))
            })
            .collect();
        l.record(run, &outcomes).unwrap();
        let whole = l.status_counts(Some(run)).unwrap();
        let counted = |pairs: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
            pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        assert_eq!(
            whole.ledger,
            counted(&[
                ("exists", 1),
                ("failed", 3),
                ("invited", 2),
                ("pending", 1),
                ("rejected", 1)
            ])
        );
        assert_eq!(
            whole.ledger_errors,
            [
                ("timeout".to_string(), 2),
                ("HTTP 422: bad e-mail".to_string(), 1),
                ("HTTP 503".to_string(), 1)
            ]
        );
        // The end of a run counts its own rows alike, and reads no more.
        let own = l.run_status_counts(run).unwrap();
        assert_eq!(own.rows, whole.rows);
        assert_eq!(own.rows.values().sum::<u64>(), 8);
        assert!(own.ledger.is_empty() && own.ledger_errors.is_empty());
        // Its rows' commonest errors, counted in the same pass: here, its invitations'.
        assert_eq!(own.top_errors, whole.ledger_errors);
        assert_eq!(own.top_errors, whole.top_errors);
    }

    #[test]
    fn a_marked_row_reads_sending_though_the_mark_writes_its_invitation_alone() {
        let mut l = Ledger::open_in_memory().unwrap();
        let run = l.begin_run("run", "http://x", &[], false).unwrap();
        let src = l.add_source(run, "a.csv", &["email".into()]).unwrap();
        let rows = [
            invite_row(src, 2, 1, "a@x.io"),
            invite_row(src, 3, 1, "b@x.io"),
        ];
        let js = jobs(&l.admit(run, &rows, AdmitOptions::default()).unwrap());
        l.mark_sending(&ids(&js[..1])).unwrap();
        assert_eq!(
            count(&l, "SELECT count(*) FROM rows WHERE status = 'pending'"),
            2,
            "the mark writes no row"
        );
        let read = |l: &mut Ledger| {
            let counts = l.status_counts(Some(run)).unwrap().rows;
            let mut exported = Vec::new();
            l.export(Some(run), &[], &mut |_| Ok(()), &mut |r| {
                exported.push(r.status);
                Ok(())
            })
            .unwrap();
            let mut visited = Vec::new();
            l.each_row(run, &mut |_, s, _| visited.push(s.to_string()))
                .unwrap();
            assert_eq!(exported, visited);
            (counts, exported)
        };
        let (counts, exported) = read(&mut l);
        assert_eq!(
            (counts.get("sending"), counts.get("pending")),
            (Some(&1), Some(&1))
        );
        assert_eq!(exported, ["sending", "pending"]);
        settle(&mut l, run, &js[..1], State::Invited);
        let (counts, exported) = read(&mut l);
        assert_eq!(
            (counts.get("invited"), counts.get("sending")),
            (Some(&1), None)
        );
        assert_eq!(exported, ["invited", "pending"]);
    }

    #[test]
    fn retry_finds_unfinished_rows_through_their_index() {
        let l = Ledger::open_in_memory().unwrap();
        let plan: Vec<String> = l
            .conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT max(id) FROM rows WHERE invitation_id = ?1 AND {UNFINISHED_ROW}"
            ))
            .unwrap()
            .query_map([rusqlite::types::Null], |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(
            plan.iter().any(|p| p.contains("rows_invitation")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_key_is_sent_once_across_runs_and_case() {
        let mut l = Ledger::open_in_memory().unwrap();
        let run = l.begin_run("run", "http://x", &[], false).unwrap();
        let src = l.add_source(run, "a.csv", &["email".into()]).unwrap();
        let adm = l
            .admit(
                run,
                &[
                    invite_row(src, 2, 1, "A@x.io"),
                    invite_row(src, 3, 1, "a@X.io "),
                    invite_row(src, 4, 2, "a@x.io"),
                ],
                AdmitOptions::default(),
            )
            .unwrap();
        let js = jobs(&adm);
        assert_eq!(js.len(), 2, "same key twice in one input is a duplicate");
        assert!(matches!(
            adm[1],
            Admission::Settled {
                status: RowStatus::Duplicate,
                ..
            }
        ));
        l.mark_sending(&ids(&js)).unwrap();
        settle(&mut l, run, &js, State::Invited);

        let run2 = l.begin_run("run", "http://x", &[], false).unwrap();
        let adm = l
            .admit(
                run2,
                &[invite_row(src, 2, 1, "a@x.io")],
                AdmitOptions::default(),
            )
            .unwrap();
        assert!(matches!(
            adm[0],
            Admission::Settled {
                status: RowStatus::Invited,
                ..
            }
        ));
    }

    #[test]
    fn failed_and_sending_are_sent_again_sending_checked_first() {
        let mut l = Ledger::open_in_memory().unwrap();
        let run = l.begin_run("run", "http://x", &[], false).unwrap();
        let src = l.add_source(run, "a.csv", &["email".into()]).unwrap();
        let adm = l
            .admit(
                run,
                &[
                    invite_row(src, 2, 1, "a@x.io"),
                    invite_row(src, 3, 1, "b@x.io"),
                ],
                AdmitOptions::default(),
            )
            .unwrap();
        let js = jobs(&adm);
        l.mark_sending(&ids(&js)).unwrap();
        settle(&mut l, run, &js[..1], State::Failed);
        // b stays `sending`: the process died mid-call.
        let run2 = l.begin_run("run", "http://x", &[], false).unwrap();
        let adm = l
            .admit(
                run2,
                &[
                    invite_row(src, 2, 1, "a@x.io"),
                    invite_row(src, 3, 1, "b@x.io"),
                ],
                AdmitOptions::default(),
            )
            .unwrap();
        let js = jobs(&adm);
        assert_eq!(js.len(), 2);
        assert!(!js[0].check_first);
        assert!(js[1].check_first);
    }

    #[test]
    fn rejected_is_resent_only_when_changed_or_asked() {
        let mut l = Ledger::open_in_memory().unwrap();
        let run = l.begin_run("run", "http://x", &[], false).unwrap();
        let src = l.add_source(run, "a.csv", &["email".into()]).unwrap();
        let js = jobs(
            &l.admit(
                run,
                &[invite_row(src, 2, 1, "a@x.io")],
                AdmitOptions::default(),
            )
            .unwrap(),
        );
        settle(&mut l, run, &js, State::Rejected);

        let run2 = l.begin_run("run", "http://x", &[], false).unwrap();
        let adm = l
            .admit(
                run2,
                &[invite_row(src, 2, 1, "a@x.io")],
                AdmitOptions::default(),
            )
            .unwrap();
        assert!(matches!(
            adm[0],
            Admission::Settled {
                status: RowStatus::Rejected,
                ..
            }
        ));

        let run3 = l.begin_run("run", "http://x", &[], false).unwrap();
        let mut changed = invite_row(src, 2, 1, "a@x.io");
        changed.verdict = Verdict::Invite {
            customer_id: 1,
            user: user("a@x.io", "Fixed Name"),
        };
        assert_eq!(
            jobs(&l.admit(run3, &[changed], AdmitOptions::default()).unwrap()).len(),
            1
        );

        let run4 = l.begin_run("run", "http://x", &[], false).unwrap();
        let js = jobs(
            &l.admit(
                run4,
                &[invite_row(src, 2, 1, "a@x.io")],
                AdmitOptions::default(),
            )
            .unwrap(),
        );
        // still pending from run3 (never settled): sent again.
        assert_eq!(js.len(), 1);
        settle(&mut l, run4, &js, State::Rejected);
        let run5 = l.begin_run("run", "http://x", &[], false).unwrap();
        let adm = l
            .admit(
                run5,
                &[invite_row(src, 2, 1, "a@x.io")],
                AdmitOptions {
                    retry_rejected: true,
                },
            )
            .unwrap();
        assert_eq!(jobs(&adm).len(), 1);
    }

    #[test]
    fn retry_requeues_unfinished_with_their_rows() {
        let mut l = Ledger::open_in_memory().unwrap();
        let run = l.begin_run("run", "http://x", &[], false).unwrap();
        let src = l.add_source(run, "a.csv", &["email".into()]).unwrap();
        let adm = l
            .admit(
                run,
                &[
                    invite_row(src, 2, 1, "a@x.io"),
                    invite_row(src, 3, 1, "b@x.io"),
                    invite_row(src, 4, 1, "c@x.io"),
                ],
                AdmitOptions::default(),
            )
            .unwrap();
        let js = jobs(&adm);
        settle(&mut l, run, &js[..1], State::Invited);
        settle(&mut l, run, &js[1..2], State::Failed);
        l.mark_sending(&ids(&js[2..])).unwrap();
        let run2 = l.begin_run("retry", "http://x", &[], false).unwrap();
        let again = l.requeue_unfinished(run2, false).unwrap();
        let emails: Vec<_> = again.iter().map(|j| j.user.email.as_str()).collect();
        assert_eq!(emails, ["b@x.io", "c@x.io"]);
        assert!(again[1].check_first);
    }

    #[test]
    fn customer_cache_respects_ttl() {
        let mut l = Ledger::open_in_memory().unwrap();
        assert!(
            l.cached_customers("u", Duration::from_secs(60))
                .unwrap()
                .is_none()
        );
        let c = Customer {
            id: 1,
            name: "A".into(),
            reference: Some("R".into()),
            email: None,
            kind: None,
            status: CustomerStatus::Suspended,
        };
        l.store_customers("u", std::slice::from_ref(&c)).unwrap();
        assert_eq!(
            l.cached_customers("u", Duration::from_secs(60)).unwrap(),
            Some(vec![c])
        );
        assert!(
            l.cached_customers("other", Duration::from_secs(60))
                .unwrap()
                .is_none()
        );
    }

    fn count(l: &Ledger, sql: &str) -> i64 {
        l.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Runs `rows` as a night: admitted, and whatever is sent comes back invited.
    fn night(l: &mut Ledger, rows: &[(u64, &str)], keep: bool) -> (RunId, Vec<Admission>) {
        let run = l.begin_run("run", "http://x", &[], false).unwrap();
        if keep {
            l.keep_counted_rows(run).unwrap();
        }
        let src = l.add_source(run, "a.csv", &["email".into()]).unwrap();
        let batch: Vec<NewRow> = rows
            .iter()
            .map(|(line, email)| invite_row(src, *line, 1, email))
            .collect();
        let adm = l.admit(run, &batch, AdmitOptions::default()).unwrap();
        let js = jobs(&adm);
        l.mark_sending(&ids(&js)).unwrap();
        settle(l, run, &js, State::Invited);
        (run, adm)
    }

    #[test]
    fn a_done_key_with_unchanged_cells_is_counted_not_recorded() {
        let mut l = Ledger::open_in_memory().unwrap();
        let rows = [(2, "a@x.io"), (3, "b@x.io"), (4, "c@x.io")];
        night(&mut l, &rows, false);
        let recorded = count(&l, "SELECT count(*) FROM rows");
        let (run2, adm) = night(&mut l, &rows, false);
        assert!(adm.iter().all(|a| matches!(
            a,
            Admission::Settled {
                row_id: 0,
                status: RowStatus::Invited
            }
        )));
        assert_eq!(count(&l, "SELECT count(*) FROM rows"), recorded);
        assert_eq!(
            l.status_counts(Some(run2)).unwrap().rows.get("invited"),
            Some(&3)
        );
        assert_eq!(l.status_counts(None).unwrap().run.unwrap().id, run2);

        // A changed row of a done key is recorded once, then counted again.
        let mut changed = invite_row(1, 3, 1, "b@x.io");
        changed.cells = "[\"b@x.io\",\"new\"]".into();
        let run3 = l.begin_run("run", "http://x", &[], false).unwrap();
        let adm = l
            .admit(run3, &[changed.clone()], AdmitOptions::default())
            .unwrap();
        assert!(matches!(adm[0], Admission::Settled { row_id, .. } if row_id > 0));
        let run4 = l.begin_run("run", "http://x", &[], false).unwrap();
        let adm = l.admit(run4, &[changed], AdmitOptions::default()).unwrap();
        assert!(matches!(adm[0], Admission::Settled { row_id: 0, .. }));
    }

    #[test]
    fn the_export_of_a_run_gives_back_its_counted_rows_in_input_order() {
        let mut l = Ledger::open_in_memory().unwrap();
        night(&mut l, &[(2, "a@x.io"), (4, "c@x.io")], false);
        let (run, _) = night(&mut l, &[(2, "a@x.io"), (3, "b@x.io"), (4, "c@x.io")], true);
        let mut got = Vec::new();
        l.export(Some(run), &[], &mut |_| Ok(()), &mut |r| {
            got.push((r.line, r.status, r.cells.join("|")));
            Ok(())
        })
        .unwrap();
        let lines: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(lines, [2, 3, 4], "{got:?}");
        assert!(got.iter().all(|g| g.1 == "invited"), "{got:?}");
        assert_eq!(got[0].2, "a@x.io");
    }

    #[test]
    fn compact_keeps_every_state_each_runs_counts_and_the_rows_retry_needs() {
        let mut l = Ledger::open_in_memory().unwrap();
        let (run1, adm) = night(&mut l, &[(2, "a@x.io"), (3, "b@x.io")], false);
        let js = jobs(&adm);
        // b failed afterwards: its row must stay for `retry`.
        settle(&mut l, run1, &js[1..], State::Failed);
        let before = l.status_counts(Some(run1)).unwrap();
        l.conn
            .execute(
                "UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z'",
                [],
            )
            .unwrap();
        let done = l.compact(Duration::from_secs(90 * 24 * 3600)).unwrap();
        assert_eq!(done.rows_removed, 1);
        assert_eq!(count(&l, "SELECT count(*) FROM attempts"), 0);
        let after = l.status_counts(Some(run1)).unwrap();
        assert_eq!(before.rows, after.rows);
        assert_eq!(before.ledger, after.ledger);
        let run2 = l.begin_run("retry", "http://x", &[], false).unwrap();
        let again = l.requeue_unfinished(run2, false).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].user.email, "b@x.io");
    }

    #[test]
    fn a_compacted_run_still_reports_what_it_sent_and_what_was_done_before() {
        let mut l = Ledger::open_in_memory().unwrap();
        let run1 = l.begin_run("run", "http://x", &[], false).unwrap();
        let src = l.add_source(run1, "a.csv", &["email".into()]).unwrap();
        let rows = [
            invite_row(src, 2, 1, "a@x.io"),
            invite_row(src, 3, 1, "b@x.io"),
        ];
        let js = jobs(&l.admit(run1, &rows, AdmitOptions::default()).unwrap());
        l.mark_sending(&ids(&js)).unwrap();
        let sent: Vec<Outcome> = js
            .iter()
            .map(|j| answered(j, State::Invited, Some("invite")))
            .collect();
        l.record(run1, &sent).unwrap();
        let (run2, _) = night(&mut l, &[(2, "a@x.io")], false);
        let before = (
            l.run_account(run1).unwrap().tallies,
            l.run_account(run2).unwrap().tallies,
        );
        assert_eq!((before.0.sent, before.0.already_done), (2, 0));
        assert_eq!(before.1.already_done, 1);
        l.conn
            .execute(
                "UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z'",
                [],
            )
            .unwrap();
        let done = l.compact(Duration::from_secs(90 * 24 * 3600)).unwrap();
        assert_eq!(count(&l, "SELECT count(*) FROM attempts"), 0);
        assert_eq!(done.rows_removed, 2, "{done:?}");
        let after = (
            l.run_account(run1).unwrap().tallies,
            l.run_account(run2).unwrap().tallies,
        );
        assert_eq!(before, after);
        l.compact(Duration::from_secs(90 * 24 * 3600)).unwrap();
        assert_eq!(
            l.run_account(run1).unwrap().tallies,
            before.0,
            "a second compact keeps them"
        );
    }

    #[test]
    fn a_bad_row_seen_night_after_night_is_stored_once_and_counted_each_night() {
        let mut l = Ledger::open_in_memory().unwrap();
        let bad = |src, line| NewRow {
            source: src,
            line,
            cells: "[\"not-an-email\"]".into(),
            email: None,
            verdict: Verdict::Invalid("no @".into()),
        };
        let mut runs = Vec::new();
        for line in [2, 2, 2, 3] {
            let run = l.begin_run("run", "http://x", &[], false).unwrap();
            let src = l.add_source(run, "a.csv", &["email".into()]).unwrap();
            l.admit(run, &[bad(src, line)], AdmitOptions::default())
                .unwrap();
            runs.push(run);
        }
        // Nights 1-3 share one record; night 4 saw it on another line: a record of its own.
        assert_eq!(count(&l, "SELECT count(*) FROM rows"), 2);
        for run in runs {
            let counts = l.status_counts(Some(run)).unwrap();
            assert_eq!(counts.rows.get("invalid"), Some(&1), "run {run}");
        }
    }
}
