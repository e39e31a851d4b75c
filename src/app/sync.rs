//! `bbinvite sync`: the sheet as the desired state of portal access.
//!
//! Reads the whole sheet, reads each named customer's access list once (every page),
//! plans from the difference ([`plan`], pure), then prints the plan (`--plan`) or
//! applies it: invitations go through the ledger's admission and then the engine,
//! exactly as `run` sends them; users already there are recorded as `exists` without a
//! request; resends, suspensions and reactivations are ledger actions the engine marks
//! `sending` before their requests leave. Every request goes through the [`Sender`]'s
//! attempt runner (limiter, breaker, retries). What it prints and writes is in
//! `report`.
//!
//! This module holds no SQL (the ledger does) and never deletes an access user: a
//! prune is a suspension, applied only with `--yes` and within `--max-prune`.

mod report;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::engine::{Ending, Engine, Work, open};
use super::setup::{api_abort, open_inputs, resolver, spawn_reader, verdict};
use super::{ADMIT_BATCH, Aborted, Exit};
use crate::api::Listing;
use crate::api::types::AccessUser;
use crate::cli::SyncArgs;
use crate::domain::{
    self, ActionJob, ActionState, Admission, AdmitOptions, Job, NewAction, RowStatus, RunId,
    Verdict,
};
use crate::input::{Columns, Field, Reader};
use crate::ledger::{NewRow, Present, Writer};
use crate::progress::{Mode, Progress, Total};
use crate::resolve::Resolver;
use crate::send::{Abort, Disposition, Sender, disposition, explain};
use crate::settings::Settings;

pub(crate) use self::report::{print_plan_as, write_actions};
use crate::sync::plan::{self, Hold, Origin, Plan, SheetRow};

/// Runs `bbinvite sync`.
pub async fn run(global: &Settings, a: SyncArgs, stop: CancellationToken) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let readers = open_inputs(&a.input)?;
    // A plan writes no results, so only a sync that applies needs a place for them.
    let results = a.send.results.as_deref().filter(|_| !a.plan);
    let (mut ledger, api, sender) = open(global, &a.send, results, &stop).await?;
    let mut resolver = resolver(&mut ledger, &api, &a.input, &readers).await?;
    let files: Vec<String> = readers.iter().map(|r| r.file().to_string()).collect();
    let sheet = read_sheet(readers, &mut resolver, &stop).await?;
    let customers = sheet.customers();
    let concurrency = sender.settings().concurrency;
    let mode = Mode::detect(global.quiet || global.json);
    let lists = read_lists(&sender, &customers, concurrency, mode).await?;
    let view = ledger.sync_view(&customers)?;
    let opts = plan::Options {
        resend_after: a.resend_after,
        apply_status: a.apply_status,
        prune: a.prune,
        yes: a.yes,
        max_prune_pct: a.max_prune,
        admit: AdmitOptions {
            retry_rejected: a.send.retry_rejected,
        },
        now: SystemTime::now(),
    };
    let plan = plan::compute(&sheet.rows, &lists, &view, &opts);
    if a.plan {
        report::print_plan(global, &plan, sheet.rows.len())?;
        return Ok(Exit::of_problems(plan.has_problems()));
    }
    let run = ledger.begin_run("sync", &api.base_url, &files, false)?;
    if results.is_some() {
        ledger.keep_counted_rows(run)?;
    }
    // Under the lock, a resend still `sending` was cut off by a sync that died: say so
    // once, here; it is not sent again in its period.
    let interrupted = ledger.settle_interrupted_resends(report::UNCONFIRMED_RESEND)?;
    let progress = Progress::new(mode, "sync", "rows and actions");
    let rows = sheet.rows.len() as u64;
    progress.set_total(move || Total::Exact(rows));
    let engine = Engine::start(ledger, run, sender, progress, global.verbose > 0)?;
    let writer = &engine.writer;
    let applied = async {
        let invites = admit_sheet(
            writer,
            run,
            &sheet,
            &lists,
            opts.admit,
            &engine.progress,
            global,
        )
        .await?;
        let actions = add_actions(writer, run, &plan, &invites.row_ids).await?;
        let total = rows + actions.len() as u64;
        engine.progress.set_total(move || Total::Exact(total));
        let work = invites
            .jobs
            .into_iter()
            .map(Work::Invite)
            .chain(actions.into_iter().map(Work::Act));
        engine.dispatch(futures::stream::iter(work)).await
    }
    .await;
    let ending = Ending {
        problem: plan.refusals().next().is_some(),
        ..Ending::new("sync", run, started, global, &a.send)
    };
    let customers = customers.len();
    engine.finish(ending, applied, |s, counts| {
        report::with_sync_section(s, counts, &plan, customers, interrupted)
    })
}

