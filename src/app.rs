//! Each command's `run`: the pipeline readable top to bottom.
//!
//! `run`: open the inputs → lock and open the ledger → log in → load the directory →
//! read and resolve rows → admit them to the ledger (skipping what is done) → send →
//! record → summary. The stages live in their own modules; this one wires them and
//! decides the exit code. Errors that stop a command are `anyhow` errors whose kind
//! ([`Aborted`], a busy ledger, anything else) picks the exit code in `main`.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::types::{Customer, NewAccessUser};
use crate::api::{Client, ClientConfig, Credentials, Error as ApiError, Secret};
use crate::cli::{self, Args, Command, Global, InputArgs, SendArgs};
use crate::input::{self, Field, Invitee, Reader, Record};
use crate::ledger::{
    self, Admission, AdmitOptions, Decision, Ledger, LedgerLock, NewRow, RowStatus, RunId, Verdict,
    Writer,
};
use crate::progress::{Mode, Progress};
use crate::resolve::{Directory, ReferenceCache, Resolved, Unresolved};
use crate::sandbox;
use crate::send::{Job, Limiter, Sender, with_retries};

/// Rows read and admitted to the ledger per transaction.
pub(crate) const ADMIT_BATCH: usize = 512;
/// Batches read ahead of the ledger; bounded so memory stays flat however big the file.
const READ_AHEAD: usize = 4;
/// Jobs marked `sending` in one transaction, at most; about one round of workers, so a
/// crash leaves few marks to check.
const MARK_BATCH: usize = 64;
/// Mark batches committed ahead of sending.
const MARKS_AHEAD: usize = 4;

/// How a command ended, as the process's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every row ended invited, exists or already done.
    Ok = 0,
    /// Some rows ended failed, rejected, invalid or unresolved.
    Problems = 1,
    /// Usage, configuration or unreadable input; nothing sent.
    Usage = 2,
    /// Aborted: authentication, the breaker, a signal.
    Aborted = 3,
    /// The ledger is busy with another run.
    Busy = 4,
}

/// A command stopped for a reason that makes the exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Aborted(pub String);

/// The exit code an error means.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if let Some(ledger::Error::Busy { .. }) = cause.downcast_ref::<ledger::Error>() {
            return Exit::Busy;
        }
        if cause.downcast_ref::<Aborted>().is_some() {
            return Exit::Aborted;
        }
    }
    Exit::Usage
}

/// Runs the command that was typed.
pub async fn run(args: Args, stop: CancellationToken) -> anyhow::Result<Exit> {
    let global = args.global;
    match args.command {
        Command::Run(a) if a.dry_run => {
            check_files(
                &global,
                &a.input,
                Check::DryRun {
                    retry_rejected: a.send.retry_rejected,
                },
                a.send.rate,
                stop,
            )
            .await
        }
        Command::Run(a) => invite(&global, a.input, a.send, stop).await,
        Command::Validate(a) => check_files(&global, &a.input, Check::Validate, a.rate, stop).await,
        Command::Retry(a) => retry(&global, a.send, stop).await,
        Command::Status(a) => status(&global, a.run),
        Command::Export(a) => export(&global, a),
        Command::Customers(a) => customers(&global, a, stop).await,
        Command::Sync(a) => crate::sync::run(&global, a, stop).await,
        Command::Sandbox(a) => {
            sandbox::serve(a).await?;
            Ok(Exit::Ok)
        }
    }
}

// ---------------------------------------------------------------------------------
// Setting up: the API, the ledger, the inputs, the directory.

/// The API to talk to, with the limiter every request waits on.
pub(crate) struct Api {
    pub(crate) client: Arc<Client>,
    pub(crate) base_url: String,
    /// Tries for read-only calls made outside the send stage.
    pub(crate) max_attempts: u32,
    pub(crate) stop: CancellationToken,
    /// Keeps an in-process sandbox alive for the command's length.
    _sandbox: Option<sandbox::Sandbox>,
}

/// How an [`Api`] is reached and how hard it is tried.
pub(crate) struct Reach {
    limiter: Arc<Limiter>,
    timeout: Duration,
    pool: usize,
    max_attempts: u32,
    stop: CancellationToken,
}

