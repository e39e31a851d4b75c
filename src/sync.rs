//! `bbinvite sync`: the sheet as the desired state of portal access.
//!
//! Reads the whole sheet, reads each named customer's access list once (every page),
//! plans from the difference ([`plan`], pure), then prints the plan (`--plan`) or
//! applies it: invitations go through the ledger's admission and the send stage's
//! [`Sender`], exactly as `run` sends them; users already there are recorded as
//! `exists` without a request; resends, suspensions and reactivations are ledger
//! actions, each marked `sending` before its request leaves. Every request waits on the
//! one limiter behind the client's gate, and feeds the one breaker. What it prints and
//! writes is in `report`.
//!
//! This module holds no SQL (the ledger does) and never deletes an access user: a
//! prune is a suspension, applied only with `--yes` and within `--max-prune`.

pub mod plan;
mod report;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::api::types::AccessUser;
use crate::api::{Client, Error as ApiError};
use crate::app::{self, Aborted, Api, Exit, Resolver};
use crate::cli::{self, Global, SyncArgs};
use crate::input::{Columns, Field, Reader};
use crate::ledger::{
    self, ActionKind, ActionOutcome, ActionState, Admission, AdmitOptions, Attempt, NewAction,
    NewRow, Present, RowStatus, RunId, Verdict, Writer,
};
use crate::progress::{Mode, Progress};
use crate::send::{Abort, Disposition, Job, Sender, backoff, disposition, explain, with_retries};

use self::plan::{Hold, Plan, SheetRow};
use self::report::{RefusedLine, Summary};
pub(crate) use self::report::{write_action_counts, write_actions};

/// Invitations and idempotent actions marked `sending` in one transaction, at most: as
/// `run`, about one round of workers, so a crash leaves few marks to check.
const MARK_BATCH: usize = 64;

