//! Setting up a command: the API with its limiter and attempt runner, the ledger, the
//! inputs, the directory and the resolver, and the reader thread. Nothing here sends an
//! invitation; every call it makes (the directory) goes through the runner.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::types::NewAccessUser;
use crate::api::{Client, ClientConfig, Credentials, Error as ApiError, Listing, Secret};
use crate::cli::{self, InputArgs, SendArgs};
use crate::domain::Verdict;
use crate::input::{self, Field, Invitee, Problem, Reader, Record, RowsTotal};
use crate::ledger::Ledger;
use crate::progress::Total;
use crate::rate::Rate;
use crate::resolve::{Directory, Lookups, Resolver};
use crate::sandbox;
use crate::send::{DEFAULT_MAX_RETRY_WAIT, Failure, Limiter, Sender, Settings as SendSettings};
use crate::settings::{Endpoint, Settings};

use super::{ADMIT_BATCH, Aborted, READ_AHEAD};

/// Rows in the reader's first batch: about two requests' worth per worker at the usual
/// concurrency, admitted in a few milliseconds.
const FIRST_BATCH: usize = 64;

// ---------------------------------------------------------------------------------
// Setting up: the API, the ledger, the inputs, the directory.

/// How the ledger names the built-in sandbox of `--sandbox`.
pub(crate) const BUILTIN_SANDBOX: &str = "the built-in sandbox";

/// The API to talk to, and the attempt runner every call to it goes through.
pub(crate) struct Api {
    pub(crate) client: Arc<Client>,
    /// The runner (limiter, retries, breaker) for this command's every call.
    pub(crate) sender: Arc<Sender>,
    /// Which API this is, as the ledger records it: the base URL, or one name for every
    /// built-in sandbox (whose port changes from run to run).
    pub(crate) base_url: String,
    /// Keeps an in-process sandbox alive while the API or a resolver asking it is in use.
    sandbox: Option<Arc<sandbox::Sandbox>>,
}

/// How an [`Api`] is reached and how hard it is tried.
pub(crate) struct Reach {
    settings: SendSettings,
    timeout: Duration,
    stop: CancellationToken,
}

impl Reach {
    /// For commands that only read: the given rate, default tries.
    pub(crate) fn reading(rate: Rate, stop: CancellationToken) -> Reach {
        Reach {
            settings: SendSettings {
                rate,
                burst: rate.per_second_whole(),
                concurrency: 4,
                max_attempts: 5,
                max_retry_wait: DEFAULT_MAX_RETRY_WAIT,
            },
            timeout: Duration::from_secs(30),
            stop,
        }
    }

    pub(crate) fn sending(
        settings: &SendSettings,
        send: &SendArgs,
        stop: CancellationToken,
    ) -> Reach {
        Reach {
            settings: settings.clone(),
            timeout: send.timeout,
            stop,
        }
    }
}

/// Starts the client (and the built-in sandbox, when asked). No request is made.
pub(crate) async fn connect(endpoint: Endpoint, reach: Reach) -> anyhow::Result<Api> {
    let Reach {
        settings,
        timeout,
        stop,
    } = reach;
    let (base_url, credentials, sandbox) = match endpoint {
        Endpoint::BuiltinSandbox => {
            let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
            let sb = sandbox::Sandbox::start(addr, sandbox::Config::samples())
                .await
                .context("cannot start the built-in sandbox")?;
            // The sandbox accepts any bearer token; no real credential is ever involved.
            (
                sb.base_url(),
                Credentials::ApiKey(Secret::new("sandbox")),
                Some(Arc::new(sb)),
            )
        }
        Endpoint::Remote {
            base_url,
            credentials,
        } => (base_url, credentials, None),
    };
    let client = Client::new(ClientConfig {
        base_url: base_url.clone(),
        credentials,
        timeout,
        pool_size: settings.concurrency,
    })
    .map_err(|e| anyhow!("{e}"))?
    .with_gate(Arc::new(
        Limiter::new(settings.rate, settings.burst, stop.clone())
            .with_max_pause(settings.max_retry_wait),
    ));
    let client = Arc::new(client);
    let base_url = if sandbox.is_some() {
        BUILTIN_SANDBOX.to_string()
    } else {
        base_url
    };
    Ok(Api {
        sender: Arc::new(Sender::new(client.clone(), settings, stop)),
        client,
        base_url,
        sandbox,
    })
}

/// Connects for a command that sends: checks first that the ledger belongs to this API
/// (before any request), then logs in, so wrong credentials stop it before any row.
pub(crate) async fn connect_to_send(
    endpoint: Endpoint,
    settings: &SendSettings,
    send: &SendArgs,
    ledger: &mut Ledger,
    stop: &CancellationToken,
) -> anyhow::Result<Api> {
    let api = connect(endpoint, Reach::sending(settings, send, stop.clone())).await?;
    ledger.check_same_api(&api.base_url)?;
    // A login changes nothing: it is tried again like any read.
    api.sender
        .read("login", &mut Vec::new(), || api.client.authenticate())
        .await
        .map_err(|f| read_abort(&api.sender, f, "the login's answer"))?;
    Ok(api)
}

/// Locks, then opens, the ledger: a second run on it, by whatever path, exits 4 at once.
/// The lock lives in the ledger and goes with it.
pub(crate) fn open_ledger(path: &Path) -> anyhow::Result<Ledger> {
    Ok(Ledger::open_locked(path)?)
}

