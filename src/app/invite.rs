//! `run` and `retry`: read, admit, mark, send, record, summarise. The concurrency of a
//! run lives here and only here.

use super::*;

// ---------------------------------------------------------------------------------
// `run` and `retry`: the sending pipeline.

pub(crate) async fn invite_rows(
    global: &Global,
    a: InputArgs,
    send: SendArgs,
    stop: CancellationToken,
) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let readers = open_inputs(&a)?;
    let path = ledger_path(global, a.sandbox);
    let endpoint = before_sending(global, &path, a.sandbox, send.results.as_deref())?;
    let mut ledger = open_ledger(&path)?;
    let settings = cli::send_settings(&send);
    let api = connect_to_send(endpoint, &settings, &send, &mut ledger, &stop).await?;
    let mut resolver = resolver(&mut ledger, &api, &a, &readers).await?;
    let files: Vec<String> = readers.iter().map(|r| r.file().to_string()).collect();
    let notes: Vec<Arc<input::Notes>> = readers.iter().map(Reader::notes).collect();
    let run = ledger.begin_run("run", &api.base_url, &files, false)?;
    if send.results.is_some() {
        ledger.keep_counted_rows(run)?;
    }
    let progress = Progress::new(Mode::detect(global.quiet || global.json), "run");
    let (writer, thread) = Writer::spawn(ledger, run)?;
    let sender = Arc::new(Sender::new(
        api.client.clone(),
        settings.clone(),
        stop.clone(),
    ));
    let (job_tx, job_rx) = mpsc::channel::<Job>(settings.concurrency * 4 + MARK_BATCH);

    let opts = AdmitOptions {
        retry_rejected: send.retry_rejected,
    };
    // Reading and admitting run as a task of their own, beside the sending.
    let feed = {
        let (writer, progress, stop, verbose) = (
            writer.clone(),
            progress.clone(),
            stop.clone(),
            global.verbose,
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
    let sent = dispatch(job_rx, &sender, &writer, &progress, global.verbose).await;
    let fed = feed
        .await
        .map_err(|e| anyhow!("reading the input failed: {e}"))
        .and_then(|r| r);
    finish(
        global,
        "run",
        run,
        started,
        writer,
        thread,
        &progress,
        &sender,
        fed.and(sent),
        send.results.as_deref(),
        &notes,
    )
}

pub(crate) async fn retry(
    global: &Global,
    send: SendArgs,
    stop: CancellationToken,
) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let path = ledger_path(global, false);
    if !path.exists() {
        bail!(
            "no ledger at {}; nothing to retry (use --ledger to name one)",
            path.display()
        );
    }
    let endpoint = before_sending(global, &path, false, send.results.as_deref())?;
    let mut ledger = open_ledger(&path)?;
    let settings = cli::send_settings(&send);
    let api = connect_to_send(endpoint, &settings, &send, &mut ledger, &stop).await?;
    let run = ledger.begin_run("retry", &api.base_url, &[], false)?;
    let jobs = ledger.requeue_unfinished(run, send.retry_rejected)?;
    let progress = Progress::new(Mode::detect(global.quiet || global.json), "retry");
    progress.seen(jobs.len() as u64);
    progress.reading_done();
    let (writer, thread) = Writer::spawn(ledger, run)?;
    let sender = Arc::new(Sender::new(
        api.client.clone(),
        settings.clone(),
        stop.clone(),
    ));
    let (job_tx, job_rx) = mpsc::channel::<Job>(settings.concurrency * 4 + MARK_BATCH);
    let feed = async move {
        for job in jobs {
            if stop.is_cancelled() || job_tx.send(job).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    };
    let dispatch = dispatch(job_rx, &sender, &writer, &progress, global.verbose);
    let (fed, sent) = tokio::join!(feed, dispatch);
    finish(
        global,
        "retry",
        run,
        started,
        writer,
        thread,
        &progress,
        &sender,
        fed.and(sent),
        send.results.as_deref(),
        &[],
    )
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
        progress.seen(batch.len() as u64);
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
        for ((admission, origin), why) in admitted.into_iter().zip(origins).zip(verdicts) {
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
                        return Ok(());
                    }
                }
            }
        }
    }
    progress.reading_done();
    Ok(())
}

