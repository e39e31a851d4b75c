//! Read-only questions to the ledger: counts for `status`, rows for `export` and
//! `--results`. Nothing here writes.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Ledger, Result, RowStatus, RunId};

/// One run as the ledger remembers it.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub id: RunId,
    pub command: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub files: Vec<String>,
    pub dry_run: bool,
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
}

/// Rows of a run per status, and invitations of the whole ledger per state.
#[derive(Debug, Clone, Serialize)]
pub struct StatusCounts {
    pub run: Option<RunInfo>,
    pub rows: BTreeMap<String, u64>,
    pub ledger: BTreeMap<String, u64>,
    /// The most common errors of the run's problem rows, with how many share each.
    pub top_errors: Vec<(String, u64)>,
    /// The most common last errors of failed and rejected invitations, ledger-wide.
    pub ledger_errors: Vec<(String, u64)>,
    /// A sync run's actions besides invitations: per kind, then per state.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The shape of an export: the inputs' columns (union, in order of first appearance);
/// the ledger's own columns follow them.
#[derive(Debug, Clone)]
pub struct ExportTable {
    pub run: Option<RunId>,
    pub input_columns: Vec<String>,
}

/// One row of an export.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub file: String,
    pub line: u64,
    /// Aligned to [`ExportTable::input_columns`]; cells beyond a ragged row's header
    /// are joined into the last one rather than lost.
    pub cells: Vec<String>,
    pub status: String,
    pub error: Option<String>,
    pub customer_id: Option<i64>,
    pub access_user_id: Option<i64>,
    pub attempts: i64,
    pub updated_at: String,
}

