//! Sending: the HTTP policy of a command. One shared rate limiter, retries, a breaker.
//!
//! Takes [`Job`]s (an invitation to send, already marked `sending` in the ledger) and
//! turns each into exactly one [`Outcome`], and [`ActionJob`]s (`sync`'s resends,
//! suspensions, reactivations) into one [`ActionOutcome`]. Every API call a command
//! makes goes through one attempt runner, [`Sender::call`] (reads through
//! [`Sender::read`]): the invitation's POST, the look in the access list, the directory,
//! references, access lists, resend, suspend, reactivate. Every failed answer is judged
//! in one place (breaker, credentials, `Retry-After` cap), and HTTP statuses map to what
//! to do in one function, [`disposition`]. A failed invitation is an outcome, not an
//! error: only a reason to stop the whole run (credentials refused, the breaker, a
//! signal) is raised, through [`Abort`]. This module never touches SQL, the input or
//! concurrency (the engine in `app` owns it).

use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::Future;
use governor::{DefaultDirectRateLimiter, Jitter, RateLimiter};
use rand::Rng;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::api::types::{AccessUser, Keyed, NewAccessUser};
use crate::api::{Client, Error as ApiError, ErrorClass, Gate, Listing};
use crate::domain::{
    ActionJob, ActionKind, ActionOutcome, ActionState, Attempt, Job, Outcome, State,
};
use crate::rate::Rate;

/// First retry waits up to this long (full jitter: a random share of it).
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// No backoff is longer than this, whatever the attempt number.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// This many consecutive calls failing the same way means the API, not the rows, is
/// broken: stop sending. High enough that a 15% error rate never trips it by chance.
pub const BREAKER_THRESHOLD: u32 = 12;
/// The longest a server may make us wait (`Retry-After`) unless `--max-retry-wait` says
/// otherwise: a run asked to wait longer stops, its rows pending, rather than hold the
/// ledger's lock for hours while later runs are turned away.
pub const DEFAULT_MAX_RETRY_WAIT: Duration = Duration::from_secs(10 * 60);
/// When many tasks wait on the limiter at once, spread their wake-ups over this much so
/// they do not all retry on the same tick.
const LIMITER_JITTER: Duration = Duration::from_millis(2);

/// Sending settings, checked by the CLI.
#[derive(Debug, Clone)]
pub struct Settings {
    pub rate: Rate,
    pub burst: NonZeroU32,
    pub concurrency: usize,
    pub max_attempts: u32,
    /// A `Retry-After` longer than this stops the run (see [`DEFAULT_MAX_RETRY_WAIT`]).
    pub max_retry_wait: Duration,
}

/// Why a run stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Abort {
    /// The API refused the credentials.
    Auth(String),
    /// Too many consecutive failures of one kind.
    Breaker(String),
    /// The API asked us to wait longer than `--max-retry-wait`.
    Throttled(String),
    /// SIGINT or SIGTERM.
    Signal,
}

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Abort::Auth(m) => write!(f, "authentication failed: {m}"),
            Abort::Breaker(m) | Abort::Throttled(m) => write!(f, "stopped sending: {m}"),
            Abort::Signal => f.write_str("interrupted by a signal"),
        }
    }
}

/// The shared limiter: a GCRA quota for every request, plus a pause that a `429`
/// imposes on every task at once.
pub struct Limiter {
    quota: DefaultDirectRateLimiter,
    paused_until: Mutex<Option<Instant>>,
    /// No pause is longer than this, whatever a `Retry-After` asked.
    max_pause: Duration,
    /// Once cancelled, no waiting request is let through: a stopping run sends nothing new.
    stop: CancellationToken,
}

impl Limiter {
    pub fn new(rate: Rate, burst: NonZeroU32, stop: CancellationToken) -> Limiter {
        let quota = RateLimiter::direct(rate.quota(burst));
        // Start with the bucket empty: a run's first second sends `rate`, not
        // `rate + burst`. The burst is still there to absorb workers that wake late.
        let _ = quota.check_n(burst);
        Limiter {
            quota,
            paused_until: Mutex::new(None),
            max_pause: DEFAULT_MAX_RETRY_WAIT,
            stop,
        }
    }

    /// Caps every pause a `429` imposes at `max` (`--max-retry-wait`).
    pub fn with_max_pause(mut self, max: Duration) -> Limiter {
        self.max_pause = max;
        self
    }

