//! The engine every command that changes the portal drives (`run`, `retry`, `sync`):
//! mark → send → record, then finish with one exit code.
//!
//! A command brings its own work (invitations, `sync`'s actions) as a stream; the engine
//! marks it `sending` in small batches committed ahead of the requests (a resend alone,
//! just before its request), sends each item as a task of its own through the one
//! [`Sender`] (limiter, breaker, attempt runner), and records every outcome through the
//! ledger's [`Writer`]. The concurrency of a run lives here and only here. It holds no
//! SQL (the ledger does), no HTTP policy (`send` does), and prints only the per-row
//! lines `-v` asks for and, through `report::summary`, the run's one summary, which
//! each command completes with what only it knows.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::invite::write_results;
use super::message::error_line;
use super::preflight::before_sending;
use super::setup::{Api, connect_to_send, open_ledger};
use super::{Aborted, Exit, exit_for, mark_json_answered};
use crate::cli::{self, SendArgs};
use crate::domain::{ActionJob, ActionKind, ActionState, Job, Outcome, RowStatus, RunId};
use crate::ledger::{self, Ledger, StatusCounts, Writer, WriterThread};
use crate::progress::Progress;
use crate::report::summary::{self, Summary, Voice};
use crate::report::{Announce, Figures, announce};
use crate::send::{Abort, Sender};
use crate::settings::Settings;
use tokio_util::sync::CancellationToken;

/// Items marked `sending` in one transaction, at most; about one round of workers, so a
/// crash leaves few marks to check.
pub(crate) const MARK_BATCH: usize = 64;
/// Mark batches committed ahead of sending, at least: enough that workers rarely wait
/// for a commit, which can sit behind a whole admitted batch on the ledger thread.
const MARKS_AHEAD_MIN: usize = 4;
/// Mark batches committed ahead of sending, at most.
const MARKS_AHEAD_MAX: usize = 12;
/// How far ahead marks go, as time at the run's rate. A crash leaves what is marked
/// ahead `sending`, and each is looked up before it is sent again: with a rate in the
/// hundreds a second that is a few hundred lookups; only a run allowed thousands a
/// second marks more ahead, and looks them all up again in well under a second.
const MARKS_AHEAD_TIME_SECS: f64 = 0.25;
/// Outcomes handed to the ledger thread at once, at most.
const RECORD_BATCH: usize = 256;
/// How long the answers in hand wait for more before they go to the ledger thread, at
/// most: a hand-off every few milliseconds rather than one for each lull between answers
/// (every hand-off may wake that thread). An answer is durable within this and the
/// ledger thread's own wait for a commit (`LINGER`, 50 ms).
const RECORD_WAIT: Duration = Duration::from_millis(5);

/// One request's worth of work.
pub(crate) enum Work {
    Invite(Job),
    Act(ActionJob),
}

/// What became of one [`Work`].
enum Done {
    Invite(String, Outcome),
    Act(ActionJob, crate::domain::ActionOutcome),
}

/// What the engine sends with and records into: one run of a command.
pub(crate) struct Engine {
    pub sender: Arc<Sender>,
    pub writer: Writer,
    thread: WriterThread,
    pub run: RunId,
    pub progress: Arc<Progress>,
    pub verbose: bool,
    /// The time the sending took, for the rate the summary shows.
    clock: Arc<Clock>,
}

/// When the first request was handed out and the last answer recorded.
#[derive(Default)]
struct Clock(Mutex<Option<(Instant, Instant)>>);

impl Clock {
    /// Notes a request handed out, or an answer recorded.
    fn tick(&self) {
        let now = Instant::now();
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let first = slot.map_or(now, |(first, _)| first);
        *slot = Some((first, now));
    }

    fn took(&self) -> Option<Duration> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.map(|(first, last)| last.duration_since(first))
    }
}

