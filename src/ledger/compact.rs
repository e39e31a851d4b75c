//! Retention: `compact` drops the per-row records and attempts of old runs, keeping
//! every invitation's and action's current state and every run's summary, and gives
//! the space back to the file system: what is kept is written into a new file that
//! replaces the ledger.
//!
//! A row record survives while its invitation is unfinished (`retry` re-sends from the
//! latest one) ; a removed run's counts per status move to `run_counts`, so `status
//! --run N` still adds up. The caller holds the run lock.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, params};
use serde::Serialize;

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
    /// ago, giving the space back to the file system.
    ///
    /// Out of WAL mode first (the WAL checkpointed and gone), the ledger is left as it
    /// is and only what is kept is written into a new file beside it, which is synced,
    /// locked and renamed over the ledger: a crash before the rename leaves the ledger
    /// as it was, one after it leaves the new file, whole. A reader holding the WAL
    /// keeps WAL mode: the records are then removed in place and the file vacuumed.
    pub fn compact(&mut self, older_than: Duration) -> Result<Compacted> {
        let cutoff = time_text(
            SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        let bytes_before = self.size_on_disk();
        let mode: String = self.sql(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            c.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        })?;
        let fresh = beside(&self.path, ".compacting");
        let (runs, rows_removed, attempts_removed) = match (&self.lock, fresh.to_str()) {
            (Some(_), Some(name)) if mode.eq_ignore_ascii_case("delete") => {
                let name = name.to_string();
                let copied = self.copy_over(&fresh, &name, &cutoff);
                if copied.is_err() {
                    let _ = std::fs::remove_file(&fresh);
                    self.sql(|c| c.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())))?;
                }
                copied?
            }
            _ => self.compact_in_place(&cutoff, &mode)?,
        };
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

    /// Removes the old records in the ledger itself, then vacuums it in place (`mode`
    /// is the journal mode it is in).
    fn compact_in_place(&mut self, cutoff: &str, mode: &str) -> Result<(u64, u64, u64)> {
        // No foreign key is checked row by row while old records go: every action that
        // pointed at a removed row is first made to point nowhere.
        self.sql(|c| c.pragma_update(None, "foreign_keys", false))?;
        let dropped = self.write(|c| drop_old(c, cutoff));
        self.sql(|c| c.pragma_update(None, "foreign_keys", true))?;
        let dropped = dropped?;
        self.sql(|c| vacuum_in_place(c, mode))?;
        Ok(dropped)
    }

    /// Writes what is kept of the ledger to `fresh` (named `name`), syncs it, takes its
    /// lock and renames it over the ledger, then works on it.
    fn copy_over(&mut self, fresh: &Path, name: &str, cutoff: &str) -> Result<(u64, u64, u64)> {
        let io = |source| Error::Open {
            path: fresh.to_path_buf(),
            source,
        };
        match std::fs::remove_file(fresh) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        create_private(fresh).map_err(io)?;
        let dropped = self.write_kept(fresh, name, cutoff)?;
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
        self.check_still_there()?;
        Ok(dropped)
    }

    /// Gives the empty file `fresh` (named `name`) the ledger's tables and indexes, fills
    /// it with the records kept, then adds any view and trigger. A table copied whole
    /// has its index pages copied as they are, in order; the indexes of the tables that
    /// lose rows are kept up as their rows go in, in id order, which measured faster than
    /// building them after. Nothing is journaled nor synced in the new file until it
    /// is whole: it is not the ledger before the rename.
    fn write_kept(&mut self, fresh: &Path, name: &str, cutoff: &str) -> Result<(u64, u64, u64)> {
        let (pragmas, schema) = self.sql(|c| read_schema(c))?;
        let fresh_err = |source| Error::Sql {
            path: fresh.to_path_buf(),
            source,
        };
        let new = Connection::open(fresh).map_err(fresh_err)?;
        let (first, rest): (Vec<_>, Vec<_>) = schema
            .into_iter()
            .partition(|e| e.kind == "table" || e.kind == "index");
        create_schema(&new, &pragmas, &first).map_err(fresh_err)?;
        self.sql(|c| {
            c.execute("ATTACH ?1 AS new", [name])?;
            c.execute_batch(
                "PRAGMA new.journal_mode = OFF; PRAGMA new.synchronous = OFF;
                 PRAGMA foreign_keys = OFF",
            )
        })?;
        let copied = self.write(|c| copy_kept(c, cutoff));
        self.sql(|c| c.execute_batch("PRAGMA foreign_keys = ON; DETACH new"))?;
        let copied = copied?;
        create_schema(&new, &[], &rest).map_err(fresh_err)?;
        new.close().map_err(|(_, e)| fresh_err(e))?;
        Ok(copied)
    }
}