/// Runs `bbinvite sync`.
pub async fn run(global: &Global, a: SyncArgs, stop: CancellationToken) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let readers = app::open_inputs(&a.input)?;
    let path = app::ledger_path(global, a.input.sandbox);
    // A plan writes no results, so only a sync that applies needs a place for them.
    let results = a.send.results.as_deref().filter(|_| !a.plan);
    let endpoint = app::before_sending(global, &path, a.input.sandbox, results)?;
    let mut ledger = app::open_ledger(&path)?;
    let settings = cli::send_settings(&a.send);
    let api = app::connect_to_send(endpoint, &settings, &a.send, &mut ledger, &stop).await?;
    let mut resolver = app::resolver(&mut ledger, &api, &a.input, &readers).await?;
    let files: Vec<String> = readers.iter().map(|r| r.file().to_string()).collect();
    let sheet = read_sheet(readers, &mut resolver, &stop).await?;
    let sender = Arc::new(Sender::new(api.client.clone(), settings.clone(), stop));
    let customers = sheet.customers();
    let lists = read_lists(&api, &sender, &customers, settings.concurrency).await?;
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
        return Ok(if plan.has_problems() {
            Exit::Problems
        } else {
            Exit::Ok
        });
    }
    let run = ledger.begin_run("sync", &api.base_url, &files, false)?;
    if results.is_some() {
        ledger.keep_counted_rows(run)?;
    }
    // Under the lock, a resend still `sending` was cut off by a sync that died: say so
    // once, here; it is not sent again in its period.
    let interrupted = ledger.settle_interrupted_resends(report::UNCONFIRMED_RESEND)?;
    let progress = Progress::new(Mode::detect(global.quiet || global.json), "sync");
    progress.seen(sheet.rows.len() as u64);
    progress.reading_done();
    let (writer, thread) = Writer::spawn(ledger, run)?;
    let applied = async {
        let invites =
            admit_sheet(&writer, run, &sheet, &lists, opts.admit, &progress, global).await?;
        let actions = add_actions(&writer, run, &plan, &invites.row_ids).await?;
        dispatch(
            invites.jobs,
            actions,
            &sender,
            &api.client,
            &writer,
            run,
            &progress,
            global.verbose,
        )
        .await
    }
    .await;
    let ended = Ended {
        run,
        started,
        customers: customers.len(),
        plan: &plan,
        results: a.send.results.as_deref(),
        interrupted,
    };
    finish(global, ended, writer, thread, &progress, &sender, applied)
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
    let mut batches = app::spawn_reader(readers, stop.clone());
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
            let verdict = app::verdict(&record, resolver).await;
            sheet.rows.push(SheetRow {
                origin: format!("{}:{}", record.file, record.line),
                email_cell: record.get(Field::Email).map(str::to_string),
                verdict,
            });
            sheet.lines.push(Line {
                source,
                line: record.line,
                cells: serde_json::to_string(&record.values).unwrap_or_else(|_| "[]".into()),
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
/// retries of any read. Refused credentials, the breaker or a signal stop the command.
async fn read_lists(
    api: &Api,
    sender: &Sender,
    customers: &[i64],
    concurrency: usize,
) -> anyhow::Result<Lists> {
    let mut reads = futures::stream::iter(customers.iter().copied())
        .map(|customer_id| {
            let client = api.client.clone();
            let stop = api.stop.clone();
            let tries = api.max_attempts;
            async move {
                let users = with_retries(tries, &stop, || client.all_access(customer_id)).await;
                (customer_id, users)
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut lists = Lists::with_capacity(customers.len());
    while let Some((customer_id, users)) = reads.next().await {
        match users {
            Ok(users) => {
                sender.note_success();
                lists.insert(customer_id, Ok(users));
            }
            Err(e) => {
                if let Disposition::Abort(_) = disposition(&e) {
                    return Err(app::api_abort(e));
                }
                sender.note_failure(&e);
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
    global: &Global,
) -> anyhow::Result<Admitted> {
    let there: HashMap<(i64, String), i64> = lists
        .iter()
        .filter_map(|(c, l)| l.as_ref().ok().map(|users| (c, users)))
        .flat_map(|(c, users)| {
            users
                .iter()
                .map(|u| ((*c, ledger::email_key(&u.email)), u.id))
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
        let end = (start + app::ADMIT_BATCH).min(sheet.rows.len());
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
        let mut present = Vec::new();
        for (i, answer) in (start..end).zip(answers) {
            let row = &sheet.rows[i];
            let found = match &row.verdict {
                Verdict::Invite { customer_id, user } => {
                    let key = (*customer_id, ledger::email_key(&user.email));
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
                            job.origin = row.origin.clone();
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
                            if global.verbose && status.is_problem() {
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
        if !present.is_empty() {
            let statuses = writer.call(move |l| l.settle_present(&present)).await?;
            statuses.into_iter().for_each(|s| progress.count(s));
        }
        start = end;
    }
    Ok(admitted)
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

/// An action to send.
#[derive(Debug, Clone)]
struct ActionJob {
    id: i64,
    customer_id: i64,
    access_user_id: i64,
    kind: ActionKind,
    email: String,
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

/// One request's worth of work.
enum Work {
    Invite(Job),
    Act(ActionJob),
}

/// What became of one [`Work`].
enum Done {
    Invite(String, crate::send::Outcome),
    Act(ActionJob, ActionOutcome),
}

/// Marks work `sending` (in small batches; a resend alone, just before its request),
/// sends it with bounded concurrency (invitations first, then the actions), and records
/// each outcome. Stops taking new work when the
/// run is stopped; what was not taken stays pending.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    invites: Vec<Job>,
    actions: Vec<ActionJob>,
    sender: &Arc<Sender>,
    client: &Arc<Client>,
    writer: &Writer,
    run: RunId,
    progress: &Progress,
    verbose: bool,
) -> anyhow::Result<()> {
    let stop = sender.stop_token().clone();
    let concurrency = sender.settings().concurrency.max(1);
    let work = invites
        .into_iter()
        .map(Work::Invite)
        .chain(actions.into_iter().map(Work::Act));
    let marked = futures::stream::iter(work)
        .take_until(stop.cancelled_owned())
        .ready_chunks(MARK_BATCH.min(concurrency * 2))
        .then(|batch| {
            let writer = writer.clone();
            async move {
                let jobs: Vec<Job> = batch
                    .iter()
                    .filter_map(|w| match w {
                        Work::Invite(job) => Some(job.clone()),
                        Work::Act(_) => None,
                    })
                    .collect();
                // A resend left `sending` by a crash is not sent again this period, so
                // each is marked alone, just before its request: a crash loses at most
                // those in flight.
                let ids: Vec<i64> = batch
                    .iter()
                    .filter_map(|w| match w {
                        Work::Act(a) if a.kind != ActionKind::Resend => Some(a.id),
                        _ => None,
                    })
                    .collect();
                let marked = writer
                    .call(move |l| {
                        if !jobs.is_empty() {
                            l.mark_sending(&jobs)?;
                        }
                        if !ids.is_empty() {
                            l.mark_actions_sending(&ids)?;
                        }
                        Ok(())
                    })
                    .await
                    .is_ok();
                futures::stream::iter(batch.into_iter().map(move |w| (w, marked)))
            }
        })
        .flatten();
    let mut done = std::pin::pin!(
        marked
            .map(|(work, marked)| {
                let sender = sender.clone();
                let client = client.clone();
                let writer = writer.clone();
                async move {
                    if !marked {
                        // The mark was not committed: sending would break at-most-once.
                        return None;
                    }
                    Some(match work {
                        Work::Invite(job) => {
                            let origin = job.origin.clone();
                            Done::Invite(origin, sender.process(job).await)
                        }
                        Work::Act(job) => {
                            if job.kind == ActionKind::Resend {
                                let id = job.id;
                                let marked =
                                    writer.call(move |l| l.mark_actions_sending(&[id])).await;
                                if marked.is_err() {
                                    return None;
                                }
                            }
                            let outcome = act(&sender, &client, &job).await;
                            Done::Act(job, outcome)
                        }
                    })
                }
            })
            .buffer_unordered(concurrency)
    );
    while let Some(finished) = done.next().await {
        match finished {
            None => {
                writer.check()?;
                bail!("the ledger could not record a batch before sending");
            }
            Some(Done::Invite(origin, outcome)) => {
                crate::app::report_outcome(progress, verbose, &origin, &outcome);
                writer.record(outcome).await?;
            }
            Some(Done::Act(job, outcome)) => {
                if verbose && outcome.state == ActionState::Failed {
                    progress.println(&format!(
                        "customer {} {}: {} failed: {}",
                        job.customer_id,
                        job.email,
                        job.kind.as_str(),
                        outcome.error.as_deref().unwrap_or("")
                    ));
                }
                writer
                    .call(move |l| l.record_actions(run, &[outcome]))
                    .await?;
            }
        }
    }
    Ok(())
}

/// Carries out one action to its end: done, failed, or (when the run stops before it
/// is sent) pending. Suspend and reactivate change nothing when repeated, so transient
/// failures are retried like an invitation's; a resend sends an e-mail, so once the
/// server may have acted on one it is never sent again (at most once beats twice).
async fn act(sender: &Sender, client: &Client, job: &ActionJob) -> ActionOutcome {
    let max_attempts = sender.settings().max_attempts.max(1);
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut last: Option<ApiError> = None;
    let end = |state, error, last: Option<&ApiError>, unsure, attempts| ActionOutcome {
        action_id: job.id,
        state,
        error,
        http_status: last.and_then(ApiError::status),
        unsure,
        attempts,
    };
    for attempt in 1..=max_attempts {
        if sender.stop_token().is_cancelled() {
            return stopped(job, sender, last.as_ref(), attempts);
        }
        let started = Instant::now();
        let at = SystemTime::now();
        let result = match job.kind {
            ActionKind::Resend => client.resend(job.customer_id, job.access_user_id).await,
            ActionKind::Suspend | ActionKind::Prune => {
                client
                    .set_suspended(job.customer_id, job.access_user_id, true)
                    .await
            }
            ActionKind::Reactivate => {
                client
                    .set_suspended(job.customer_id, job.access_user_id, false)
                    .await
            }
        };
        let latency = started.elapsed();
        let verb = match job.kind {
            ActionKind::Resend => "resend",
            ActionKind::Suspend | ActionKind::Prune => "suspend",
            ActionKind::Reactivate => "reactivate",
        };
        let e = match result {
            Ok(status) => {
                sender.note_success();
                attempts.push(Attempt {
                    at,
                    action: verb,
                    http_status: Some(status),
                    latency,
                    class: "ok",
                    error: None,
                });
                return end(ActionState::Done, None, None, false, attempts);
            }
            // Stopped while waiting for its turn: never sent, nothing to log.
            Err(ApiError::NotSent) => return stopped(job, sender, last.as_ref(), attempts),
            Err(e) => e,
        };
        attempts.push(Attempt {
            at,
            action: verb,
            http_status: e.status(),
            latency,
            class: e.class().as_str(),
            error: Some(e.to_string()),
        });
        match disposition(&e) {
            Disposition::Abort(message) => {
                sender.abort(Abort::Auth(message.clone()));
                // Refused credentials: nothing was done.
                return end(
                    ActionState::Pending,
                    Some(message),
                    Some(&e),
                    false,
                    attempts,
                );
            }
            Disposition::Reject(message) => {
                if e.status() == Some(403) {
                    sender.note_failure(&e);
                } else {
                    sender.note_success();
                }
                return end(
                    ActionState::Failed,
                    Some(message),
                    Some(&e),
                    false,
                    attempts,
                );
            }
            Disposition::Exists => {
                // A conflict answer to a resend or a suspension: the API refused it.
                sender.note_success();
                let message = format!("the API refused it: {e}");
                return end(
                    ActionState::Failed,
                    Some(message),
                    Some(&e),
                    false,
                    attempts,
                );
            }
            Disposition::Retry { after } => {
                if job.kind == ActionKind::Resend && e.maybe_applied() {
                    sender.note_failure(&e);
                    let message = format!(
                        "may have been sent ({}); not sent again until the next period",
                        explain(&e)
                    );
                    return end(ActionState::Failed, Some(message), Some(&e), true, attempts);
                }
                sender.note_failure(&e);
                last = Some(e);
                if attempt >= max_attempts {
                    break;
                }
                let wait = backoff(attempt).max(after.unwrap_or(Duration::ZERO));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = sender.stop_token().cancelled() => {
                        return stopped(job, sender, last.as_ref(), attempts);
                    }
                }
            }
        }
    }
    let message = match &last {
        Some(e) => format!("gave up after {max_attempts} attempts: {}", explain(e)),
        None => format!("gave up after {max_attempts} attempts"),
    };
    end(
        ActionState::Failed,
        Some(message),
        last.as_ref(),
        false,
        attempts,
    )
}

/// The run stopped before the action ended: unsent, it stays pending; tried, it failed
/// for now (the next sync plans it again if it is still needed).
fn stopped(
    job: &ActionJob,
    sender: &Sender,
    last: Option<&ApiError>,
    attempts: Vec<Attempt>,
) -> ActionOutcome {
    let why = sender
        .abort_reason()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "the run stopped".into());
    let (state, error) = match last {
        None if attempts.is_empty() => (ActionState::Pending, None),
        Some(e) => (
            ActionState::Failed,
            Some(format!("not finished ({why}); last error: {}", explain(e))),
        ),
        None => (ActionState::Failed, Some(format!("not finished ({why})"))),
    };
    ActionOutcome {
        action_id: job.id,
        state,
        error,
        http_status: last.and_then(ApiError::status),
        unsure: false,
        attempts,
    }
}

// ---------------------------------------------------------------------------------
// The end: exit code, summary.

/// What the summary needs besides the ledger.
struct Ended<'a> {
    run: RunId,
    started: Instant,
    customers: usize,
    plan: &'a Plan,
    results: Option<&'a Path>,
    /// Resends of earlier syncs found cut off in flight, told in this summary.
    interrupted: u64,
}

/// Commits, closes the run, writes `--results`, prints the summary, picks the exit code.
fn finish(
    global: &Global,
    ended: Ended<'_>,
    writer: Writer,
    thread: ledger::WriterThread,
    progress: &Progress,
    sender: &Sender,
    applied: anyhow::Result<()>,
) -> anyhow::Result<Exit> {
    progress.finish();
    let mut ledger = writer.close(thread).map_err(app::after_start)?;
    let run = ended.run;
    let abort = sender.abort_reason();
    let counts = ledger.status_counts(Some(run)).map_err(app::after_start)?;
    let row_problems = counts
        .rows
        .iter()
        .any(|(s, n)| *n > 0 && RowStatus::parse(s).is_some_and(RowStatus::is_problem));
    let failed_actions = counts.actions.values().any(|states| {
        states
            .get(ActionState::Failed.as_str())
            .is_some_and(|n| *n > 0)
    });
    let refused = ended.plan.refusals().next().is_some();
    let (mut exit, mut outcome) = match (&applied, &abort) {
        (Err(e), _) => (app::late_exit(e), format!("error: {}", app::error_line(e))),
        (Ok(()), Some(reason)) => (Exit::Aborted, format!("aborted: {reason}")),
        (Ok(()), None) if row_problems || failed_actions || refused => {
            (Exit::Problems, "completed with problems".to_string())
        }
        (Ok(()), None) => (Exit::Ok, "completed".to_string()),
    };
    let unwritten = ended
        .results
        .and_then(|path| app::write_results(&mut ledger, run, path).err());
    if let Some(e) = &unwritten {
        exit = app::late_exit(e);
        outcome = format!("{outcome}; {}", app::error_line(e));
    }
    ledger
        .finish_run(run, &outcome, exit as i32)
        .map_err(app::after_start)?;
    let summary = Summary {
        command: "sync",
        run,
        ledger: ledger.path().display().to_string(),
        outcome,
        exit_code: exit as i32,
        elapsed_secs: ended.started.elapsed().as_secs_f64(),
        rows: counts.rows.values().sum(),
        customers: ended.customers,
        statuses: counts.rows.clone(),
        actions: counts.actions.clone(),
        prune_waiting_for_yes: ended.plan.waiting_for_yes(),
        resends_unconfirmed: ended.interrupted,
        prune_refused: ended
            .plan
            .refusals()
            .map(|(customer_id, r)| RefusedLine {
                customer_id,
                would_suspend: r.would_suspend,
                current: r.current,
                percent: r.percent(),
                max_prune_pct: r.max_prune_pct,
            })
            .collect(),
    };
    report::print_summary(global, &summary, ended.plan, &counts.top_errors)
        .or_else(report::broken_pipe_is_fine)
        .map_err(app::after_start)?;
    applied.map_err(app::after_start)?;
    if let Some(e) = unwritten {
        return Err(e);
    }
    if let Some(reason) = abort {
        return Err(anyhow::Error::new(Aborted(reason.to_string())));
    }
    Ok(exit)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;
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
        assert_eq!(a.send.rate.get(), 50);
    }
}