/// Opens every input before anything is sent, so an unreadable one stops the command.
pub(crate) fn open_inputs(a: &InputArgs) -> anyhow::Result<Vec<Reader>> {
    let opts = cli::input_options(a);
    let mut readers = Vec::with_capacity(a.files.len());
    for file in &a.files {
        let reader = input::open(file, &opts).map_err(with_hint)?;
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

/// An input that cannot be opened, with what to do about it.
fn with_hint(e: input::Error) -> anyhow::Error {
    match e {
        input::Error::Open { .. } => {
            anyhow!("{e}; check the file name, and that you may read it (`-` reads standard input)")
        }
        other => anyhow::Error::new(other),
    }
}

/// The customer directory: the ledger's copy while fresh, else every page from the API
/// (transient failures retried).
pub(crate) async fn load_directory(
    ledger: &mut Ledger,
    api: &Api,
    ttl: Duration,
    refresh: bool,
) -> anyhow::Result<Directory> {
    if !refresh && let Some(cached) = ledger.cached_customers(&api.base_url, ttl)? {
        return Ok(Directory::new(cached));
    }
    let customers = api
        .sender
        .read_list("directory", &mut Vec::new(), Listing::customers())
        .await
        .map_err(|f| read_abort(&api.sender, f, "the customer directory"))?;
    ledger.store_customers(&api.base_url, &customers)?;
    Ok(Directory::new(customers))
}

/// A read that failed before any row was sent: the reason the run stopped, when the
/// runner stopped it (the breaker, a `Retry-After` beyond `--max-retry-wait`, a signal),
/// else the failure itself. Exit 3.
pub(crate) fn read_abort(sender: &Sender, failure: Failure, what: &str) -> anyhow::Error {
    match sender.abort_reason() {
        Some(reason) => anyhow::Error::new(Aborted(format!(
            "{reason} (while reading {what}; nothing was sent)"
        ))),
        None => api_abort(failure.into_error()),
    }
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
    let lookups = Lookups {
        sender: api.sender.clone(),
        keep_alive: api
            .sandbox
            .clone()
            .map(|sb| sb as Arc<dyn std::any::Any + Send + Sync>),
    };
    Ok(Resolver::new(directory, fixed, Some(lookups)))
}

/// A resolver from the ledger's copy of the directory alone, for `validate` without
/// credentials; `no_api` is the reason the API cannot be used, returned when the copy
/// is missing or stale.
pub(crate) fn offline_resolver(
    global: &Settings,
    ledger: &mut Ledger,
    a: &InputArgs,
    no_api: anyhow::Error,
) -> anyhow::Result<Resolver> {
    let base_url = global.base_url()?;
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
    Ok(Resolver::new(Some(directory), fixed, None))
}

/// What the read and resolve stages make of one record.
pub(crate) async fn verdict(record: &Record, resolver: &mut Resolver) -> Verdict {
    into_verdict(record.parsed.clone(), resolver).await
}

/// What the read and resolve stages make of a record's invitee (or its problems), which
/// the invitation takes over rather than copies.
pub(crate) async fn into_verdict(
    parsed: Result<Invitee, Vec<Problem>>,
    resolver: &mut Resolver,
) -> Verdict {
    let who = match parsed {
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
    match resolver.resolve(&who).await {
        Ok(r) => Verdict::Invite {
            customer_id: r.id,
            user: NewAccessUser {
                email: who.email,
                name: who.name,
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

/// The rows the inputs hold, as far as can be told each time it is asked: for
/// progress, while the readers read on their own thread.
pub(crate) fn rows_total(readers: &[Reader]) -> impl Fn() -> Total + Send + Sync + 'static {
    let extents: Vec<_> = readers.iter().map(Reader::extent).collect();
    move || match input::rows_total(&extents) {
        RowsTotal::Unknown => Total::Unknown,
        RowsTotal::About(n) => Total::About(n),
        RowsTotal::Exact(n) => Total::Exact(n),
    }
}

/// Reads every input on a thread of its own, in batches, into a bounded channel. The
/// first batch holds `FIRST_BATCH` rows, so the first invitations go out once those are
/// admitted, not a full batch; each batch after it doubles, up to `ADMIT_BATCH`.
pub(crate) fn spawn_reader(
    readers: Vec<Reader>,
    stop: CancellationToken,
) -> mpsc::Receiver<anyhow::Result<Vec<Record>>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    std::thread::spawn(move || {
        let mut size = FIRST_BATCH.min(ADMIT_BATCH);
        for reader in readers {
            let mut batch = Vec::with_capacity(size);
            for item in reader {
                if stop.is_cancelled() {
                    return;
                }
                match item {
                    Ok(record) => {
                        batch.push(record);
                        if batch.len() < size {
                            continue;
                        }
                        size = (size * 2).min(ADMIT_BATCH);
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(size));
                        if tx.blocking_send(Ok(full)).is_err() {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    use super::*;

    /// The first batch is small, so the first invitations wait on the admission of a few
    /// rows, not of a full batch; the batches after it double up to `ADMIT_BATCH`.
    #[test]
    fn the_reader_starts_with_a_small_batch_and_doubles_it() {
        let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        writeln!(file, "email,name,customer_id").unwrap();
        for i in 0..1000 {
            writeln!(file, "user{i}@example.com,User {i},1").unwrap();
        }
        file.flush().unwrap();
        let path = file.path().to_str().unwrap();
        let reader = input::open(path, &input::Options::default()).unwrap();
        let mut batches = spawn_reader(vec![reader], CancellationToken::new());
        let mut sizes = Vec::new();
        while let Some(batch) = batches.blocking_recv() {
            sizes.push(batch.unwrap().len());
        }
        assert_eq!(sizes, [64, 128, 256, 512, 40]);
    }
}