    fn pause_left(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().unwrap_or_else(|p| p.into_inner()))?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Waits out any pause, then for a slot in the quota. False when the run stopped
    /// meanwhile: the request must not be sent.
    pub async fn until_ready(&self) -> bool {
        loop {
            if self.stop.is_cancelled() {
                return false;
            }
            if let Some(wait) = self.pause_left() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = self.stop.cancelled() => return false,
                }
            }
            tokio::select! {
                _ = self.quota.until_ready_with_jitter(Jitter::up_to(LIMITER_JITTER)) => {}
                _ = self.stop.cancelled() => return false,
            }
            // A 429 may have arrived while we queued: honour it before sending.
            if self.pause_left().is_none() {
                return !self.stop.is_cancelled();
            }
        }
    }
}

impl Gate for Limiter {
    fn ready(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(self.until_ready())
    }

    fn pause(&self, wait: Duration) {
        let now = Instant::now();
        let until = now.checked_add(wait.min(self.max_pause)).unwrap_or(now);
        let mut slot = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none_or(|u| u < until) {
            *slot = Some(until);
        }
    }
}

/// What to do with one failed call: the one place where statuses become decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The answer says the user is already there (409, or a 422 that speaks of it):
    /// true only once the access list confirms it.
    Exists,
    /// The API refused the row itself; retrying will not help.
    Reject(String),
    /// Worth another try, after at least `after` when the server said so.
    Retry { after: Option<Duration> },
    /// The credentials are refused: the whole run stops.
    Abort(String),
}

pub fn disposition(err: &ApiError) -> Disposition {
    match err {
        ApiError::Http { status: 409, .. } => Disposition::Exists,
        ApiError::Http {
            status: 422,
            message,
            ..
        } if says_exists(message) => Disposition::Exists,
        ApiError::Http {
            status: 401,
            message,
            ..
        }
        | ApiError::Unauthorized(message) => Disposition::Abort(message.clone()),
        ApiError::Http {
            status: 408 | 429,
            retry_after,
            ..
        } => Disposition::Retry {
            after: *retry_after,
        },
        ApiError::Http {
            status,
            retry_after,
            ..
        } if *status >= 500 => Disposition::Retry {
            after: *retry_after,
        },
        ApiError::Http {
            status, message, ..
        } => Disposition::Reject(format!("HTTP {status}: {message}")),
        // Reading the list again would page the same way.
        ApiError::List(_) => Disposition::Reject(err.to_string()),
        ApiError::Timeout(_)
        | ApiError::Connect(_)
        | ApiError::Transport(_)
        | ApiError::Decode(_)
        | ApiError::NotSent => Disposition::Retry { after: None },
    }
}

/// Whether a 422's message says the user already exists.
fn says_exists(message: &str) -> bool {
    let m = message.to_lowercase();
    ["already", "exist", "taken", "duplicate"]
        .iter()
        .any(|w| m.contains(w))
}

/// Counts consecutive failures of one kind across every task.
#[derive(Default)]
struct Breaker {
    state: Mutex<(Option<String>, u32)>,
}

impl Breaker {
    fn success(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (None, 0);
    }

