//! `bbinvite undo --run N`: reverses what run N changed in the portal.
//!
//! Reads what run N changed and what later runs did to the same users (the ledger),
//! plans the reversal ([`undo::compute`], pure), then prints the plan (without `--yes`,
//! from a read-only look: no lock, no request) or carries it out as a run of its own,
//! command `undo`: each reversal a ledger action, sent by the engine through the one
//! [`Sender`] (limiter, breaker, attempt runner), exactly as `sync` sends its actions.
//! A user whose access user id the ledger lacks, or whose reversal an undo that died
//! may have sent, is looked up in the access list first (through the same runner).
//!
//! No SQL here (the ledger's `undo` queries), no HTTP policy (`send`).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use anyhow::bail;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Exit;
use super::engine::{Ending, Engine, Work, open};
use super::setup::api_abort;
use super::sync::print_plan_as;
use crate::api::Client;
use crate::api::types::AccessStatus;
use crate::cli::UndoArgs;
use crate::domain::{ActionJob, ActionKind, ActionOutcome, ActionState, NewAction, RunId};
use crate::ledger::{Ledger, StatusCounts, Writer};
use crate::progress::{Mode, Progress, Total};
use crate::report::summary::{NotFound, Summary, UndoSection};
use crate::send::{Disposition, Repeat, Sender, disposition, explain};
use crate::settings::Settings;
use crate::sync::undo::{self, Step, UndoEntry, UndoPlan};

/// Runs `bbinvite undo`.
pub async fn run(global: &Settings, a: UndoArgs, stop: CancellationToken) -> anyhow::Result<Exit> {
    let started = Instant::now();
    if let Some(path) = &a.send.results {
        bail!(
            "--results {}: an undo has no rows to write; see its actions with `bbinvite export --actions --run RUN`",
            path.display()
        );
    }
    // The plan needs no credentials and takes no lock: a look, as `status` takes.
    let plan = plan_of(&mut Ledger::open_read_only(&global.ledger)?, a.run)?;
    if !a.yes || plan.to_reverse().next().is_none() {
        print_plan(global, &plan, a.yes)?;
        return Ok(Exit::Ok);
    }
    let (mut ledger, api, sender) = open(global, &a.send, None, &stop).await?;
    // Again under the lock: another run may have changed a user since the look.
    let plan = plan_of(&mut ledger, a.run)?;
    if plan.to_reverse().next().is_none() {
        print_plan(global, &plan, a.yes)?;
        return Ok(Exit::Ok);
    }
    let run = ledger.begin_run("undo", &api.base_url, &[], false)?;
    ledger.set_undoes(run, a.run)?;
    let looks = look_up(&api.client, &sender, &plan).await?;
    let progress = Progress::new(Mode::detect(global.quiet || global.json), "undo", "actions");
    let engine = Engine::start(ledger, run, sender, progress, global.verbose > 0)?;
    let applied = async {
        let jobs = add_actions(&engine.writer, run, &plan, &looks).await?;
        let total = jobs.len() as u64;
        engine.progress.set_total(move || Total::Exact(total));
        let work = jobs.into_iter().map(Work::Act);
        engine.dispatch(futures::stream::iter(work)).await
    }
    .await;
    let ending = Ending {
        problem: looks.values().any(|l| matches!(l, Look::Missing(_))),
        ..Ending::new("undo", run, started, global, &a.send)
    };
    engine.finish(ending, applied, |s, counts| {
        summarise(s, counts, &plan, &looks)
    })
}

/// The plan for run `n`, or why there is none (exit 2).
fn plan_of(ledger: &mut Ledger, n: RunId) -> anyhow::Result<UndoPlan> {
    let Some(facts) = ledger.undo_facts(n)? else {
        bail!("no run {n} in the ledger; `bbinvite status --run N` shows a run");
    };
    Ok(undo::compute(&facts)?)
}

// ---------------------------------------------------------------------------------
// Looking users up, then recording and sending the reversals.

/// What a look in the access list found for one entry (by index in the plan).
enum Look {
    /// The user's id, and whether the reversal is already in place.
    Found { id: i64, in_place: bool },
    /// Not there, or the look failed: why, for the summary.
    Missing(String),
}

