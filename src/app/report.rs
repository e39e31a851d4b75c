//! `status`, `export` and `customers`: what the ledger and the directory hold, for a
//! person or a spreadsheet. Nothing here writes to the API.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::types::Customer;
use crate::cli;
use crate::domain::{RowStatus, RunId};
use crate::input::{self};
use crate::ledger::{self, ExportRow, Ledger, RunInfo, StatusCounts};
use crate::report::json::{ErrorCount, error_counts};
use crate::settings::Settings;

use super::Exit;
use super::preflight::ledger_folder;
use super::setup::{Reach, connect, load_directory, open_ledger};

// ---------------------------------------------------------------------------------
// `status`, `export`, `customers`: reading the ledger and the directory.

/// Opens an existing ledger without taking the run lock: reads go on beside a run.
pub(crate) fn open_existing(global: &Settings) -> anyhow::Result<Ledger> {
    Ok(Ledger::open_read_only(&global.ledger)?)
}

/// `status --json` (docs/json.md): the run's rows, the whole ledger's invitations, and
/// what the ledger cannot confirm.
#[derive(Serialize)]
struct StatusReport<'a> {
    ledger: String,
    run: Option<&'a RunInfo>,
    /// The run's rows, however they ended.
    rows: u64,
    statuses: &'a BTreeMap<String, u64>,
    top_errors: Vec<ErrorCount>,
    /// A sync run's actions besides invitations: per kind, then per state.
    actions: &'a BTreeMap<String, BTreeMap<String, u64>>,
    /// Resends of any sync whose delivery is unknown; none is sent again in its period.
    resends_unconfirmed: u64,
    invitations: InvitationsReport<'a>,
    ledger_bytes: u64,
    oldest_kept_run: Option<RunId>,
}

/// The whole ledger's invitations, per state, and their most common last errors.
#[derive(Serialize)]
struct InvitationsReport<'a> {
    total: u64,
    statuses: &'a BTreeMap<String, u64>,
    top_errors: Vec<ErrorCount>,
}

impl<'a> StatusReport<'a> {
    fn new(ledger: &Ledger, counts: &'a StatusCounts, resends_unconfirmed: u64) -> Self {
        StatusReport {
            ledger: ledger.path().display().to_string(),
            run: counts.run.as_ref(),
            rows: counts.rows.values().sum(),
            statuses: &counts.rows,
            top_errors: error_counts(&counts.top_errors),
            actions: &counts.actions,
            resends_unconfirmed,
            invitations: InvitationsReport {
                total: counts.ledger.values().sum(),
                statuses: &counts.ledger,
                top_errors: error_counts(&counts.ledger_errors),
            },
            ledger_bytes: counts.ledger_bytes,
            oldest_kept_run: counts.oldest_kept_run,
        }
    }
}

pub(crate) fn status(global: &Settings, run: Option<RunId>) -> anyhow::Result<Exit> {
    let mut ledger = open_existing(global)?;
    let counts = ledger.status_counts(run)?;
    if run.is_some() && counts.run.is_none() {
        bail!(
            "no run {} in {}",
            run.unwrap_or_default(),
            ledger.path().display()
        );
    }
    let resends_unconfirmed = ledger.unconfirmed_resends()?;
    let mut out = std::io::stdout().lock();
    if global.json {
        let report = StatusReport::new(&ledger, &counts, resends_unconfirmed);
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(Exit::Ok);
    }
    match &counts.run {
        Some(r) => {
            writeln!(
                out,
                "Run {} ({}{}), started {}{}: {}",
                r.id,
                r.command,
                if r.files.is_empty() {
                    String::new()
                } else {
                    format!(" {}", r.files.join(", "))
                },
                r.started_at,
                r.finished_at
                    .as_ref()
                    .map(|f| format!(", finished {f}"))
                    .unwrap_or_else(|| ", not finished".into()),
                r.outcome
                    .as_deref()
                    .unwrap_or("no outcome recorded (still running, or killed)")
            )?;
            for status in RowStatus::ALL {
                if let Some(n) = counts.rows.get(status.as_str()) {
                    writeln!(out, "  {:<11} {n}", status.as_str())?;
                }
            }
            crate::report::summary::write_action_counts(&mut out, &counts.actions, 11)?;
        }
        None => writeln!(out, "No runs yet.")?,
    }
    writeln!(
        out,
        "Whole ledger ({} invitations; {:.1} MB on disk; row records kept from {}):",
        counts.ledger.values().sum::<u64>(),
        counts.ledger_bytes as f64 / 1e6,
        counts
            .oldest_kept_run
            .map_or_else(|| "no run".to_string(), |r| format!("run {r}"))
    )?;
    for (state, n) in &counts.ledger {
        writeln!(out, "  {state:<11} {n}")?;
    }
    if resends_unconfirmed > 0 {
        writeln!(
            out,
            "  {resends_unconfirmed} sync resends unconfirmed (cut off in flight, or no answer came): not sent again in their period"
        )?;
    }
    if !counts.top_errors.is_empty() {
        writeln!(
            out,
            "Most common errors of failed and rejected invitations:"
        )?;
        for (err, n) in &counts.top_errors {
            writeln!(out, "  {n} × {err}")?;
        }
    }
    Ok(Exit::Ok)
}