/// The ledger's settings a new file must have from its start (`page_size` and
/// `auto_vacuum`) or keep (`user_version`, `application_id`), and its schema: every
/// table, index, view and trigger, in the order they were made.
type Schema = (Vec<(&'static str, i64)>, Vec<Entry>);

/// A table, index, view or trigger of the ledger.
struct Entry {
    /// `table`, `index`, `view` or `trigger`.
    kind: String,
    sql: String,
}

fn read_schema(c: &Connection) -> rusqlite::Result<Schema> {
    let mut pragmas = Vec::new();
    for name in ["page_size", "auto_vacuum", "user_version", "application_id"] {
        pragmas.push((name, c.pragma_query_value(None, name, |r| r.get(0))?));
    }
    let schema = c
        .prepare(
            "SELECT type, sql FROM main.sqlite_master
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
        )?
        .query_map([], |r| {
            Ok(Entry {
                kind: r.get(0)?,
                sql: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok((pragmas, schema))
}

/// Sets `pragmas` on `new`, then makes the schema entries `sql` in one transaction,
/// neither journaled nor synced.
fn create_schema(new: &Connection, pragmas: &[(&str, i64)], sql: &[Entry]) -> rusqlite::Result<()> {
    new.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF")?;
    new.pragma_update(None, "cache_size", -super::CACHE_KIB)?;
    new.pragma_update(None, "temp_store", "MEMORY")?;
    for (name, value) in pragmas {
        new.pragma_update(None, name, value)?;
    }
    new.execute_batch("BEGIN")?;
    for entry in sql {
        new.execute_batch(&entry.sql)?;
    }
    new.execute_batch("COMMIT")
}

/// The condition on the rows of `table` that are kept, with the runs started before
/// `?1` old: every row of a table not named here.
fn kept(table: &str) -> String {
    match table {
        "rows" => format!("WHERE NOT (run_id IN ({OLD_RUNS}) AND {REMOVABLE})"),
        "attempts" | "action_attempts" => format!("WHERE run_id NOT IN ({OLD_RUNS})"),
        "sources" => format!(
            "WHERE NOT (run_id IN ({OLD_RUNS}) AND id NOT IN (SELECT source_id FROM new.rows))"
        ),
        _ => String::new(),
    }
}

/// Copies every table of the ledger (`main`) to the attached `new` but the old records
/// (the rows first, which sources are kept for), freezes the old runs' tallies and
/// adds their counts to `run_counts` there, and points the actions whose row went
/// nowhere. Returns the old runs, the rows and the attempts left behind.
fn copy_kept(c: &Connection, cutoff: &str) -> rusqlite::Result<(u64, u64, u64)> {
    let mut tables: Vec<String> = c
        .prepare(
            "SELECT name FROM main.sqlite_master
             WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    tables.sort_by_key(|t| t != "rows");
    let (mut rows, mut attempts) = (0, 0);
    for table in &tables {
        let filter = kept(table);
        let copy = format!("INSERT INTO new.\"{table}\" SELECT * FROM main.\"{table}\" {filter}");
        let kept = if filter.is_empty() {
            c.execute(&copy, [])?
        } else {
            c.execute(&copy, [cutoff])?
        };
        let left = |kept: usize| -> rusqlite::Result<u64> {
            let sql = format!("SELECT count(*) FROM main.\"{table}\"");
            Ok(c.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64 - kept as u64)
        };
        match table.as_str() {
            "rows" => rows += left(kept)?,
            "attempts" | "action_attempts" => attempts += left(kept)?,
            _ => {}
        }
    }
    let runs = count_old_runs(c, cutoff)?;
    freeze_tallies(c, cutoff, "new")?;
    add_old_counts(c, cutoff, "new")?;
    c.execute(
        "UPDATE new.actions SET row_id = NULL
         WHERE row_id IS NOT NULL AND row_id NOT IN (SELECT id FROM new.rows)",
        [],
    )?;
    Ok((runs, rows, attempts))
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

/// The old runs' rows that may go, as a `FROM` clause.
fn old_rows() -> String {
    format!("FROM rows WHERE run_id IN ({OLD_RUNS}) AND {REMOVABLE}")
}

/// `path` with `suffix` added to its name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn count_old_runs(c: &Connection, cutoff: &str) -> rusqlite::Result<u64> {
    let runs: i64 = c.query_row(
        &format!("SELECT count(*) FROM ({OLD_RUNS})"),
        [cutoff],
        |r| r.get(0),
    )?;
    Ok(runs as u64)
}

/// Keeps in `runs` of schema `into` what each old run sent and found already done,
/// counted from the ledger's records before those go (as `Ledger::run_account` counts a
/// run's, for every old run in one pass over their rows and attempts); a run frozen
/// earlier keeps its own.
fn freeze_tallies(c: &Connection, cutoff: &str, into: &str) -> rusqlite::Result<()> {
    let old = format!("{OLD_RUNS} AND sent IS NULL");
    let mut tallies: HashMap<RunId, (i64, i64)> = HashMap::new();
    for run in c.prepare(&old)?.query_map([cutoff], |r| r.get(0))? {
        tallies.insert(run?, (0, 0));
    }
    // Each invitation asked for in each old run.
    let mut asked: HashSet<(i64, RunId)> = HashSet::new();
    let mut stmt = c.prepare(&format!(
        "SELECT invitation_id, run_id FROM attempts WHERE run_id IN ({old})"
    ))?;
    let mut q = stmt.query([cutoff])?;
    while let Some(r) = q.next()? {
        asked.insert((r.get(0)?, r.get(1)?));
    }
    let mut stmt = c.prepare(&format!(
        "SELECT run_id, invitation_id FROM rows
         WHERE run_id IN ({old}) AND status IN ('invited', 'exists')"
    ))?;
    let mut q = stmt.query([cutoff])?;
    while let Some(r) = q.next()? {
        let run: RunId = r.get(0)?;
        let sent = r
            .get::<_, Option<i64>>(1)?
            .is_some_and(|i| asked.contains(&(i, run)));
        let (s, d) = tallies.entry(run).or_default();
        *(if sent { s } else { d }) += 1;
    }
    let mut stmt = c.prepare(&format!(
        "SELECT run_id, sum(n) FROM run_counts
         WHERE run_id IN ({old}) AND status IN ('invited', 'exists') GROUP BY run_id"
    ))?;
    for counted in stmt.query_map([cutoff], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?)))? {
        let (run, n) = counted?;
        tallies.entry(run).or_default().1 += n;
    }
    let mut freeze = c.prepare(&format!(
        "UPDATE {into}.runs SET sent = ?2, already_done = ?3 WHERE id = ?1"
    ))?;
    for (run, (sent, done)) in tallies {
        freeze.execute(params![run, sent, done])?;
    }
    Ok(())
}

/// Adds the counts per status of the old runs' removable rows in the ledger to
/// `run_counts` of schema `into`.
fn add_old_counts(c: &Connection, cutoff: &str, into: &str) -> rusqlite::Result<usize> {
    c.execute(
        &format!(
            "INSERT INTO {into}.run_counts (run_id, status, n)
             SELECT run_id, status, count(*) {} GROUP BY run_id, status
             ON CONFLICT (run_id, status) DO UPDATE SET n = n + excluded.n",
            old_rows()
        ),
        [cutoff],
    )
}

/// Moves the old runs' counts to `run_counts`, then removes their removable rows, their
/// attempts and the sources no row points at any more.
fn drop_old(c: &Connection, cutoff: &str) -> rusqlite::Result<(u64, u64, u64)> {
    let runs = count_old_runs(c, cutoff)?;
    freeze_tallies(c, cutoff, "main")?;
    add_old_counts(c, cutoff, "main")?;
    let old_rows = old_rows();
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
    Ok((runs, rows as u64, attempts as u64))
}
