//! Retention: `compact` drops the per-row records and attempts of old runs, keeping
//! every invitation's and action's current state and every run's summary, then gives
//! the space back to the file system.
//!
//! A row record survives while its invitation is unfinished (`retry` re-sends from the
//! latest one) ; a removed run's counts per status move to `run_counts`, so `status
//! --run N` still adds up. SQL only; the caller holds the run lock.

use std::time::{Duration, SystemTime};

use rusqlite::{Connection, params};
use serde::Serialize;

use super::report_data::TALLIES;
use super::{Ledger, Result, time_text};
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
        self.sql(vacuum)?;
        let oldest_kept_run =
            self.sql(|c| c.query_row("SELECT min(run_id) FROM rows", [], |r| r.get(0)))?;
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

/// Rewrites the file without its free pages. Out of WAL mode while it does, when no
/// reader holds the WAL: the copy is then written once, not to the WAL and again to the
/// file; a reader keeps WAL mode and only costs the second write.
fn vacuum(c: &mut Connection) -> rusqlite::Result<()> {
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let mode: String = c.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
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
