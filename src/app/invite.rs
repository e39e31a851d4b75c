//! `run` and `retry`: their own jobs for the engine. `run` reads, resolves and admits
//! rows on a task of its own and streams the invitations to send; `retry` takes the
//! unfinished ones from the ledger. Sending, recording, the exit code and the summary
//! are the engine's (`engine.rs`); this file adds to the summary what only it knows:
//! how far the input was read and the command that continues it. No SQL, no HTTP
//! policy.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{DEFAULT_BASE_URL, InputArgs, SendArgs};
use crate::domain::{Admission, AdmitOptions, Job, RunId, Verdict};
use crate::input::{self, Reader};
use crate::ledger::{Ledger, NewRow, Writer};
use crate::progress::{Mode, Progress, Total};
use crate::report::summary::{InputRead, Summary, thousands};
use crate::resolve::Resolver;
use crate::settings::Settings;

use super::engine::{Ending, Engine, MARK_BATCH, Work, open, stream_from};
use super::message::error_line;
use super::report::write_export;
use super::setup::{into_verdict, open_inputs, resolver, rows_total, spawn_reader};
use super::{Aborted, Exit};

// ---------------------------------------------------------------------------------
// `run` and `retry`: the sending pipeline.

pub(crate) async fn invite_rows(
    global: &Settings,
    a: InputArgs,
    send: SendArgs,
    stop: CancellationToken,
) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let readers = open_inputs(&a)?;
    let (mut ledger, api, sender) = open(global, &send, send.results.as_deref(), &stop).await?;
    let mut resolver = resolver(&mut ledger, &api, &a, &readers).await?;
    let files: Vec<String> = readers.iter().map(|r| r.file().to_string()).collect();
    let notes: Vec<Arc<input::Notes>> = readers.iter().map(Reader::notes).collect();
    let run = ledger.begin_run("run", &api.base_url, &files, false)?;
    let continue_with = continue_command(global, &a, &api.base_url);
    ledger.expect_input(run, &continue_with)?;
    if send.results.is_some() {
        ledger.keep_counted_rows(run)?;
    }
    let progress = Progress::new(Mode::detect(global.quiet || global.json), "run", "rows");
    progress.set_total(rows_total(&readers));
    let engine = Engine::start(ledger, run, sender, progress, global.verbose > 0)?;
    let concurrency = engine.sender.settings().concurrency;
    let (job_tx, job_rx) = mpsc::channel::<Job>(concurrency * 4 + MARK_BATCH);
    let opts = AdmitOptions {
        retry_rejected: send.retry_rejected,
    };
    // Reading and admitting run as a task of their own, beside the sending.
    let feed = {
        let (writer, progress, stop, verbose) = (
            engine.writer.clone(),
            engine.progress.clone(),
            stop.clone(),
            global.verbose > 0,
        );
        tokio::spawn(async move {
            let mut reading = Reading::default();
            let fed = feed_rows(
                readers,
                &mut resolver,
                (&writer, job_tx),
                &progress,
                opts,
                run,
                stop,
                verbose,
                &mut reading,
            )
            .await;
            // Noted as soon as reading ends: a run killed while it sends has read it all.
            let stopped = reading.stopped();
            let noted = writer
                .call(move |l| l.input_read(run, stopped.as_deref()))
                .await;
            (reading, fed.and(noted))
        })
    };
    let sent = engine.dispatch(stream_from(job_rx).map(Work::Invite)).await;
    let (reading, fed) = match feed.await {
        Ok((reading, fed)) => (reading, fed),
        Err(e) => (
            Reading::default(),
            Err(anyhow!("reading the input failed: {e}")),
        ),
    };
    let ending = Ending {
        // A file with a header and no rows is a problem: in cron, a truncated export.
        problem: notes.iter().any(|n| n.no_rows()),
        unread_input: !reading.complete,
        ..Ending::new("run", run, started, global, &send)
    };
    engine.finish(ending, fed.and(sent), |s, _| {
        reading.tell(s, &notes, continue_with)
    })
}