/// Everything a command that changes the portal opens before its run begins, in one
/// order: the checks of `preflight`, the ledger (locked), the API (logged in, on the
/// same API as the ledger's), and the sender that every request goes through.
pub(crate) async fn open(
    global: &Settings,
    send: &SendArgs,
    results: Option<&Path>,
    stop: &CancellationToken,
) -> anyhow::Result<(Ledger, Api, Arc<Sender>)> {
    let metrics = send.announce.metrics_file.as_deref();
    let endpoint = before_sending(global, results, metrics)?;
    let mut ledger = open_ledger(&global.ledger)?;
    let settings = cli::send_settings(send);
    let api = connect_to_send(endpoint, &settings, send, &mut ledger, stop).await?;
    let sender = api.sender.clone();
    Ok((ledger, api, sender))
}

/// A receiver as a stream.
pub(crate) fn stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

impl Engine {
    /// Keeps the run's pace (`--rate`, `--burst`) in the ledger, then starts the run's
    /// ledger writer: ready to admit, dispatch and record.
    pub(crate) fn start(
        mut ledger: Ledger,
        run: RunId,
        sender: Arc<Sender>,
        progress: Arc<Progress>,
        verbose: bool,
    ) -> anyhow::Result<Engine> {
        let pace = sender.settings();
        ledger.set_pace(run, pace.rate.per_second_f64(), pace.burst.get())?;
        let (writer, thread) = Writer::spawn(ledger, run)?;
        Ok(Engine {
            sender,
            writer,
            thread,
            run,
            progress,
            verbose,
            clock: Arc::default(),
        })
    }

    /// Ends the run: see [`finish`].
    pub(crate) fn finish(
        self,
        ending: Ending<'_>,
        pipeline: anyhow::Result<()>,
        summarise: impl FnOnce(Summary, &StatusCounts) -> Summary,
    ) -> anyhow::Result<Exit> {
        let sending = self.clock.took();
        let parts = (self.writer, self.thread);
        finish(
            ending,
            parts,
            (&self.progress, &self.sender, sending),
            pipeline,
            summarise,
        )
    }

    /// Marks work `sending`, sends it with bounded concurrency, and records each outcome.
    /// Stops taking new work when the run is stopped; what was not taken stays pending.
    ///
    /// One task marks batches ahead of the requests; `concurrency` workers each take the
    /// next marked item as soon as their answer is in, so no request waits for this
    /// task to hand it out; one more task records the answers. All of them run on the
    /// runtime's workers, which wake one another without a system call while they are
    /// busy. When the recorder stops early (the ledger failed), the tasks are aborted
    /// with it: nothing more is sent unrecorded.
    pub(crate) async fn dispatch(
        &self,
        work: impl Stream<Item = Work> + Send + 'static,
    ) -> anyhow::Result<()> {
        let concurrency = self.sender.settings().concurrency.max(1);
        let (queue_tx, queue_rx) = mpsc::channel::<(Work, bool)>(concurrency);
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Option<Done>>();
        let mut tasks = JoinSet::new();
        tasks.spawn(feed_marked(
            self.writer.clone(),
            self.sender.clone(),
            work,
            queue_tx,
        ));
        let queue = Arc::new(tokio::sync::Mutex::new(queue_rx));
        for _ in 0..concurrency {
            let worker = Worker {
                sender: self.sender.clone(),
                writer: self.writer.clone(),
                clock: self.clock.clone(),
                done: done_tx.clone(),
            };
            tasks.spawn(worker.serve(queue.clone()));
        }
        drop(done_tx);
        let recorder = Recorder {
            writer: self.writer.clone(),
            run: self.run,
            progress: self.progress.clone(),
            verbose: self.verbose,
            clock: self.clock.clone(),
        };
        // In a set of its own, so it is aborted too if this future is dropped.
        let mut recording = JoinSet::new();
        recording.spawn(recorder.serve(done_rx));
        while let Some(ended) = recording.join_next().await {
            ended.map_err(|e| anyhow!("the recording task failed: {e}"))??;
        }
        while let Some(ended) = tasks.join_next().await {
            ended.map_err(|e| anyhow!("a sending task failed: {e}"))?;
        }
        Ok(())
    }
}

