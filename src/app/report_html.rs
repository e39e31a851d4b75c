//! `report`: one run of the ledger as a self-contained HTML page; and the word sent
//! when a sending command stops before its run began (the usual end is announced by
//! the command's own summary). Reads the ledger only; never calls the API.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::message::error_line;
use super::{Exit, exit_for};
use crate::cli::ReportArgs;
use crate::ledger::{Ledger, RunTallies};
use crate::report::html::{MAX_ATTENTION, MAX_CUSTOMERS, MAX_ERRORS, ReportData, render};
use crate::report::series::{Collector, RowTally};
use crate::report::{Announce, Figures, announce, take_announced};
use crate::settings::Settings;

/// `bbinvite report [--run N] --output FILE.html`.
pub(crate) fn report(global: &Settings, a: ReportArgs) -> anyhow::Result<Exit> {
    let path = &global.ledger;
    if !path.exists() {
        bail!(
            "no ledger at {}; run `bbinvite run FILE` first, or name one with --ledger",
            path.display()
        );
    }
    let mut ledger = Ledger::open_for_report(path)?;
    let data = gather(&mut ledger, a.run)?;
    let page = render(&data);
    write_page(&a.output, &page)?;
    if global.json {
        let out = serde_json::json!({
            "run": data.info.id,
            "output": a.output.display().to_string(),
            "bytes": page.len(),
        });
        println!("{out}");
    } else if !global.quiet {
        println!(
            "Wrote the report of run {} to {} ({} KB)",
            data.info.id,
            a.output.display(),
            page.len().div_ceil(1024)
        );
    }
    Ok(Exit::Ok)
}

/// Everything the page shows, from the ledger: a pass over the run's attempts, one over
/// its rows, and a few indexed looks.
fn gather(ledger: &mut Ledger, run: Option<i64>) -> anyhow::Result<ReportData> {
    let Some(info) = ledger.run_info(run)? else {
        match run {
            Some(n) => bail!("no run {n} in {}", ledger.path().display()),
            None => bail!(
                "no run with rows in {}; run `bbinvite run FILE` first",
                ledger.path().display()
            ),
        }
    };
    let id = info.id;
    let mut attempts = Collector::default();
    ledger.each_attempt(id, &mut |a| attempts.add(a))?;
    let mut rows = RowTally::default();
    ledger.each_row(id, &mut |customer, status, invitation| {
        rows.add(
            customer,
            status,
            invitation.is_some_and(|i| attempts.attempted(i)),
        )
    })?;
    let mut customers = rows.customers();
    for c in customers.iter_mut().take(MAX_CUSTOMERS) {
        if let Some(cid) = c.id {
            c.name = ledger.customer_name(id, cid)?;
        }
    }
    // A compacted run has no row records left: its counts are those the ledger kept.
    let (statuses, tallies) = match ledger.compacted_tallies(id)? {
        Some(kept) => (ledger.run_status_counts(id)?.rows, kept),
        None => (
            rows.statuses(),
            RunTallies {
                sent: rows.sent + ledger.actions_done(id)?,
                already_done: rows.already_done,
            },
        ),
    };
    let (attention, attention_total) = ledger.attention_rows(id, MAX_ATTENTION)?;
    Ok(ReportData {
        ledger: ledger.path().display().to_string(),
        statuses,
        tallies,
        customers,
        timeline: attempts.finish(),
        errors: ledger.run_errors(id, MAX_ERRORS)?,
        attention,
        attention_total,
        info,
    })
}

/// Writes the page beside its target, then renames it into place.
fn write_page(path: &Path, page: &str) -> anyhow::Result<()> {
    let folder = crate::report::folder_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report.html".into());
    let tmp = folder.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, page).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| {
        format!(
            "cannot write the report to {}; check that its folder exists and is writable",
            path.display()
        )
    })
}

/// The end of a sending command: when it failed before its summary could tell anyone
/// (bad credentials, an unreadable file, a busy ledger), the webhook and the metrics
/// file still hear of it, with the reason.
pub(crate) fn announce_unless_done(
    command: &str,
    started: Instant,
    result: anyhow::Result<Exit>,
    mut to: Announce,
) -> anyhow::Result<Exit> {
    let told = take_announced();
    if let Err(e) = &result
        && !told
    {
        let code = exit_for(e) as i32;
        let outcome = format!("error: {}", error_line(e));
        let took: Duration = started.elapsed();
        // A metrics file the checks refused was named in the error already: writing it
        // would only fail a second time.
        to.metrics_file = to
            .metrics_file
            .filter(|p| super::preflight::metrics_folder(p).is_ok());
        announce(&Figures::stopped_early(command, &outcome, code, took), &to);
    }
    result
}
