//! An HTTP client for Billing Booth One: authentication, paging, one method a call.
//!
//! It knows the API and nothing of rows, ledgers or retries: each method makes one
//! logical call (paging aside) and returns the answer or an [`Error`]. The only retry
//! here is the single re-login after a `401`, shared by every task that holds the
//! client (single flight). Secrets live in [`Secret`] and are never formatted; every
//! message an answer or the network gives passes the [`Redactor`] before it leaves. An
//! answer's body is read up to a cap, never whole whatever its size. With
//! [`log_requests`] on (`-vv`), each request is one line to its printer: method, path (never
//! the query), status, milliseconds and attempt; never a header, a body or a secret.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Method, StatusCode, Uri};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, RwLock};

use super::error::{Error, message_from_body, parse_retry_after};
use super::http::{self, Http};
use super::redact::Redactor;
use super::types::{
    AccessUser, Customer, Invited, Keyed, NewAccessUser, Page, TokenRequest, TokenResponse,
};

/// Rows asked for per page. The server may serve fewer; paging never assumes it did not.
pub const PAGE_SIZE: u64 = 100;
/// Tokens live 60 minutes; like the public client, we log in again after 55.
const TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(55 * 60);
/// A call that keeps getting `401` with fresh tokens is refused for good after this many logins.
const MAX_RELOGINS_PER_CALL: u32 = 2;
/// A last guard against a list that never ends; a page that repeats the one before it,
/// or rows past the envelope's count, stop it long before.
const MAX_PAGES: u64 = 1_000_000;
/// Most pages of a list asked for at once, once the first has said how long a page is.
const MAX_WAVE: u64 = 8;
/// Pages of the customer directory asked for in its first wave. A reseller's directory
/// is read once a run, before any row can be sent, and most hold hundreds of customers:
/// up to 400 come in one round trip rather than two or three, for at most three pages
/// asked past a shorter list (or past a server that serves fewer rows a page, whose
/// pages after the first are then asked again at the offsets it implies).
const DIRECTORY_FIRST_WAVE: u64 = 4;
/// Most bytes read of an error answer: its message is cut to 300 characters anyway, and
/// any JSON error envelope fits many times over; the rest of an HTML page is dropped.
const ERROR_BODY_CAP: usize = 64 * 1024;
/// Most bytes read of one object (an invited user, a customer, a token): a few hundred
/// bytes on the wire, so a megabyte is room for any extra fields the API adds.
const OBJECT_BODY_CAP: usize = 1024 * 1024;
/// Most bytes read of a list page: `PAGE_SIZE` rows, each allowed 160 KiB.
const PAGE_BODY_CAP: usize = 16 * 1024 * 1024;

/// Request addresses kept parsed, at most: a run's paths are one or two per customer,
/// and past this many the cache starts over rather than grow.
const URL_CACHE: usize = 4096;

/// Where each request is logged (`-vv`): nowhere unless [`log_requests`] says.
static LOG_REQUESTS: std::sync::RwLock<Option<fn(&str)>> = std::sync::RwLock::new(None);

tokio::task_local! {
    /// The caller's try number for the call being made (see [`attempt`]).
    static ATTEMPT: u32;
}

/// Sends the one line per request to `to` (a printer of stderr lines), for every
/// client; `None` turns it off.
pub fn log_requests(to: Option<fn(&str)>) {
    *LOG_REQUESTS.write().unwrap_or_else(PoisonError::into_inner) = to;
}

/// Runs `call` as try number `n` of its caller's retries, so its request lines say which.
pub async fn attempt<F: Future>(n: u32, call: F) -> F::Output {
    ATTEMPT.scope(n, call).await
}

/// `-vv`: `METHOD /path STATUS MSms attempt N`. The path is the route with its ids; the
/// query (which may carry an e-mail to search for) is left out, and so is every header.
fn log_request(method: &Method, path: &str, status: Option<StatusCode>, started: Instant) {
    let Some(log) = *LOG_REQUESTS.read().unwrap_or_else(PoisonError::into_inner) else {
        return;
    };
    let status = status.map_or_else(|| "no-answer".to_string(), |s| s.as_u16().to_string());
    let try_number = ATTEMPT.try_with(|n| *n).unwrap_or(1);
    log(&format!(
        "bbinvite: request {method} {path} {status} {}ms attempt {try_number}",
        started.elapsed().as_millis()
    ));
}