// ---------------------------------------------------------------------------------
// Reading: the sheet, then the access lists.

/// The whole sheet: sync needs all of it before it can tell who is missing.
#[derive(Default)]
struct Sheet {
    /// Each input header once: file name and column names.
    sources: Vec<(String, Vec<String>)>,
    rows: Vec<SheetRow>,
    /// What the ledger keeps of each row, aligned with `rows`.
    lines: Vec<Line>,
}

struct Line {
    /// Index in `Sheet::sources`.
    source: usize,
    line: u64,
    /// JSON array of the row's cells.
    cells: String,
    email: Option<String>,
}

impl Sheet {
    /// The customers the sheet's usable rows name, in id order.
    fn customers(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .rows
            .iter()
            .filter_map(|r| match &r.verdict {
                Verdict::Invite { customer_id, .. } => Some(*customer_id),
                _ => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Reads and resolves every row (reading on its own thread, as `run` does).
async fn read_sheet(
    readers: Vec<Reader>,
    resolver: &mut Resolver,
    stop: &CancellationToken,
) -> anyhow::Result<Sheet> {
    let mut batches = spawn_reader(readers, stop.clone());
    // By header: holding the Arc keeps its address from being reused by another one.
    let mut sources: HashMap<usize, (usize, Arc<Columns>)> = HashMap::new();
    let mut sheet = Sheet::default();
    loop {
        let batch = tokio::select! {
            b = batches.recv() => b,
            _ = stop.cancelled() => None,
        };
        let Some(batch) = batch else { break };
        for record in batch? {
            let key = Arc::as_ptr(&record.columns) as usize;
            let source = match sources.get(&key) {
                Some((index, _)) => *index,
                None => {
                    let index = sheet.sources.len();
                    sheet
                        .sources
                        .push((record.file.to_string(), record.columns.names.clone()));
                    sources.insert(key, (index, record.columns.clone()));
                    index
                }
            };
            let verdict = verdict(&record, resolver).await;
            sheet.rows.push(SheetRow {
                origin: Origin {
                    file: record.file.to_string(),
                    line: record.line,
                },
                email_cell: record.get(Field::Email).map(str::to_string),
                verdict,
            });
            sheet.lines.push(Line {
                source,
                line: record.line,
                cells: record.cells_json(),
                email: record.parsed.as_ref().ok().map(|w| w.email.clone()),
            });
        }
    }
    if stop.is_cancelled() {
        return Err(anyhow::Error::new(Aborted(Abort::Signal.to_string())));
    }
    Ok(sheet)
}

/// A customer's access users, or why they could not be read.
type Lists = HashMap<i64, Result<Vec<AccessUser>, String>>;

/// Reads each customer's whole access list once, `concurrency` at a time, each with the
/// retries of any read, showing progress in `mode`. Refused credentials, the breaker or
/// a signal stop the command.
async fn read_lists(
    sender: &Sender,
    customers: &[i64],
    concurrency: usize,
    mode: Mode,
) -> anyhow::Result<Lists> {
    let progress = Progress::new(mode, "sync: reading", "access lists");
    let total = customers.len() as u64;
    progress.set_total(move || Total::Exact(total));
    let lists = read_each_list(sender, customers, concurrency, &progress).await;
    progress.finish();
    lists
}

async fn read_each_list(
    sender: &Sender,
    customers: &[i64],
    concurrency: usize,
    progress: &Progress,
) -> anyhow::Result<Lists> {
    let mut reads = futures::stream::iter(customers.iter().copied())
        .map(|customer_id| async move {
            // A read is logged nowhere: the ledger's attempts are those of a row.
            let users = sender
                .read_list("list", &mut Vec::new(), Listing::access(customer_id))
                .await;
            (customer_id, users.map_err(|f| f.into_error()))
        })
        .buffer_unordered(concurrency.max(1));
    let mut lists = Lists::with_capacity(customers.len());
    while let Some((customer_id, users)) = reads.next().await {
        progress.item(users.is_err());
        match users {
            Ok(users) => {
                lists.insert(customer_id, Ok(users));
            }
            Err(e) => {
                if let Disposition::Abort(_) = disposition(&e) {
                    return Err(api_abort(e));
                }
                lists.insert(customer_id, Err(explain(&e)));
            }
        }
        if let Some(reason) = sender.abort_reason() {
            return Err(anyhow::Error::new(Aborted(format!(
                "{reason} (while reading the access lists; nothing was changed)"
            ))));
        }
    }
    Ok(lists)
}

// ---------------------------------------------------------------------------------
// Applying: admit the rows, record the actions, send.

/// The rows as admitted: this run's row id for each sheet row, and the invitations to send.
struct Admitted {
    row_ids: Vec<i64>,
    jobs: Vec<Job>,
}

/// Admits every row to the ledger like `run` (duplicates, keys already done, rejected
/// rows, all decided by [`Ledger::admit`]); users the access list already holds are then
/// recorded as there instead of sent.
async fn admit_sheet(
    writer: &Writer,
    run: RunId,
    sheet: &Sheet,
    lists: &Lists,
    opts: AdmitOptions,
    progress: &Progress,
    global: &Settings,
) -> anyhow::Result<Admitted> {
    let there: HashMap<(i64, String), i64> = lists
        .iter()
        .filter_map(|(c, l)| l.as_ref().ok().map(|users| (c, users)))
        .flat_map(|(c, users)| {
            users
                .iter()
                .map(|u| ((*c, domain::email_key(&u.email)), u.id))
        })
        .collect();
    let mut source_ids = Vec::with_capacity(sheet.sources.len());
    for (file, names) in &sheet.sources {
        let (file, names) = (file.clone(), names.clone());
        source_ids.push(
            writer
                .call(move |l| l.add_source(run, &file, &names))
                .await?,
        );
    }
    let mut admitted = Admitted {
        row_ids: Vec::with_capacity(sheet.rows.len()),
        jobs: Vec::new(),
    };
    let mut start = 0;
    while start < sheet.rows.len() {
        let end = (start + ADMIT_BATCH).min(sheet.rows.len());
        let batch: Vec<NewRow> = (start..end)
            .map(|i| {
                let line = &sheet.lines[i];
                NewRow {
                    source: source_ids.get(line.source).copied().unwrap_or_default(),
                    line: line.line,
                    cells: line.cells.clone(),
                    email: line.email.clone(),
                    verdict: admissible(&sheet.rows[i].verdict, lists),
                }
            })
            .collect();
        let answers = writer.call(move |l| l.admit(run, &batch, opts)).await?;
        let present = sort_answers(
            sheet,
            lists,
            &there,
            start..end,
            answers,
            &mut admitted,
            progress,
            global.verbose > 0,
        );
        if !present.is_empty() {
            let statuses = writer.call(move |l| l.settle_present(&present)).await?;
            statuses.into_iter().for_each(|s| progress.count(s));
        }
        start = end;
    }
    Ok(admitted)
}

/// Sorts what admission decided for the sheet's rows `range`: invitations to send
/// (into `admitted`), and users the access list already holds, returned to be recorded
/// as there instead of sent; every other row is counted.
#[allow(clippy::too_many_arguments)]
fn sort_answers(
    sheet: &Sheet,
    lists: &Lists,
    there: &HashMap<(i64, String), i64>,
    range: std::ops::Range<usize>,
    answers: Vec<Admission>,
    admitted: &mut Admitted,
    progress: &Progress,
    verbose: bool,
) -> Vec<Present> {
    let mut present = Vec::new();
    for (i, answer) in range.zip(answers) {
        let row = &sheet.rows[i];
        let found = match &row.verdict {
            Verdict::Invite { customer_id, user } => {
                let key = (*customer_id, domain::email_key(&user.email));
                there.get(&key).map(|uid| (key, *uid))
            }
            _ => None,
        };
        let present_row = |row_id, ((customer_id, email_key), access_user_id)| Present {
            row_id,
            customer_id,
            email_key,
            access_user_id,
        };
        match answer {
            Admission::Send(mut job) => {
                admitted.row_ids.push(job.row_id);
                match found {
                    Some(f) => present.push(present_row(job.row_id, f)),
                    None => {
                        // The list was read after any earlier process died: what is not
                        // in it was not created, so no look is needed before sending.
                        job.check_first = false;
                        job.origin = row.origin.to_string();
                        admitted.jobs.push(job);
                    }
                }
            }
            Admission::Settled { row_id, status } => {
                admitted.row_ids.push(row_id);
                match found {
                    Some(f)
                        if matches!(
                            status,
                            RowStatus::Invited | RowStatus::Exists | RowStatus::Rejected
                        ) =>
                    {
                        present.push(present_row(row_id, f))
                    }
                    _ => {
                        if verbose && status.is_problem() {
                            progress.println(&format!(
                                "{}: {}: {}",
                                row.origin,
                                status.as_str(),
                                reason(&row.verdict, lists)
                            ));
                        }
                        progress.count(status);
                    }
                }
            }
        }
    }
    present
}

/// A row's verdict for the ledger: a customer whose access list could not be read gets
/// nothing done, and its rows say why.
fn admissible(verdict: &Verdict, lists: &Lists) -> Verdict {
    match verdict {
        Verdict::Invite { customer_id, .. } => match lists.get(customer_id) {
            Some(Ok(_)) => verdict.clone(),
            _ => Verdict::Unresolved {
                customer_id: Some(*customer_id),
                reason: reason(verdict, lists),
            },
        },
        other => other.clone(),
    }
}

/// Why a row cannot be acted on, in words.
fn reason(verdict: &Verdict, lists: &Lists) -> String {
    match verdict {
        Verdict::Invalid(r) | Verdict::Unresolved { reason: r, .. } => r.clone(),
        Verdict::Invite { customer_id, .. } => match lists.get(customer_id) {
            Some(Err(e)) => format!("could not read customer {customer_id}'s access list: {e}"),
            Some(Ok(_)) => String::new(),
            None => format!("customer {customer_id}'s access list was not read"),
        },
    }
}

/// Records every action of the plan (held prunes as skipped or refused); returns those
/// to send.
async fn add_actions(
    writer: &Writer,
    run: RunId,
    plan: &Plan,
    row_ids: &[i64],
) -> anyhow::Result<Vec<ActionJob>> {
    let mut actions = Vec::new();
    for e in &plan.entries {
        let (Some(kind), Some(customer_id), Some(access_user_id)) =
            (e.action.kind(), e.customer_id, e.access_user_id)
        else {
            continue;
        };
        actions.push(NewAction {
            customer_id,
            email: e.email.clone(),
            access_user_id,
            kind,
            row_id: e.row.and_then(|r| row_ids.get(r).copied()),
            why: e.why.clone(),
            state: match e.hold {
                None => ActionState::Pending,
                Some(Hold::NeedsYes) => ActionState::Skipped,
                Some(Hold::Refused) => ActionState::Refused,
            },
        });
    }
    let jobs: Vec<(ActionState, ActionJob)> = actions
        .iter()
        .map(|a| {
            (
                a.state,
                ActionJob {
                    id: 0,
                    customer_id: a.customer_id,
                    access_user_id: a.access_user_id,
                    kind: a.kind,
                    email: a.email.clone(),
                },
            )
        })
        .collect();
    let ids = writer.call(move |l| l.add_actions(run, &actions)).await?;
    Ok(jobs
        .into_iter()
        .zip(ids)
        .filter(|((state, _), _)| *state == ActionState::Pending)
        .map(|((_, job), id)| ActionJob { id, ..job })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;
    use std::time::Duration;

    use crate::cli::{Args, Command};

    fn parse(args: &[&str]) -> Result<SyncArgs, clap::Error> {
        let a = Args::try_parse_from(["bbinvite", "sync", "in.csv"].iter().chain(args))?;
        match a.command {
            Command::Sync(s) => Ok(s),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn flags_parse_with_their_defaults_and_checks() {
        let a = parse(&[]).unwrap();
        assert!(!a.plan && !a.prune && !a.yes && !a.apply_status);
        assert_eq!(a.max_prune, 20.0);
        assert_eq!(a.resend_after, None);
        let a = parse(&[
            "--resend-after",
            "1.5",
            "--prune",
            "--yes",
            "--max-prune",
            "5%",
        ])
        .unwrap();
        assert_eq!(a.resend_after, Some(Duration::from_secs(129_600)));
        assert_eq!(a.max_prune, 5.0);
        assert!(parse(&["--yes"]).is_err(), "--yes needs --prune");
        assert!(parse(&["--resend-after", "0"]).is_err());
        assert!(parse(&["--resend-after", "soon"]).is_err());
        assert!(parse(&["--max-prune", "101"]).is_err());
        let a = parse(&["--plan", "--rate", "50", "--json"]).unwrap();
        assert!(a.plan);
        assert_eq!(a.send.rate.per_second_whole().get(), 50);
    }
}