/// Looks up the entries to reverse whose access user id the ledger lacks, or whose
/// reversal an earlier undo may have sent (so none is sent twice).
async fn look_up(
    client: &std::sync::Arc<Client>,
    sender: &Sender,
    plan: &UndoPlan,
) -> anyhow::Result<BTreeMap<usize, Look>> {
    let mut looks = BTreeMap::new();
    for (i, e) in plan.entries.iter().enumerate() {
        let check_first = match e.step {
            Step::Reverse { check_first } => check_first,
            _ => continue,
        };
        if e.access_user_id.is_some() && !check_first {
            continue;
        }
        // A read is logged nowhere: the ledger's attempts are those of an action.
        let found = sender
            .call("confirm", Repeat::Yes, &mut Vec::new(), || async {
                let user = client
                    .find_access_user(e.customer_id, &e.email, &e.name)
                    .await?;
                Ok((user, 200))
            })
            .await;
        let look = match found.map_err(|f| f.into_error()) {
            Ok(Some(u)) => Look::Found {
                id: u.id,
                in_place: check_first && in_place(e.action, u.status),
            },
            Ok(None) => Look::Missing("no longer in the customer's access list".into()),
            Err(err) => {
                if let Disposition::Abort(_) = disposition(&err) {
                    return Err(api_abort(err));
                }
                Look::Missing(format!("could not be looked up: {}", explain(&err)))
            }
        };
        looks.insert(i, look);
        if let Some(reason) = sender.abort_reason() {
            return Err(anyhow::Error::new(super::Aborted(format!(
                "{reason} (while looking users up; nothing was changed)"
            ))));
        }
    }
    Ok(looks)
}

/// Whether a user's status already is what the reversal would make it.
fn in_place(action: ActionKind, status: Option<AccessStatus>) -> bool {
    match action {
        ActionKind::Suspend | ActionKind::Prune => status == Some(AccessStatus::Suspended),
        ActionKind::Reactivate => status.is_some_and(|s| s != AccessStatus::Suspended),
        ActionKind::Resend => false,
    }
}

/// Records each reversal as an action of this run; those found already in place are
/// done at once, with no request. Returns the actions to send.
async fn add_actions(
    writer: &Writer,
    run: RunId,
    plan: &UndoPlan,
    looks: &BTreeMap<usize, Look>,
) -> anyhow::Result<Vec<ActionJob>> {
    let mut actions = Vec::new();
    let mut in_place = Vec::new();
    for (i, e) in plan.entries.iter().enumerate() {
        if !matches!(e.step, Step::Reverse { .. }) {
            continue;
        }
        let (id, done) = match (looks.get(&i), e.access_user_id) {
            (Some(Look::Found { id, in_place }), _) => (*id, *in_place),
            (Some(Look::Missing(_)), _) | (None, None) => continue,
            (None, Some(id)) => (id, false),
        };
        in_place.push(done);
        actions.push(NewAction {
            customer_id: e.customer_id,
            email: e.email.clone(),
            access_user_id: id,
            kind: e.action,
            row_id: None,
            why: why(plan.run, e, done),
            state: ActionState::Pending,
        });
    }
    let added = actions.clone();
    let ids = writer.call(move |l| l.add_actions(run, &added)).await?;
    let (mut jobs, mut settled) = (Vec::new(), Vec::new());
    for ((id, a), done) in ids.into_iter().zip(actions).zip(in_place) {
        if done {
            settled.push(ActionOutcome {
                action_id: id,
                state: ActionState::Done,
                error: None,
                http_status: None,
                unsure: false,
                attempts: Vec::new(),
            });
        } else {
            jobs.push(ActionJob {
                id,
                customer_id: a.customer_id,
                access_user_id: a.access_user_id,
                kind: a.kind,
                email: a.email,
            });
        }
    }
    if !settled.is_empty() {
        writer
            .call(move |l| l.record_actions(run, &settled))
            .await?;
    }
    Ok(jobs)
}

/// The action's why, in words.
fn why(n: RunId, e: &UndoEntry, in_place: bool) -> String {
    let mut why = format!("undo of run {n}, which {}", did_text(e.did));
    if in_place {
        why.push_str("; found already so: no request");
    }
    why
}

fn did_text(did: &str) -> &'static str {
    match did {
        "invited" => "invited the user",
        "reactivate" => "reactivated the user",
        "prune" => "suspended the user (not in the sheet)",
        _ => "suspended the user",
    }
}

// ---------------------------------------------------------------------------------
// What it prints: the plan, or the summary of the run.

/// `undo --run N [--json]` without `--yes` (or with nothing left to do): the plan.
#[derive(Serialize)]
struct PlanReport<'a> {
    command: &'static str,
    run: RunId,
    /// Whether anything would be sent: `false` means nothing to undo.
    something_to_undo: bool,
    counts: Counts,
    entries: Vec<PlanEntry<'a>>,
}