/// Records what the workers finish, in batches: one hand-off to the ledger thread for
/// the answers that came in within [`RECORD_WAIT`] of the first (up to
/// [`RECORD_BATCH`]), rather than one each.
struct Recorder {
    writer: Writer,
    run: RunId,
    progress: Arc<Progress>,
    verbose: bool,
    clock: Arc<Clock>,
}

impl Recorder {
    /// Takes answers until every worker is done; stops at the first item whose mark
    /// was not committed, or when the ledger stops writing.
    async fn serve(self, mut done: mpsc::UnboundedReceiver<Option<Done>>) -> anyhow::Result<()> {
        while let Some(first) = done.recv().await {
            let deadline = tokio::time::Instant::now() + RECORD_WAIT;
            let mut invited = Vec::new();
            let mut next = Some(first);
            while let Some(finished) = next {
                let Some(finished) = finished else {
                    self.writer.record(invited).await?;
                    // The mark was not committed: sending would break exactly-once.
                    self.writer.check()?;
                    bail!("the ledger could not record a batch before sending");
                };
                self.record(finished, &mut invited).await?;
                self.clock.tick();
                next = if invited.len() < RECORD_BATCH {
                    match done.try_recv() {
                        Ok(n) => Some(n),
                        // Nothing more at hand: wait a little for the next, then hand off.
                        Err(_) => tokio::time::timeout_at(deadline, done.recv())
                            .await
                            .ok()
                            .flatten(),
                    }
                } else {
                    None
                };
            }
            self.writer.record(invited).await?;
        }
        Ok(())
    }

    /// Records an action's outcome; an invitation's joins `invited`, recorded with the
    /// answers around it.
    async fn record(&self, done: Done, invited: &mut Vec<Outcome>) -> anyhow::Result<()> {
        match done {
            Done::Invite(origin, outcome) => {
                report_outcome(&self.progress, self.verbose, &origin, &outcome);
                invited.push(outcome);
            }
            Done::Act(job, outcome) => {
                let failed = outcome.state == ActionState::Failed;
                self.progress.item(failed);
                if self.verbose && failed {
                    self.progress.println(&format!(
                        "customer {} {}: {} failed: {}",
                        job.customer_id,
                        job.email,
                        job.kind.as_str(),
                        outcome.error.as_deref().unwrap_or("")
                    ));
                }
                let run = self.run;
                self.writer
                    .call(move |l| l.record_actions(run, &[outcome]))
                    .await?;
            }
        }
        Ok(())
    }
}

/// Commits one batch's marks: invitations and idempotent actions together. A resend
/// left `sending` by a crash is not sent again this period, so each is marked alone,
/// just before its request (see [`send`]): a crash loses at most those in flight.
async fn mark(writer: Writer, batch: Vec<Work>) -> Vec<(Work, bool)> {
    let invitations: Vec<i64> = batch
        .iter()
        .filter_map(|w| match w {
            Work::Invite(job) => Some(job.invitation_id),
            Work::Act(_) => None,
        })
        .collect();
    let actions: Vec<i64> = batch
        .iter()
        .filter_map(|w| match w {
            Work::Act(a) if a.kind != ActionKind::Resend => Some(a.id),
            _ => None,
        })
        .collect();
    let marked = writer
        .call(move |l| {
            if !invitations.is_empty() {
                l.mark_sending(&invitations)?;
            }
            if !actions.is_empty() {
                l.mark_actions_sending(&actions)?;
            }
            Ok(())
        })
        .await
        .is_ok();
    batch.into_iter().map(|w| (w, marked)).collect()
}

