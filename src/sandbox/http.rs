//! The sandbox's HTTP face: the router, the middleware that puts every API call through
//! the gate (faults, credentials, counters), one handler per route, and the admin routes
//! under `/_sandbox` that tests use.
//!
//! Handlers only translate between HTTP and the store: JSON in and out, errors as
//! `{"message": "..."}`. They must not hold a lock across an await, nor log per request.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use crate::api::types::{
    AccessStatus, AccessUser, Customer, NewAccessUser, Page, TokenRequest, TokenResponse,
};

use super::delay;
use super::gate::{Admitted, Gate, Refused, Route};
use super::server::Hangup;
use super::state::{AccessQuery, CustomerFilter, Refusal, SandboxUser, Store};
use super::{Config, Faults, Login, Truth};

/// Rows a page serves when the caller names no `limit`.
const DEFAULT_PAGE: u64 = 25;
/// Rows a page serves at most, whatever was asked or capped.
const MAX_PAGE: u64 = 100;
/// The farthest a `Retry-After` date goes: a thousand years, well inside an HTTP date.
const MAX_DATE_AHEAD: u64 = 1000 * 365 * 86_400;
/// The pieces a huge body is streamed in.
const HUGE_BODY_CHUNK: usize = 64 * 1024;

/// The state every handler shares. Two locks, each held for one short call: the gate
/// (faults and counters) and the store (customers and users).
pub(crate) struct Shared {
    gate: Mutex<Gate>,
    store: Mutex<Store>,
    login: Option<Login>,
    /// TCP connections accepted, counted by the server.
    pub connections: Arc<AtomicU64>,
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        Shared {
            gate: Mutex::new(Gate::new(config.faults, config.seed, config.api_key)),
            store: Mutex::new(Store::new(config.customers)),
            login: config.login,
            connections: Arc::new(AtomicU64::new(0)),
        }
    }

    // A panic while holding a lock leaves plain counters and rows, still worth serving.
    pub fn gate(&self) -> MutexGuard<'_, Gate> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn truth(&self) -> Truth {
        let counters = self.gate().counters();
        Truth {
            requests_total: counters.requests_total,
            requests_by_route: counters.requests_by_route,
            keys: self.store().keys(),
            post_times_ms: counters.post_times_ms,
            request_times_ms: counters.request_times_ms,
            connections_total: self.connections.load(Ordering::Relaxed),
        }
    }
}

/// The whole sandbox: the API routes, each behind the gate, and the admin routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let gated = |route: Route, methods: MethodRouter<Arc<Shared>>| {
        methods.route_layer(middleware::from_fn_with_state(
            (Arc::clone(&shared), route),
            gate,
        ))
    };
    let access = "/customer/{id}/access";
    let api = Router::new()
        .route("/token", gated(Route::Token, post(token)))
        .route(
            "/customer",
            gated(Route::ListCustomers, get(list_customers)),
        )
        .route("/customer/{id}", gated(Route::Customer, get(customer)))
        .route(
            "/customer/reference/{reference}",
            gated(Route::CustomerByReference, get(customer_by_reference)),
        )
        .route(
            access,
            gated(Route::ListAccess, get(list_access)).merge(gated(Route::Invite, post(invite))),
        )
        .route(
            &format!("{access}/{{uid}}"),
            gated(Route::Access, get(access_user)),
        )
        .route(
            &format!("{access}/{{uid}}/resend"),
            gated(Route::Resend, post(resend)),
        )
        .route(
            &format!("{access}/{{uid}}/suspend"),
            gated(Route::Suspend, put(suspend)),
        )
        .route(
            &format!("{access}/{{uid}}/reactivate"),
            gated(Route::Reactivate, put(reactivate)),
        )
        .route("/_sandbox/truth", get(admin_truth))
        .route("/_sandbox/faults", get(admin_faults).put(admin_set_faults))
        .route("/_sandbox/access/{id}", get(admin_access));
    let unmatched = not_found.layer(middleware::from_fn_with_state(
        (Arc::clone(&shared), Route::Unmatched),
        gate,
    ));
    api.fallback(unmatched).with_state(shared)
}

/// Every API call passes here: counted, then refused by a fault or handled. Latency is
/// slept after the decision (so arrival times are true) and before any answer, counted
/// from the request's arrival to the microsecond (see `delay`).
async fn gate(
    State((shared, route)): State<(Arc<Shared>, Route)>,
    mut request: Request,
    next: Next,
) -> Response {
    let arrived = Instant::now();
    let (admitted, faults) = {
        let mut gate = shared.gate();
        let admitted = gate.admit(route, bearer(request.headers()));
        (admitted, gate.faults())
    };
    if faults.latency_ms > 0 {
        delay::until(arrived + Duration::from_millis(faults.latency_ms)).await;
    }
    let Admitted { hang_up } = match admitted {
        Ok(admitted) => admitted,
        Err(refused) => return ApiError::gated(refused, &faults).into_response(),
    };
    let hangup = if hang_up {
        request.extensions().get::<Hangup>().cloned()
    } else {
        None
    };
    request.extensions_mut().insert(faults);
    let response = next.run(request).await;
    match hangup {
        Some(hangup) => hangup.close().await,
        None => response,
    }
}

