//! Read-only questions to the ledger: counts for `status`, rows for `export` and
//! `--results` (the run's recorded rows, merged in input order with the rows it only
//! counted when their spool was kept). Nothing here writes.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::spool::{SpoolReader, Spooled};
use super::{Ledger, PROBLEM_ROW, ROW_STATUS, Result, RowStatus, RunId};

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
    /// An undo run: the run it reverses.
    pub undoes: Option<RunId>,
    /// The `--rate` the run was given, in requests per second (recorded since 0004).
    pub rate: Option<f64>,
    /// The `--burst` the run was given.
    pub burst: Option<u32>,
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
    /// The ledger's size on disk, its WAL included, in bytes.
    pub ledger_bytes: u64,
    /// The oldest run whose row records are kept (`compact` removes older ones).
    pub oldest_kept_run: Option<RunId>,
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
            let sql =
                "SELECT id, command, started_at, finished_at, files, dry_run, outcome, exit_code,
                              undoes, rate, burst FROM runs";
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
                    undoes: r.get(8)?,
                    rate: r.get(9)?,
                    burst: r.get(10)?,
                })
            };
            match run {
                Some(id) => c
                    .query_row(&format!("{sql} WHERE id = ?1"), [id], map)
                    .optional(),
                None => c
                    .query_row(
                        &format!("{sql} WHERE {HAS_ROWS_OR_ACTIONS} ORDER BY id DESC LIMIT 1"),
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
        self.counts_in(run, Scope::Ledger)
    }

    /// [`Ledger::status_counts`] of one run alone: the whole ledger's `ledger` and
    /// `ledger_errors` are left empty, so the end of a run reads nothing but its own.
    pub fn run_status_counts(&mut self, run: RunId) -> Result<StatusCounts> {
        self.counts_in(Some(run), Scope::Run)
    }

    fn counts_in(&mut self, run: Option<RunId>, scope: Scope) -> Result<StatusCounts> {
        let info = self.run_info(run)?;
        let run_id = info.as_ref().map(|r| r.id);
        let actions = match run_id {
            Some(id) => self.action_counts(id)?,
            None => BTreeMap::new(),
        };
        let ledger_bytes = self.size_on_disk();
        self.sql(|c| {
            let id = run_id.unwrap_or(-1);
            let (mut rows, mut errors) = recorded_counts(c, id)?;
            for (error, n) in tally(
                c,
                &format!(
                    "SELECT r.error FROM rows r JOIN sources s ON s.id = r.source_id {CARRIED}
                     AND {PROBLEM_ROW} AND r.error IS NOT NULL"
                ),
                [id],
            )? {
                *errors.entry(error).or_default() += n;
            }
            let top_errors = commonest(errors, 5);
            for (k, v) in counts(
                c,
                "SELECT status, n FROM run_counts WHERE run_id = ?1",
                [id],
            )? {
                *rows.entry(k).or_default() += v;
            }
            let (ledger, ledger_errors) = match scope {
                Scope::Run => Default::default(),
                Scope::Ledger => ledger_counts(c)?,
            };
            let oldest_kept_run = c.query_row("SELECT min(run_id) FROM rows", [], |r| r.get(0))?;
            Ok(StatusCounts {
                run: info,
                rows,
                ledger,
                top_errors,
                ledger_errors,
                ledger_bytes,
                oldest_kept_run,
                actions,
            })
        })
    }

    /// The `.db` file's size plus its WAL's, in bytes; 0 for a ledger in memory.
    pub fn size_on_disk(&self) -> u64 {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        [self.path.as_os_str(), wal.as_os_str()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Rows of a run that were counted and not recorded one by one.
    pub fn counted_only(&mut self, run: Option<RunId>) -> Result<u64> {
        let Some(info) = self.run_info(run)? else {
            return Ok(0);
        };
        self.sql(|c| {
            c.query_row(
                "SELECT COALESCE(sum(n), 0) FROM run_counts WHERE run_id = ?1",
                [info.id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    /// Streams the rows of a run (the last with rows when `None`), optionally only some
    /// statuses: `header` is called once with the table's shape, then `row` per row.
    /// The rows the run counted without recording them come too, in input order, when
    /// their spool was kept ([`Ledger::keep_counted_rows`]) and this is its run.
    pub fn export(
        &mut self,
        run: Option<RunId>,
        statuses: &[RowStatus],
        header: &mut dyn FnMut(&ExportTable) -> std::io::Result<()>,
        row: &mut dyn FnMut(ExportRow) -> std::io::Result<()>,
    ) -> Result<()> {
        let Some(info) = self.run_info(run)? else {
            return header(&ExportTable {
                run: None,
                input_columns: Vec::new(),
            })
            .map_err(super::Error::Output);
        };
        let shape = self.sql(|c| Shape::of_run(c, info.id))?;
        header(&ExportTable {
            run: Some(info.id),
            input_columns: shape.union.clone(),
        })
        .map_err(super::Error::Output)?;
        let spool = self.take_spool(info.id)?;
        let mut sink = Sink {
            wanted: statuses.iter().map(|s| s.as_str()).collect(),
            row,
            failure: None,
        };
        self.sql(|c| merge_rows(c, info.id, &shape, spool, &mut sink))?;
        sink.finish()
    }
}

/// A run with rows: recorded ones, or rows counted without a record of their own.
pub(super) const HAS_ROWS: &str = "(EXISTS (SELECT 1 FROM rows WHERE rows.run_id = runs.id)
     OR EXISTS (SELECT 1 FROM run_counts WHERE run_counts.run_id = runs.id))";

/// A run with rows, or with actions only (an undo): what `status` and `export` show when
/// no run is named.
const HAS_ROWS_OR_ACTIONS: &str = "(EXISTS (SELECT 1 FROM rows WHERE rows.run_id = runs.id)
     OR EXISTS (SELECT 1 FROM run_counts WHERE run_counts.run_id = runs.id)
     OR EXISTS (SELECT 1 FROM actions WHERE actions.run_id = runs.id))";

/// `(key, count)` pairs, commonest first.
type Ranked = Vec<(String, u64)>;

/// How many of each key.
type Counts = BTreeMap<String, u64>;

/// The `n` commonest keys of `counts`, commonest first, ties by key.
fn commonest(counts: Counts, n: usize) -> Ranked {
    let mut ranked: Ranked = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(n);
    ranked
}

/// What [`Ledger::counts_in`] counts: one run's rows, or the whole ledger's
/// invitations besides.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Run,
    Ledger,
}

/// The ledger's invitations per state, and the five commonest last errors of the failed
/// and rejected ones, in one pass over the table: no index orders invitations by state
/// (0010), and grouping in SQL would sort every invitation.
fn ledger_counts(c: &Connection) -> rusqlite::Result<(Counts, Ranked)> {
    let (mut per_state, mut per_error) = (Counts::new(), Counts::new());
    let mut stmt = c.prepare(
        "SELECT state, CASE WHEN state IN ('failed', 'rejected') THEN last_error END
         FROM invitations",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        bump(&mut per_state, r.get_ref(0)?.as_str().unwrap_or_default());
        if let Some(error) = r.get_ref(1)?.as_str_or_null()? {
            bump(&mut per_error, error);
        }
    }
    Ok((per_state, commonest(per_error, 5)))
}

/// `(key, count)` pairs of a query, as a map.
fn counts(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<BTreeMap<String, u64>> {
    ranked(c, sql, p).map(|v| v.into_iter().collect())
}

/// Run `run`'s recorded rows per status as people read them ([`ROW_STATUS`]), and the
/// errors of its problem rows, in one pass over its rows. Rows waiting on an invitation
/// in flight count as `sending`, not `pending`: counted by status first, then corrected
/// by the pending rows in flight, rather than grouping by `ROW_STATUS`, which would look
/// up the invitation of every row.
fn recorded_counts(c: &Connection, run: RunId) -> rusqlite::Result<(Counts, Counts)> {
    let (mut rows, mut errors) = (Counts::new(), Counts::new());
    let mut stmt = c.prepare(&format!(
        "SELECT status, CASE WHEN {PROBLEM_ROW} THEN error END FROM rows WHERE run_id = ?1"
    ))?;
    let mut q = stmt.query([run])?;
    while let Some(r) = q.next()? {
        bump(&mut rows, r.get_ref(0)?.as_str().unwrap_or_default());
        if let Some(error) = r.get_ref(1)?.as_str_or_null()? {
            bump(&mut errors, error);
        }
    }
    let Some(pending) = rows.get("pending").copied() else {
        return Ok((rows, errors));
    };
    let in_flight: i64 = c.query_row(
        "SELECT count(*) FROM rows r JOIN invitations i ON i.id = r.invitation_id
         WHERE r.run_id = ?1 AND r.status = 'pending' AND i.state = 'sending'",
        [run],
        |r| r.get(0),
    )?;
    let in_flight = (in_flight.max(0) as u64).min(pending);
    if in_flight > 0 {
        if in_flight == pending {
            rows.remove("pending");
        } else {
            rows.insert("pending".into(), pending - in_flight);
        }
        *rows.entry("sending".into()).or_default() += in_flight;
    }
    Ok((rows, errors))
}

/// How many rows of a query have each value of its one column, counted as they are read:
/// grouping in SQL would sort them first, with no index keyed by that column.
fn tally(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<Counts> {
    let mut out = Counts::new();
    let mut stmt = c.prepare(sql)?;
    let mut rows = stmt.query(p)?;
    while let Some(r) = rows.next()? {
        bump(&mut out, r.get_ref(0)?.as_str().unwrap_or_default());
    }
    Ok(out)
}

/// Counts one more `key`, looked up by the borrowed name: each distinct key is copied
/// once, not once a row.
fn bump(counts: &mut Counts, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_string(), 1);
        }
    }
}

/// `(key, count)` pairs of a query, in its order.
fn ranked(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<Ranked> {
    let mut stmt = c.prepare(sql)?;
    stmt.query_map(p, |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?
    .collect()
}

/// Where the export's rows go: the status filter, the caller's writer, and its first
/// failure (after which nothing more is written).
struct Sink<'a> {
    wanted: Vec<&'static str>,
    row: &'a mut dyn FnMut(ExportRow) -> std::io::Result<()>,
    failure: Option<std::io::Error>,
}

impl Sink<'_> {
    fn wants(&self, status: &str) -> bool {
        self.failure.is_none() && (self.wanted.is_empty() || self.wanted.contains(&status))
    }

    fn put(&mut self, out: ExportRow) {
        if let Err(e) = (self.row)(out) {
            self.failure = Some(e);
        }
    }

    fn finish(self) -> Result<()> {
        match self.failure {
            Some(e) => Err(super::Error::Output(e)),
            None => Ok(()),
        }
    }
}

/// The columns of a run's export: the union of its sources' columns, keeping repeated
/// names apart by position, and where each source's cells go in it.
struct Shape {
    union: Vec<String>,
    slots: BTreeMap<i64, Vec<usize>>,
    files: BTreeMap<i64, String>,
}

impl Shape {
    fn of_run(c: &Connection, run: RunId) -> rusqlite::Result<Shape> {
        let mut stmt =
            c.prepare("SELECT id, columns, file FROM sources WHERE run_id = ?1 ORDER BY id")?;
        let sources: Vec<(i64, Vec<String>, String)> = stmt
            .query_map([run], |r| {
                let cols: String = r.get(1)?;
                Ok((
                    r.get(0)?,
                    serde_json::from_str(&cols).unwrap_or_default(),
                    r.get(2)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut shape = Shape {
            union: Vec::new(),
            slots: BTreeMap::new(),
            files: BTreeMap::new(),
        };
        for (id, cols, file) in sources {
            let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
            let mut mine = Vec::with_capacity(cols.len());
            for col in &cols {
                let nth = seen.entry(col.as_str()).or_insert(0);
                let existing = shape
                    .union
                    .iter()
                    .enumerate()
                    .filter(|(_, u)| *u == col)
                    .nth(*nth)
                    .map(|(i, _)| i);
                mine.push(existing.unwrap_or_else(|| {
                    shape.union.push(col.clone());
                    shape.union.len() - 1
                }));
                *nth += 1;
            }
            shape.slots.insert(id, mine);
            shape.files.insert(id, file);
        }
        Ok(shape)
    }

    /// A row's cells (a JSON array) placed in the union's columns; cells beyond a
    /// ragged row's header are joined into the last one rather than lost.
    fn align(&self, source: i64, raw: &str) -> Vec<String> {
        let values: Vec<String> = serde_json::from_str(raw).unwrap_or_default();
        let mut cells = vec![String::new(); self.union.len()];
        let map = self.slots.get(&source).map(Vec::as_slice).unwrap_or(&[]);
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
        cells
    }
}

/// What an exported row reads: its file, line, cells, status ([`ROW_STATUS`]), error,
/// customer, invitation outcome and time; the place in the input (source of the run,
/// line) follows.
fn export_columns() -> String {
    format!(
        "s.file, r.line, r.cells, {ROW_STATUS}, r.error, r.customer_id,
         i.access_user_id, COALESCE(i.attempts, 0), r.updated_at"
    )
}
/// The rows exported, with their source and invitation.
const EXPORT_FROM: &str = "FROM rows r JOIN sources s ON s.id = r.source_id
     LEFT JOIN invitations i ON i.id = r.invitation_id";

/// The problem rows run `?1` saw whose one record a later run of the same series keeps
/// (`rows.first_seen_run`), each placed in the run's own source of the same file and
/// columns.
pub(super) const CARRIED: &str = "JOIN sources n ON n.id = (SELECT min(id) FROM sources
         WHERE run_id = ?1 AND file = s.file AND columns = s.columns)
     WHERE r.first_seen_run <= ?1 AND r.run_id > ?1";

/// Every row record run `?1` saw, as a table of `line, status, email, error, file` and
/// `src` (its place: the run's own source): its own and those [`CARRIED`] for it.
pub(super) fn seen_rows() -> String {
    format!(
        "(SELECT r.line, r.status, r.email, r.error, s.file, r.source_id AS src
          FROM rows r JOIN sources s ON s.id = r.source_id WHERE r.run_id = ?1
          UNION ALL
          SELECT r.line, r.status, r.email, r.error, s.file, n.id
          FROM rows r JOIN sources s ON s.id = r.source_id {CARRIED})"
    )
}

/// Where a row was read: its run's source, then its line.
type Place = (i64, u64);

/// An exported row from a query of [`export_columns`] then the source it is placed in.
fn export_row(r: &rusqlite::Row<'_>, shape: &Shape, status: String) -> rusqlite::Result<ExportRow> {
    let source: i64 = r.get(9)?;
    Ok(ExportRow {
        file: r.get(0)?,
        line: r.get::<_, i64>(1)? as u64,
        cells: shape.align(source, r.get_ref(2)?.as_str()?),
        status,
        error: r.get(4)?,
        customer_id: r.get(5)?,
        access_user_id: r.get(6)?,
        attempts: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

/// The problem rows a later run keeps the record of (see [`CARRIED`]), in input order.
fn carried_rows(
    c: &Connection,
    run: RunId,
    shape: &Shape,
) -> rusqlite::Result<Vec<(Place, ExportRow)>> {
    let mut stmt = c.prepare(&format!(
        "SELECT {}, n.id {EXPORT_FROM} {CARRIED} ORDER BY n.id, r.line",
        export_columns()
    ))?;
    let mut q = stmt.query([run])?;
    let mut out = Vec::new();
    while let Some(r) = q.next()? {
        let row = export_row(r, shape, r.get(3)?)?;
        out.push(((r.get(9)?, row.line), row));
    }
    Ok(out)
}

/// Writes a run's recorded rows, in order, with its spooled rows and the rows a later
/// run keeps for it merged in by their place in the input (source, then line).
fn merge_rows(
    c: &Connection,
    run: RunId,
    shape: &Shape,
    spool: Option<SpoolReader>,
    sink: &mut Sink<'_>,
) -> rusqlite::Result<()> {
    let mut others = Others {
        carried: carried_rows(c, run, shape)?.into_iter().peekable(),
        spooled: spool.into_iter().flatten().peekable(),
    };
    let mut stmt = c.prepare(&format!(
        "SELECT {}, r.source_id {EXPORT_FROM} WHERE r.run_id = ?1 ORDER BY r.id",
        export_columns()
    ))?;
    let mut q = stmt.query(params![run])?;
    while let Some(r) = q.next()? {
        let place: Place = (r.get(9)?, r.get::<_, i64>(1)? as u64);
        others.put_before(c, shape, Some(place), sink)?;
        let status: String = r.get(3)?;
        if !sink.wants(&status) {
            continue;
        }
        sink.put(export_row(r, shape, status)?);
    }
    others.put_before(c, shape, None, sink)
}

/// The rows of an export besides its run's records: spooled ones, and those a later
/// run keeps the record of; each in input order.
struct Others<S: Iterator<Item = Result<Spooled>>> {
    carried: std::iter::Peekable<std::vec::IntoIter<(Place, ExportRow)>>,
    spooled: std::iter::Peekable<S>,
}

impl<S: Iterator<Item = Result<Spooled>>> Others<S> {
    /// Writes, in input order, the rows placed before `place` (all when `None`).
    fn put_before(
        &mut self,
        c: &Connection,
        shape: &Shape,
        place: Option<Place>,
        sink: &mut Sink<'_>,
    ) -> rusqlite::Result<()> {
        loop {
            let spooled = self
                .spooled
                .peek()
                .map(|s| s.as_ref().map_or((i64::MIN, 0), |s| (s.source, s.line)));
            let carried = self.carried.peek().map(|(p, _)| *p);
            let next = match (spooled, carried) {
                (None, None) => return Ok(()),
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
            };
            if place.is_some_and(|p| next >= p) {
                return Ok(());
            }
            if spooled == Some(next) {
                if let Some(s) = self.spooled.next() {
                    put_spooled(c, shape, s, sink)?;
                }
            } else if let Some((_, row)) = self.carried.next()
                && sink.wants(&row.status)
            {
                sink.put(row);
            }
        }
    }
}

/// Writes one spooled row, with its invitation's current outcome.
fn put_spooled(
    c: &Connection,
    shape: &Shape,
    s: Result<Spooled>,
    sink: &mut Sink<'_>,
) -> rusqlite::Result<()> {
    let s = match s {
        Ok(s) => s,
        Err(e) => {
            sink.failure
                .get_or_insert(std::io::Error::other(e.to_string()));
            return Ok(());
        }
    };
    if !sink.wants(&s.status) {
        return Ok(());
    }
    let (access_user_id, attempts, updated_at) = c
        .prepare_cached(
            "SELECT access_user_id, attempts, updated_at FROM invitations WHERE id = ?1",
        )?
        .query_row([s.invitation_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .unwrap_or((None, 0, String::new()));
    sink.put(ExportRow {
        file: shape.files.get(&s.source).cloned().unwrap_or_default(),
        line: s.line,
        cells: shape.align(s.source, &s.cells),
        status: s.status,
        error: None,
        customer_id: s.customer_id,
        access_user_id,
        attempts,
        updated_at,
    });
    Ok(())
}