/// Marks `work` in batches committed ahead of its requests and queues each item for
/// the workers; stops taking work when the run is stopped.
async fn feed_marked(
    writer: Writer,
    sender: Arc<Sender>,
    work: impl Stream<Item = Work> + Send + 'static,
    queue: mpsc::Sender<(Work, bool)>,
) {
    let stop = sender.stop_token().clone();
    let settings = sender.settings();
    let batch = MARK_BATCH.min(settings.concurrency.max(1) * 2);
    let marked = work
        .take_until(stop.cancelled_owned())
        .ready_chunks(batch)
        .map(move |batch| mark(writer.clone(), batch))
        // The next batches are marked while this one is sent, so workers rarely wait
        // on a commit; at most a few are marked ahead of their requests.
        .buffered(marks_ahead(settings.rate.per_second_f64(), batch))
        .flat_map(futures::stream::iter);
    let mut marked = std::pin::pin!(marked);
    while let Some(item) = marked.next().await {
        if queue.send(item).await.is_err() {
            return;
        }
    }
}

/// Mark batches of `batch` items to commit ahead of sending at `rate` requests a second:
/// what the rate sends in [`MARKS_AHEAD_TIME_SECS`], within the bounds.
fn marks_ahead(rate: f64, batch: usize) -> usize {
    let batches = (rate * MARKS_AHEAD_TIME_SECS / batch.max(1) as f64).ceil();
    // `as` saturates: an unlimited rate is usize::MAX batches, clamped.
    (batches as usize).clamp(MARKS_AHEAD_MIN, MARKS_AHEAD_MAX)
}

/// One of the run's `concurrency` senders: takes the next marked item, sends it to its
/// end, hands the result to the recorder, and goes on until the queue is empty.
struct Worker {
    sender: Arc<Sender>,
    writer: Writer,
    clock: Arc<Clock>,
    done: mpsc::UnboundedSender<Option<Done>>,
}

impl Worker {
    async fn serve(self, queue: Arc<tokio::sync::Mutex<mpsc::Receiver<(Work, bool)>>>) {
        loop {
            let next = queue.lock().await.recv().await;
            let Some((work, marked)) = next else {
                return;
            };
            self.clock.tick();
            let done = send(&self.sender, &self.writer, work, marked).await;
            let unmarked = done.is_none();
            if self.done.send(done).is_err() || unmarked {
                return;
            }
        }
    }
}

/// Sends one marked item to its end; `None` when its mark was not committed.
async fn send(sender: &Sender, writer: &Writer, work: Work, marked: bool) -> Option<Done> {
    if !marked {
        return None;
    }
    Some(match work {
        Work::Invite(mut job) => {
            let origin = std::mem::take(&mut job.origin);
            Done::Invite(origin, sender.process(job).await)
        }
        Work::Act(job) => {
            if job.kind == ActionKind::Resend {
                let id = job.id;
                writer
                    .call(move |l| l.mark_actions_sending(&[id]))
                    .await
                    .ok()?;
            }
            let outcome = sender.act(&job).await;
            Done::Act(job, outcome)
        }
    })
}

/// Counts an invitation's outcome, and prints it when it is a problem and `-v` asked.
pub(crate) fn report_outcome(progress: &Progress, verbose: bool, origin: &str, outcome: &Outcome) {
    let status = RowStatus::from_state(outcome.state);
    if verbose && status.is_problem() {
        progress.println(&format!(
            "{origin}: {}: {}",
            status.as_str(),
            outcome.error.as_deref().unwrap_or("")
        ));
    }
    progress.sent(status);
}

// ---------------------------------------------------------------------------------
// The end: one exit code, one way to close a run.