impl Reach {
    /// For commands that only read: the given rate, default tries.
    fn reading(rate: NonZeroU32, stop: CancellationToken) -> Reach {
        Reach {
            limiter: Arc::new(Limiter::new(rate, rate, stop.clone())),
            timeout: Duration::from_secs(30),
            pool: 4,
            max_attempts: 5,
            stop,
        }
    }

    pub(crate) fn sending(
        settings: &crate::send::Settings,
        send: &SendArgs,
        stop: CancellationToken,
    ) -> Reach {
        Reach {
            limiter: Arc::new(Limiter::new(settings.rate, settings.burst, stop.clone())),
            timeout: send.timeout,
            pool: settings.concurrency,
            max_attempts: settings.max_attempts,
            stop,
        }
    }
}

pub(crate) async fn connect(
    global: &Global,
    use_sandbox: bool,
    reach: Reach,
) -> anyhow::Result<Api> {
    let Reach {
        limiter,
        timeout,
        pool,
        max_attempts,
        stop,
    } = reach;
    let (base_url, credentials, sandbox) = if use_sandbox {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let sb = sandbox::Sandbox::start(addr, sandbox::Config::samples())
            .await
            .context("cannot start the built-in sandbox")?;
        // The sandbox accepts any bearer token; no real credential is ever involved.
        (
            sb.base_url(),
            Credentials::ApiKey(Secret::new("sandbox")),
            Some(sb),
        )
    } else {
        (cli::base_url(global)?, cli::credentials_from_env()?, None)
    };
    let client = Client::new(ClientConfig {
        base_url: base_url.clone(),
        credentials,
        timeout,
        pool_size: pool,
    })
    .map_err(|e| anyhow!("{e}"))?
    .with_gate(limiter);
    Ok(Api {
        client: Arc::new(client),
        base_url,
        max_attempts,
        stop,
        _sandbox: sandbox,
    })
}

pub(crate) fn ledger_path(global: &Global, sandbox: bool) -> PathBuf {
    global.ledger.clone().unwrap_or_else(|| {
        PathBuf::from(if sandbox {
            cli::SANDBOX_LEDGER
        } else {
            cli::DEFAULT_LEDGER
        })
    })
}

/// Locks, then opens, the ledger: a second run on it exits 4 at once.
pub(crate) fn open_ledger(path: &Path) -> anyhow::Result<(LedgerLock, Ledger)> {
    let lock = LedgerLock::acquire(path)?;
    let ledger = Ledger::open(path)?;
    Ok((lock, ledger))
}

/// Opens every input before anything is sent, so an unreadable one stops the command.
pub(crate) fn open_inputs(a: &InputArgs) -> anyhow::Result<Vec<Reader>> {
    let opts = cli::input_options(a);
    let mut readers = Vec::with_capacity(a.files.len());
    for file in &a.files {
        let reader = input::open(file, &opts)?;
        let cols = reader.columns();
        let names_customer = cols.has(Field::Customer)
            || cols.has(Field::CustomerId)
            || cols.has(Field::CustomerReference);
        if a.customer.is_none() && !names_customer {
            bail!(
                "{}: no customer column (found: {}); add one (Customer Name, customer_id or customer_reference), map one with --map customer=COLUMN, or send every row to one customer with --customer NAME",
                reader.file(),
                cols.names.join(", ")
            );
        }
        readers.push(reader);
    }
    Ok(readers)
}

/// The customer directory: the ledger's copy while fresh, else every page from the API
/// (transient failures retried).
async fn load_directory(
    ledger: &mut Ledger,
    api: &Api,
    ttl: Duration,
    refresh: bool,
) -> anyhow::Result<Directory> {
    if !refresh && let Some(cached) = ledger.cached_customers(&api.base_url, ttl)? {
        return Ok(Directory::new(cached));
    }
    let customers = with_retries(api.max_attempts, &api.stop, || api.client.all_customers())
        .await
        .map_err(api_abort)?;
    ledger.store_customers(&api.base_url, &customers)?;
    Ok(Directory::new(customers))
}

