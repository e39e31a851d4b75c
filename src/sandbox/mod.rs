//! The sandbox: a stateful, in-memory simulator of the Billing Booth One API (spec
//! section 6), for first runs without an account, the tests, and the benchmarks.
//!
//! It serves the API of section 1 with the unknowns as switches (page cap, what a search
//! matches, the answer to a duplicate), injects faults on demand, and records what it saw
//! as [`Truth`] so tests assert what the API really received. It is a test double: it must
//! never be mistaken for the real API, never persist anything, and never log per request.
//!
//! Inside: [`seed`] is the starting data, `state` the live data, `gate` the faults and
//! counters decided before a handler runs, `delay` the latency to the microsecond, `http`
//! the routes, `server` the connections.

mod delay;
mod gate;
mod http;
pub mod seed;
mod server;
mod state;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::http::Shared;
use self::seed::SeedCustomer;
pub use self::state::SandboxUser;

/// Where the customers come from when no file is named, relative to the working directory.
const DEFAULT_CUSTOMERS_FILE: &str = "samples/customers.json";

/// `bbinvite sandbox`: serve a simulated Billing Booth One API.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Address to listen on (port 0 picks a free one)
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub addr: SocketAddr,
    /// Milliseconds between a call's arrival and its answer (kept to a fraction of one)
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of API calls answered 500, before any change (0.0 to 1.0)
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Answer 429 with Retry-After above N requests in any one-second window
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Send Retry-After as an HTTP date instead of seconds
    #[arg(long)]
    pub retry_after_date: bool,
    /// Seconds a token from /token lives; then it is refused with 401
    #[arg(long)]
    pub token_ttl: Option<u64>,
    /// Share of invitations recorded, then answered by closing the connection (0.0 to 1.0)
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Answer 503 to every API call
    #[arg(long)]
    pub down: bool,
    /// Most rows a page serves, whatever was asked
    #[arg(long)]
    pub page_cap: Option<u64>,
    /// What the access list's `search` matches
    #[arg(long, value_enum, default_value = "name")]
    pub search_matches: SearchMatches,
    /// Status for a second invitation of the same e-mail: 409 or 422
    #[arg(long, default_value_t = 409)]
    pub duplicate_status: u16,
    /// Accept only this bearer key (and tokens from /token)
    #[arg(long)]
    pub api_key: Option<String>,
    /// The only login /token accepts, as EMAIL:PASSWORD
    #[arg(long, value_name = "EMAIL:PASSWORD")]
    pub login: Option<String>,
    /// Answer every invitation 422 "The selected customer does not exist."
    #[arg(long)]
    pub customer_gone: bool,
    /// After N logins, answer /token with a 500 that echoes the request, password included
    #[arg(long, value_name = "N")]
    pub token_echo_after: Option<u64>,
    /// Retry-After of every 429, in seconds, whatever the window says
    #[arg(long, value_name = "SECS")]
    pub retry_after_secs: Option<u64>,
    /// Serve every list page from the start, whatever the offset
    #[arg(long)]
    pub ignore_offset: bool,
    /// Answer invitations with a 201 body of this many bytes, streamed
    #[arg(long, value_name = "BYTES")]
    pub huge_body: Option<u64>,
    /// JSON array of customers [default: samples/customers.json, else the built-in samples]
    #[arg(long, value_name = "FILE")]
    pub customers: Option<PathBuf>,
    /// Serve N synthetic customers (ids 1..=N) instead of a customers file
    #[arg(long, value_name = "N", conflicts_with = "customers")]
    pub generate_customers: Option<usize>,
    /// Existing access users on each generated customer
    #[arg(
        long,
        value_name = "M",
        default_value_t = 0,
        requires = "generate_customers"
    )]
    pub users_per_customer: usize,
    /// Seed for the random faults, to replay a run
    #[arg(long)]
    pub seed: Option<u64>,
}

