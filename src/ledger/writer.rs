//! The ledger's own thread: one owner for the SQLite connection during a run.
//!
//! Async stages send it closures to run ([`Writer::call`]) and outcomes to record
//! ([`Writer::record`]); outcomes are committed in batches, many per transaction, so
//! the database keeps up with the network. A failed write stops the run: the error is
//! kept and every later call reports it.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::{Error, Ledger, RunId};
use crate::send::Outcome;

/// Outcomes committed in one transaction at most.
const RECORD_BATCH: usize = 1024;
/// Commands queued before senders wait: bounded, so memory stays flat.
const QUEUE: usize = 4096;

type Job = Box<dyn FnOnce(&mut Ledger) + Send>;

enum Cmd {
    Call(Job),
    Record(Outcome),
}

/// A handle to the ledger thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Cmd>,
    failed: Arc<Mutex<Option<String>>>,
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
    pub fn spawn(mut ledger: Ledger, run: RunId) -> std::io::Result<(Writer, WriterThread)> {
        let (tx, mut rx) = mpsc::channel::<Cmd>(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        let failed_in = failed.clone();
        let handle = std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || {
                let mut batch: Vec<Outcome> = Vec::with_capacity(RECORD_BATCH);
                let flush = |ledger: &mut Ledger, batch: &mut Vec<Outcome>| {
                    if batch.is_empty() {
                        return;
                    }
                    if let Err(e) = ledger.record(run, batch) {
                        let mut slot = failed_in.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert_with(|| e.to_string());
                    }
                    batch.clear();
                };
                while let Some(cmd) = rx.blocking_recv() {
                    let mut next = Some(cmd);
                    while let Some(cmd) = next.take() {
                        match cmd {
                            Cmd::Record(o) => {
                                batch.push(o);
                                if batch.len() >= RECORD_BATCH {
                                    flush(&mut ledger, &mut batch);
                                }
                                next = rx.try_recv().ok();
                            }
                            Cmd::Call(job) => {
                                flush(&mut ledger, &mut batch);
                                job(&mut ledger);
                            }
                        }
                    }
                    flush(&mut ledger, &mut batch);
                }
                flush(&mut ledger, &mut batch);
                ledger
            })?;
        Ok((Writer { tx, failed }, WriterThread { handle }))
    }

    /// Runs `f` on the ledger thread, after every outcome queued before it is committed.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ledger) -> Result<T, Error> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.check()?;
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |ledger| {
            let _ = reply.send(f(ledger));
        });
        self.tx
            .send(Cmd::Call(job))
            .await
            .map_err(|_| anyhow::anyhow!("the ledger thread stopped"))?;
        let result = answer
            .await
            .map_err(|_| anyhow::anyhow!("the ledger thread stopped"))?;
        Ok(result?)
    }

    /// Queues an outcome; it is committed with others in a batch.
    pub async fn record(&self, outcome: Outcome) -> anyhow::Result<()> {
        self.check()?;
        self.tx
            .send(Cmd::Record(outcome))
            .await
            .map_err(|_| anyhow::anyhow!("the ledger thread stopped"))
    }

    /// The first write that failed, if any.
    pub fn check(&self) -> anyhow::Result<()> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(anyhow::anyhow!("writing the ledger failed: {e}")),
            None => Ok(()),
        }
    }
}