/// A string that must never be printed: its `Debug` and `Display` show stars.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the client proves who it is.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// An API key, sent as a bearer token. Cannot be refreshed: a `401` is final.
    ApiKey(Secret),
    /// E-mail and password, exchanged at `POST /token` for a bearer token.
    Password { email: String, password: Secret },
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub credentials: Credentials,
    pub timeout: Duration,
    /// The send stage's concurrency: twice as many idle connections are kept per host,
    /// so keep-alive serves every worker and a run opens about one connection each.
    pub pool_size: usize,
}

/// Something every request waits on before it leaves: the send stage's rate limiter.
/// The client knows nothing of limits; it only asks, and reports `429`s back.
pub trait Gate: Send + Sync {
    /// Resolves when one more request may leave: `true`; or when none may any more
    /// (the run is stopping): `false`.
    fn ready(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    /// The server answered `429`: every request should wait this long.
    fn pause(&self, wait: Duration);
}

/// A successful answer with what the attempt log needs.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub status: u16,
    pub body: T,
}

#[derive(Default)]
struct TokenState {
    token: Option<Arc<Secret>>,
    generation: u64,
    obtained: Option<Instant>,
}

/// The API client. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Client {
    http: Http,
    base: String,
    credentials: Credentials,
    /// The API key as every call sends it, when the credentials are one.
    api_key: Option<Arc<Secret>>,
    token: RwLock<TokenState>,
    /// Serialises logins so a burst of `401`s causes one `POST /token`, not one per task.
    login_gate: Mutex<()>,
    timeout: Duration,
    gate: Option<Arc<dyn Gate>>,
    /// Knows every secret this client holds, tokens included.
    redactor: Redactor,
    /// Each path's address, parsed once (parsing runs the host through IDNA).
    urls: std::sync::Mutex<HashMap<String, Uri>>,
    /// The `Authorization` value of the token last used: built once a token.
    bearer: std::sync::Mutex<Option<(Secret, HeaderValue)>>,
}