pub(crate) fn export(global: &Settings, a: cli::ExportArgs) -> anyhow::Result<Exit> {
    let mut ledger = open_existing(global)?;
    let output = a.output.as_deref();
    if a.actions {
        super::sync::write_actions(&mut ledger, a.run, output, global.json)?;
        return Ok(Exit::Ok);
    }
    if global.json {
        write_export_lines(&mut ledger, a.run, &a.statuses, output)?;
    } else {
        write_export(&mut ledger, a.run, &a.statuses, output)?;
    }
    let counted = ledger.counted_only(a.run)?;
    let done_wanted = a.statuses.is_empty()
        || a.statuses
            .iter()
            .any(|s| matches!(s, RowStatus::Invited | RowStatus::Exists));
    if counted > 0 && done_wanted && !global.quiet {
        eprintln!(
            "{counted} rows of this run were already done with the same cells as before: counted, not recorded one by one (`run --results FILE` lists every row)"
        );
    }
    Ok(Exit::Ok)
}

/// Where an export goes: the file named (private, as the ledger is), else stdout.
pub(crate) fn export_sink(path: Option<&Path>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(create_private(p)?),
        None => Box::new(std::io::stdout().lock()),
    })
}

/// Writes rows as CSV a spreadsheet opens safely.
pub(crate) fn write_export(
    ledger: &mut Ledger,
    run: Option<RunId>,
    statuses: &[RowStatus],
    path: Option<&Path>,
) -> anyhow::Result<()> {
    let sink = export_sink(path)?;
    let csv = std::cell::RefCell::new(csv::Writer::from_writer(std::io::BufWriter::new(sink)));
    let csv_err = |e: csv::Error| std::io::Error::other(e);
    ledger
        .export(
            run,
            statuses,
            &mut |table| {
                let header = table
                    .input_columns
                    .iter()
                    .map(|c| spreadsheet_safe(c))
                    .chain(input::RESULTS_COLUMNS.iter().map(|c| c.to_string()));
                csv.borrow_mut().write_record(header).map_err(csv_err)
            },
            &mut |row| {
                let tail = [
                    row.status,
                    row.error.unwrap_or_default(),
                    row.customer_id.map(|v| v.to_string()).unwrap_or_default(),
                    row.access_user_id
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    row.attempts.to_string(),
                    row.updated_at,
                ];
                csv.borrow_mut()
                    .write_record(
                        row.cells
                            .iter()
                            .map(|c| spreadsheet_safe(c))
                            .chain(tail.iter().map(|c| spreadsheet_safe(c))),
                    )
                    .map_err(csv_err)
            },
        )
        .or_else(ignore_broken_pipe)?;
    csv.borrow_mut()
        .flush()
        .or_else(|e| ignore_broken_pipe(ledger::Error::Output(e)))?;
    Ok(())
}

/// `export --json`: JSON lines, one object a row with the CSV's columns as its keys:
/// the input's cells as they were read (no spreadsheet escapes), then the
/// `bbinvite_*` outcome block, its ids and attempts as numbers.
fn write_export_lines(
    ledger: &mut Ledger,
    run: Option<RunId>,
    statuses: &[RowStatus],
    path: Option<&Path>,
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(export_sink(path)?);
    let columns = std::cell::RefCell::new(Vec::new());
    ledger
        .export(
            run,
            statuses,
            &mut |table| {
                columns.replace(table.input_columns.clone());
                Ok(())
            },
            &mut |row| write_json_line(&mut out, &export_line(&columns.borrow(), row)),
        )
        .or_else(ignore_broken_pipe)?;
    out.flush()
        .or_else(|e| ignore_broken_pipe(ledger::Error::Output(e)))?;
    Ok(())
}

