//! `status`, `export` and `customers`: what the ledger and the directory hold, for a
//! person or a spreadsheet. Nothing here writes to the API.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api::types::Customer;
use crate::cli;
use crate::domain::{RowStatus, RunId};
use crate::input::{self};
use crate::ledger::{self, Ledger};
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

/// `status --json`: the counts, and what the ledger cannot confirm.
#[derive(Serialize)]
struct StatusReport<'a> {
    #[serde(flatten)]
    counts: &'a ledger::StatusCounts,
    /// Resends of any sync whose delivery is unknown; none is sent again in its period.
    resends_unconfirmed: u64,
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
        let report = StatusReport {
            counts: &counts,
            resends_unconfirmed,
        };
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
            super::sync::write_action_counts(&mut out, &counts.actions)?;
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
    if a.actions {
        super::sync::write_actions(&mut ledger, a.run, a.output.as_deref())?;
        return Ok(Exit::Ok);
    }
    write_export(&mut ledger, a.run, &a.statuses, a.output.as_deref())?;
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

/// Writes rows as CSV a spreadsheet opens safely.
pub(crate) fn write_export(
    ledger: &mut Ledger,
    run: Option<RunId>,
    statuses: &[RowStatus],
    path: Option<&Path>,
) -> anyhow::Result<()> {
    let sink: Box<dyn Write> = match path {
        Some(p) => Box::new(create_private(p)?),
        None => Box::new(std::io::stdout().lock()),
    };
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
        serde_json::to_writer_pretty(&mut out, &lines)?;
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