/// An API failure that stops a command before its rows: exit 3.
pub(crate) fn api_abort(e: ApiError) -> anyhow::Error {
    anyhow::Error::new(Aborted(match &e {
        ApiError::Unauthorized(m) => format!("authentication failed: {m}"),
        other => format!("cannot use the API: {}", crate::send::explain(other)),
    }))
}

// ---------------------------------------------------------------------------------
// Resolving rows to customers.

/// Turns a row's customer columns into a customer id.
pub(crate) struct Resolver {
    directory: Option<Directory>,
    /// `--customer`: every row goes here.
    fixed: Option<Resolved>,
    references: ReferenceCache,
    /// Each raw customer name's answer: a file names the same customers over and over,
    /// and folding Unicode per row is the costliest part of resolving.
    names: HashMap<String, Result<Resolved, Unresolved>>,
    client: Option<Arc<Client>>,
    max_attempts: u32,
    stop: CancellationToken,
}

/// Raw names remembered at most; past this the memo starts afresh, so memory stays flat
/// whatever the file.
const NAME_MEMO: usize = 100_000;

impl Resolver {
    async fn resolve(&mut self, who: &Invitee) -> Result<Resolved, Unresolved> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        if let Some(id) = who.customer_id {
            return match &self.directory {
                Some(d) => d.by_id(id),
                None => Ok(Resolved {
                    id,
                    status: crate::api::types::CustomerStatus::Active,
                }),
            };
        }
        if let Some(reference) = who
            .customer_reference
            .as_deref()
            .filter(|r| !r.trim().is_empty())
        {
            if let Some(known) = self.references.get(reference) {
                return known.clone();
            }
            let answer = match &self.client {
                None => Err(Unresolved::LookupFailed {
                    reference: reference.into(),
                    error: "no API to ask".into(),
                }),
                Some(client) => match with_retries(self.max_attempts, &self.stop, || {
                    client.customer_by_reference(reference.trim())
                })
                .await
                {
                    Ok(Some(c)) => Ok(Resolved {
                        id: c.id,
                        status: c.status,
                    }),
                    Ok(None) => Err(Unresolved::UnknownReference {
                        reference: reference.trim().into(),
                    }),
                    Err(e) => Err(Unresolved::LookupFailed {
                        reference: reference.into(),
                        error: crate::send::explain(&e),
                    }),
                },
            };
            self.references.insert(reference, answer.clone());
            return answer;
        }
        match (&who.customer, &self.directory) {
            (Some(name), Some(d)) => {
                if let Some(known) = self.names.get(name.as_str()) {
                    return known.clone();
                }
                if self.names.len() >= NAME_MEMO {
                    self.names.clear();
                }
                let answer = d.by_name(name);
                self.names.insert(name.clone(), answer.clone());
                answer
            }
            (Some(name), None) => Err(Unresolved::NotFound {
                name: name.clone(),
                suggestions: vec![],
            }),
            (None, _) => Err(Unresolved::Missing),
        }
    }
}

/// Builds the resolver: loads the directory when some row resolves by name.
pub(crate) async fn resolver(
    ledger: &mut Ledger,
    api: &Api,
    a: &InputArgs,
    readers: &[Reader],
) -> anyhow::Result<Resolver> {
    // Ids are taken as given (a wrong one comes back from the API as a 404); the
    // directory is fetched only when some row names its customer.
    let by_name = a.customer.is_some() || readers.iter().any(|r| r.columns().has(Field::Customer));
    let directory = if by_name {
        Some(load_directory(ledger, api, a.customers_ttl, a.refresh_customers).await?)
    } else {
        None
    };
    let fixed = match (&a.customer, &directory) {
        (Some(name), Some(d)) => Some(d.by_name(name).map_err(|u| anyhow!("--customer: {u}"))?),
        _ => None,
    };
    Ok(Resolver {
        directory,
        fixed,
        references: ReferenceCache::default(),
        names: HashMap::new(),
        client: Some(api.client.clone()),
        max_attempts: api.max_attempts,
        stop: api.stop.clone(),
    })
}