    /// Returns the reason when this failure trips the breaker.
    fn failure(&self, err: &ApiError) -> Option<String> {
        let kind = match err.class() {
            // A 429 is the limiter's business.
            ErrorClass::RateLimited | ErrorClass::NotSent => return None,
            // A row's own 4xx says nothing of the API, and ends a run of failures as a
            // success does; except a 403, which usually means the account lacks a
            // permission.
            ErrorClass::ClientError if err.status() != Some(403) => {
                self.success();
                return None;
            }
            ErrorClass::ClientError => "HTTP 403 (forbidden)".to_string(),
            ErrorClass::ServerError => match err.status() {
                Some(s) => format!("HTTP {s}"),
                None => "server errors".to_string(),
            },
            other => other.as_str().to_string(),
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0.as_deref() == Some(kind.as_str()) {
            state.1 += 1;
        } else {
            *state = (Some(kind.clone()), 1);
        }
        (state.1 >= BREAKER_THRESHOLD).then(|| {
            format!(
                "{} consecutive calls failed the same way ({kind}; last: {err}); the API looks unavailable or refuses this account, try again later",
                state.1
            )
        })
    }
}

/// Sends jobs. Shared by every worker task.
pub struct Sender {
    client: Arc<Client>,
    settings: Settings,
    breaker: Breaker,
    /// Cancelled when the run must stop dispatching (signal, breaker, credentials).
    stop: CancellationToken,
    abort: Mutex<Option<Abort>>,
}

impl Sender {
    pub fn new(client: Arc<Client>, settings: Settings, stop: CancellationToken) -> Sender {
        Sender {
            client,
            settings,
            breaker: Breaker::default(),
            stop,
            abort: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Why the run stopped, if it did. A signal counts only if nothing else came first.
    pub fn abort_reason(&self) -> Option<Abort> {
        let reason = self.abort.lock().unwrap_or_else(|p| p.into_inner()).clone();
        reason.or_else(|| self.stop.is_cancelled().then_some(Abort::Signal))
    }

    /// Stops the run for `reason`, keeping the first reason given.
    pub fn abort(&self, reason: Abort) {
        let mut slot = self.abort.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.stop.cancel();
    }

    /// The client every call is made with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Stops the run when `err` asks for a wait longer than `--max-retry-wait`: nothing
    /// can be sent meanwhile, and the ledger's lock would keep every later run out.
    /// True when it did.
    fn check_wait(&self, err: &ApiError) -> bool {
        let Some(wait) = too_long_wait(err, self.settings.max_retry_wait) else {
            return false;
        };
        self.abort(Abort::Throttled(format!(
            "the API asked us to wait {} before calling again (Retry-After), more than the {} bbinvite waits (--max-retry-wait); nothing more is sent now",
            human(wait),
            human(self.settings.max_retry_wait)
        )));
        true
    }

    /// Sends one job to its end: invited, exists, rejected, failed, or (when the run
    /// stops first) pending. The POST goes through the attempt runner like every other
    /// call; after a try that may have created the user (or when the ledger says an
    /// earlier run's may have), the runner looks in the access list before sending again.
    pub async fn process(&self, job: Job) -> Outcome {
        let (customer_id, user) = (job.customer_id, &job.user);
        let mut attempts = Vec::new();
        let mut unsure = job.check_first;
        let sent = self
            .run_tries(
                "invite",
                Repeat::LookFirst,
                &mut attempts,
                &mut unsure,
                || async {
                    let answer = self.client.invite(customer_id, user).await?;
                    Ok((answer.body.id, answer.status))
                },
                || async move {
                    let mut log = Vec::new();
                    let found = self.confirm(customer_id, user, &mut log).await;
                    (found.map(|found| found.map(|u| u.id)), log)
                },
            )
            .await;
        let mut run = JobRun {
            job: &job,
            attempts,
            unsure,
            last: None,
        };
        match sent {
            Ok(id) => run.finish(State::Invited, Some(id), None),
            Err(failure) => self.invite_failed(&mut run, failure).await,
        }
    }

    /// Where an invitation ends when its call did not succeed.
    async fn invite_failed(&self, run: &mut JobRun<'_>, failure: Failure) -> Outcome {
        match failure {
            Failure::Stopped(last) => {
                run.last = last;
                run.stopped(self.abort_reason())
            }
            Failure::Look(e) => self.look_failed(run, e),
            Failure::Answer(e) => self.answered(run, e).await,
            // An invitation is never left unsure by the runner: it looks, then sends.
            Failure::GaveUp(e) | Failure::Unsure(e) => {
                let message = format!(
                    "gave up after {} attempts: {}",
                    self.settings.max_attempts,
                    explain(&e)
                );
                run.last = Some(e);
                run.finish(State::Failed, None, Some(message))
            }
        }
    }

    /// An answer another try would not change (or that stopped the run).
    async fn answered(&self, run: &mut JobRun<'_>, e: ApiError) -> Outcome {
        let message = match disposition(&e) {
            Disposition::Exists => return self.confirm_exists(run, e).await,
            Disposition::Reject(message) => {
                run.last = Some(e);
                return run.finish(State::Rejected, None, Some(message));
            }
            // Refused credentials: nothing was done, the row waits for the next run.
            Disposition::Abort(message) => Some(message),
            // Told to wait longer than allowed: nothing was done, the row waits too.
            Disposition::Retry { .. } => self.abort_reason().map(|r| r.to_string()),
        };
        run.last = Some(e);
        run.finish(State::Pending, None, message)
    }

    /// The look before sending again failed: sending blind could invite twice, so the
    /// job ends here (pending when the credentials were refused).
    fn look_failed(&self, run: &mut JobRun<'_>, e: ApiError) -> Outcome {
        if let Disposition::Abort(message) = disposition(&e) {
            run.last = Some(e);
            return run.finish(State::Pending, None, Some(message));
        }
        let message = format!(
            "could not check whether an earlier try created the user: {}",
            explain(&e)
        );
        run.last = Some(e);
        if self.stop.is_cancelled() {
            return run.stopped(self.abort_reason());
        }
        run.finish(State::Failed, None, Some(message))
    }

    /// Looks for a user in the customer's access list (an earlier call may have created
    /// it). A look is harmless to repeat, so it gets tries of its own: a flaky read
    /// should not use up the invitation's attempts.
    async fn confirm(
        &self,
        customer_id: i64,
        user: &NewAccessUser,
        log: &mut Vec<Attempt>,
    ) -> Result<Option<AccessUser>, Failure> {
        self.read("confirm", log, || {
            self.client
                .find_access_user(customer_id, &user.email, &user.name)
        })
        .await
    }

    /// After a 409, or a 422 that speaks of existence: the answer alone proves nothing
    /// (a 422 "The selected customer does not exist." says it too), so only the access
    /// list decides. Found: `exists` (or `invited` when an unanswered POST of ours may
    /// have made it). Not found: see [`unconfirmed`].
    async fn confirm_exists(&self, run: &mut JobRun<'_>, answer: ApiError) -> Outcome {
        let created_by_us = run.unsure;
        let (customer_id, user) = (run.job.customer_id, &run.job.user);
        let found = match self.confirm(customer_id, user, &mut run.attempts).await {
            Ok(found) => found,
            Err(failure) => {
                let e = failure.into_error();
                let message = format!(
                    "the API answered {answer}, but the access list could not be read to confirm the user is there: {}",
                    explain(&e)
                );
                run.last = Some(e);
                return run.finish(State::Failed, None, Some(message));
            }
        };
        if let Some(user) = found {
            let state = if created_by_us {
                State::Invited
            } else {
                State::Exists
            };
            return run.finish(state, Some(user.id), None);
        }
        let (state, message) = unconfirmed(&answer);
        run.last = Some(answer);
        run.finish(state, None, Some(message))
    }

    /// The one policy for a failed answer: stops the run on refused credentials or a
    /// `Retry-After` beyond `--max-retry-wait`, and feeds the breaker (which trips on a
    /// run of one kind of failure). Returns the wait the server asked for when another
    /// try may help, `None` when it cannot.
    fn judge(&self, e: &ApiError) -> Option<Option<Duration>> {
        let after = match disposition(e) {
            Disposition::Abort(message) => {
                self.abort(Abort::Auth(message));
                return None;
            }
            Disposition::Retry { .. } if self.check_wait(e) => return None,
            Disposition::Retry { after } => Some(after),
            Disposition::Exists | Disposition::Reject(_) => None,
        };
        if let Some(reason) = self.breaker.failure(e) {
            self.abort(Abort::Breaker(reason));
        }
        after
    }

    /// Waits before try `attempt + 1`: full-jitter backoff, or longer when the server
    /// asked. False when the run stopped meanwhile.
    async fn pause(&self, attempt: u32, after: Option<Duration>) -> bool {
        let wait = backoff(attempt).max(after.unwrap_or(Duration::ZERO));
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.stop.cancelled() => false,
        }
    }

    /// A call through the attempt runner (see [`Sender::call`]) that reads and changes
    /// nothing: the directory, a reference, an access list. Tries are logged in `log`.
    pub async fn read<T, F, Fut>(
        &self,
        action: &'static str,
        log: &mut Vec<Attempt>,
        mut read: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        self.call(action, Repeat::Yes, log, || {
            let answer = read();
            async move { Ok((answer.await?, 200)) }
        })
        .await
    }

    /// Reads a whole list, wave by wave ([`Client::read_more`]), each through the
    /// attempt runner as [`Sender::read`] does: the page the list has reached gets
    /// `--max-attempts` tries, the pages before it are kept, and a try that took a page
    /// counts as a success. A long list on a flaky API is neither read again from its
    /// first page each try nor given up for failures spread over many pages.
    pub async fn read_list<T>(
        &self,
        action: &'static str,
        log: &mut Vec<Attempt>,
        list: Listing<T>,
    ) -> Result<Vec<T>, Failure>
    where
        T: DeserializeOwned + Keyed + Send,
    {
        // Held across a try's requests; a try cut off keeps the pages it took.
        let list = tokio::sync::Mutex::new(list);
        while !list.lock().await.ended() {
            self.read(action, log, || async {
                self.client.read_more(&mut *list.lock().await).await
            })
            .await?;
        }
        Ok(list.into_inner().into_rows())
    }

    /// The attempt runner every call of a command goes through (the invitation, the look
    /// in the access list, the directory and other reads, resend, suspend, reactivate):
    /// each try waits its turn at the shared limiter (the client's gate), is logged in
    /// `log` under `action`, and is judged by `Sender::judge`; transient failures are
    /// tried again after [`backoff`] or the server's `Retry-After`, up to
    /// `--max-attempts`, as `repeat` allows. `call` answers the value and the HTTP
    /// status it came with.
    pub async fn call<T, F, Fut>(
        &self,
        action: &'static str,
        repeat: Repeat,
        log: &mut Vec<Attempt>,
        call: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(T, u16), ApiError>>,
    {
        let mut unsure = false;
        let no_look = || async { (Ok(None), Vec::new()) };
        self.run_tries(action, repeat, log, &mut unsure, call, no_look)
            .await
    }

    /// The runner's loop (see [`Sender::call`]). `unsure` says whether a try may have
    /// acted; while it holds, a [`Repeat::LookFirst`] call runs `look` before its next
    /// try: found, that is the call's value; not found, the try is made. A look answers
    /// with the tries it made, which join the log.
    async fn run_tries<T, F, Fut, L, LookFut>(
        &self,
        action: &'static str,
        repeat: Repeat,
        log: &mut Vec<Attempt>,
        unsure: &mut bool,
        mut call: F,
        mut look: L,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(T, u16), ApiError>>,
        L: FnMut() -> LookFut,
        LookFut: Future<Output = (Result<Option<T>, Failure>, Vec<Attempt>)>,
    {
        let max_attempts = self.settings.max_attempts.max(1);
        let mut last: Option<ApiError> = None;
        for attempt in 1..=max_attempts {
            if self.stop.is_cancelled() {
                break;
            }
            if *unsure && repeat == Repeat::LookFirst {
                let (found, tries) = look().await;
                log.extend(tries);
                match found {
                    Ok(Some(found)) => return Ok(found),
                    Ok(None) => *unsure = false,
                    Err(Failure::Stopped(seen)) => {
                        last = seen.or(last);
                        break;
                    }
                    Err(failure) => return Err(Failure::Look(failure.into_error())),
                }
            }
            let (at, started) = (SystemTime::now(), Instant::now());
            let result = crate::api::attempt(attempt, call()).await;
            let latency = started.elapsed();
            let e = match result {
                Ok((value, status)) => {
                    self.breaker.success();
                    log.push(tried(at, action, Ok(status), latency));
                    return Ok(value);
                }
                // Stopped while waiting for its turn: never sent, nothing to log.
                Err(ApiError::NotSent) => break,
                Err(e) => e,
            };
            log.push(tried(at, action, Err(&e), latency));
            if repeat != Repeat::Yes && e.maybe_applied() {
                *unsure = true;
            }
            let after = match self.judge(&e) {
                Some(_) if repeat == Repeat::Never && *unsure => return Err(Failure::Unsure(e)),
                Some(after) => after,
                None => return Err(Failure::Answer(e)),
            };
            if attempt >= max_attempts {
                return Err(Failure::GaveUp(e));
            }
            last = Some(e);
            if !self.pause(attempt, after).await {
                break;
            }
        }
        Err(Failure::Stopped(last))
    }

    /// Carries out one `sync` action to its end: done, failed, or (when the run stops
    /// before it is sent) pending. Suspend and reactivate change nothing when repeated,
    /// so transient failures are tried again; a resend sends an e-mail, so once the
    /// server may have acted on one it is never sent again (at most once beats twice).
    pub async fn act(&self, job: &ActionJob) -> ActionOutcome {
        let (customer_id, user_id) = (job.customer_id, job.access_user_id);
        let (verb, repeat) = match job.kind {
            ActionKind::Resend => ("resend", Repeat::Never),
            ActionKind::Suspend | ActionKind::Prune => ("suspend", Repeat::Yes),
            ActionKind::Reactivate => ("reactivate", Repeat::Yes),
        };
        let mut attempts = Vec::new();
        let result = self
            .call(verb, repeat, &mut attempts, || async {
                let status = match job.kind {
                    ActionKind::Resend => self.client.resend(customer_id, user_id).await?,
                    ActionKind::Reactivate => {
                        self.client
                            .set_suspended(customer_id, user_id, false)
                            .await?
                    }
                    ActionKind::Suspend | ActionKind::Prune => {
                        self.client
                            .set_suspended(customer_id, user_id, true)
                            .await?
                    }
                };
                Ok(((), status))
            })
            .await;
        let (state, error, unsure) = match &result {
            Ok(()) => (ActionState::Done, None, false),
            Err(failure) => self.action_failed(failure, attempts.is_empty()),
        };
        ActionOutcome {
            action_id: job.id,
            state,
            error,
            http_status: result
                .err()
                .and_then(|f| f.error().and_then(ApiError::status)),
            unsure,
            attempts,
        }
    }

    /// Where a failed action stands, in words, and whether it may have acted.
    fn action_failed(
        &self,
        failure: &Failure,
        unsent: bool,
    ) -> (ActionState, Option<String>, bool) {
        let max_attempts = self.settings.max_attempts.max(1);
        let why = || {
            self.abort_reason()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "the run stopped".into())
        };
        match failure {
            Failure::Stopped(None) if unsent => (ActionState::Pending, None, false),
            Failure::Stopped(None) => (
                ActionState::Failed,
                Some(format!("not finished ({})", why())),
                false,
            ),
            Failure::Stopped(Some(e)) => (
                ActionState::Failed,
                Some(format!(
                    "not finished ({}); last error: {}",
                    why(),
                    explain(e)
                )),
                false,
            ),
            Failure::Answer(e) => match disposition(e) {
                // Refused credentials: nothing was done.
                Disposition::Abort(message) => (ActionState::Pending, Some(message), false),
                // Turned away (a wait beyond --max-retry-wait): nothing was done.
                Disposition::Retry { .. } => (
                    ActionState::Pending,
                    self.abort_reason().map(|r| r.to_string()),
                    false,
                ),
                // A conflict answer to a resend or a suspension: the API refused it.
                Disposition::Exists => (
                    ActionState::Failed,
                    Some(format!("the API refused it: {e}")),
                    false,
                ),
                Disposition::Reject(message) => (ActionState::Failed, Some(message), false),
            },
            Failure::Unsure(e) => (
                ActionState::Failed,
                Some(format!(
                    "may have been sent ({}); not sent again until the next period",
                    explain(e)
                )),
                true,
            ),
            // An action never looks first: a failed look is one more failed try.
            Failure::GaveUp(e) | Failure::Look(e) => (
                ActionState::Failed,
                Some(format!(
                    "gave up after {max_attempts} attempts: {}",
                    explain(e)
                )),
                false,
            ),
        }
    }
}

/// May a try that may have acted on the server be made again?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Yes: the call changes nothing when repeated (a read, a suspension).
    Yes,
    /// Never: it sends an e-mail.
    Never,
    /// Only once a look shows the earlier try did not act (the invitation: a second
    /// POST of a user it created would be answered "exists").
    LookFirst,
}

/// Why a call through [`Sender::call`] did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// The run stopped before another try; the last answer, if a try was made.
    Stopped(Option<ApiError>),
    /// An answer another try would not change (or that stopped the run).
    Answer(ApiError),
    /// A try may have acted, and the call must not be repeated.
    Unsure(ApiError),
    /// Every attempt failed; the last answer.
    GaveUp(ApiError),
    /// The look before a repeat (see [`Repeat::LookFirst`]) could not be made.
    Look(ApiError),
}

impl Failure {
    /// The last answer, if a try was made.
    pub fn error(&self) -> Option<&ApiError> {
        match self {
            Failure::Stopped(e) => e.as_ref(),
            Failure::Answer(e) | Failure::Unsure(e) | Failure::GaveUp(e) | Failure::Look(e) => {
                Some(e)
            }
        }
    }