/// The token of `Authorization: Bearer <token>`, if that is what the header holds.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `Retry-After` in seconds, or as the HTTP date that many seconds ahead, rounded up to a
/// whole second so it is never sooner than the seconds would say.
fn retry_after(secs: u64, as_date: bool) -> HeaderValue {
    if !as_date {
        return HeaderValue::from(secs);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // An HTTP date has four digits of year: keep far dates this side of 9999.
    let whole = (now.as_secs() + u64::from(now.subsec_nanos() > 0))
        .saturating_add(secs.min(MAX_DATE_AHEAD));
    let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(whole));
    // An HTTP date is plain ASCII.
    HeaderValue::from_str(&date).unwrap_or_else(|_| HeaderValue::from(secs))
}

/// An error answer: a status and `{"message": ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: Cow<'static, str>,
    retry_after: Option<HeaderValue>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The answer to a request the gate refused.
    fn gated(refused: Refused, faults: &Faults) -> ApiError {
        match refused {
            Refused::Down => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable."),
            Refused::Limited { retry_after_secs } => ApiError {
                retry_after: Some(retry_after(
                    faults.retry_after_secs.unwrap_or(retry_after_secs),
                    faults.retry_after_date,
                )),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests.")
            },
            Refused::Unauthorized(message) => ApiError::new(StatusCode::UNAUTHORIZED, message),
            Refused::Failed => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Server error."),
        }
    }

    /// The answer to a refusal of the store; `faults` picks the duplicate's status.
    fn refused(refusal: Refusal, faults: &Faults) -> ApiError {
        match refusal {
            Refusal::NoCustomer => ApiError::new(StatusCode::NOT_FOUND, "Customer not found."),
            Refusal::NoUser => ApiError::new(StatusCode::NOT_FOUND, "Access user not found."),
            Refusal::Invalid(message) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message),
            Refusal::Exists if faults.duplicate_status == 422 => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The email has already been taken.",
            ),
            Refusal::Exists => ApiError::new(
                StatusCode::from_u16(faults.duplicate_status).unwrap_or(StatusCode::CONFLICT),
                "User already exists",
            ),
            Refusal::NotAwaiting => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Only a user awaiting activation can be sent the invitation again.",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Message<'a> {
            message: &'a str,
        }
        let mut response = (
            self.status,
            Json(Message {
                message: &self.message,
            }),
        )
            .into_response();
        if let Some(retry_after) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, retry_after);
        }
        response
    }
}

// A path segment that is not a number names nothing.
impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

type Answer<T> = Result<T, ApiError>;

/// The rows to serve: `limit` absent or 0 means the default page; never more than
/// `MAX_PAGE` nor the page cap. The envelope reports what was served at most.
fn window(offset: Option<u64>, limit: Option<u64>, faults: &Faults) -> (u64, u64) {
    let asked = limit.filter(|&l| l > 0).unwrap_or(DEFAULT_PAGE);
    let cap = faults.page_cap.unwrap_or(MAX_PAGE).max(1);
    let offset = if faults.ignore_offset {
        0
    } else {
        offset.unwrap_or(0)
    };
    (offset, asked.min(MAX_PAGE).min(cap))
}

fn page<T>(offset: u64, limit: u64, data: Vec<T>) -> Json<Page<T>> {
    Json(Page {
        limit: Some(limit),
        offset: Some(offset),
        count: Some(data.len() as u64),
        data,
    })
}

/// `POST /token`.
async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let echo_after = shared.gate().faults().token_echo_after;
    if echo_after.is_some_and(|n| shared.gate().logins() >= n) {
        return echo(&body);
    }
    match login(&shared, &body) {
        Ok(token) => Json(TokenResponse { token }).into_response(),
        Err(refused) => refused.into_response(),
    }
}

/// A 500 that repeats the request in a plain-text body, form-encoded and as sent.
fn echo(body: &[u8]) -> Response {
    let sent = String::from_utf8_lossy(body);
    let fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).unwrap_or_default();
    let form: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v.as_str().unwrap_or_default())))
        .collect();
    let text = format!(
        "Internal error handling POST /token?{} with body {sent}",
        form.join("&")
    );
    (StatusCode::INTERNAL_SERVER_ERROR, text).into_response()
}