/// How a run that began came to its end, as the exit code and the outcome the ledger
/// keeps. The one place a sending command's exit code is decided: 2 is never returned
/// (it promises nothing was sent), a failure on the way is 3 (4 for a busy ledger), an
/// abort is 3, an input not read to the end is 1 and never "completed", problems among
/// the rows (or `problem` besides them) are 1.
pub(crate) fn run_exit(
    pipeline: &anyhow::Result<()>,
    abort: Option<&Abort>,
    counts: &StatusCounts,
    ending: &Ending<'_>,
) -> (Exit, String) {
    let row_problems = counts
        .rows
        .iter()
        .any(|(s, n)| *n > 0 && RowStatus::parse(s).is_some_and(RowStatus::is_problem));
    let failed_actions = counts.actions.values().any(|states| {
        states
            .get(ActionState::Failed.as_str())
            .is_some_and(|n| *n > 0)
    });
    match (pipeline, abort) {
        (Err(e), _) => (late_exit(e), format!("error: {}", error_line(e))),
        (Ok(()), Some(reason)) => (Exit::Aborted, format!("aborted: {reason}")),
        (Ok(()), None) if ending.unread_input => (
            Exit::Problems,
            "incomplete: an input was not read to the end".to_string(),
        ),
        (Ok(()), None) => {
            match Exit::of_problems(row_problems || failed_actions || ending.problem) {
                Exit::Ok => (Exit::Ok, "completed".to_string()),
                exit => (exit, "completed with problems".to_string()),
            }
        }
    }
}

/// The exit code of a failure once a run has begun: as [`exit_for`] says, but never 2,
/// since 2 promises that nothing was sent.
pub(crate) fn late_exit(e: &anyhow::Error) -> Exit {
    match exit_for(e) {
        Exit::Usage => Exit::Aborted,
        other => other,
    }
}

/// A failure once a run has begun, as an error whose exit code is [`late_exit`]'s.
pub(crate) fn after_start(e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e = e.into();
    match exit_for(&e) {
        Exit::Usage => anyhow::Error::new(Aborted(error_line(&e))),
        _ => e,
    }
}

/// What [`finish`] needs to know of the command besides the ledger.
pub(crate) struct Ending<'a> {
    /// The command, as the webhook and the metrics file name it.
    pub command: &'a str,
    pub run: RunId,
    pub started: Instant,
    /// `--results`, written once the run is closed.
    pub results: Option<&'a Path>,
    /// A problem the counts do not show (a file with no rows, a refused prune).
    pub problem: bool,
    /// An input that was not read to the end, though nothing stopped the run: the
    /// run must not call itself completed.
    pub unread_input: bool,
    /// How the summary is printed.
    pub voice: Voice,
    /// The webhook and the metrics file to tell of the end (`--notify-on`,
    /// `--metrics-file`).
    pub announce: Announce,
}

impl<'a> Ending<'a> {
    /// The end of command `command`'s run `run`, as its flags ask: its results sheet,
    /// webhook, metrics file and summary; no problem beyond the counts, its input read.
    pub(crate) fn new(
        command: &'a str,
        run: RunId,
        started: Instant,
        global: &Settings,
        send: &'a SendArgs,
    ) -> Ending<'a> {
        Ending {
            command,
            run,
            started,
            results: send.results.as_deref(),
            problem: false,
            unread_input: false,
            voice: voice(global),
            announce: global.announce(&send.announce),
        }
    }
}

/// How the global flags ask for the summary.
fn voice(global: &Settings) -> Voice {
    if global.json {
        Voice::Json
    } else if global.quiet {
        Voice::Quiet
    } else {
        Voice::Text
    }
}

