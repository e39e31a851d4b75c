//! The ledger's own thread: one owner for the SQLite connection during a run.
//!
//! Async stages send it closures to run ([`Writer::call`]) and outcomes to record
//! ([`Writer::record`]). It commits by group: whatever is queued when it wakes (an
//! admitted batch, `sending` marks, hundreds of outcomes) runs in one transaction and
//! one WAL write, and only after that commit, and a look that the ledger's path still
//! names the file written, are the callers answered, so a mark is durable before its
//! request can leave. Outcomes alone, which no one waits on, wait a little (at most
//! [`LINGER`]) for the next call: a run commits about once per batch of marks, not
//! once more for the answers between them, and an outcome is durable within that
//! bound (a kill loses at most the answers of that moment, whose invitations stay
//! `sending` and are looked up before they are sent again). A failed write or a ledger
//! deleted or replaced stops the run: the reason is kept, nothing more is written, and
//! every later call reports it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{Error, Ledger, RunId};
use crate::domain::Outcome;

/// Commands run in one group transaction at most.
const GROUP: usize = 4096;
/// Commands queued before senders wait: bounded, so memory stays flat.
const QUEUE: usize = 4096;
/// How long outcomes with no call beside them wait for one before they are committed
/// alone: the bound on how late an outcome is durable.
pub(crate) const LINGER: Duration = Duration::from_millis(50);

/// Runs on the ledger; returns what answers the caller once the group is committed.
type Job = Box<dyn FnOnce(&mut Ledger) -> Reply + Send>;
type Reply = Box<dyn FnOnce() + Send>;

enum Cmd {
    Call(Job),
    Record(Vec<Outcome>),
}

/// A handle to the ledger thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Cmd>,
    failed: Arc<Mutex<Option<Stopped>>>,
}

/// Why the ledger thread stopped writing: kept to answer every later call.
#[derive(Debug, Clone)]
enum Stopped {
    /// A write failed; the reason as SQLite or the OS gave it.
    Unwritable { path: PathBuf, reason: String },
    /// The path no longer names the file the run opened.
    Gone { path: PathBuf },
}

impl Stopped {
    fn from_error(e: Error, path: &Path) -> Stopped {
        match e {
            Error::Gone { path } => Stopped::Gone { path },
            Error::Sql { source, .. } => Stopped::Unwritable {
                path: path.to_path_buf(),
                reason: source.to_string(),
            },
            other => Stopped::Unwritable {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        }
    }

    fn error(&self) -> Error {
        match self.clone() {
            Stopped::Unwritable { path, reason } => Error::Unwritable { path, reason },
            Stopped::Gone { path } => Error::Gone { path },
        }
    }
}

/// Joins the ledger thread and gives the ledger back.
pub struct WriterThread {
    handle: JoinHandle<Ledger>,
}

impl WriterThread {
    /// Waits for every queued command to be done; all [`Writer`]s must be dropped first.
    pub fn join(self) -> Option<Ledger> {
        self.handle.join().ok()
    }
}

impl Writer {
    /// Moves `ledger` onto its own thread, recording outcomes for `run`.
    pub fn spawn(ledger: Ledger, run: RunId) -> std::io::Result<(Writer, WriterThread)> {
        Writer::spawn_lingering(ledger, run, LINGER)
    }

    /// [`Writer::spawn`], with outcomes alone waiting at most `linger` for a call.
    fn spawn_lingering(
        ledger: Ledger,
        run: RunId,
        linger: Duration,
    ) -> std::io::Result<(Writer, WriterThread)> {
        let (tx, rx) = mpsc::channel::<Cmd>(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        let failed_in = failed.clone();
        // A clock for the wait: the thread's own, apart from the run's workers.
        let clock = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let handle = std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || {
                let mut queue = Queue { rx, clock, linger };
                serve(ledger, run, &mut queue, failed_in)
            })?;
        Ok((Writer { tx, failed }, WriterThread { handle }))
    }