impl Args {
    /// Reads the customers and checks the switches.
    pub fn config(&self) -> anyhow::Result<Config> {
        let customers = if let Some(count) = self.generate_customers {
            seed::generate(count, self.users_per_customer, SystemTime::now())
        } else if let Some(path) = &self.customers {
            seed::read(path)?
        } else if Path::new(DEFAULT_CUSTOMERS_FILE).is_file() {
            seed::read(Path::new(DEFAULT_CUSTOMERS_FILE))?
        } else {
            seed::parse(seed::SAMPLES)?
        };
        let faults = Faults {
            latency_ms: self.latency_ms,
            fail_rate: self.fail_rate,
            rate_limit: self.rate_limit,
            retry_after_date: self.retry_after_date,
            token_ttl: self.token_ttl,
            drop_rate: self.drop_rate,
            down: self.down,
            page_cap: self.page_cap,
            search_matches: self.search_matches,
            duplicate_status: self.duplicate_status,
            customer_gone: self.customer_gone,
            token_echo_after: self.token_echo_after,
            retry_after_secs: self.retry_after_secs,
            ignore_offset: self.ignore_offset,
            huge_body: self.huge_body,
        };
        faults.validate()?;
        let login = match &self.login {
            None => None,
            Some(login) => {
                let Some((email, password)) = login.split_once(':') else {
                    bail!("--login must be EMAIL:PASSWORD");
                };
                Some(Login {
                    email: email.to_owned(),
                    password: password.to_owned(),
                })
            }
        };
        if self.api_key.as_deref() == Some("") {
            bail!("--api-key must not be empty");
        }
        Ok(Config {
            customers,
            faults,
            api_key: self.api_key.clone(),
            login,
            seed: self.seed,
        })
    }
}

/// Everything a sandbox starts with.
#[derive(Clone)]
pub struct Config {
    /// With the access users each already has.
    pub customers: Vec<SeedCustomer>,
    pub faults: Faults,
    /// When set, the only bearer accepted besides tokens from `/token`.
    pub api_key: Option<String>,
    /// When set, the only login `/token` accepts.
    pub login: Option<Login>,
    /// Seeds the random faults; without it they differ every run.
    pub seed: Option<u64>,
}

impl Config {
    /// The built-in `samples/customers.json`, no faults: what `run --sandbox` serves.
    pub fn samples() -> Config {
        Config {
            // The file is part of the crate and a unit test parses it.
            customers: seed::parse(seed::SAMPLES).expect("built-in samples/customers.json"),
            faults: Faults::default(),
            api_key: None,
            login: None,
            seed: None,
        }
    }
}

impl std::fmt::Debug for Config {
    // By hand, so credentials never reach a log, even fake ones.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("customers", &self.customers.len())
            .field("faults", &self.faults)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("login", &self.login)
            .field("seed", &self.seed)
            .finish()
    }
}

/// The one login `/token` accepts under `--login`.
#[derive(Clone)]
pub struct Login {
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What the access list's `search` parameter matches; the real API's is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMatches {
    /// Names only: the cautious reading of "search name".
    #[default]
    Name,
    Email,
    Both,
}

/// The faults and switches in force; changeable while the sandbox runs (`set_faults`,
/// `PUT /_sandbox/faults` with any subset of the fields).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Milliseconds between an API call's arrival and its answer, kept to a fraction of
    /// one (not rounded up to tokio's next millisecond tick).
    pub latency_ms: u64,
    /// Share of API calls answered 500 before any change.
    pub fail_rate: f64,
    /// Most requests admitted in any one-second window; above it, 429 with Retry-After.
    pub rate_limit: Option<u32>,
    /// Retry-After as an HTTP date rather than seconds.
    pub retry_after_date: bool,
    /// Seconds a `/token` token lives.
    pub token_ttl: Option<u64>,
    /// Share of invitation POSTs handled, then answered by closing the connection.
    pub drop_rate: f64,
    /// 503 for every API call.
    pub down: bool,
    /// Most rows a page serves, whatever was asked.
    pub page_cap: Option<u64>,
    pub search_matches: SearchMatches,
    /// The status of a second invitation of one e-mail: 409 or 422.
    pub duplicate_status: u16,
    /// Every invitation answers 422 "The selected customer does not exist.", as if the
    /// customer went away after the directory was read.
    pub customer_gone: bool,
    /// After this many logins succeeded, `/token` answers 500 with the request echoed
    /// (the password in it, JSON-escaped and URL-encoded), as a careless server would.
    pub token_echo_after: Option<u64>,
    /// The `Retry-After` every 429 carries, in seconds (or as a date that far ahead),
    /// instead of the time until the window frees.
    pub retry_after_secs: Option<u64>,
    /// List pages ignore `offset`: every page is the first.
    pub ignore_offset: bool,
    /// Invitations answer 201 with a body this many bytes long, streamed.
    pub huge_body: Option<u64>,
}