/// `application/x-www-form-urlencoded`, as a server log line would show a field.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Checks a login and issues a token.
fn login(shared: &Shared, body: &[u8]) -> Answer<String> {
    let login: TokenRequest = serde_json::from_slice(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "The email, password and grant_type fields are required.",
        )
    })?;
    if login.grant_type != "password" {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "The grant type must be password.",
        ));
    }
    if let Some(only) = &shared.login
        && !(login.email.eq_ignore_ascii_case(&only.email) && login.password == only.password)
    {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials.",
        ));
    }
    Ok(shared.gate().issue_token())
}

#[derive(Debug, Deserialize)]
struct CustomerParams {
    limit: Option<u64>,
    offset: Option<u64>,
    status: Option<String>,
    letter: Option<String>,
    customer_group_id: Option<i64>,
}

/// `GET /customer`.
async fn list_customers(
    State(shared): State<Arc<Shared>>,
    Extension(faults): Extension<Faults>,
    params: Result<Query<CustomerParams>, QueryRejection>,
) -> Answer<Json<Page<Customer>>> {
    let Query(params) = params?;
    let (offset, limit) = window(params.offset, params.limit, &faults);
    let filter = CustomerFilter {
        status: params.status.as_deref().filter(|s| !s.is_empty()),
        letter: params.letter.as_deref().and_then(|l| l.chars().next()),
        group: params.customer_group_id,
    };
    let data = shared.store().customers(&filter, offset, limit);
    Ok(page(offset, limit, data))
}

/// `GET /customer/{id}`.
async fn customer(
    State(shared): State<Arc<Shared>>,
    Extension(faults): Extension<Faults>,
    id: Result<Path<i64>, PathRejection>,
) -> Answer<Json<Customer>> {
    let Path(id) = id?;
    let customer = shared.store().customer(id);
    customer
        .map(Json)
        .map_err(|r| ApiError::refused(r, &faults))
}

/// `GET /customer/reference/{reference}`.
async fn customer_by_reference(
    State(shared): State<Arc<Shared>>,
    Extension(faults): Extension<Faults>,
    reference: Result<Path<String>, PathRejection>,
) -> Answer<Json<Customer>> {
    let Path(reference) = reference?;
    let customer = shared.store().customer_by_reference(&reference);
    customer
        .map(Json)
        .map_err(|r| ApiError::refused(r, &faults))
}

#[derive(Debug, Deserialize)]
struct AccessParams {
    limit: Option<u64>,
    offset: Option<u64>,
    search: Option<String>,
    sort: Option<String>,
}

/// `GET /customer/{id}/access`.
async fn list_access(
    State(shared): State<Arc<Shared>>,
    Extension(faults): Extension<Faults>,
    id: Result<Path<i64>, PathRejection>,
    params: Result<Query<AccessParams>, QueryRejection>,
) -> Answer<Json<Page<AccessUser>>> {
    let Path(id) = id?;
    let Query(params) = params?;
    let (offset, limit) = window(params.offset, params.limit, &faults);
    let search = params.search.unwrap_or_default().to_lowercase();
    let query = AccessQuery {
        search: &search,
        matches: faults.search_matches,
        by_email: params.sort.as_deref() == Some("email"),
    };
    let data = shared.store().access_page(id, &query, offset, limit);
    let data = data.map_err(|r| ApiError::refused(r, &faults))?;
    Ok(page(offset, limit, data))
}

/// `POST /customer/{id}/access`: 404 for an unknown customer before anything else.
async fn invite(
    State(shared): State<Arc<Shared>>,
    Extension(faults): Extension<Faults>,
    id: Result<Path<i64>, PathRejection>,
    body: Bytes,
) -> Answer<Response> {
    let Path(id) = id?;
    if faults.customer_gone {
        return Ok(customer_gone());
    }
    let new = new_access_user(&body);
    let created_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let outcome = {
        let mut store = shared.store();
        match new {
            Ok(new) => store
                .invite(id, new, created_at)
                .map_err(|r| ApiError::refused(r, &faults)),
            Err(invalid) => Err(match store.customer(id) {
                Ok(_) => invalid,
                Err(refusal) => ApiError::refused(refusal, &faults),
            }),
        }
    };
    let user = outcome?;
    Ok(match faults.huge_body {
        Some(size) => huge_answer(&user, size),
        None => (StatusCode::CREATED, Json(user)).into_response(),
    })
}