/// A resolver from the ledger's copy of the directory alone, for `validate` without
/// credentials; `no_api` is the reason the API cannot be used, returned when the copy
/// is missing or stale.
fn offline_resolver(
    global: &Global,
    ledger: &mut Ledger,
    a: &InputArgs,
    no_api: anyhow::Error,
    stop: CancellationToken,
) -> anyhow::Result<Resolver> {
    let base_url = cli::base_url(global)?;
    let Some(cached) = ledger.cached_customers(&base_url, a.customers_ttl)? else {
        return Err(no_api);
    };
    let directory = Directory::new(cached);
    let fixed = match &a.customer {
        Some(name) => Some(
            directory
                .by_name(name)
                .map_err(|u| anyhow!("--customer: {u}"))?,
        ),
        None => None,
    };
    if !global.quiet && !global.json {
        eprintln!(
            "bbinvite: no credentials: checking names against the ledger's copy of the directory"
        );
    }
    Ok(Resolver {
        directory: Some(directory),
        fixed,
        references: ReferenceCache::default(),
        names: HashMap::new(),
        client: None,
        max_attempts: 1,
        stop,
    })
}

/// What the read and resolve stages make of one record.
pub(crate) async fn verdict(record: &Record, resolver: &mut Resolver) -> Verdict {
    let who = match &record.parsed {
        Ok(who) => who,
        Err(problems) => {
            return Verdict::Invalid(
                problems
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
    };
    match resolver.resolve(who).await {
        Ok(r) => Verdict::Invite {
            customer_id: r.id,
            user: NewAccessUser {
                email: who.email.clone(),
                name: who.name.clone(),
                id: who.user_id,
                status: who.status,
            },
        },
        Err(u) => Verdict::Unresolved {
            customer_id: None,
            reason: u.to_string(),
        },
    }
}

/// Reads every input on a thread of its own, in batches, into a bounded channel.
pub(crate) fn spawn_reader(
    readers: Vec<Reader>,
    stop: CancellationToken,
) -> mpsc::Receiver<anyhow::Result<Vec<Record>>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    std::thread::spawn(move || {
        for reader in readers {
            let mut batch = Vec::with_capacity(ADMIT_BATCH);
            for item in reader {
                if stop.is_cancelled() {
                    return;
                }
                match item {
                    Ok(record) => {
                        batch.push(record);
                        if batch.len() == ADMIT_BATCH
                            && tx.blocking_send(Ok(std::mem::take(&mut batch))).is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Ok(std::mem::take(&mut batch)));
                        let _ = tx.blocking_send(Err(anyhow::Error::new(e)));
                        return;
                    }
                }
            }
            if !batch.is_empty() && tx.blocking_send(Ok(batch)).is_err() {
                return;
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------------
// `run` and `retry`: the sending pipeline.

async fn invite(
    global: &Global,
    a: InputArgs,
    send: SendArgs,
    stop: CancellationToken,
) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let readers = open_inputs(&a)?;
    let path = ledger_path(global, a.sandbox);
    let (_lock, mut ledger) = open_ledger(&path)?;
    let settings = cli::send_settings(&send);
    let api = connect(
        global,
        a.sandbox,
        Reach::sending(&settings, &send, stop.clone()),
    )
    .await?;
    api.client.authenticate().await.map_err(api_abort)?;
    let mut resolver = resolver(&mut ledger, &api, &a, &readers).await?;
    let files: Vec<String> = readers.iter().map(|r| r.file().to_string()).collect();
    let run = ledger.begin_run("run", &api.base_url, &files, false)?;
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
    )
}

async fn retry(global: &Global, send: SendArgs, stop: CancellationToken) -> anyhow::Result<Exit> {
    let started = Instant::now();
    let path = ledger_path(global, false);
    if !path.exists() {
        bail!(
            "no ledger at {}; nothing to retry (use --ledger to name one)",
            path.display()
        );
    }
    let (_lock, mut ledger) = open_ledger(&path)?;
    let settings = cli::send_settings(&send);
    let api = connect(
        global,
        false,
        Reach::sending(&settings, &send, stop.clone()),
    )
    .await?;
    api.client.authenticate().await.map_err(api_abort)?;
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
    )
}

/// Reads, resolves and admits rows; queues the ones to send.
#[allow(clippy::too_many_arguments)]
async fn feed_rows(
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
            origins.push(format!("{}:{}", record.file, record.line));
        }
        let verdicts: Vec<Option<String>> = rows
            .iter()
            .map(|r| match &r.verdict {
                Verdict::Invalid(m) | Verdict::Unresolved { reason: m, .. } => Some(m.clone()),
                Verdict::Invite { .. } => None,
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
async fn dispatch(
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

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The end of a sending command: commit, close the run, write results, summarise.
#[allow(clippy::too_many_arguments)]
fn finish(
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
) -> anyhow::Result<Exit> {
    let written = writer.check();
    drop(writer);
    let mut ledger = thread
        .join()
        .ok_or_else(|| anyhow!("the ledger thread failed"))?;
    progress.finish();
    written?;
    let abort = sender.abort_reason();
    let counts = ledger.status_counts(Some(run))?;
    let problems = counts
        .rows
        .iter()
        .any(|(s, n)| *n > 0 && RowStatus::parse(s).is_some_and(RowStatus::is_problem));
    let (exit, outcome) = match (&pipeline, &abort) {
        (Err(e), _) => (exit_for(e), format!("error: {e:#}")),
        (Ok(()), Some(reason)) => (Exit::Aborted, format!("aborted: {reason}")),
        (Ok(()), None) if problems => (Exit::Problems, "completed with problems".to_string()),
        (Ok(()), None) => (Exit::Ok, "completed".to_string()),
    };
    ledger.finish_run(run, &outcome, exit as i32)?;
    if let Some(path) = results {
        write_export(&mut ledger, Some(run), &[], Some(path))?;
    }
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
    };
    print_summary(global, &summary, &counts.top_errors)?;
    pipeline?;
    if let Some(reason) = abort {
        return Err(anyhow::Error::new(Aborted(reason.to_string())));
    }
    Ok(exit)
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
}

fn print_summary(global: &Global, s: &Summary, top_errors: &[(String, u64)]) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------------
// `validate` and `run --dry-run`: read and resolve, send nothing.

enum Check {
    Validate,
    DryRun { retry_rejected: bool },
}

#[derive(Debug, Default, Serialize)]
struct CheckSummary {
    rows: u64,
    would_send: u64,
    already_done: u64,
    still_rejected: u64,
    invalid: u64,
    unresolved: u64,
    duplicate: u64,
    warnings: u64,
}

#[derive(Debug, Serialize)]
struct Finding<'a> {
    file: &'a str,
    line: u64,
    severity: &'static str,
    column: Option<&'a str>,
    value: &'a str,
    message: String,
}

async fn check_files(
    global: &Global,
    a: &InputArgs,
    mode: Check,
    rate: NonZeroU32,
    stop: CancellationToken,
) -> anyhow::Result<Exit> {
    let readers = open_inputs(a)?;
    let path = ledger_path(global, a.sandbox);
    let (_lock, mut ledger) = open_ledger(&path)?;
    // Only the directory and references need the API. Without credentials, a fresh
    // copy of the directory in the ledger is enough to check names.
    let mut resolver = match connect(global, a.sandbox, Reach::reading(rate, stop.clone())).await {
        Ok(api) => resolver(&mut ledger, &api, a, &readers).await?,
        Err(e) => offline_resolver(global, &mut ledger, a, e, stop)?,
    };
    let dry = matches!(mode, Check::DryRun { .. });
    let opts = AdmitOptions {
        retry_rejected: matches!(
            mode,
            Check::DryRun {
                retry_rejected: true
            }
        ),
    };
    // Duplicates within the input, by a keyed 64-bit hash of the key: 8 bytes a row,
    // and for a million rows a false duplicate has odds of about 1 in 30 million.
    let hasher = RandomState::new();
    let mut seen: HashSet<u64, BuildHasherDefault<PassThrough>> = HashSet::default();
    let mut summary = CheckSummary::default();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let text = !global.json && !global.quiet;
    if global.json {
        write!(out, "{{\"findings\":[")?;
    }
    let mut first = true;
    let mut emit = |out: &mut dyn Write, f: Finding<'_>| -> std::io::Result<()> {
        if global.json {
            if !first {
                write!(out, ",")?;
            }
            first = false;
            serde_json::to_writer(&mut *out, &f)?;
        } else if text && (!dry || global.verbose) {
            let col = f
                .column
                .map(|c| format!(" column \"{c}\""))
                .unwrap_or_default();
            let val = if f.value.is_empty() {
                String::new()
            } else {
                format!(" value \"{}\"", f.value)
            };
            writeln!(
                out,
                "{}:{}: {}:{col}{val}: {}",
                f.file, f.line, f.severity, f.message
            )?;
        }
        Ok(())
    };
    // Reading and checking each row's text runs on the reader's thread; resolving and
    // duplicate detection here, so the two cores share the work.
    let mut batches = spawn_reader(readers, CancellationToken::new());
    while let Some(batch) = batches.recv().await {
        for record in batch? {
            summary.rows += 1;
            let who = match &record.parsed {
                Ok(who) => who,
                Err(problems) => {
                    summary.invalid += 1;
                    for p in problems {
                        emit(
                            &mut out,
                            Finding {
                                file: &record.file,
                                line: record.line,
                                severity: "invalid",
                                column: p.column.as_deref(),
                                value: &p.value,
                                message: p.message.clone(),
                            },
                        )?;
                    }
                    continue;
                }
            };
            let customer_col = record
                .columns
                .name_of(Field::Customer)
                .or(record.columns.name_of(Field::CustomerReference));
            let customer_val = who
                .customer
                .as_deref()
                .or(who.customer_reference.as_deref())
                .unwrap_or("");
            let resolved = match resolver.resolve(who).await {
                Ok(r) => r,
                Err(u) => {
                    summary.unresolved += 1;
                    emit(
                        &mut out,
                        Finding {
                            file: &record.file,
                            line: record.line,
                            severity: "unresolved",
                            column: customer_col,
                            value: customer_val,
                            message: u.to_string(),
                        },
                    )?;
                    continue;
                }
            };
            if let Some(warning) = crate::resolve::inactive_warning(&resolved) {
                summary.warnings += 1;
                emit(
                    &mut out,
                    Finding {
                        file: &record.file,
                        line: record.line,
                        severity: "warning",
                        column: customer_col,
                        value: customer_val,
                        message: warning,
                    },
                )?;
            }
            let key = ledger::email_key(&who.email);
            let hash = hasher.hash_one((resolved.id, &key));
            if !seen.insert(hash) {
                summary.duplicate += 1;
                emit(
                    &mut out,
                    Finding {
                        file: &record.file,
                        line: record.line,
                        severity: "duplicate",
                        column: record.columns.name_of(Field::Email),
                        value: &who.email,
                        message: "the same customer and e-mail appear earlier in this input".into(),
                    },
                )?;
                continue;
            }
            if !dry {
                summary.would_send += 1;
                continue;
            }
            let user = NewAccessUser {
                email: who.email.clone(),
                name: who.name.clone(),
                id: who.user_id,
                status: who.status,
            };
            match ledger::decide(ledger.peek(resolved.id, &who.email)?.as_ref(), &user, opts) {
                Decision::Send { .. } => summary.would_send += 1,
                Decision::Done(_) => summary.already_done += 1,
                Decision::StillRejected => summary.still_rejected += 1,
            }
        }
    }
    if global.json {
        write!(out, "],\"summary\":")?;
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out, "}}")?;
    } else if !global.quiet {
        let verb = if dry { "dry run" } else { "validate" };
        writeln!(
            out,
            "bbinvite {verb}: {} rows: {} would be sent, {} invalid, {} unresolved, {} duplicate, {} warnings",
            summary.rows,
            summary.would_send,
            summary.invalid,
            summary.unresolved,
            summary.duplicate,
            summary.warnings
        )?;
        if dry {
            writeln!(
                out,
                "  already invited or existing: {}, rejected before and unchanged: {}",
                summary.already_done, summary.still_rejected
            )?;
        }
    }
    out.flush()?;
    Ok(
        if summary.invalid + summary.unresolved + summary.still_rejected > 0 {
            Exit::Problems
        } else {
            Exit::Ok
        },
    )
}

/// A hasher for keys that are already uniformly random hashes: it passes them through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

// ---------------------------------------------------------------------------------
// `status`, `export`, `customers`: reading the ledger and the directory.

/// Opens an existing ledger without taking the run lock: reads go on beside a run.
fn open_existing(global: &Global) -> anyhow::Result<Ledger> {
    let path = ledger_path(global, false);
    if !path.exists() {
        bail!(
            "no ledger at {}; run `bbinvite run FILE` first, or name one with --ledger",
            path.display()
        );
    }
    Ok(Ledger::open(&path)?)
}

fn status(global: &Global, run: Option<RunId>) -> anyhow::Result<Exit> {
    let mut ledger = open_existing(global)?;
    let counts = ledger.status_counts(run)?;
    if run.is_some() && counts.run.is_none() {
        bail!(
            "no run {} in {}",
            run.unwrap_or_default(),
            ledger.path().display()
        );
    }
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &counts)?;
        writeln!(out)?;
        return Ok(Exit::Ok);
    }
    match &counts.run {
        Some(r) => {
            writeln!(
                out,
                "Run {} ({}{}), started {}{}: {}",
                r.id,
                r.command,
                if r.files.is_empty() {
                    String::new()
                } else {
                    format!(" {}", r.files.join(", "))
                },
                r.started_at,
                r.finished_at
                    .as_ref()
                    .map(|f| format!(", finished {f}"))
                    .unwrap_or_else(|| ", not finished".into()),
                r.outcome
                    .as_deref()
                    .unwrap_or("no outcome recorded (still running, or killed)")
            )?;
            for status in RowStatus::ALL {
                if let Some(n) = counts.rows.get(status.as_str()) {
                    writeln!(out, "  {:<11} {n}", status.as_str())?;
                }
            }
            crate::sync::write_action_counts(&mut out, &counts.actions)?;
        }
        None => writeln!(out, "No runs yet.")?,
    }
    writeln!(
        out,
        "Whole ledger ({} invitations):",
        counts.ledger.values().sum::<u64>()
    )?;
    for (state, n) in &counts.ledger {
        writeln!(out, "  {state:<11} {n}")?;
    }
    if !counts.top_errors.is_empty() {
        writeln!(
            out,
            "Most common errors of failed and rejected invitations:"
        )?;
        for (err, n) in &counts.top_errors {
            writeln!(out, "  {n} × {err}")?;
        }
    }
    Ok(Exit::Ok)
}

