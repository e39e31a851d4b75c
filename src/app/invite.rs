//! `run` and `retry`: their own jobs for the engine. `run` reads, resolves and admits
//! rows on a task of its own and streams the invitations to send; `retry` takes the
//! unfinished ones from the ledger. Sending, recording and the exit code are the
//! engine's (`engine.rs`); this file prints their summary. No SQL, no HTTP policy.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{InputArgs, SendArgs};
use crate::domain::{Admission, AdmitOptions, Job, RowStatus, RunId, Verdict};
use crate::input::{self, Reader};
use crate::ledger::{Ledger, NewRow, Writer};
use crate::progress::{Mode, Progress, Total};
use crate::resolve::Resolver;
use crate::settings::Settings;

use super::engine::{Closed, Ending, Engine, MARK_BATCH, Work, open, stream_from};
use super::message::error_line;
use super::report::write_export;
use super::setup::{open_inputs, resolver, rows_total, spawn_reader, verdict};
use super::{Aborted, Exit, mark_json_answered};

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
            feed_rows(
                readers,
                &mut resolver,
                &writer,
                job_tx,
                &progress,
                opts,
                run,
                stop,
                verbose,
            )
            .await
        })
    };
    let sent = engine.dispatch(stream_from(job_rx).map(Work::Invite)).await;
    let fed = feed
        .await
        .map_err(|e| anyhow!("reading the input failed: {e}"))
        .and_then(|r| r);
    let ending = Ending {
        command: "run",
        run,
        started,
        results: send.results.as_deref(),
        announce: send.announce.announce(),
        // A file with a header and no rows is a problem: in cron, a truncated export.
        problem: notes.iter().any(|n| n.no_rows()),
    };
    engine.finish(ending, fed.and(sent), |c| {
        print_summary(global, "run", c, &notes)
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
    let jobs = ledger.requeue_unfinished(run, send.retry_rejected)?;
    let progress = Progress::new(Mode::detect(global.quiet || global.json), "retry", "rows");
    let total = jobs.len() as u64;
    progress.set_total(move || Total::Exact(total));
    let engine = Engine::start(ledger, run, sender, progress, global.verbose > 0)?;
    let sent = engine
        .dispatch(futures::stream::iter(jobs).map(Work::Invite))
        .await;
    let ending = Ending {
        command: "retry",
        run,
        started,
        results: send.results.as_deref(),
        announce: send.announce.announce(),
        problem: false,
    };
    engine.finish(ending, sent, |c| print_summary(global, "retry", c, &[]))
}

/// Reads, resolves and admits rows; queues the ones to send.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn feed_rows(
    readers: Vec<Reader>,
    resolver: &mut Resolver,
    writer: &Writer,
    jobs: mpsc::Sender<Job>,
    progress: &Progress,
    opts: AdmitOptions,
    run: RunId,
    stop: CancellationToken,
    verbose: bool,
) -> anyhow::Result<()> {
    let mut batches = spawn_reader(readers, stop.clone());
    let mut sources: HashMap<usize, (i64, Arc<input::Columns>)> = HashMap::new();
    loop {
        let batch = tokio::select! {
            b = batches.recv() => b,
            _ = stop.cancelled() => None,
        };
        let Some(batch) = batch else { break };
        let batch = batch?;
        let mut rows = Vec::with_capacity(batch.len());
        let mut origins = Vec::with_capacity(batch.len());
        for record in &batch {
            let key = Arc::as_ptr(&record.columns) as usize;
            let source = match sources.get(&key) {
                Some((id, _)) => *id,
                None => {
                    let (file, names) = (record.file.to_string(), record.columns.names.clone());
                    let id = writer
                        .call(move |l| l.add_source(run, &file, &names))
                        .await?;
                    // Holding the Arc keeps the pointer from being reused by another header.
                    sources.insert(key, (id, record.columns.clone()));
                    id
                }
            };
            let email = record.parsed.as_ref().ok().map(|w| w.email.clone());
            rows.push(NewRow {
                source,
                line: record.line,
                cells: serde_json::to_string(&record.values).unwrap_or_else(|_| "[]".into()),
                email,
                verdict: verdict(record, resolver).await,
            });
            // Where a row came from is printed only with -v: no string per row otherwise.
            origins.push(if verbose {
                format!("{}:{}", record.file, record.line)
            } else {
                String::new()
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
        let told = admitted.into_iter().zip(origins).zip(verdicts);
        if !queue(told, &jobs, progress, verbose).await {
            return Ok(());
        }
    }
    Ok(())
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

#[derive(Debug, Serialize)]
struct Summary {
    command: String,
    run: RunId,
    ledger: String,
    outcome: String,
    exit_code: i32,
    elapsed_secs: f64,
    rows: u64,
    statuses: std::collections::BTreeMap<String, u64>,
    rows_per_sec: f64,
    /// What the operator should know about the inputs as a whole.
    notes: Vec<String>,
}

/// The summary of `run` and `retry`: counts per status, the commonest errors, and the
/// commands that show or send again the rows with problems.
fn print_summary(
    global: &Settings,
    command: &str,
    c: &Closed<'_>,
    notes: &[Arc<input::Notes>],
) -> anyhow::Result<()> {
    let rows: u64 = c.counts.rows.values().sum();
    let s = Summary {
        command: command.to_string(),
        run: c.run,
        ledger: c.ledger.path().display().to_string(),
        outcome: c.outcome.to_string(),
        exit_code: c.exit as i32,
        elapsed_secs: c.elapsed.as_secs_f64(),
        rows,
        statuses: c.counts.rows.clone(),
        rows_per_sec: rows as f64 / c.elapsed.as_secs_f64().max(0.001),
        notes: notes.iter().flat_map(|n| n.lines()).collect(),
    };
    let (s, top_errors) = (&s, &c.counts.top_errors);
    let mut out = std::io::stdout().lock();
    if global.json {
        mark_json_answered();
        serde_json::to_writer_pretty(&mut out, s)?;
        writeln!(out)?;
        return Ok(());
    }
    if global.quiet {
        if let Some(line) = attention_line(s.run, &s.ledger, &s.statuses) {
            eprintln!("bbinvite: {line}");
        }
        return Ok(());
    }
    writeln!(
        out,
        "bbinvite {} (run {}): {} rows in {:.1}s, {}",
        s.command, s.run, s.rows, s.elapsed_secs, s.outcome
    )?;
    for status in RowStatus::ALL {
        if let Some(n) = s.statuses.get(status.as_str()) {
            writeln!(out, "  {:<11} {n}", status.as_str())?;
        }
    }
    for note in &s.notes {
        writeln!(out, "Note: {note}")?;
    }
    let problems: Vec<&str> = RowStatus::ALL
        .iter()
        .filter(|st| st.is_problem() && s.statuses.get(st.as_str()).is_some_and(|n| *n > 0))
        .map(|st| st.as_str())
        .collect();
    if !problems.is_empty() {
        writeln!(out, "Most common errors:")?;
        for (err, n) in top_errors.iter().take(3) {
            writeln!(out, "  {n} × {err}")?;
        }
        let flags: Vec<String> = problems.iter().map(|p| format!("--status {p}")).collect();
        writeln!(
            out,
            "See each row: bbinvite export --run {} {} --ledger {}",
            s.run,
            flags.join(" "),
            s.ledger
        )?;
        if problems.contains(&"failed") {
            writeln!(
                out,
                "Send the failed ones again: bbinvite retry --ledger {}",
                s.ledger
            )?;
        }
    }
    Ok(())
}

/// `-q`'s one line when rows need attention: how many, of which status, and the command
/// that lists them; `None` when none do.
pub(super) fn attention_line(
    run: RunId,
    ledger: &str,
    statuses: &std::collections::BTreeMap<String, u64>,
) -> Option<String> {
    let problems: Vec<(&str, u64)> = RowStatus::ALL
        .iter()
        .filter(|st| st.is_problem())
        .filter_map(|st| {
            let n = statuses.get(st.as_str()).copied().unwrap_or(0);
            (n > 0).then_some((st.as_str(), n))
        })
        .collect();
    if problems.is_empty() {
        return None;
    }
    let total: u64 = problems.iter().map(|(_, n)| n).sum();
    let counts: Vec<String> = problems.iter().map(|(st, n)| format!("{st} {n}")).collect();
    let flags: Vec<String> = problems
        .iter()
        .map(|(st, _)| format!("--status {st}"))
        .collect();
    Some(format!(
        "{total} rows need attention ({}); list them: bbinvite export --run {} {} --ledger {}",
        counts.join(", "),
        run,
        flags.join(" "),
        ledger
    ))
}