    /// The last answer, or [`ApiError::NotSent`] when none came.
    pub fn into_error(self) -> ApiError {
        match self {
            Failure::Stopped(e) => e.unwrap_or(ApiError::NotSent),
            Failure::Answer(e) | Failure::Unsure(e) | Failure::GaveUp(e) | Failure::Look(e) => e,
        }
    }
}

/// An answer that says the user exists, while the access list shows no such user.
///
/// A `422` is a validation error about the row ("The selected customer does not
/// exist.", "The email has already been taken." by a user of another customer): sending
/// it again unchanged gets the same answer, so it is `rejected` with the API's words, like
/// any other 422. A `409` is the API's own word for "already there"; a list that
/// disagrees may lag behind it, so the row is `failed`: the next run sends it again, and
/// confirms it then.
pub fn unconfirmed(answer: &ApiError) -> (State, String) {
    let said = match answer {
        ApiError::Http {
            status, message, ..
        } => format!("HTTP {status}: {message}"),
        other => other.to_string(),
    };
    if answer.status() == Some(409) {
        let message = format!(
            "the API says the user exists ({said}), but the customer's access list does not show them; retry later with `bbinvite retry`, and if it persists check the user in the portal"
        );
        (State::Failed, message)
    } else {
        (State::Rejected, said)
    }
}

/// One try, as the attempt log keeps it: the HTTP status it got, or the error.
fn tried(
    at: SystemTime,
    action: &'static str,
    answer: Result<u16, &ApiError>,
    latency: Duration,
) -> Attempt {
    match answer {
        Ok(status) => Attempt {
            at,
            action,
            http_status: Some(status),
            latency,
            class: "ok",
            error: None,
        },
        Err(e) => Attempt {
            at,
            action,
            http_status: e.status(),
            latency,
            class: e.class().as_str(),
            error: Some(e.to_string()),
        },
    }
}

/// One job's progress through its attempts.
struct JobRun<'a> {
    job: &'a Job,
    attempts: Vec<Attempt>,
    /// The last call may have created the user: look before sending again.
    unsure: bool,
    last: Option<ApiError>,
}

