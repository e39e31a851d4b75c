//! Retention: `compact` drops the per-row records and attempts of old runs, keeping
//! every invitation's and action's current state and every run's summary, then gives
//! the space back to the file system.
//!
//! A row record survives while its invitation is unfinished (`retry` re-sends from the
//! latest one) ; a removed run's counts per status move to `run_counts`, so `status
//! --run N` still adds up. SQL only; the caller holds the run lock.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, params};
use serde::Serialize;

use super::report_data::TALLIES;
use super::{Error, Ledger, LedgerLock, Result, create_private, time_text};
use crate::domain::RunId;

/// What `compact` did.
#[derive(Debug, Clone, Serialize)]
pub struct Compacted {
    /// Runs started before this time had their row records and attempts removed.
    pub older_than: String,
    /// Runs whose records were looked at.
    pub runs: u64,
    pub rows_removed: u64,
    pub attempts_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The oldest run whose row records are still kept.
    pub oldest_kept_run: Option<RunId>,
}

/// The runs whose records go.
const OLD_RUNS: &str = "SELECT id FROM runs WHERE started_at < ?1";
/// A row that may go: its invitation, if any, is done (a failed, pending or rejected
/// one keeps its rows, since `retry` re-sends from the latest).
const REMOVABLE: &str = "(invitation_id IS NULL OR invitation_id NOT IN
     (SELECT id FROM invitations WHERE state NOT IN ('invited', 'exists')))";

impl Ledger {
    /// Removes the row records and attempts of runs started more than `older_than`
    /// ago, then vacuums the file so it shrinks.
    pub fn compact(&mut self, older_than: Duration) -> Result<Compacted> {
        let cutoff = time_text(
            SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let bytes_before = self.size_on_disk();
        // No foreign key is checked row by row while old records go: every action that
        // pointed at a removed row is first made to point nowhere.
        self.sql(|c| c.pragma_update(None, "foreign_keys", false))?;
        let dropped = self.write(|c| drop_old(c, &cutoff));
        self.sql(|c| c.pragma_update(None, "foreign_keys", true))?;
        let (runs, rows_removed, attempts_removed) = dropped?;
        let oldest_kept_run =
            self.sql(|c| c.query_row("SELECT min(run_id) FROM rows", [], |r| r.get(0)))?;
        self.vacuum()?;
        Ok(Compacted {
            older_than: cutoff,
            runs,
            rows_removed,
            attempts_removed,
            bytes_before,
            bytes_after: self.size_on_disk(),
            oldest_kept_run,
        })
    }
}

impl Ledger {
    /// Gives the free pages back to the file system. Out of WAL mode first (the WAL
    /// checkpointed and gone) when no reader holds the WAL; then the ledger is copied
    /// without its free pages into a new file beside it (`VACUUM INTO`, written once),
    /// which is synced, locked and renamed over the ledger: a crash before the rename
    /// leaves the ledger as it was, one after it leaves the copy, whole. A reader
    /// keeps WAL mode, and the file is then vacuumed in place.
    fn vacuum(&mut self) -> Result<()> {
        let mode: String = self.sql(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            c.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        })?;
        let fresh = beside(&self.path, ".compacting");
        match (&self.lock, fresh.to_str()) {
            (Some(_), Some(name)) if mode.eq_ignore_ascii_case("delete") => {
                let name = name.to_string();
                let copied = self.copy_over(&fresh, &name);
                if copied.is_err() {
                    let _ = std::fs::remove_file(&fresh);
                    self.sql(|c| c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())))?;
                }
                copied
            }
            _ => self.sql(|c| vacuum_in_place(c, &mode)),
        }
    }

    /// Writes the ledger without its free pages to `fresh` (named `name`), syncs it,
    /// takes its lock and renames it over the ledger, then works on it.
    fn copy_over(&mut self, fresh: &Path, name: &str) -> Result<()> {
        let io = |source| Error::Open {
            path: fresh.to_path_buf(),
            source,
        };
        match std::fs::remove_file(fresh) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        create_private(fresh).map_err(io)?;
        self.sql(|c| c.execute("VACUUM INTO ?1", [name]))?;
        File::open(fresh).and_then(|f| f.sync_all()).map_err(io)?;
        let lock = LedgerLock::acquire(fresh)?;
        std::fs::rename(fresh, &self.path).map_err(io)?;
        let folder = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(folder).and_then(|f| f.sync_all()).map_err(io)?;
        let mut ledger = Ledger::open(&self.path)?;
        ledger.lock = Some(lock);
        *self = ledger;
        self.check_still_there()
    }
}

/// `path` with `suffix` added to its name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Rewrites the file in place without its free pages, then puts it back in WAL mode
/// (`mode` is the journal mode it is in): a reader holding the WAL costs a second
/// write, from the WAL to the file.
fn vacuum_in_place(c: &mut Connection, mode: &str) -> rusqlite::Result<()> {
    c.execute_batch("VACUUM")?;
    if mode.eq_ignore_ascii_case("wal") {
        return c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }
    c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
}

/// Keeps in `runs` what each old run sent and found already done, before the row
/// records and attempts those are counted from go; a run frozen earlier keeps its own.
fn freeze_tallies(c: &Connection, cutoff: &str) -> rusqlite::Result<()> {
    let mut tallies = c.prepare(TALLIES)?;
    let mut freeze = c.prepare("UPDATE runs SET sent = ?2, already_done = ?3 WHERE id = ?1")?;
    let runs: Vec<RunId> = c
        .prepare(&format!("{OLD_RUNS} AND sent IS NULL"))?
        .query_map([cutoff], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for run in runs {
        let (sent, done): (i64, i64) = tallies.query_row([run], |r| Ok((r.get(0)?, r.get(1)?)))?;
        freeze.execute(params![run, sent, done])?;
    }
    Ok(())
}

/// Moves the old runs' counts to `run_counts`, then removes their removable rows, their
/// attempts and the sources no row points at any more.
fn drop_old(c: &Connection, cutoff: &str) -> rusqlite::Result<(u64, u64, u64)> {
    let runs: i64 = c.query_row(
        &format!("SELECT count(*) FROM ({OLD_RUNS})"),
        [cutoff],
        |r| r.get(0),
    )?;
    freeze_tallies(c, cutoff)?;
    let old_rows = format!("FROM rows WHERE run_id IN ({OLD_RUNS}) AND {REMOVABLE}");
    c.execute(
        &format!(
            "INSERT INTO run_counts (run_id, status, n)
             SELECT run_id, status, count(*) {old_rows} GROUP BY run_id, status
             ON CONFLICT (run_id, status) DO UPDATE SET n = n + excluded.n"
        ),
        [cutoff],
    )?;
    c.execute(
        &format!("UPDATE actions SET row_id = NULL WHERE row_id IN (SELECT id {old_rows})"),
        [cutoff],
    )?;
    let rows = c.execute(&format!("DELETE {old_rows}"), [cutoff])?;
    let attempts = c.execute(
        &format!("DELETE FROM attempts WHERE run_id IN ({OLD_RUNS})"),
        [cutoff],
    )? + c.execute(
        &format!("DELETE FROM action_attempts WHERE run_id IN ({OLD_RUNS})"),
        [cutoff],
    )?;
    c.execute(
        &format!(
            "DELETE FROM sources WHERE run_id IN ({OLD_RUNS})
             AND id NOT IN (SELECT source_id FROM rows)"
        ),
        params![cutoff],
    )?;
    Ok((runs as u64, rows as u64, attempts as u64))
}
