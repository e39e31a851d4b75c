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
        let (runs, rows_removed, attempts_removed) = self.write(|c| drop_old(c, &cutoff))?;
        self.sql(|c| {
            c.execute_batch("VACUUM")?;
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        })?;
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

/// Moves the old runs' counts to `run_counts`, then removes their removable rows, their
/// attempts and the sources no row points at any more.
fn drop_old(c: &Connection, cutoff: &str) -> rusqlite::Result<(u64, u64, u64)> {
    let runs: i64 = c.query_row(
        &format!("SELECT count(*) FROM ({OLD_RUNS})"),
        [cutoff],
        |r| r.get(0),
    )?;
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