impl JobRun<'_> {
    fn finish(
        &mut self,
        state: State,
        access_user_id: Option<i64>,
        error: Option<String>,
    ) -> Outcome {
        let done = state.is_done();
        Outcome {
            invitation_id: self.job.invitation_id,
            row_id: self.job.row_id,
            state,
            access_user_id,
            error,
            http_status: self
                .last
                .as_ref()
                .and_then(ApiError::status)
                .filter(|_| !done),
            unsure: self.unsure && !done,
            attempts: std::mem::take(&mut self.attempts),
        }
    }

    /// The run stopped before this job ended. Unsent, it stays pending; tried, it failed
    /// for now and the next run takes it up again (checking first when unsure).
    fn stopped(&mut self, reason: Option<Abort>) -> Outcome {
        let why = reason
            .map(|r| r.to_string())
            .unwrap_or_else(|| "the run stopped".into());
        match &self.last {
            None if self.attempts.is_empty() => self.finish(State::Pending, None, None),
            Some(e) => {
                let message = format!("not finished ({why}); last error: {}", explain(e));
                self.finish(State::Failed, None, Some(message))
            }
            None => self.finish(State::Failed, None, Some(format!("not finished ({why})"))),
        }
    }
}

/// The wait `err` asks for (`Retry-After`), when it is longer than `max`.
fn too_long_wait(err: &ApiError, max: Duration) -> Option<Duration> {
    match err {
        ApiError::Http {
            retry_after: Some(wait),
            ..
        } if *wait > max => Some(*wait),
        _ => None,
    }
}