impl Ledger {
    pub fn run_info(&mut self, run: Option<RunId>) -> Result<Option<RunInfo>> {
        self.sql(|c| {
            let sql = "SELECT id, command, started_at, finished_at, files, dry_run, outcome, exit_code FROM runs";
            let map = |r: &rusqlite::Row<'_>| {
                let files: String = r.get(4)?;
                Ok(RunInfo {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    started_at: r.get(2)?,
                    finished_at: r.get(3)?,
                    files: serde_json::from_str(&files).unwrap_or_default(),
                    dry_run: r.get(5)?,
                    outcome: r.get(6)?,
                    exit_code: r.get(7)?,
                })
            };
            match run {
                Some(id) => c.query_row(&format!("{sql} WHERE id = ?1"), [id], map).optional(),
                None => c
                    .query_row(
                        &format!("{sql} WHERE EXISTS (SELECT 1 FROM rows WHERE rows.run_id = runs.id) ORDER BY id DESC LIMIT 1"),
                        [],
                        map,
                    )
                    .optional(),
            }
        })
    }

    /// Counts per row status for one run (the last with rows when `None`), and per
    /// invitation state for the whole ledger.
    pub fn status_counts(&mut self, run: Option<RunId>) -> Result<StatusCounts> {
        let info = self.run_info(run)?;
        let run_id = info.as_ref().map(|r| r.id);
        let actions = match run_id {
            Some(id) => self.action_counts(id)?,
            None => BTreeMap::new(),
        };
        self.sql(|c| {
            let mut rows = BTreeMap::new();
            if let Some(id) = run_id {
                let mut stmt = c.prepare(
                    "SELECT status, count(*) FROM rows WHERE run_id = ?1 GROUP BY status",
                )?;
                let it = stmt.query_map([id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?;
                for item in it {
                    let (k, v) = item?;
                    rows.insert(k, v);
                }
            }
            let mut ledger = BTreeMap::new();
            let mut stmt = c.prepare("SELECT state, count(*) FROM invitations GROUP BY state")?;
            let it = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            for item in it {
                let (k, v) = item?;
                ledger.insert(k, v);
            }
            let mut stmt = c.prepare(
                "SELECT last_error, count(*) AS n FROM invitations
                 WHERE state IN ('failed', 'rejected') AND last_error IS NOT NULL
                 GROUP BY last_error ORDER BY n DESC LIMIT 5",
            )?;
            let ledger_errors = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt = c.prepare(
                "SELECT error, count(*) AS n FROM rows
                 WHERE run_id = ?1 AND status IN ('failed', 'rejected', 'invalid', 'unresolved')
                   AND error IS NOT NULL
                 GROUP BY error ORDER BY n DESC, error LIMIT 5",
            )?;
            let top_errors = stmt
                .query_map([run_id.unwrap_or(-1)], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(StatusCounts {
                run: info,
                rows,
                ledger,
                top_errors,
                ledger_errors,
                actions,
            })
        })
    }

    /// Streams the rows of a run (the last with rows when `None`), optionally only some
    /// statuses: `header` is called once with the table's shape, then `row` per row.
    pub fn export(
        &mut self,
        run: Option<RunId>,
        statuses: &[RowStatus],
        header: &mut dyn FnMut(&ExportTable) -> std::io::Result<()>,
        row: &mut dyn FnMut(ExportRow) -> std::io::Result<()>,
    ) -> Result<()> {
        let info = self.run_info(run)?;
        let Some(info) = info else {
            return header(&ExportTable {
                run: None,
                input_columns: Vec::new(),
            })
            .map_err(super::Error::Output);
        };
        let wanted: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let mut io_failure = None;
        self.sql(|c| {
            // The union of the sources' columns, keeping repeated names apart by position.
            let mut stmt =
                c.prepare("SELECT id, columns FROM sources WHERE run_id = ?1 ORDER BY id")?;
            let sources: Vec<(i64, Vec<String>)> = stmt
                .query_map([info.id], |r| {
                    let cols: String = r.get(1)?;
                    Ok((r.get(0)?, serde_json::from_str(&cols).unwrap_or_default()))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut union: Vec<String> = Vec::new();
            let mut slots: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
            for (id, cols) in &sources {
                let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
                let mut mine = Vec::with_capacity(cols.len());
                for col in cols {
                    let nth = seen.entry(col.as_str()).or_insert(0);
                    let existing = union
                        .iter()
                        .enumerate()
                        .filter(|(_, u)| *u == col)
                        .nth(*nth)
                        .map(|(i, _)| i);
                    let slot = match existing {
                        Some(i) => i,
                        None => {
                            union.push(col.clone());
                            union.len() - 1
                        }
                    };
                    *nth += 1;
                    mine.push(slot);
                }
                slots.insert(*id, mine);
            }
            if let Err(e) = header(&ExportTable {
                run: Some(info.id),
                input_columns: union.clone(),
            }) {
                io_failure = Some(e);
                return Ok(());
            }
            let mut stmt = c.prepare(
                "SELECT s.file, r.line, r.cells, r.status, r.error, r.customer_id, i.access_user_id,
                        COALESCE(i.attempts, 0), r.updated_at, r.source_id
                 FROM rows r JOIN sources s ON s.id = r.source_id
                 LEFT JOIN invitations i ON i.id = r.invitation_id
                 WHERE r.run_id = ?1 ORDER BY r.id",
            )?;
            let mut q = stmt.query(params![info.id])?;
            while let Some(r) = q.next()? {
                let status: String = r.get(3)?;
                if !wanted.is_empty() && !wanted.contains(&status.as_str()) {
                    continue;
                }
                let raw: String = r.get(2)?;
                let values: Vec<String> = serde_json::from_str(&raw).unwrap_or_default();
                let mut cells = vec![String::new(); union.len()];
                let source: i64 = r.get(9)?;
                let map = slots.get(&source).map(Vec::as_slice).unwrap_or(&[]);
                let mut last = None;
                for (i, v) in values.into_iter().enumerate() {
                    match map.get(i) {
                        Some(&slot) => {
                            cells[slot] = v;
                            last = Some(slot);
                        }
                        None => {
                            if let Some(slot) = last.or(map.last().copied()) {
                                let cell = &mut cells[slot];
                                cell.push_str(" | ");
                                cell.push_str(&v);
                            }
                        }
                    }
                }
                let out = ExportRow {
                    file: r.get(0)?,
                    line: r.get::<_, i64>(1)? as u64,
                    cells,
                    status,
                    error: r.get(4)?,
                    customer_id: r.get(5)?,
                    access_user_id: r.get(6)?,
                    attempts: r.get(7)?,
                    updated_at: r.get(8)?,
                };
                if let Err(e) = row(out) {
                    io_failure = Some(e);
                    return Ok(());
                }
            }
            Ok(())
        })?;
        match io_failure {
            Some(e) => Err(super::Error::Output(e)),
            None => Ok(()),
        }
    }
}