/// One entry of the plan, every key present (docs/json.md).
#[derive(Serialize)]
struct PlanEntry<'a> {
    customer_id: i64,
    email: &'a str,
    access_user_id: Option<i64>,
    /// What run N did: `invited`, `suspend`, `prune` or `reactivate`.
    did: &'a str,
    /// The reversal: `suspend` or `reactivate`.
    action: ActionKind,
    /// `reverse`, `undone` (by an earlier undo) or `skip` (a later run changed it).
    decision: &'static str,
    /// Whether the user is looked at before the reversal is sent.
    check_first: bool,
    /// The undo that reversed it, or the later run that changed it.
    by_run: Option<RunId>,
    /// That later run's command and what it did.
    by_command: Option<&'a str>,
    change: Option<&'a str>,
}

impl<'a> PlanEntry<'a> {
    fn of(e: &'a UndoEntry) -> PlanEntry<'a> {
        let (decision, check_first, by_run, by_command, change) = match &e.step {
            Step::Reverse { check_first } => ("reverse", *check_first, None, None, None),
            Step::Undone { by_run } => ("undone", false, Some(*by_run), None, None),
            Step::Skip {
                by_run,
                command,
                change,
            } => (
                "skip",
                false,
                Some(*by_run),
                Some(command.as_str()),
                Some(change.as_str()),
            ),
        };
        PlanEntry {
            customer_id: e.customer_id,
            email: &e.email,
            access_user_id: e.access_user_id,
            did: e.did,
            action: e.action,
            decision,
            check_first,
            by_run,
            by_command,
            change,
        }
    }
}

#[derive(Serialize)]
struct Counts {
    reverse: usize,
    already_undone: usize,
    skipped: usize,
    found_there: u64,
}

fn counts(plan: &UndoPlan) -> Counts {
    let (reverse, already_undone, skipped) = plan.counts();
    Counts {
        reverse,
        already_undone,
        skipped,
        found_there: plan.found_there,
    }
}

fn print_plan(global: &Settings, plan: &UndoPlan, yes: bool) -> anyhow::Result<()> {
    let report = || PlanReport {
        command: "undo",
        run: plan.run,
        something_to_undo: counts(plan).reverse > 0,
        counts: counts(plan),
        entries: plan.entries.iter().map(PlanEntry::of).collect(),
    };
    print_plan_as(global, report, |out| {
        write_plan(out, plan, &counts(plan), yes)
    })
}

fn write_plan(out: &mut dyn Write, plan: &UndoPlan, c: &Counts, yes: bool) -> std::io::Result<()> {
    let n = plan.run;
    writeln!(
        out,
        "bbinvite undo --run {n}: {} to reverse, {} already undone, {} skipped; left alone, found already there by run {n}: {}",
        c.reverse, c.already_undone, c.skipped, c.found_there
    )?;
    for e in plan.entries.iter().map(PlanEntry::of) {
        let (word, note) = match (e.decision, e.by_run, e.by_command, e.change) {
            ("reverse", ..) => (e.action.as_str(), format!("run {n} {}", e.did)),
            (_, Some(by), Some(command), Some(change)) => (
                "skip",
                format!("changed again by run {by} ({command}: {change})"),
            ),
            (_, by, ..) => ("undone", format!("by run {}", by.unwrap_or_default())),
        };
        let id = e
            .access_user_id
            .map(|i| format!(" (access user {i})"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {word:<11} customer {} {}{id}: {note}",
            e.customer_id, e.email
        )?;
    }
    if c.reverse == 0 {
        writeln!(out, "Nothing to undo for run {n}.")
    } else if yes {
        Ok(())
    } else {
        writeln!(
            out,
            "Nothing was sent. Carry it out with: bbinvite undo --run {n} --yes"
        )
    }
}

/// The undo's part of the one summary: what it reversed, left alone, could not find.
fn summarise(
    mut s: Summary,
    counts: &StatusCounts,
    plan: &UndoPlan,
    looks: &BTreeMap<usize, Look>,
) -> Summary {
    let not_found = looks
        .iter()
        .filter_map(|(i, l)| match l {
            Look::Missing(why) => Some(NotFound {
                email: plan.entries[*i].email.clone(),
                why: why.clone(),
            }),
            Look::Found { .. } => None,
        })
        .collect();
    let (_, already_undone, skipped) = plan.counts();
    s.undo = Some(UndoSection {
        undoes: plan.run,
        actions: counts.actions.clone(),
        skipped,
        already_undone,
        not_found,
    });
    s
}