/// One exported row as a JSON object, keyed as the CSV's header is.
fn export_line(columns: &[String], row: ExportRow) -> serde_json::Map<String, Value> {
    let mut line: serde_json::Map<String, Value> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                c.clone(),
                row.cells.get(i).cloned().unwrap_or_default().into(),
            )
        })
        .collect();
    let outcome: [Value; 6] = [
        row.status.into(),
        row.error.into(),
        row.customer_id.into(),
        row.access_user_id.into(),
        row.attempts.into(),
        row.updated_at.into(),
    ];
    line.extend(
        input::RESULTS_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .zip(outcome),
    );
    line
}

/// Writes one value as a line of JSON (JSON lines: no line breaks inside).
pub(crate) fn write_json_line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

pub(crate) fn ignore_broken_pipe(e: ledger::Error) -> Result<(), ledger::Error> {
    match &e {
        ledger::Error::Output(io) if io.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        _ => Err(e),
    }
}

/// Creates (or truncates) an output file readable by its owner only, as the ledger
/// is: a results sheet or an export holds names and e-mail addresses.
pub(crate) fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: narrow it too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    Ok(file)
}

/// Escapes a cell that a spreadsheet would run as a formula (and one that starts with
/// the escape, `'`, so that reading the sheet back gives the cell again).
///
/// ```
/// use bbinvite::app::spreadsheet_safe;
/// assert_eq!(spreadsheet_safe("=1+1"), "'=1+1");
/// assert_eq!(spreadsheet_safe("Acme"), "Acme");
/// ```
pub fn spreadsheet_safe(cell: &str) -> String {
    input::escape_cell(cell)
}

/// `customers --json`: the customers shown (all, or those `--search` found) of the
/// directory's total.
#[derive(Serialize)]
struct CustomersReport<'a> {
    shown: usize,
    total: usize,
    customers: &'a [CustomerLine<'a>],
}

#[derive(Debug, Serialize)]
pub(crate) struct CustomerLine<'a> {
    id: i64,
    name: &'a str,
    normalized: String,
    reference: Option<&'a str>,
    status: &'static str,
    ambiguous: bool,
}

pub(crate) async fn customers(
    global: &Settings,
    a: cli::CustomersArgs,
    stop: CancellationToken,
) -> anyhow::Result<Exit> {
    let path = &global.ledger;
    ledger_folder(path)?;
    let endpoint = global.endpoint()?;
    // Reading the ledger's copy takes no lock and writes nothing, and a missing ledger
    // is an error naming it; a fetch that is to be kept (`--refresh`) opens it to write.
    let mut ledger = if a.refresh {
        open_ledger(path)?
    } else {
        Ledger::open_read_only(path)?
    };
    let api = connect(endpoint, Reach::reading(a.rate, stop)).await?;
    let dir = load_directory(&mut ledger, &api, a.customers_ttl, a.refresh).await?;
    let list: Vec<&Customer> = match &a.search {
        Some(t) => dir.search(t),
        None => dir.customers().iter().collect(),
    };
    let lines: Vec<CustomerLine<'_>> = list
        .iter()
        .map(|c| CustomerLine {
            id: c.id,
            name: &c.name,
            normalized: crate::resolve::normalize(&c.name),
            reference: c.reference.as_deref(),
            status: c.status.as_str(),
            ambiguous: dir.namesakes(c) > 1,
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if global.json {
        let listed = CustomersReport {
            shown: lines.len(),
            total: dir.len(),
            customers: &lines,
        };
        serde_json::to_writer_pretty(&mut out, &listed)?;
        writeln!(out)?;
        return Ok(Exit::Ok);
    }
    writeln!(
        out,
        "{:>8}  {:<14} {:<10} name",
        "id", "reference", "status"
    )?;
    for l in &lines {
        writeln!(
            out,
            "{:>8}  {:<14} {:<10} {}{}",
            l.id,
            l.reference.unwrap_or("-"),
            l.status,
            l.name,
            if l.ambiguous {
                "  (name shared: resolve by id or reference)"
            } else {
                ""
            }
        )?;
    }
    writeln!(out, "{} of {} customers", lines.len(), dir.len())?;
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_escaped() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("+1"), "'+1");
        assert_eq!(spreadsheet_safe("-1"), "'-1");
        assert_eq!(spreadsheet_safe("@x"), "'@x");
        assert_eq!(spreadsheet_safe("\tx"), "'\tx");
        assert_eq!(spreadsheet_safe("plain"), "plain");
        assert_eq!(spreadsheet_safe("'=1"), "''=1");
        assert_eq!(spreadsheet_safe(""), "");
    }
}