/// Marks jobs `sending` in small batches, sends them with bounded concurrency, and
/// records each outcome. Stops taking new jobs when the run is stopped.
pub(crate) async fn dispatch(
    jobs: mpsc::Receiver<Job>,
    sender: &Arc<Sender>,
    writer: &Writer,
    progress: &Progress,
    verbose: bool,
) -> anyhow::Result<()> {
    let stop = sender.stop_token().clone();
    let concurrency = sender.settings().concurrency;
    let marked = tokio_stream_from(jobs)
        .take_until(stop.cancelled_owned())
        .ready_chunks(MARK_BATCH.min(concurrency.max(1) * 2))
        .map(|batch| {
            let writer = writer.clone();
            async move {
                let marks = batch.clone();
                let result = writer.call(move |l| l.mark_sending(&marks)).await;
                futures::stream::iter(batch.into_iter().map(move |job| (job, result.is_ok())))
            }
        })
        // The next batch is marked while this one is sent, so workers never wait on
        // a commit; at most two batches are marked ahead of their requests.
        .buffered(MARKS_AHEAD)
        .flatten();
    let mut outcomes = std::pin::pin!(
        marked
            .map(|(job, marked)| {
                let sender = sender.clone();
                // Each invitation is a task, so the work spreads over every core.
                tokio::spawn(async move {
                    let origin = job.origin.clone();
                    if !marked {
                        // The mark was not committed: sending would break exactly-once.
                        return None;
                    }
                    Some((origin, sender.process(job).await))
                })
            })
            .buffer_unordered(concurrency)
    );
    while let Some(done) = outcomes.next().await {
        let done = done.map_err(|e| anyhow!("a sending task failed: {e}"))?;
        let Some((origin, outcome)) = done else {
            writer.check()?;
            bail!("the ledger could not record a batch before sending");
        };
        report_outcome(progress, verbose, &origin, &outcome);
        writer.record(outcome).await?;
    }
    Ok(())
}

/// Counts an invitation's outcome, and prints it when it is a problem and `-v` asked.
pub(crate) fn report_outcome(
    progress: &Progress,
    verbose: bool,
    origin: &str,
    outcome: &crate::send::Outcome,
) {
    let status = RowStatus::from_state(outcome.state);
    if verbose && status.is_problem() {
        progress.println(&format!(
            "{origin}: {}: {}",
            status.as_str(),
            outcome.error.as_deref().unwrap_or("")
        ));
    }
    progress.count(status);
}

pub(crate) fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The end of a sending command: commit, close the run, write results, summarise.
/// The run has begun, so requests may have gone out: whatever fails from here on (or
/// failed on the way) exits 3, never 2, and the counts are printed when they can be.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish(
    global: &Global,
    command: &str,
    run: RunId,
    started: Instant,
    writer: Writer,
    thread: ledger::WriterThread,
    progress: &Progress,
    sender: &Sender,
    pipeline: anyhow::Result<()>,
    results: Option<&Path>,
    notes: &[Arc<input::Notes>],
) -> anyhow::Result<Exit> {
    progress.finish();
    let mut ledger = writer
        .close(thread)
        .map_err(|e| after_start(stopped_by_ledger(e, progress)))?;
    let abort = sender.abort_reason();
    let counts = ledger.status_counts(Some(run)).map_err(after_start)?;
    // A file with a header and no rows is a problem: in cron, a truncated export.
    let problems = notes.iter().any(|n| n.no_rows())
        || counts
            .rows
            .iter()
            .any(|(s, n)| *n > 0 && RowStatus::parse(s).is_some_and(RowStatus::is_problem));
    let (mut exit, mut outcome) = match (&pipeline, &abort) {
        (Err(e), _) => (late_exit(e), format!("error: {}", error_line(e))),
        (Ok(()), Some(reason)) => (Exit::Aborted, format!("aborted: {reason}")),
        (Ok(()), None) if problems => (Exit::Problems, "completed with problems".to_string()),
        (Ok(()), None) => (Exit::Ok, "completed".to_string()),
    };
    let unwritten = results.and_then(|path| write_results(&mut ledger, run, path).err());
    if let Some(e) = &unwritten {
        exit = late_exit(e);
        outcome = format!("{outcome}; {}", error_line(e));
    }
    ledger
        .finish_run(run, &outcome, exit as i32)
        .map_err(|e| after_start(stopped_by_ledger(e.into(), progress)))?;
    let elapsed = started.elapsed();
    let summary = Summary {
        command: command.to_string(),
        run,
        ledger: ledger.path().display().to_string(),
        outcome: outcome.clone(),
        exit_code: exit as i32,
        elapsed_secs: elapsed.as_secs_f64(),
        rows: counts.rows.values().sum(),
        statuses: counts.rows.clone(),
        rows_per_sec: counts.rows.values().sum::<u64>() as f64 / elapsed.as_secs_f64().max(0.001),
        notes: notes.iter().flat_map(|n| n.lines()).collect(),
    };
    if let Err(e) = print_summary(global, &summary, &counts.top_errors)
        && !is_broken_pipe(&e)
    {
        return Err(after_start(e));
    }
    pipeline.map_err(after_start)?;
    if let Some(e) = unwritten {
        return Err(e);
    }
    if let Some(reason) = abort {
        return Err(anyhow::Error::new(Aborted(reason.to_string())));
    }
    Ok(exit)
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

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
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

#[derive(Debug, Serialize)]
pub(crate) struct Summary {
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

pub(crate) fn print_summary(
    global: &Global,
    s: &Summary,
    top_errors: &[(String, u64)],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, s)?;
        writeln!(out)?;
        return Ok(());
    }
    if global.quiet {
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
