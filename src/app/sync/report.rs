//! What `sync` prints and writes: the plan (`--plan`), its section of a run's summary
//! (the summary itself is `report::summary`'s), and its actions as CSV
//! (`export --actions`).
//!
//! Output only: it decides nothing, reads only what it is handed (and, for the export,
//! the ledger's rows), and must never print a secret (nothing here is handed one).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::app::report::{export_sink, ignore_broken_pipe, spreadsheet_safe, write_json_line};
use crate::domain::RunId;
use crate::ledger::{self, Ledger, StatusCounts};
use crate::report::summary::{RefusedPrune, Summary, SyncSection};
use crate::settings::Settings;
use crate::sync::plan::{self, Action, Hold, Plan};

/// `--plan --json` (docs/json.md): the plan for scripts.
#[derive(Serialize)]
struct PlanReport<'a> {
    rows: usize,
    /// Entries per action, the whole plan's.
    actions: BTreeMap<Action, usize>,
    prune_waiting_for_yes: usize,
    customers: Vec<&'a plan::CustomerPlan>,
    entries: Vec<EntryLine<'a>>,
}

/// One entry of the plan, with where its row was read as `file` and `line` (null for a
/// prune), named as validate's findings name them.
#[derive(Serialize)]
struct EntryLine<'a> {
    #[serde(flatten)]
    entry: &'a plan::Entry,
    file: Option<&'a str>,
    line: Option<u64>,
}

impl<'a> From<&'a plan::Entry> for EntryLine<'a> {
    fn from(entry: &'a plan::Entry) -> Self {
        EntryLine {
            entry,
            file: entry.origin.as_ref().map(|o| o.file.as_str()),
            line: entry.origin.as_ref().map(|o| o.line),
        }
    }
}

/// Prints the plan: counts per action, per customer, then the rows (all but unchanged).
pub(super) fn print_plan(global: &Settings, plan: &Plan, rows: usize) -> anyhow::Result<()> {
    let shown = || {
        plan.entries
            .iter()
            .filter(|e| e.action != Action::Unchanged)
    };
    let report = || PlanReport {
        rows,
        actions: plan.counts(),
        prune_waiting_for_yes: plan.waiting_for_yes(),
        customers: plan.customers.values().collect(),
        entries: shown().map(EntryLine::from).collect(),
    };
    print_plan_as(global, report, |out| write_plan(out, plan, rows, shown()))
}