pub(crate) async fn retry(
    global: &Settings,
    send: SendArgs,
    stop: CancellationToken,
) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let path = &global.ledger;
    if !path.exists() {
        bail!(
            "no ledger at {}; nothing to retry (use --ledger to name one)",
            path.display()
        );
    }
    let (mut ledger, api, sender) = open(global, &send, send.results.as_deref(), &stop).await?;
    let run = ledger.begin_run("retry", &api.base_url, &[], false)?;
    // A run that stopped before the end of its input is not finished by sending again
    // what it read: say so, and how to continue it, rather than "completed".
    let unread = ledger.unread_input()?;
    let jobs = ledger.requeue_unfinished(run, send.retry_rejected)?;
    let progress = Progress::new(Mode::detect(global.quiet || global.json), "retry", "rows");
    let total = jobs.len() as u64;
    progress.set_total(move || Total::Exact(total));
    let engine = Engine::start(ledger, run, sender, progress, global.verbose > 0)?;
    let sent = engine
        .dispatch(futures::stream::iter(jobs).map(Work::Invite))
        .await;
    let ending = Ending {
        unread_input: unread.is_some(),
        ..Ending::new("retry", run, started, global, &send)
    };
    engine.finish(ending, sent, |mut s, _| {
        if let Some(u) = unread {
            s.input = Some(InputRead {
                run: u.run,
                complete: false,
                rows_read: None,
                stopped_reading: u.stopped_reading,
            });
            s.continue_with = Some(u.continue_with);
        }
        s
    })
}

/// The command that reads the rest of this run's input: the same files, input flags,
/// ledger and API (rows done are skipped). Credentials stay in the environment.
fn continue_command(global: &Settings, a: &InputArgs, base_url: &str) -> String {
    let mut words: Vec<String> = vec!["bbinvite".into(), "run".into()];
    words.extend(a.files.iter().cloned());
    for (field, column) in &a.map {
        words.extend(["--map".into(), format!("{}={column}", field.as_str())]);
    }
    let flags = [
        ("--delimiter", a.delimiter.map(delimiter_text)),
        ("--encoding", a.encoding.clone()),
        ("--sheet", a.sheet.clone()),
        ("--customer", a.customer.clone()),
    ];
    for (flag, value) in flags {
        if let Some(v) = value {
            words.extend([flag.to_string(), v]);
        }
    }
    if a.allow_multiline_fields {
        words.push("--allow-multiline-fields".into());
    }
    words.extend(["--ledger".into(), global.ledger.display().to_string()]);
    if global.sandbox {
        words.push("--sandbox".into());
    } else if base_url != DEFAULT_BASE_URL {
        words.extend(["--base-url".into(), base_url.to_string()]);
    }
    shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
}

/// A delimiter as `--delimiter` takes it.
fn delimiter_text(d: u8) -> String {
    match d {
        b'\t' => "tab".to_string(),
        d => char::from(d).to_string(),
    }
}

/// How far `run` read its input: rows admitted, and the last one's file and line.
#[derive(Debug, Default)]
pub(crate) struct Reading {
    rows: u64,
    last: Option<(Arc<str>, u64)>,
    /// Every row of every file was read.
    complete: bool,
}

impl Reading {
    /// Completes `run`'s summary: the inputs' notes, how far they were read and, when
    /// not to the end, the command that continues.
    fn tell(&self, mut s: Summary, notes: &[Arc<input::Notes>], continue_with: String) -> Summary {
        s.notes = notes.iter().flat_map(|n| n.lines()).collect();
        s.continue_with = (!self.complete).then_some(continue_with);
        s.input = Some(InputRead {
            run: s.run,
            complete: self.complete,
            rows_read: Some(self.rows),
            stopped_reading: self.stopped(),
        });
        s
    }

    /// Where reading stopped, in words; `None` when it read every row.
    fn stopped(&self) -> Option<String> {
        if self.complete {
            return None;
        }
        Some(match &self.last {
            None => "no row was read".to_string(),
            Some((file, line)) => format!(
                "read {} rows, up to line {} of {file}; nothing after it was read",
                thousands(self.rows),
                thousands(*line)
            ),
        })
    }
}