/// The end of a sending command: commit, close the run, write results, summarise (the
/// command completes the summary with `summarise`). The run has begun, so requests may
/// have gone out: whatever fails from here on (or failed on the way) exits 3, never 2,
/// and the counts are printed when they can be.
fn finish(
    ending: Ending<'_>,
    (writer, thread): (Writer, WriterThread),
    (progress, sender, sending): (&Progress, &Sender, Option<Duration>),
    pipeline: anyhow::Result<()>,
    summarise: impl FnOnce(Summary, &StatusCounts) -> Summary,
) -> anyhow::Result<Exit> {
    progress.finish();
    let mut ledger = writer
        .close(thread)
        .map_err(|e| after_start(stopped_by_ledger(e, progress)))?;
    let run = ending.run;
    let abort = sender.abort_reason();
    let counts = ledger.run_status_counts(run).map_err(after_start)?;
    let (mut exit, mut outcome) = run_exit(&pipeline, abort.as_ref(), &counts, &ending);
    let unwritten = ending
        .results
        .and_then(|path| write_results(&mut ledger, run, path).err());
    if let Some(e) = &unwritten {
        exit = late_exit(e);
        outcome = format!("{outcome}; {}", error_line(e));
    }
    ledger
        .finish_run(run, &outcome, exit as i32)
        .map_err(|e| after_start(stopped_by_ledger(e.into(), progress)))?;
    let elapsed = ending.started.elapsed();
    // A ledger that cannot count leaves them at 0, and says so.
    let account = ledger.run_account(run).unwrap_or_else(|e| {
        eprintln!("bbinvite: the sent and already-done counts are unknown ({e}); reported as 0");
        Default::default()
    });
    let figures = Figures::of_run(
        &ledger,
        ending.command,
        run,
        &counts.rows,
        &outcome,
        exit as i32,
        elapsed,
    )
    .with_tallies(account.tallies);
    let base = Summary::new(&figures, account.sent_outcomes)
        .sending_took(sending.map(|d| d.as_secs_f64()))
        .with_errors(&counts.top_errors);
    let summary = summarise(base, &counts);
    if ending.voice == Voice::Json {
        mark_json_answered();
    }
    if let Err(e) = summary::print(&summary, ending.voice)
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(after_start(e));
    }
    announce(&figures, &ending.announce);
    pipeline.map_err(after_start)?;
    if let Some(e) = unwritten {
        return Err(e);
    }
    if let Some(reason) = abort {
        return Err(anyhow::Error::new(Aborted(reason.to_string())));
    }
    Ok(exit)
}

/// A run the ledger failed under (a full disk, the file deleted or replaced): exit 3,
/// in one line saying what happened, what was done, and what to do.
fn stopped_by_ledger(err: anyhow::Error, progress: &Progress) -> anyhow::Error {
    let cause = err.chain().find_map(|c| c.downcast_ref::<ledger::Error>());
    let what_now = match cause {
        Some(ledger::Error::Gone { .. }) => {
            "put the ledger file back before running again, or the next run sends those invitations again"
        }
        Some(ledger::Error::Sql { .. } | ledger::Error::Unwritable { .. }) => {
            "free some space (or fix the disk), then run the same command again: the invitations in flight are checked before any is sent again"
        }
        _ => return err,
    };
    let done = match progress.summary_counts() {
        c if c.is_empty() => "no row".to_string(),
        c => c,
    };
    let msg = match cause {
        Some(ledger::Error::Sql { path, source }) => {
            format!(
                "the ledger {} could not be written ({source})",
                path.display()
            )
        }
        Some(known) => known.to_string(),
        None => err.to_string(),
    };
    anyhow::Error::new(Aborted(format!(
        "{msg}; the run stopped sending after these rows: {done}; {what_now}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_go_ahead_by_a_quarter_second_at_the_rate_within_bounds() {
        assert_eq!(marks_ahead(0.5, 64), MARKS_AHEAD_MIN);
        assert_eq!(marks_ahead(1_000.0, 64), MARKS_AHEAD_MIN);
        assert_eq!(marks_ahead(2_000.0, 64), 8);
        assert_eq!(marks_ahead(1_000_000.0, 64), MARKS_AHEAD_MAX);
        assert_eq!(marks_ahead(f64::INFINITY, 2), MARKS_AHEAD_MAX);
    }
}