/// A wait in words: `10m`, `3years 2months …`, seconds cut off.
fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

/// Full-jitter exponential backoff: a random wait up to `base * 2^(attempt-1)`, capped.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let share: f64 = rand::rng().random_range(0.0..=1.0);
    ceiling.mul_f64(share).max(Duration::from_millis(10))
}

/// An API error in words a person can act on.
pub fn explain(e: &ApiError) -> String {
    match e {
        ApiError::Http {
            status,
            retry_after: Some(wait),
            ..
        } if *wait > DEFAULT_MAX_RETRY_WAIT => format!(
            "the API asked us to wait {} before trying again (HTTP {status} with Retry-After); try later",
            human(*wait)
        ),
        ApiError::Http { status: 429, .. } => {
            "the API kept asking us to slow down (HTTP 429); lower --rate".into()
        }
        ApiError::Http {
            status, message, ..
        } if *status >= 500 => {
            format!(
                "the API had an internal error (HTTP {status}: {message}); retry later with `bbinvite retry`"
            )
        }
        ApiError::Timeout(d) => format!(
            "no answer within {}s; raise --timeout or retry later",
            d.as_secs_f64()
        ),
        ApiError::Connect(m) => {
            format!("could not reach the API ({m}); check the network and --base-url")
        }
        ApiError::Transport(m) => {
            format!("the connection dropped before the answer ({m}); retry later")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn http(status: u16, message: &str) -> ApiError {
        ApiError::Http {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// How often each offset of a list was asked.
    type Asked = Arc<Mutex<std::collections::HashMap<u64, u32>>>;

    /// A list of 12 customers served one a page, each page whose offset `fails` is
    /// answered `refusal` the first time it is asked; and a sender reading it, two tries
    /// a call, waiting at most a second when told to wait.
    async fn flaky_directory(
        fails: fn(u64) -> bool,
        refusal: (u16, Option<&'static str>),
    ) -> (Sender, Asked) {
        use axum::extract::{Query, State};
        use axum::response::IntoResponse;
        type Shared = (Asked, fn(u64) -> bool, (u16, Option<&'static str>));
        async fn page(
            State((asked, fails, (status, retry_after))): State<Shared>,
            Query(q): Query<std::collections::HashMap<String, u64>>,
        ) -> axum::response::Response {
            let offset = q.get("offset").copied().unwrap_or(0);
            let times = {
                let mut asked = asked.lock().unwrap();
                let n = asked.entry(offset).or_default();
                *n += 1;
                *n
            };
            if times == 1 && fails(offset) {
                let status = axum::http::StatusCode::from_u16(status).unwrap();
                let mut answer = (status, "{}").into_response();
                if let Some(wait) = retry_after {
                    let value = axum::http::HeaderValue::from_static(wait);
                    answer.headers_mut().insert("retry-after", value);
                }
                return answer;
            }
            let data: Vec<_> = (offset..12)
                .take(1)
                .map(|i| serde_json::json!({"id": i + 1, "name": format!("C{}", i + 1)}))
                .collect();
            axum::Json(serde_json::json!({"limit": 1, "offset": offset, "count": 12, "data": data}))
                .into_response()
        }
        let asked = Asked::default();
        let app = axum::Router::new()
            .route("/customer", axum::routing::get(page))
            .with_state((asked.clone(), fails, refusal));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(crate::api::ClientConfig {
            base_url: base,
            credentials: crate::api::Credentials::ApiKey(crate::api::Secret::new("k")),
            timeout: Duration::from_secs(10),
            pool_size: 8,
        })
        .unwrap();
        let settings = Settings {
            rate: Rate::per_second(NonZeroU32::new(1000).unwrap()),
            burst: NonZeroU32::new(100).unwrap(),
            concurrency: 8,
            max_attempts: 2,
            max_retry_wait: Duration::from_secs(1),
        };
        let sender = Sender::new(Arc::new(client), settings, CancellationToken::new());
        (sender, asked)
    }

    #[tokio::test]
    async fn a_list_read_goes_on_from_the_page_that_failed() {
        let (sender, asked) = flaky_directory(|_| true, (500, None)).await;
        // Twelve pages that each fail once: read again from the first page each try,
        // two tries a read would never get past the second.
        let customers = sender
            .read_list("directory", &mut Vec::new(), Listing::customers())
            .await
            .unwrap();
        let ids: Vec<i64> = customers.iter().map(|c| c.id).collect();
        assert_eq!(ids, (1..=12).collect::<Vec<_>>());
        let asked = asked.lock().unwrap();
        for offset in 0..12 {
            assert_eq!(asked.get(&offset), Some(&2), "offset {offset}: {asked:?}");
        }
    }

    #[tokio::test]
    async fn a_wait_asked_by_any_page_of_a_list_is_heard() {
        // The third page, asked with the second in one wave, is told to wait a minute:
        // more than the sender waits, so the read stops there, though the second page
        // came back fine and the third would be served if asked again.
        let (sender, asked) = flaky_directory(|offset| offset == 2, (429, Some("60"))).await;
        let read = sender
            .read_list("directory", &mut Vec::new(), Listing::customers())
            .await;
        assert!(read.is_err(), "{read:?}");
        assert!(
            matches!(sender.abort_reason(), Some(Abort::Throttled(_))),
            "{:?}",
            sender.abort_reason()
        );
        assert_eq!(asked.lock().unwrap().get(&2), Some(&1));
    }

    #[test]
    fn statuses_map_to_dispositions() {
        assert_eq!(disposition(&http(409, "")), Disposition::Exists);
        assert_eq!(
            disposition(&http(422, "The email has already been taken.")),
            Disposition::Exists
        );
        assert_eq!(
            disposition(&http(422, "name is required")),
            Disposition::Reject("HTTP 422: name is required".into())
        );
        assert!(matches!(
            disposition(&http(400, "bad")),
            Disposition::Reject(_)
        ));
        assert!(matches!(
            disposition(&http(403, "no")),
            Disposition::Reject(_)
        ));
        assert!(matches!(
            disposition(&http(404, "no")),
            Disposition::Reject(_)
        ));
        assert!(matches!(
            disposition(&http(401, "no")),
            Disposition::Abort(_)
        ));
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(disposition(&http(s, "")), Disposition::Retry { .. }),
                "{s}"
            );
        }
        assert!(matches!(
            disposition(&ApiError::Timeout(Duration::from_secs(1))),
            Disposition::Retry { .. }
        ));
    }

    #[test]
    fn an_existence_answer_the_list_does_not_confirm_is_not_exists() {
        let (state, message) = unconfirmed(&http(
            422,
            "The given data was invalid.; The selected customer does not exist.",
        ));
        assert_eq!(state, State::Rejected);
        assert!(message.contains("The selected customer does not exist."));
        let (state, message) = unconfirmed(&http(409, "User already exists"));
        assert_eq!(state, State::Failed);
        assert!(message.contains("bbinvite retry"), "{message}");
    }

    #[test]
    fn breaker_trips_on_a_run_of_one_kind_only() {
        let b = Breaker::default();
        for _ in 0..BREAKER_THRESHOLD - 1 {
            assert!(b.failure(&http(503, "")).is_none());
        }
        assert!(
            b.failure(&http(500, "")).is_none(),
            "another kind starts a new run"
        );
        for _ in 0..BREAKER_THRESHOLD - 2 {
            assert!(b.failure(&http(500, "")).is_none());
        }
        assert!(b.failure(&http(500, "")).is_some());
        b.success();
        assert!(b.failure(&http(404, "")).is_none());
        assert!(b.failure(&http(429, "")).is_none());
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        for attempt in 1..40 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_CAP);
        }
        let waits: std::collections::HashSet<_> = (0..20).map(|_| backoff(5)).collect();
        assert!(waits.len() > 1, "full jitter varies the wait");
    }
}