/// Without a `Retry-After`, a `429` pauses everyone this long.
const DEFAULT_429_PAUSE: Duration = Duration::from_secs(1);

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        // A request that finds every connection busy for an instant (one whose answer
        // is still being read) opens another; kept rather than closed when idle, it
        // serves later requests instead of being opened again.
        let http = Http::new(
            config.pool_size.max(1) * 2,
            config.timeout.min(Duration::from_secs(10)),
        )?;
        let redactor = Redactor::default();
        match &config.credentials {
            Credentials::ApiKey(key) => redactor.add(key.expose()),
            Credentials::Password { password, .. } => redactor.add(password.expose()),
        }
        if let Some(password) = url_password(&config.base_url) {
            redactor.add(&password);
        }
        Ok(Client {
            http,
            base: config.base_url.trim_end_matches('/').to_string(),
            api_key: match &config.credentials {
                Credentials::ApiKey(key) => Some(Arc::new(key.clone())),
                Credentials::Password { .. } => None,
            },
            credentials: config.credentials,
            token: RwLock::new(TokenState::default()),
            login_gate: Mutex::new(()),
            timeout: config.timeout,
            gate: None,
            redactor,
            urls: std::sync::Mutex::new(HashMap::new()),
            bearer: std::sync::Mutex::new(None),
        })
    }

    /// Makes every request, logins and paging included, wait on `gate`.
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Client {
        self.gate = Some(gate);
        self
    }

    async fn wait_turn(&self) -> Result<(), Error> {
        match &self.gate {
            Some(g) if !g.ready().await => Err(Error::NotSent),
            _ => Ok(()),
        }
    }

    fn saw_status(&self, status: StatusCode, retry_after: Option<Duration>) {
        if status == StatusCode::TOO_MANY_REQUESTS
            && let Some(g) = &self.gate
        {
            g.pause(retry_after.unwrap_or(DEFAULT_429_PAUSE));
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Logs in now when the credentials are a password, so wrong ones stop the run
    /// before anything is sent. With an API key there is nothing to check up front.
    pub async fn authenticate(&self) -> Result<(), Error> {
        if matches!(self.credentials, Credentials::Password { .. }) {
            self.current_token().await.map_err(|e| self.redacted(e))?;
        }
        Ok(())
    }

    /// `e` without any secret this client knows: how every error leaves it.
    fn redacted(&self, e: Error) -> Error {
        e.redacted(|text| self.redactor.redact(text))
    }

    fn message(&self, body: &[u8]) -> String {
        message_from_body(body, |text| self.redactor.redact(text))
    }

    /// `GET /customer/reference/{reference}`; `None` when the API answers 404.
    pub async fn customer_by_reference(&self, reference: &str) -> Result<Option<Customer>, Error> {
        let path = format!("/customer/reference/{}", encode_segment(reference));
        match self
            .call::<(), Customer>(Method::GET, &path, &[], None, OBJECT_BODY_CAP)
            .await
        {
            Ok(a) => Ok(Some(a.body)),
            Err(Error::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /customer/{id}/access`: invites one user; the answer's id is all a run
    /// keeps of it.
    pub async fn invite(
        &self,
        customer_id: i64,
        user: &NewAccessUser,
    ) -> Result<Answer<Invited>, Error> {
        let path = format!("/customer/{customer_id}/access");
        self.call(Method::POST, &path, &[], Some(user), OBJECT_BODY_CAP)
            .await
    }

    /// `GET /customer/{id}/access` with a search, one page.
    pub async fn search_access(
        &self,
        customer_id: i64,
        search: &str,
    ) -> Result<Vec<AccessUser>, Error> {
        let path = format!("/customer/{customer_id}/access");
        let query = [
            ("limit", PAGE_SIZE.to_string()),
            ("offset", "0".to_string()),
            ("search", search.to_string()),
            ("sort", "email".to_string()),
        ];
        let page: Answer<Page<AccessUser>> = self
            .call::<(), _>(Method::GET, &path, &query, None, PAGE_BODY_CAP)
            .await?;
        Ok(page.body.data)
    }

    /// `GET /customer/{id}/access`, every page.
    pub async fn all_access(&self, customer_id: i64) -> Result<Vec<AccessUser>, Error> {
        let mut list = Listing::access(customer_id);
        self.read_on(&mut list).await?;
        Ok(list.into_rows())
    }

    /// Finds a customer's access user by e-mail without trusting a search to prove
    /// absence: search by e-mail, then by name, comparing the e-mail field of what
    /// comes back; only then page through the whole list.
    pub async fn find_access_user(
        &self,
        customer_id: i64,
        email: &str,
        name: &str,
    ) -> Result<Option<AccessUser>, Error> {
        let wanted = email.trim().to_lowercase();
        let matches = |u: &AccessUser| u.email.trim().to_lowercase() == wanted;
        for search in [email.trim(), name.trim()] {
            if search.is_empty() {
                continue;
            }
            if let Some(u) = self
                .search_access(customer_id, search)
                .await?
                .into_iter()
                .find(matches)
            {
                return Ok(Some(u));
            }
        }
        Ok(self
            .all_access(customer_id)
            .await?
            .into_iter()
            .find(matches))
    }

    /// `POST /customer/{id}/access/{uid}/resend`.
    pub async fn resend(&self, customer_id: i64, user_id: i64) -> Result<u16, Error> {
        let path = format!("/customer/{customer_id}/access/{user_id}/resend");
        let a: Answer<serde_json::Value> = self
            .call::<(), _>(Method::POST, &path, &[], None, OBJECT_BODY_CAP)
            .await?;
        Ok(a.status)
    }

    /// `PUT /customer/{id}/access/{uid}/suspend` or `…/reactivate`.
    pub async fn set_suspended(
        &self,
        customer_id: i64,
        user_id: i64,
        suspend: bool,
    ) -> Result<u16, Error> {
        let verb = if suspend { "suspend" } else { "reactivate" };
        let path = format!("/customer/{customer_id}/access/{user_id}/{verb}");
        let a: Answer<serde_json::Value> = self
            .call::<(), _>(Method::PUT, &path, &[], None, OBJECT_BODY_CAP)
            .await?;
        Ok(a.status)
    }

    /// Reads `list` on from where it stopped to its end (see [`Client::read_more`]);
    /// the first page that fails ends it with its error.
    pub async fn read_on<T: DeserializeOwned + Keyed>(
        &self,
        list: &mut Listing<T>,
    ) -> Result<(), Error> {
        while !list.ended() {
            self.read_more(list).await?;
        }
        Ok(())
    }

    /// Reads the next wave of `list`'s pages. The first wave is the list's `first_wave`
    /// pages (one for a list whose length nothing suggests: its first page tells how
    /// many rows a page holds). The waves after it double (up to `MAX_WAVE`), each page
    /// at the offset the ones before it would reach, and are taken in order: the list
    /// ends at the first short page, and the rest of its wave is dropped (at most one
    /// wave of requests too many, none for a one-page list asked one page first). A
    /// page asked at an offset the pages before it did not reach (a server serving
    /// fewer rows a page than asked) is dropped too, and asked again at the right
    /// offset in the next wave, as is a page that failed on its own (a 5xx without
    /// `Retry-After`, a timeout, a dropped connection) after one before it was taken:
    /// `Ok` says the list moved on by a page at least (or ended). Any other failure is
    /// the answer (a 429 or a `Retry-After` is the caller's to obey), with the pages
    /// before it kept: a try again asks from the page that failed, not from the list's
    /// first. Stops with [`Error::List`] when a page repeats the one before
    /// it (a server that ignores `offset` would serve it forever) or when the rows
    /// outnumber the envelope's `count`, once that count shows itself a total.
    pub async fn read_more<T: DeserializeOwned + Keyed>(
        &self,
        list: &mut Listing<T>,
    ) -> Result<(), Error> {
        if list.ended {
            return Ok(());
        }
        if list.pages >= MAX_PAGES {
            return Err(Error::List(format!(
                "{}: the list did not end after {MAX_PAGES} pages",
                list.path
            )));
        }
        let offsets: Vec<u64> = (0..list.wave)
            .map(|k| list.offset + k * list.step)
            .collect();
        let pages = futures::future::join_all(
            offsets
                .iter()
                .map(|&offset| self.page::<T>(&list.path, &list.query, offset)),
        )
        .await;
        list.wave = (list.wave * 2).min(MAX_WAVE);
        for (k, (offset, page)) in offsets.into_iter().zip(pages).enumerate() {
            // A page asked for where the list no longer continues (a server that
            // served fewer than it said) is dropped; the next wave starts right.
            if offset != list.offset {
                break;
            }
            match page {
                Ok(page) => list.take(page)?,
                // A page's own trouble, after the list moved on: asked again as the
                // first page of the next wave.
                Err(e) if k > 0 && e.one_request_only() => break,
                // Anything else speaks for the whole API (slow down, wait, log in
                // again) and is heard; the pages before it are kept.
                Err(e) => return Err(e),
            }
            if list.ended {
                break;
            }
        }
        Ok(())
    }

    /// One page of a list, `PAGE_SIZE` rows asked from `offset`.
    async fn page<T: DeserializeOwned>(
        &self,
        path: &str,
        extra: &[(&'static str, String)],
        offset: u64,
    ) -> Result<Page<T>, Error> {
        let mut query = vec![
            ("limit", PAGE_SIZE.to_string()),
            ("offset", offset.to_string()),
        ];
        query.extend(extra.iter().cloned());
        let page: Answer<Page<T>> = self
            .call::<(), _>(Method::GET, path, &query, None, PAGE_BODY_CAP)
            .await?;
        Ok(page.body)
    }

    /// One call with authentication: a `401` logs in again (once for all tasks) and
    /// repeats the call; a `401` that survives fresh logins is final.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        cap: usize,
    ) -> Result<Answer<T>, Error> {
        let attempt = async {
            let mut relogins = 0;
            loop {
                let (token, generation) = self.current_token().await?;
                let result = self
                    .call_once(method.clone(), path, query, body, &token, cap)
                    .await;
                match result {
                    Err(Error::Http {
                        status: 401,
                        message,
                        ..
                    }) => {
                        if matches!(self.credentials, Credentials::ApiKey(_)) {
                            return Err(Error::Unauthorized(format!(
                                "the API refused the API key (HTTP 401: {message}); check BILLINGBOOTH_API_KEY"
                            )));
                        }
                        if relogins >= MAX_RELOGINS_PER_CALL {
                            return Err(Error::Unauthorized(format!(
                                "the API keeps refusing fresh tokens (HTTP 401: {message}); check the account's access"
                            )));
                        }
                        relogins += 1;
                        self.relogin(generation).await?;
                    }
                    other => return other,
                }
            }
        };
        attempt.await.map_err(|e| self.redacted(e))
    }

    /// The address of `path` under the base URL with `query` (each key and value
    /// percent-encoded); one without a query is parsed once.
    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Uri, Error> {
        let parse = |text: String| {
            text.parse::<Uri>()
                .map_err(|e| Error::Connect(format!("not a valid address: {e}")))
        };
        if !query.is_empty() {
            let pairs: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{}={}", encode_segment(k), encode_segment(v)))
                .collect();
            return parse(format!("{}{path}?{}", self.base, pairs.join("&")));
        }
        let mut urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(url) = urls.get(path) {
            return Ok(url.clone());
        }
        let url = parse(format!("{}{path}", self.base))?;
        if urls.len() >= URL_CACHE {
            urls.clear();
        }
        urls.insert(path.to_string(), url.clone());
        Ok(url)
    }

    /// `Bearer <token>`, marked sensitive; built again only when the token changes.
    fn bearer(&self, token: &Secret) -> Result<HeaderValue, Error> {
        let mut slot = self.bearer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((known, value)) = &*slot
            && known == token
        {
            return Ok(value.clone());
        }
        let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose()))
            .map_err(|_| Error::Transport("the token cannot be sent in a header".into()))?;
        value.set_sensitive(true);
        *slot = Some((token.clone(), value.clone()));
        Ok(value)
    }

    async fn call_once<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        token: &Secret,
        cap: usize,
    ) -> Result<Answer<T>, Error> {
        let body = body.map(json_body).transpose()?;
        let req = Http::request(
            method,
            self.url(path, query)?,
            Some(self.bearer(token)?),
            body,
        );
        let (status, retry_after, bytes) = self.exchange(req, path, cap).await?;
        if !status.is_success() {
            return Err(Error::Http {
                status: status.as_u16(),
                message: self.message(&bytes),
                retry_after,
            });
        }
        let body = decode_success::<T>(status, &bytes)?;
        Ok(Answer {
            status: status.as_u16(),
            body,
        })
    }

    /// Waits for the gate, sends `req` (for `path`, as the request log names it) and
    /// reads its answer, all within the client's timeout: from the moment it may leave
    /// to the last byte of its answer.
    async fn exchange(
        &self,
        req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
        path: &str,
        cap: usize,
    ) -> Result<(StatusCode, Option<Duration>, Vec<u8>), Error> {
        self.wait_turn().await?;
        let method = req.method().clone();
        let started = Instant::now();
        let answered = std::sync::atomic::AtomicBool::new(false);
        let exchange = async {
            let resp = self.http.send(req).await?;
            answered.store(true, std::sync::atomic::Ordering::Relaxed);
            log_request(&method, path, Some(resp.status()), started);
            self.read_answer(resp, cap).await
        };
        let outcome = tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(Error::Timeout(self.timeout)));
        if outcome.is_err() && !answered.load(std::sync::atomic::Ordering::Relaxed) {
            log_request(&method, path, None, started);
        }
        outcome
    }

    /// Reads an answer: its status, its `Retry-After` (a `429` also pauses the gate for
    /// everyone), and at most `cap` bytes of a success's body ([`ERROR_BODY_CAP`] of an
    /// error's). A success whose body is longer is a [`Error::Decode`]: the server may have
    /// acted, but its answer is not read; an error's body is simply cut.
    async fn read_answer(
        &self,
        resp: http::Answer,
        cap: usize,
    ) -> Result<(StatusCode, Option<Duration>, Vec<u8>), Error> {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        self.saw_status(status, retry_after);
        let cap = if status.is_success() {
            cap
        } else {
            ERROR_BODY_CAP
        };
        let too_long = || {
            Error::Decode(format!(
                "HTTP {} with a body over {} KiB; it was not read",
                status.as_u16(),
                cap / 1024
            ))
        };
        if status.is_success() && resp.announced_length().is_some_and(|n| n > cap as u64) {
            return Err(too_long());
        }
        let (bytes, cut) = resp.read_capped(cap).await?;
        if cut && status.is_success() {
            return Err(too_long());
        }
        Ok((status, retry_after, bytes))
    }

    /// The token to use now, logging in when there is none or it is near its end.
    async fn current_token(&self) -> Result<(Arc<Secret>, u64), Error> {
        if let Some(key) = &self.api_key {
            return Ok((key.clone(), 0));
        }
        {
            let state = self.token.read().await;
            if let (Some(token), Some(at)) = (&state.token, state.obtained)
                && at.elapsed() < TOKEN_REFRESH_AFTER
            {
                return Ok((token.clone(), state.generation));
            }
        }
        let generation = self.token.read().await.generation;
        self.relogin(generation).await?;
        let state = self.token.read().await;
        match &state.token {
            Some(t) => Ok((t.clone(), state.generation)),
            None => Err(Error::Unauthorized("no token after login".into())),
        }
    }

    /// Logs in unless another task already did since `seen_generation`.
    async fn relogin(&self, seen_generation: u64) -> Result<(), Error> {
        let _gate = self.login_gate.lock().await;
        if self.token.read().await.generation != seen_generation {
            return Ok(());
        }
        let Credentials::Password { email, password } = &self.credentials else {
            return Err(Error::Unauthorized("the API key was refused".into()));
        };
        let body = TokenRequest {
            email: email.clone(),
            password: password.expose().to_string(),
            grant_type: "password".into(),
        };
        let req = Http::request(
            Method::POST,
            self.url("/token", &[])?,
            None,
            Some(json_body(&body)?),
        );
        let (status, retry_after, bytes) = self.exchange(req, "/token", OBJECT_BODY_CAP).await?;
        if status == StatusCode::UNAUTHORIZED
            || status == StatusCode::FORBIDDEN
            || status == StatusCode::BAD_REQUEST
        {
            return Err(Error::Unauthorized(format!(
                "login refused for {email} (HTTP {}: {}); check BILLINGBOOTH_EMAIL and the password",
                status.as_u16(),
                self.message(&bytes)
            )));
        }
        if !status.is_success() {
            return Err(Error::Http {
                status: status.as_u16(),
                message: format!("login failed: {}", self.message(&bytes)),
                retry_after,
            });
        }
        let token: TokenResponse = decode_success(status, &bytes)?;
        if token.token.is_empty() {
            return Err(Error::Decode("login answered an empty token".into()));
        }
        self.redactor.add(&token.token);
        let mut state = self.token.write().await;
        state.token = Some(Arc::new(Secret::new(token.token)));
        state.generation += 1;
        state.obtained = Some(Instant::now());
        Ok(())
    }
}

/// `body` as the JSON a request carries.
fn json_body<B: Serialize>(body: &B) -> Result<Vec<u8>, Error> {
    // Nothing has left yet: the call is refused as one never made.
    serde_json::to_vec(body)
        .map_err(|e| Error::Connect(format!("the request could not be written as JSON: {e}")))
}

fn decode_success<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<T, Error> {
    // Bodiless successes (204, or an empty 200 to a resend) read as JSON null.
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        Error::Decode(format!(
            "HTTP {} with a body that is not the expected JSON ({e})",
            status.as_u16()
        ))
    })
}

/// The password in `url`'s authority (`scheme://user:password@host`), if it has one.
fn url_password(url: &str) -> Option<String> {
    let address = http::parse_address(url).ok()?;
    let (user, _) = address.authority()?.as_str().rsplit_once('@')?;
    user.split_once(':')
        .map(|(_, password)| password.to_string())
}

/// Percent-encodes one path segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A list read page by page, in order ([`Client::read_on`]): the rows so far and where
/// the next page starts. What was read survives a failed page, so a read tried again
/// goes on from there.
#[derive(Debug)]
pub struct Listing<T> {
    path: String,
    /// Asked with every page, besides `limit` and `offset`.
    query: Vec<(&'static str, String)>,
    out: Vec<T>,
    /// Where the next page starts.
    offset: u64,
    /// Rows a full page holds, as the server last said.
    step: u64,
    /// Pages asked for at once next.
    wave: u64,
    previous: Vec<i64>,
    total: Option<u64>,
    pages: u64,
    ended: bool,
}

impl Listing<Customer> {
    /// `GET /customer`: the customer directory.
    pub fn customers() -> Self {
        Listing::new("/customer".into(), Vec::new(), DIRECTORY_FIRST_WAVE)
    }
}

impl Listing<AccessUser> {
    /// `GET /customer/{id}/access`: a customer's access users, by e-mail.
    pub fn access(customer_id: i64) -> Self {
        Listing::new(
            format!("/customer/{customer_id}/access"),
            vec![("sort", "email".to_string())],
            1,
        )
    }
}

impl<T: Keyed> Listing<T> {
    fn new(path: String, query: Vec<(&'static str, String)>, first_wave: u64) -> Self {
        Listing {
            path,
            query,
            out: Vec::new(),
            offset: 0,
            step: PAGE_SIZE,
            wave: first_wave.clamp(1, MAX_WAVE),
            previous: Vec::new(),
            total: None,
            pages: 0,
            ended: false,
        }
    }

    /// Whether the list's last page has been read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Every row read: the whole list once [`Client::read_on`] has succeeded.
    pub fn into_rows(self) -> Vec<T> {
        self.out
    }

    /// Takes the page at `self.offset`; sets `ended` when it is the list's last.
    fn take(&mut self, page: Page<T>) -> Result<(), Error> {
        let (path, offset) = (&self.path, self.offset);
        self.pages += 1;
        let served = page.data.len() as u64;
        // What the server says it served, not what we asked for.
        let limit = page.limit.filter(|l| *l > 0).unwrap_or(PAGE_SIZE);
        let ids: Vec<i64> = page.data.iter().map(Keyed::key).collect();
        if served > 0 && ids == self.previous {
            return Err(Error::List(format!(
                "{path}: the page at offset {offset} repeats the one before it; the server seems to ignore `offset`"
            )));
        }
        // A count above what a page served is the list's total.
        self.total = self.total.or(page.count.filter(|c| *c > served));
        self.out.extend(page.data);
        if let Some(total) = self.total.filter(|t| self.out.len() as u64 > *t) {
            return Err(Error::List(format!(
                "{path}: {} rows read past the {total} the server counts; the server seems to ignore `offset`",
                self.out.len()
            )));
        }
        if served == 0 || served < limit {
            self.ended = true;
            return Ok(());
        }
        self.previous = ids;
        self.offset += served;
        self.step = served;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let c = Credentials::Password {
            email: "a@b.c".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// A server on a free loopback port that answers each request it reads with
    /// `answer(base)` (sent as is, then the connection held open a while; an empty
    /// answer sends nothing); counts the requests it read.
    fn server(answer: fn(&str) -> String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let reply = answer(&base);
        std::thread::spawn(move || {
            for stream in listener.incoming().take(8) {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 4096];
                if stream.read(&mut buf).unwrap_or(0) == 0 {
                    continue;
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream.write_all(reply.as_bytes());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(5));
                    drop(stream);
                });
            }
        });
        (base, seen)
    }

    fn client_of(base: &str, timeout: Duration) -> Client {
        Client::new(ClientConfig {
            base_url: base.to_string(),
            credentials: Credentials::ApiKey(Secret::new("k")),
            timeout,
            pool_size: 1,
        })
        .unwrap()
    }

    fn user() -> NewAccessUser {
        NewAccessUser {
            email: "a@b.io".into(),
            name: "A".into(),
            id: None,
            status: None,
        }
    }

    #[tokio::test]
    async fn an_invitation_answered_with_a_redirect_is_not_sent_again() {
        let (base, seen) = server(|base| {
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {base}/moved\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
        });
        let client = client_of(&base, Duration::from_secs(10));
        let answer = client.invite(7, &user()).await;
        assert!(
            matches!(answer, Err(Error::Http { status: 307, .. })),
            "{answer:?}"
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn no_answer_within_the_timeout_is_a_timeout_that_may_have_acted() {
        let (base, seen) = server(|_| String::new());
        let client = client_of(&base, Duration::from_millis(300));
        let answer = client.invite(7, &user()).await;
        assert!(matches!(answer, Err(Error::Timeout(_))), "{answer:?}");
        assert!(answer.unwrap_err().maybe_applied());
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_cut_short_within_the_timeout_is_a_timeout_too() {
        // The head arrives at once; the body it announces never does.
        let (base, _) =
            server(|_| "HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{\"id\":".to_string());
        let client = client_of(&base, Duration::from_millis(300));
        let answer = client.invite(7, &user()).await;
        assert!(matches!(answer, Err(Error::Timeout(_))), "{answer:?}");
    }

    #[tokio::test]
    async fn a_success_announcing_a_body_over_the_cap_is_refused_unread() {
        // Two megabytes announced, one byte sent: waiting for the rest would time out.
        let (base, _) =
            server(|_| "HTTP/1.1 201 Created\r\nContent-Length: 2000000\r\n\r\n{".to_string());
        let client = client_of(&base, Duration::from_secs(5));
        let answer = client.invite(7, &user()).await;
        let Err(Error::Decode(message)) = answer else {
            panic!("{answer:?}")
        };
        assert!(message.contains("it was not read"), "{message}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_call_never_made() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = client_of(&format!("http://127.0.0.1:{port}"), Duration::from_secs(5));
        let answer = client.invite(7, &user()).await;
        let Err(e @ Error::Connect(_)) = answer else {
            panic!("{answer:?}")
        };
        assert!(!e.maybe_applied());
        assert!(e.to_string().contains("refused"), "{e}");
    }

    #[tokio::test]
    async fn a_tls_handshake_that_fails_is_a_call_never_made() {
        // Plain HTTP where TLS was expected: the handshake fails before any request.
        let (base, _) = server(|_| "HTTP/1.1 400 Bad Request\r\n\r\n".to_string());
        let client = client_of(&base.replace("http://", "https://"), Duration::from_secs(5));
        let answer = client.invite(7, &user()).await;
        assert!(matches!(answer, Err(Error::Connect(_))), "{answer:?}");
    }

    #[test]
    fn a_query_is_percent_encoded() {
        let client = client_of("http://127.0.0.1:9", Duration::from_secs(1));
        let url = client
            .url(
                "/customer/1/access",
                &[("search", "a+b c@x.io".into()), ("offset", "0".into())],
            )
            .unwrap();
        assert_eq!(
            url.to_string(),
            "http://127.0.0.1:9/customer/1/access?search=a%2Bb%20c%40x.io&offset=0"
        );
    }

    #[test]
    fn a_password_in_the_base_url_is_found_to_be_redacted() {
        assert_eq!(
            url_password("https://ops:s3cret@api.example/v1").as_deref(),
            Some("s3cret")
        );
        assert_eq!(url_password("https://api.example/a@b:c"), None);
        assert_eq!(url_password("https://api.example"), None);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("AB-1"), "AB-1");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