    /// Runs `f` on the ledger thread; answers once what it wrote is committed.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ledger) -> Result<T, Error> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.check()?;
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |ledger| {
            let result = f(ledger);
            Box::new(move || {
                let _ = reply.send(result);
            })
        });
        self.tx
            .send(Cmd::Call(job))
            .await
            .map_err(|_| anyhow::anyhow!("the ledger thread stopped"))?;
        let result = answer.await.map_err(|_| match self.check() {
            Err(e) => e,
            Ok(()) => anyhow::anyhow!("the ledger thread stopped"),
        })?;
        Ok(result?)
    }

    /// Queues outcomes (as many as are at hand: one hand-off for them all); they are
    /// committed with the next group.
    pub async fn record(&self, outcomes: Vec<Outcome>) -> anyhow::Result<()> {
        self.check()?;
        if outcomes.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Cmd::Record(outcomes))
            .await
            .map_err(|_| anyhow::anyhow!("the ledger thread stopped"))
    }

    /// Ends the run's writing: waits for every queued command, then gives the ledger
    /// back, or why the ledger stopped writing. Every other clone must be dropped first.
    pub fn close(self, thread: WriterThread) -> anyhow::Result<Ledger> {
        drop(self.tx);
        let ledger = thread
            .join()
            .ok_or_else(|| anyhow::anyhow!("the ledger thread failed"))?;
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(stopped) => Err(stopped.error().into()),
            None => Ok(ledger),
        }
    }

    /// Why the ledger stopped writing, if it did: [`Error::Unwritable`] or [`Error::Gone`].
    pub fn check(&self) -> anyhow::Result<()> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(stopped) => Err(stopped.error().into()),
            None => Ok(()),
        }
    }
}

/// The commands on their way to the ledger thread, taken a group at a time.
struct Queue {
    rx: mpsc::Receiver<Cmd>,
    clock: tokio::runtime::Runtime,
    linger: Duration,
}

impl Queue {
    /// The next group: what is queued when one arrives (up to [`GROUP`]). Outcomes
    /// alone wait up to `linger` for a call to join them; `None` once every sender is
    /// gone and the queue is empty.
    fn next_group(&mut self) -> Option<Vec<Cmd>> {
        let mut group = vec![self.rx.blocking_recv()?];
        self.drain(&mut group);
        let deadline = tokio::time::Instant::now() + self.linger;
        let mut outcomes_alone = group.iter().all(|c| matches!(c, Cmd::Record(_)));
        while outcomes_alone && group.len() < GROUP {
            let rx = &mut self.rx;
            let next = self
                .clock
                .block_on(async { tokio::time::timeout_at(deadline, rx.recv()).await });
            match next {
                Ok(Some(cmd)) => {
                    let from = group.len();
                    group.push(cmd);
                    self.drain(&mut group);
                    outcomes_alone = group[from..].iter().all(|c| matches!(c, Cmd::Record(_)));
                }
                // The time is up, or the run is over: commit what is here.
                Ok(None) | Err(_) => break,
            }
        }
        Some(group)
    }

    /// Adds to `group` whatever is queued now, up to [`GROUP`].
    fn drain(&mut self, group: &mut Vec<Cmd>) {
        while group.len() < GROUP {
            match self.rx.try_recv() {
                Ok(cmd) => group.push(cmd),
                Err(_) => break,
            }
        }
    }
}

/// The thread's loop: take what is queued, run it in one transaction, commit, check the
/// file is still the ledger's, answer. After the first failure it runs nothing more and
/// answers no one, so no request leaves on a mark that may not be kept.
fn serve(
    mut ledger: Ledger,
    run: RunId,
    queue: &mut Queue,
    failed: Arc<Mutex<Option<Stopped>>>,
) -> Ledger {
    let path = ledger.path().to_path_buf();
    let fail = |e: Error| {
        let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| Stopped::from_error(e, &path));
    };
    let has_failed = || failed.lock().unwrap_or_else(|p| p.into_inner()).is_some();
    let checkpointer = ledger.background_checkpoints();
    while let Some(group) = queue.next_group() {
        if has_failed() {
            // Dropped unanswered: every caller learns why from `check`.
            continue;
        }
        match write_group(&mut ledger, run, group) {
            Ok(replies) => replies.into_iter().for_each(|reply| reply()),
            Err(e) => fail(e),
        }
    }
    if checkpointer.is_some() {
        drop(checkpointer);
        ledger.foreground_checkpoints();
    }
    ledger
}