/// Prints a plan as the global flags ask: its JSON document, nothing (`-q`), or its
/// text; a reader that stops reading (`| head`) is no error.
pub(crate) fn print_plan_as<T: Serialize>(
    global: &Settings,
    json: impl FnOnce() -> T,
    text: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if global.json {
        serde_json::to_writer_pretty(&mut out, &json())
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else if global.quiet {
        Ok(())
    } else {
        text(&mut out)
    };
    written
        .and_then(|()| out.flush())
        .or_else(broken_pipe_is_fine)?;
    Ok(())
}

fn write_plan<'a>(
    out: &mut dyn Write,
    plan: &Plan,
    rows: usize,
    entries: impl Iterator<Item = &'a plan::Entry>,
) -> std::io::Result<()> {
    let users: usize = plan.customers.values().filter_map(|c| c.current).sum();
    writeln!(
        out,
        "bbinvite sync plan: {rows} rows, {} customers, {users} access users now; nothing is changed",
        plan.customers.len()
    )?;
    let counts = plan.counts();
    for action in Action::ALL {
        if let Some(n) = counts.get(&action) {
            let note = match action {
                Action::Exists => "  (recorded; nothing sent)",
                Action::Prune if plan.waiting_for_yes() > 0 => "  (applied only with --yes)",
                _ => "",
            };
            writeln!(out, "  {:<11} {n}{note}", action.as_str())?;
        }
    }
    write_customers(out, plan)?;
    writeln!(out, "Rows (customer, e-mail, action, why):")?;
    let entries: Vec<&plan::Entry> = entries.collect();
    // Wide enough for most e-mails, not for the odd very long one.
    let width = entries
        .iter()
        .map(|e| e.email.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    for e in entries {
        let customer = e.customer_id.map_or("-".to_string(), |c| c.to_string());
        let hold = match e.hold {
            Some(Hold::NeedsYes) => " [not without --yes]",
            Some(Hold::Refused) => " [refused by --max-prune]",
            None => "",
        };
        let action = format!("{}{hold}", e.action.as_str());
        let origin = e
            .origin
            .as_ref()
            .map(|o| format!(" ({o})"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {customer:>9}  {:<width$}  {action:<10}  {}{origin}",
            e.email, e.why
        )?;
    }
    Ok(())
}

/// The plan's table per customer: those with something to do or to say.
fn write_customers(out: &mut dyn Write, plan: &Plan) -> std::io::Result<()> {
    const COLUMNS: [Action; 6] = [
        Action::Invite,
        Action::Exists,
        Action::Resend,
        Action::Suspend,
        Action::Reactivate,
        Action::Prune,
    ];
    writeln!(out, "Per customer (those with something to do or to say):")?;
    write!(out, "  {:>9} {:>6}", "customer", "users")?;
    for action in COLUMNS {
        write!(out, " {:>10}", action.as_str())?;
    }
    writeln!(out)?;
    let mut quiet = 0;
    for c in plan.customers.values() {
        let notes = customer_notes(c);
        let busy = COLUMNS.iter().any(|a| c.counts.contains_key(a));
        if !busy && notes.is_empty() {
            quiet += 1;
            continue;
        }
        write!(
            out,
            "  {:>9} {:>6}",
            c.customer_id,
            c.current.map_or("?".to_string(), |n| n.to_string())
        )?;
        for action in COLUMNS {
            write!(out, " {:>10}", c.counts.get(&action).copied().unwrap_or(0))?;
        }
        writeln!(out, "  {}", notes.join("; "))?;
    }
    if quiet > 0 {
        writeln!(out, "  ({quiet} customers with nothing to do)")?;
    }
    Ok(())
}

/// What a person should know about one customer of the plan.
fn customer_notes(c: &plan::CustomerPlan) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(e) = &c.list_error {
        notes.push(format!("access list unreadable: {e}"));
    }
    if let Some(r) = &c.prune_refused {
        notes.push(refusal_text(c.customer_id, r));
    }
    if c.protected > 0 {
        notes.push(format!(
            "{} not pruned: an unusable row names their e-mail",
            c.protected
        ));
    }
    let problems: usize = c
        .counts
        .iter()
        .filter(|(a, _)| a.is_problem() || **a == Action::Gone)
        .map(|(_, n)| n)
        .sum();
    if problems > 0 {
        notes.push(format!("{problems} rows need a look (see below)"));
    }
    notes
}

pub(super) fn refusal_text(customer_id: i64, r: &plan::PruneRefusal) -> String {
    format!(
        "prune refused for customer {customer_id}: it would suspend {} of its {} users ({:.0}%, more than --max-prune {}%); is the sheet complete? Raise --max-prune if this is meant",
        r.would_suspend,
        r.current,
        r.percent(),
        r.max_prune_pct
    )
}

// ---------------------------------------------------------------------------------
// A run's summary and actions.

/// What the ledger says of a resend cut off in flight.
pub(super) const UNCONFIRMED_RESEND: &str =
    "unconfirmed: the process stopped while it was in flight; it is not sent again this period";

/// The line that tells of resends whose delivery is unknown.
pub(crate) fn unconfirmed_text(n: u64) -> String {
    let (resends, they) = if n == 1 {
        ("resend", "it is")
    } else {
        ("resends", "they are")
    };
    format!(
        "{n} {resends} unconfirmed: the process stopped while {} in flight; {they} not sent again",
        if n == 1 { "it was" } else { "they were" }
    )
}

/// `sync`'s section of a run's summary: its action counts, prunes waiting or refused,
/// resends cut off before, users gone from their customer's list.
pub(super) fn with_sync_section(
    mut s: Summary,
    counts: &StatusCounts,
    plan: &Plan,
    customers: usize,
    interrupted: u64,
) -> Summary {
    let mut lines = Vec::new();
    if interrupted > 0 {
        lines.push(unconfirmed_text(interrupted));
    }
    let gone = plan.counts().get(&Action::Gone).copied().unwrap_or(0);
    if gone > 0 {
        lines.push(format!(
            "{gone} users invited before are no longer in their customer's access list and were not invited again (see them with --plan)"
        ));
    }
    if plan.waiting_for_yes() > 0 {
        lines.push(format!(
            "Prune skipped: {} users are not in the sheet; see them with --plan --prune, suspend them with --prune --yes",
            plan.waiting_for_yes()
        ));
    }
    lines.extend(plan.refusals().map(|(id, r)| refusal_text(id, r)));
    s.sync = Some(SyncSection {
        customers,
        actions: counts.actions.clone(),
        prune_waiting_for_yes: plan.waiting_for_yes(),
        prune_refused: plan
            .refusals()
            .map(|(customer_id, r)| RefusedPrune {
                customer_id,
                would_suspend: r.would_suspend,
                current: r.current,
                percent: r.percent(),
                max_prune_pct: r.max_prune_pct,
            })
            .collect(),
        resends_unconfirmed: interrupted,
        lines,
    });
    s
}

/// `export --actions`: a run's actions as CSV a spreadsheet opens safely, or (`json`)
/// as JSON lines, one object an action with the CSV's columns as its keys.
pub(crate) fn write_actions(
    ledger: &mut Ledger,
    run: Option<RunId>,
    path: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let sink = std::io::BufWriter::new(export_sink(path)?);
    if json {
        let mut out = sink;
        ledger
            .export_actions(run, &mut |a| write_json_line(&mut out, &a))
            .map(|_| ())
            .or_else(ignore_broken_pipe)?;
        out.flush()
            .or_else(|e| ignore_broken_pipe(ledger::Error::Output(e)))?;
        return Ok(());
    }
    let mut csv = csv::Writer::from_writer(sink);
    let csv_err = |e: csv::Error| std::io::Error::other(e);
    const HEADER: [&str; 11] = [
        "run",
        "customer_id",
        "email",
        "action",
        "state",
        "why",
        "error",
        "access_user_id",
        "attempts",
        "sent_at",
        "updated_at",
    ];
    let header = csv.write_record(HEADER).map_err(csv_err);
    header
        .map_err(ledger::Error::Output)
        .and_then(|()| {
            ledger.export_actions(run, &mut |a| {
                let cells = [
                    a.run.to_string(),
                    a.customer_id.to_string(),
                    a.email,
                    a.kind,
                    a.state,
                    a.why,
                    a.error.unwrap_or_default(),
                    a.access_user_id.to_string(),
                    a.attempts.to_string(),
                    a.sent_at.unwrap_or_default(),
                    a.updated_at,
                ];
                csv.write_record(cells.iter().map(|c| spreadsheet_safe(c)))
                    .map_err(csv_err)
            })
        })
        .map(|_| ())
        .or_else(ignore_broken_pipe)?;
    csv.flush()
        .or_else(|e| ignore_broken_pipe(ledger::Error::Output(e)))?;
    Ok(())
}

pub(crate) fn broken_pipe_is_fine(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e)
    }
}