/// Reads, resolves and admits rows; queues the ones to send. Notes in `reading` how far
/// it got.
#[allow(clippy::too_many_arguments)]
async fn feed_rows(
    readers: Vec<Reader>,
    resolver: &mut Resolver,
    (writer, jobs): (&Writer, mpsc::Sender<Job>),
    progress: &Progress,
    opts: AdmitOptions,
    run: RunId,
    stop: CancellationToken,
    verbose: bool,
    reading: &mut Reading,
) -> anyhow::Result<()> {
    let mut batches = spawn_reader(readers, stop.clone());
    let mut sources = Sources::default();
    loop {
        let batch = tokio::select! {
            b = batches.recv() => b,
            _ = stop.cancelled() => None,
        };
        let Some(batch) = batch else {
            // The reader also ends early when stopped: only an unstopped end is the end.
            reading.complete = !stop.is_cancelled();
            break;
        };
        let batch = batch?;
        let read = batch.len() as u64;
        let last = batch.last().map(|r| (r.file.clone(), r.line));
        let mut rows = Vec::with_capacity(batch.len());
        let mut origins = Vec::with_capacity(batch.len());
        // Each record is taken apart: its invitee's text moves into the invitation.
        for record in batch {
            let source = sources.id(&record, writer, run).await?;
            let email = record.parsed.as_ref().ok().map(|w| w.email.clone());
            // Where a row came from is printed only with -v: no string per row otherwise.
            origins.push(if verbose {
                format!("{}:{}", record.file, record.line)
            } else {
                String::new()
            });
            rows.push(NewRow {
                source,
                line: record.line,
                cells: record.cells_json(),
                email,
                verdict: into_verdict(record.parsed, resolver).await,
            });
        }
        let verdicts: Vec<Option<String>> = rows
            .iter()
            .map(|r| match &r.verdict {
                Verdict::Invalid(m) | Verdict::Unresolved { reason: m, .. } if verbose => {
                    Some(m.clone())
                }
                _ => None,
            })
            .collect();
        let admitted = writer.call(move |l| l.admit(run, &rows, opts)).await?;
        reading.rows += read;
        reading.last = last;
        let told = admitted.into_iter().zip(origins).zip(verdicts);
        if !queue(told, &jobs, progress, verbose).await {
            return Ok(());
        }
    }
    Ok(())
}

/// The ledger's id of each header the rows name, added when first named.
#[derive(Default)]
struct Sources {
    /// By the address of the reader's columns; holding the `Arc` keeps that address from
    /// being reused by another header.
    ids: HashMap<usize, (i64, Arc<input::Columns>)>,
    /// Rows come a file at a time: most name the same header as the row before.
    last: Option<(usize, i64)>,
}

impl Sources {
    async fn id(
        &mut self,
        record: &input::Record,
        writer: &Writer,
        run: RunId,
    ) -> anyhow::Result<i64> {
        let key = Arc::as_ptr(&record.columns) as usize;
        if let Some((last, id)) = self.last
            && last == key
        {
            return Ok(id);
        }
        let id = match self.ids.get(&key) {
            Some((id, _)) => *id,
            None => {
                let (file, names) = (record.file.to_string(), record.columns.names.clone());
                let id = writer
                    .call(move |l| l.add_source(run, &file, &names))
                    .await?;
                self.ids.insert(key, (id, record.columns.clone()));
                id
            }
        };
        self.last = Some((key, id));
        Ok(id)
    }
}

/// Counts the rows admission settled (printing the problems `-v` asks for) and queues
/// the invitations to send; false once the engine takes no more.
async fn queue(
    admitted: impl Iterator<Item = ((Admission, String), Option<String>)>,
    jobs: &mpsc::Sender<Job>,
    progress: &Progress,
    verbose: bool,
) -> bool {
    for ((admission, origin), why) in admitted {
        match admission {
            Admission::Settled { status, .. } => {
                if verbose && status.is_problem() {
                    progress.println(&format!(
                        "{origin}: {}: {}",
                        status.as_str(),
                        why.unwrap_or_default()
                    ));
                }
                progress.count(status);
            }
            Admission::Send(mut job) => {
                job.origin = origin;
                if jobs.send(job).await.is_err() {
                    return false;
                }
            }
        }
    }
    true
}

/// Writes `--results`; a failure says how to get them from the ledger instead.
pub(crate) fn write_results(ledger: &mut Ledger, run: RunId, path: &Path) -> anyhow::Result<()> {
    write_export(ledger, Some(run), &[], Some(path)).map_err(|e| {
        anyhow::Error::new(Aborted(format!(
            "the results were not written to {} ({}); every outcome is in the ledger: bbinvite export --run {run} --output FILE --ledger {}",
            path.display(),
            error_line(&e),
            ledger.path().display()
        )))
    })
}