/// The validation error a Laravel API gives for a customer id that names nothing.
fn customer_gone() -> Response {
    let body = serde_json::json!({
        "message": "The given data was invalid.",
        "errors": {"customer": ["The selected customer does not exist."]},
    });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

/// A 201 whose JSON is the user padded to `size` bytes, made as it is sent: the
/// sandbox never holds more than a chunk of it.
fn huge_answer(user: &AccessUser, size: u64) -> Response {
    let head = serde_json::to_string(user).unwrap_or_else(|_| "{}".into());
    let head = format!("{},\"pad\":\"", head.trim_end_matches('}'));
    let tail = "\"}";
    let pad = size.saturating_sub((head.len() + tail.len()) as u64);
    let chunk = Bytes::from(vec![b'x'; HUGE_BODY_CHUNK]);
    let pieces = (pad / HUGE_BODY_CHUNK as u64) as usize;
    let rest = chunk.slice(..(pad % HUGE_BODY_CHUNK as u64) as usize);
    let body = futures::stream::iter(
        std::iter::once(Bytes::from(head))
            .chain(std::iter::repeat_n(chunk, pieces))
            .chain([rest, Bytes::from_static(tail.as_bytes())])
            .map(Ok::<Bytes, std::convert::Infallible>),
    );
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::CREATED;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Reads an invitation body, naming the first field that is missing or wrong.
fn new_access_user(body: &[u8]) -> Answer<NewAccessUser> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "The body must be a JSON object."))?;
    for (field, message) in [
        ("email", "The email field is required."),
        ("name", "The name field is required."),
    ] {
        if !value.get(field).is_some_and(serde_json::Value::is_string) {
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message));
        }
    }
    let new: NewAccessUser = serde_json::from_value(value).map_err(|err| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("The given data was invalid: {err}"),
        )
    })?;
    // A client reads any status, but may set only the ones the API knows.
    if let Some(AccessStatus::Other(_)) = new.status {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The selected status is invalid.",
        ));
    }
    Ok(new)
}

type UserPath = Result<Path<(i64, i64)>, PathRejection>;

/// `GET /customer/{id}/access/{uid}`.
async fn access_user(
    State(shared): State<Arc<Shared>>,
    Extension(faults): Extension<Faults>,
    ids: UserPath,
) -> Answer<Json<AccessUser>> {
    let Path((id, uid)) = ids?;
    let user = shared.store().user(id, uid);
    user.map(Json).map_err(|r| ApiError::refused(r, &faults))
}

/// `POST …/resend`.
async fn resend(
    State(shared): State<Arc<Shared>>,
    Extension(faults): Extension<Faults>,
    ids: UserPath,
) -> Answer<Json<AccessUser>> {
    let Path((id, uid)) = ids?;
    let user = shared.store().resend(id, uid);
    user.map(Json).map_err(|r| ApiError::refused(r, &faults))
}

/// `PUT …/suspend`.
async fn suspend(
    State(shared): State<Arc<Shared>>,
    Extension(faults): Extension<Faults>,
    ids: UserPath,
) -> Answer<Json<AccessUser>> {
    let Path((id, uid)) = ids?;
    let user = shared.store().suspend(id, uid);
    user.map(Json).map_err(|r| ApiError::refused(r, &faults))
}

/// `PUT …/reactivate`.
async fn reactivate(
    State(shared): State<Arc<Shared>>,
    Extension(faults): Extension<Faults>,
    ids: UserPath,
) -> Answer<Json<AccessUser>> {
    let Path((id, uid)) = ids?;
    let user = shared.store().reactivate(id, uid);
    user.map(Json).map_err(|r| ApiError::refused(r, &faults))
}

/// Any path the API does not have.
async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found.")
}

/// `GET /_sandbox/truth`.
async fn admin_truth(State(shared): State<Arc<Shared>>) -> Json<Truth> {
    Json(shared.truth())
}

/// `GET /_sandbox/faults`.
async fn admin_faults(State(shared): State<Arc<Shared>>) -> Json<Faults> {
    Json(shared.gate().faults())
}

/// `PUT /_sandbox/faults`: the fields given replace the current ones, the rest stay.
async fn admin_set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Answer<Json<Faults>> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let patch: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
        .map_err(|err| bad(format!("expected a JSON object: {err}")))?;
    let mut gate = shared.gate();
    let mut faults = serde_json::to_value(gate.faults()).map_err(|err| bad(err.to_string()))?;
    if let Some(current) = faults.as_object_mut() {
        current.extend(patch);
    }
    let faults: Faults = serde_json::from_value(faults).map_err(|err| bad(err.to_string()))?;
    faults.validate().map_err(|err| bad(err.to_string()))?;
    gate.set_faults(faults);
    Ok(Json(faults))
}

/// `GET /_sandbox/access/{id}`: every access user, no paging, with resend counts.
async fn admin_access(
    State(shared): State<Arc<Shared>>,
    id: Result<Path<i64>, PathRejection>,
) -> Answer<Json<Vec<SandboxUser>>> {
    let Path(id) = id?;
    let users = shared.store().access_all(id);
    users
        .map(Json)
        .map_err(|r| ApiError::refused(r, &Faults::default()))
}