fn export(global: &Global, a: cli::ExportArgs) -> anyhow::Result<Exit> {
    let mut ledger = open_existing(global)?;
    if a.actions {
        crate::sync::write_actions(&mut ledger, a.run, a.output.as_deref())?;
        return Ok(Exit::Ok);
    }
    write_export(&mut ledger, a.run, &a.statuses, a.output.as_deref())?;
    Ok(Exit::Ok)
}

/// Writes rows as CSV a spreadsheet opens safely.
pub(crate) fn write_export(
    ledger: &mut Ledger,
    run: Option<RunId>,
    statuses: &[RowStatus],
    path: Option<&Path>,
) -> anyhow::Result<()> {
    let sink: Box<dyn Write> = match path {
        Some(p) => Box::new(
            std::fs::File::create(p).with_context(|| format!("cannot write {}", p.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let csv = std::cell::RefCell::new(csv::Writer::from_writer(std::io::BufWriter::new(sink)));
    let csv_err = |e: csv::Error| std::io::Error::other(e);
    ledger
        .export(
            run,
            statuses,
            &mut |table| {
                let header = table
                    .input_columns
                    .iter()
                    .map(|c| spreadsheet_safe(c))
                    .chain(input::RESULTS_COLUMNS.iter().map(|c| c.to_string()));
                csv.borrow_mut().write_record(header).map_err(csv_err)
            },
            &mut |row| {
                let tail = [
                    row.status,
                    row.error.unwrap_or_default(),
                    row.customer_id.map(|v| v.to_string()).unwrap_or_default(),
                    row.access_user_id
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    row.attempts.to_string(),
                    row.updated_at,
                ];
                csv.borrow_mut()
                    .write_record(
                        row.cells
                            .iter()
                            .map(|c| spreadsheet_safe(c))
                            .chain(tail.iter().map(|c| spreadsheet_safe(c))),
                    )
                    .map_err(csv_err)
            },
        )
        .or_else(ignore_broken_pipe)?;
    csv.borrow_mut()
        .flush()
        .or_else(|e| ignore_broken_pipe(ledger::Error::Output(e)))?;
    Ok(())
}

pub(crate) fn ignore_broken_pipe(e: ledger::Error) -> Result<(), ledger::Error> {
    match &e {
        ledger::Error::Output(io) if io.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        _ => Err(e),
    }
}

/// Escapes a cell that a spreadsheet would run as a formula.
///
/// ```
/// use bbinvite::app::spreadsheet_safe;
/// assert_eq!(spreadsheet_safe("=1+1"), "'=1+1");
/// assert_eq!(spreadsheet_safe("Acme"), "Acme");
/// ```
pub fn spreadsheet_safe(cell: &str) -> String {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}"),
        _ => cell.to_string(),
    }
}

#[derive(Debug, Serialize)]
struct CustomerLine<'a> {
    id: i64,
    name: &'a str,
    normalized: String,
    reference: Option<&'a str>,
    status: &'static str,
    ambiguous: bool,
}

async fn customers(
    global: &Global,
    a: cli::CustomersArgs,
    stop: CancellationToken,
) -> anyhow::Result<Exit> {
    let path = ledger_path(global, false);
    let (_lock, mut ledger) = open_ledger(&path)?;
    let api = connect(global, false, Reach::reading(a.rate, stop)).await?;
    let dir = load_directory(&mut ledger, &api, a.customers_ttl, a.refresh).await?;
    let list: Vec<&Customer> = match &a.search {
        Some(t) => dir.search(t),
        None => dir.customers().iter().collect(),
    };
    let lines: Vec<CustomerLine<'_>> = list
        .iter()
        .map(|c| CustomerLine {
            id: c.id,
            name: &c.name,
            normalized: crate::resolve::normalize(&c.name),
            reference: c.reference.as_deref(),
            status: c.status.as_str(),
            ambiguous: dir.namesakes(c) > 1,
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &lines)?;
        writeln!(out)?;
        return Ok(Exit::Ok);
    }
    writeln!(
        out,
        "{:>8}  {:<14} {:<10} name",
        "id", "reference", "status"
    )?;
    for l in &lines {
        writeln!(
            out,
            "{:>8}  {:<14} {:<10} {}{}",
            l.id,
            l.reference.unwrap_or("-"),
            l.status,
            l.name,
            if l.ambiguous {
                "  (name shared: resolve by id or reference)"
            } else {
                ""
            }
        )?;
    }
    writeln!(out, "{} of {} customers", lines.len(), dir.len())?;
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_escaped() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("+1"), "'+1");
        assert_eq!(spreadsheet_safe("-1"), "'-1");
        assert_eq!(spreadsheet_safe("@x"), "'@x");
        assert_eq!(spreadsheet_safe("\tx"), "'\tx");
        assert_eq!(spreadsheet_safe("plain"), "plain");
        assert_eq!(spreadsheet_safe(""), "");
    }

    #[test]
    fn exit_codes_follow_the_error_kind() {
        assert_eq!(
            exit_for(&anyhow::Error::new(Aborted("x".into()))),
            Exit::Aborted
        );
        let busy = ledger::Error::Busy {
            path: "x".into(),
            holder: "pid 1".into(),
        };
        assert_eq!(
            exit_for(&anyhow::Error::new(busy).context("opening")),
            Exit::Busy
        );
        assert_eq!(exit_for(&anyhow!("bad file")), Exit::Usage);
    }
}