/// Runs one group in one transaction and commits it; gives back the answers to send
/// once it is durable, or the first failure (and then nothing of it is answered).
fn write_group(ledger: &mut Ledger, run: RunId, group: Vec<Cmd>) -> Result<Vec<Reply>, Error> {
    ledger.begin_group()?;
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut replies: Vec<Reply> = Vec::new();
    let mut written = Ok(());
    for cmd in group {
        match cmd {
            Cmd::Record(o) => outcomes.extend(o),
            Cmd::Call(job) => {
                // Outcomes queued before a call are written before it runs.
                if !outcomes.is_empty() {
                    written = written.and(ledger.record_in_group(run, &outcomes));
                    outcomes.clear();
                }
                replies.push(job(ledger));
            }
        }
    }
    if !outcomes.is_empty() {
        written = written.and(ledger.record_in_group(run, &outcomes));
    }
    if let Err(e) = written.and_then(|()| ledger.commit_group()) {
        ledger.rollback_group();
        return Err(e);
    }
    // Committed to the file at the path? If it was deleted or replaced, what was just
    // written is lost with it: nothing is answered, so nothing more is sent.
    ledger.check_still_there()?;
    Ok(replies)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::{AdmitOptions, Job, State};
    use crate::ledger::NewRow;
    use crate::ledger::tests::{ids, invite_row, jobs, outcomes};

    /// A ledger at `path` on its thread (outcomes alone waiting up to `linger`), with
    /// `n` invitations admitted and marked `sending`.
    async fn marked(
        path: &Path,
        n: u64,
        linger: Duration,
    ) -> (Writer, WriterThread, RunId, Vec<Job>) {
        let mut ledger = Ledger::open(path).unwrap();
        let run = ledger.begin_run("run", "http://x", &[], false).unwrap();
        let source = ledger.add_source(run, "a.csv", &["email".into()]).unwrap();
        let (writer, thread) = Writer::spawn_lingering(ledger, run, linger).unwrap();
        let rows: Vec<NewRow> = (0..n)
            .map(|i| invite_row(source, i + 2, 1, &format!("u{i}@x.io")))
            .collect();
        let admitted = writer
            .call(move |l| l.admit(run, &rows, AdmitOptions::default()))
            .await
            .unwrap();
        let jobs = jobs(&admitted);
        let marks = ids(&jobs);
        writer.call(move |l| l.mark_sending(&marks)).await.unwrap();
        (writer, thread, run, jobs)
    }

    /// Invitations in `state`, as another connection (another process, after a crash)
    /// reads the file.
    fn committed(path: &Path, state: State) -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM invitations WHERE state = ?1",
                [state.as_str()],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_is_answered_only_once_its_writes_are_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let (writer, thread, run, _) = marked(&path, 100, LINGER).await;
        assert_eq!(committed(&path, State::Sending), 100);
        drop(writer);
        let mut ledger = thread.join().unwrap();
        assert_eq!(
            ledger.status_counts(Some(run)).unwrap().rows.get("sending"),
            Some(&100)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outcomes_alone_wait_for_the_next_call_and_commit_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let (writer, thread, _, jobs) = marked(&path, 10, Duration::from_secs(600)).await;
        writer
            .record(outcomes(&jobs[..5], State::Invited))
            .await
            .unwrap();
        // Long enough for the thread to have taken them, were it to commit them alone.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(committed(&path, State::Invited), 0);
        writer
            .record(outcomes(&jobs[5..], State::Invited))
            .await
            .unwrap();
        writer.call(|_| Ok(())).await.unwrap();
        assert_eq!(committed(&path, State::Invited), 10);
        writer.close(thread).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outcomes_alone_are_durable_within_the_linger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let (writer, thread, _, jobs) = marked(&path, 10, Duration::from_millis(100)).await;
        writer
            .record(outcomes(&jobs, State::Invited))
            .await
            .unwrap();
        let start = std::time::Instant::now();
        // No call follows and the writer stays open: only the bound commits them.
        while committed(&path, State::Invited) < 10 {
            assert!(start.elapsed() < Duration::from_secs(20), "never committed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer.close(thread).unwrap();
    }
}