impl Default for Faults {
    // By hand: a derived default would answer duplicates with status 0.
    fn default() -> Faults {
        Faults {
            latency_ms: 0,
            fail_rate: 0.0,
            rate_limit: None,
            retry_after_date: false,
            token_ttl: None,
            drop_rate: 0.0,
            down: false,
            page_cap: None,
            search_matches: SearchMatches::Name,
            duplicate_status: 409,
            customer_gone: false,
            token_echo_after: None,
            retry_after_secs: None,
            ignore_offset: false,
            huge_body: None,
        }
    }
}

impl Faults {
    /// Refuses switches that cannot mean anything.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, rate) in [("fail_rate", self.fail_rate), ("drop_rate", self.drop_rate)] {
            if !(0.0..=1.0).contains(&rate) {
                bail!("{name} must be between 0 and 1, not {rate}");
            }
        }
        if self.rate_limit == Some(0) {
            bail!("rate_limit must be at least 1");
        }
        if self.page_cap == Some(0) {
            bail!("page_cap must be at least 1");
        }
        if !matches!(self.duplicate_status, 409 | 422) {
            bail!(
                "duplicate_status must be 409 or 422, not {}",
                self.duplicate_status
            );
        }
        Ok(())
    }
}

/// What the sandbox saw, for tests to hold a client to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Truth {
    /// API requests that reached the sandbox (admin calls excluded), faults included.
    pub requests_total: u64,
    /// Per route, every route listed (zero when unused); unknown paths count as `unmatched`.
    pub requests_by_route: BTreeMap<String, u64>,
    /// One per (customer id, lower-cased e-mail) that saw an invitation POST handled.
    pub keys: Vec<KeyTruth>,
    /// Milliseconds since start of every invitation POST that arrived, faults included.
    pub post_times_ms: Vec<u64>,
    /// Milliseconds since start of every API request that arrived.
    pub request_times_ms: Vec<u64>,
    /// TCP connections accepted since start: a client that keeps its connections alive
    /// opens about as many as it has requests in flight.
    #[serde(default)]
    pub connections_total: u64,
}

/// The invitation history of one (customer id, lower-cased e-mail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyTruth {
    pub customer_id: i64,
    pub email: String,
    /// Real creations: only a first POST creates, and a dropped answer still created.
    pub created: u64,
    /// POSTs the handler saw (past the faults that refuse before any change).
    pub posts: u64,
}

/// A running sandbox. Dropping it stops the server too; `shutdown` also waits for it.
pub struct Sandbox {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    server: JoinHandle<()>,
}

impl Sandbox {
    /// Binds `addr` (port 0 picks one), spawns the server on the current tokio runtime,
    /// and returns at once.
    pub async fn start(addr: SocketAddr, config: Config) -> std::io::Result<Sandbox> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let stop = CancellationToken::new();
        let server = tokio::spawn(server::accept(
            listener,
            http::router(Arc::clone(&shared)),
            Arc::clone(&shared.connections),
            stop.clone(),
        ));
        Ok(Sandbox {
            addr,
            shared,
            stop,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, what a client takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of what the sandbox saw so far.
    pub fn truth(&self) -> Truth {
        self.shared.truth()
    }

    pub fn faults(&self) -> Faults {
        self.shared.gate().faults()
    }

    /// Replaces the faults in force, from the next request on.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.gate().set_faults(faults);
    }

    /// Every access user of a customer with its resend count, `None` if no such customer.
    pub fn access(&self, customer_id: i64) -> Option<Vec<SandboxUser>> {
        self.shared.store().access_all(customer_id).ok()
    }

    /// Stops accepting, closes every connection, and waits until the server is gone.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        // The server task only ends by this token; a join error would mean it panicked,
        // which the caller can do nothing about at shutdown.
        let _ = (&mut self.server).await;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `bbinvite sandbox`: prints `sandbox listening on http://ADDR` (the address really
/// bound), then serves until SIGINT or SIGTERM.
pub async fn serve(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    let sandbox = Sandbox::start(args.addr, config)
        .await
        .with_context(|| format!("listening on {}", args.addr))?;
    let announced = {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "sandbox listening on {}", sandbox.base_url())
            .and_then(|()| stdout.flush())
    };
    // Whoever started us may not read stdout; a closed pipe is no reason to stop serving.
    if let Err(err) = announced
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(err).context("writing to stdout");
    }
    stop_signal().await;
    sandbox.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    // Without a handler Ctrl-C would kill us anyway; an error here leaves nothing to wait on.
    let _ = tokio::signal::ctrl_c().await;
}
