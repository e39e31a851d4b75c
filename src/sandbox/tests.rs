//! The sandbox over real HTTP on `127.0.0.1:0`: the API's shapes, every fault switch, and
//! what `Truth` records, each as a client would meet it.
//!
//! Tests assert counts and states, not timing; none sleeps more than a few milliseconds.

#![allow(clippy::unwrap_used)]

use clap::Parser;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};

use super::*;
use crate::api::types::{AccessStatus, AccessUser, Customer, Page, TokenResponse};

async fn start(config: Config) -> Sandbox {
    Sandbox::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

async fn start_with(faults: Faults) -> Sandbox {
    start(Config {
        faults,
        ..Config::samples()
    })
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn url(sandbox: &Sandbox, path: &str) -> String {
    format!("{}{path}", sandbox.base_url())
}

async fn get(sandbox: &Sandbox, path: &str) -> reqwest::Response {
    client()
        .get(url(sandbox, path))
        .bearer_auth("any-token")
        .send()
        .await
        .unwrap()
}

async fn invite(sandbox: &Sandbox, customer: i64, email: &str) -> reqwest::Response {
    client()
        .post(url(sandbox, &format!("/customer/{customer}/access")))
        .bearer_auth("any-token")
        .json(&json!({"email": email, "name": "Test Person"}))
        .send()
        .await
        .unwrap()
}

async fn message(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["message"].as_str().unwrap().to_owned()
}

fn emails(page: &Page<AccessUser>) -> Vec<&str> {
    page.data.iter().map(|u| u.email.as_str()).collect()
}

/// The CLI flags as `bbinvite sandbox` will see them.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn args(flags: &[&str]) -> Args {
    let mut argv = vec!["sandbox"];
    argv.extend_from_slice(flags);
    Cli::try_parse_from(argv).unwrap().args
}

#[tokio::test]
async fn no_paging_params_serve_the_default_page() {
    let sandbox = start(Config::samples()).await;
    let page: Page<Customer> = get(&sandbox, "/customer").await.json().await.unwrap();
    assert_eq!(
        (page.limit, page.offset, page.count),
        (Some(25), Some(0), Some(12))
    );
    assert_eq!(page.data[0].id, 101);
    assert_eq!(page.data[0].name, "Acme Telecom Ltd");
}

#[tokio::test]
async fn page_cap_limits_rows_and_the_envelope_says_so() {
    let sandbox = start_with(Faults {
        page_cap: Some(5),
        ..Faults::default()
    })
    .await;
    let first: Page<Customer> = get(&sandbox, "/customer?limit=100&offset=0")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((first.limit, first.count), (Some(5), Some(5)));
    let last: Page<Customer> = get(&sandbox, "/customer?limit=100&offset=10")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (last.limit, last.offset, last.count),
        (Some(5), Some(10), Some(2))
    );
    assert_eq!(last.data[1].id, 112);
    let past: Page<Customer> = get(&sandbox, "/customer?offset=50")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(past.count, Some(0));
}

#[tokio::test]
async fn limit_above_one_hundred_is_capped_anyway() {
    let sandbox = start(Config {
        customers: seed::generate(150, 0, SystemTime::now()),
        ..Config::samples()
    })
    .await;
    let page: Page<Customer> = get(&sandbox, "/customer?limit=500")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((page.limit, page.count), (Some(100), Some(100)));
}

#[tokio::test]
async fn customer_filters_by_status_and_letter() {
    let sandbox = start(Config::samples()).await;
    let page: Page<Customer> = get(&sandbox, "/customer?status=cancelled")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.data[0].reference.as_deref(), Some("NFC-OLD"));
    let page: Page<Customer> = get(&sandbox, "/customer?letter=H")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page.count, Some(2));
}

#[tokio::test]
async fn json_content_type_on_get_and_bodiless_post_is_accepted() {
    let sandbox = start(Config::samples()).await;
    let listed = client()
        .get(url(&sandbox, "/customer/101/access"))
        .bearer_auth("t")
        .header(CONTENT_TYPE, "application/json")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(
        listed.headers()[CONTENT_TYPE].to_str().unwrap(),
        "application/json"
    );
    // Raj Patel (id 2) still awaits activation.
    let resent = client()
        .post(url(&sandbox, "/customer/101/access/2/resend"))
        .bearer_auth("t")
        .header(CONTENT_TYPE, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resent.status(), StatusCode::OK);
}

#[tokio::test]
async fn customer_by_id_and_reference() {
    let sandbox = start(Config::samples()).await;
    let cafe: Customer = get(&sandbox, "/customer/reference/CST-108")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((cafe.id, cafe.name.as_str()), (108, "Café Société Télécom"));
    let pennine: Customer = get(&sandbox, "/customer/107").await.json().await.unwrap();
    assert_eq!(pennine.reference.as_deref(), Some("PNV-107"));
    assert_eq!(get(&sandbox, "/customer/999").await.status(), 404);
    assert_eq!(
        get(&sandbox, "/customer/reference/NOPE").await.status(),
        404
    );
    assert_eq!(get(&sandbox, "/customer/abc").await.status(), 404);
}

#[tokio::test]
async fn invitation_creates_an_access_user() {
    let sandbox = start(Config::samples()).await;
    let response = invite(&sandbox, 102, "New.Person@Brightwave.example").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let user: AccessUser = response.json().await.unwrap();
    assert_eq!(user.id, 3);
    assert_eq!(user.email, "New.Person@Brightwave.example");
    assert_eq!(user.status, Some(AccessStatus::AwaitingActivation));
    assert!(user.created_at.unwrap().ends_with('Z'));
    let fetched: AccessUser = get(&sandbox, "/customer/102/access/3")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fetched.email, "New.Person@Brightwave.example");
    // Existing users are not customers' fields.
    let acme: Value = get(&sandbox, "/customer/101").await.json().await.unwrap();
    assert!(acme.get("access").is_none());
}

#[tokio::test]
async fn duplicate_invitation_answers_409_or_422_as_configured() {
    let sandbox = start(Config::samples()).await;
    let again = invite(&sandbox, 101, "JANE.DOE@acmetelecom.example").await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(message(again).await, "User already exists");

    sandbox.set_faults(Faults {
        duplicate_status: 422,
        ..Faults::default()
    });
    let again = invite(&sandbox, 101, "jane.doe@acmetelecom.example").await;
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(message(again).await, "The email has already been taken.");
    assert_eq!(sandbox.access(101).unwrap().len(), 2);
}

#[tokio::test]
async fn invalid_invitations_are_refused_with_a_message() {
    let sandbox = start(Config::samples()).await;
    let post = |body: Value, customer: i64| {
        client()
            .post(url(&sandbox, &format!("/customer/{customer}/access")))
            .bearer_auth("t")
            .json(&body)
            .send()
    };
    let missing = post(json!({"name": "No Mail"}), 102).await.unwrap();
    assert_eq!(missing.status(), 422);
    assert_eq!(message(missing).await, "The email field is required.");
    let bad = post(json!({"email": "not-an-email", "name": "X"}), 102)
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let nameless = post(json!({"email": "a@b.example", "name": " "}), 102)
        .await
        .unwrap();
    assert_eq!(nameless.status(), 422);
    let status = post(
        json!({"email": "a@b.example", "name": "A", "status": "bogus"}),
        102,
    )
    .await
    .unwrap();
    assert_eq!(status.status(), 422);
    let unknown = post(json!({"name": "No Mail"}), 999).await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(sandbox.access(102).unwrap().is_empty());
}

#[tokio::test]
async fn search_matches_name_email_or_both() {
    let sandbox = start(Config::samples()).await;
    let search = |text: &'static str| {
        client()
            .get(url(&sandbox, "/customer/101/access"))
            .query(&[("search", text)])
            .bearer_auth("t")
            .send()
    };
    let search = |text: &'static str| {
        let sent = search(text);
        async move {
            sent.await
                .unwrap()
                .json::<Page<AccessUser>>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        emails(&search("RAJ").await),
        ["raj.patel@acmetelecom.example"]
    );
    assert!(search("acmetelecom").await.data.is_empty());
    assert_eq!(search("raj patel").await.data.len(), 1);

    let mut faults = Faults {
        search_matches: SearchMatches::Email,
        ..Faults::default()
    };
    sandbox.set_faults(faults);
    assert_eq!(search("acmetelecom").await.data.len(), 2);
    assert!(search("Raj Patel").await.data.is_empty());

    faults.search_matches = SearchMatches::Both;
    sandbox.set_faults(faults);
    assert_eq!(search("jane").await.data.len(), 1);
    assert_eq!(search("acmetelecom").await.data.len(), 2);
}

#[tokio::test]
async fn access_list_sorts_by_email_and_pages() {
    let sandbox = start(Config::samples()).await;
    invite(&sandbox, 101, "aaron@acmetelecom.example").await;
    let by_id: Page<AccessUser> = get(&sandbox, "/customer/101/access")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_id.data[2].email, "aaron@acmetelecom.example");
    let by_email: Page<AccessUser> = get(&sandbox, "/customer/101/access?sort=email&limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        emails(&by_email),
        ["aaron@acmetelecom.example", "jane.doe@acmetelecom.example"]
    );
    assert_eq!((by_email.limit, by_email.count), (Some(2), Some(2)));
    assert_eq!(get(&sandbox, "/customer/999/access").await.status(), 404);
}

#[tokio::test]
async fn resend_suspend_and_reactivate() {
    let sandbox = start(Config::samples()).await;
    let put = |path: &str| client().put(url(&sandbox, path)).bearer_auth("t").send();
    let resend = |path: &str| client().post(url(&sandbox, path)).bearer_auth("t").send();
    // Raj awaits activation: a resend is counted. Jane is active: refused.
    assert_eq!(
        resend("/customer/101/access/2/resend")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        resend("/customer/101/access/1/resend")
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        resend("/customer/101/access/99/resend")
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(sandbox.access(101).unwrap()[1].resends, 1);

    let suspended: AccessUser = put("/customer/101/access/1/suspend")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(suspended.status, Some(AccessStatus::Suspended));
    let back: AccessUser = put("/customer/101/access/1/reactivate")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(back.status, Some(AccessStatus::Active));
}

#[tokio::test]
async fn missing_bearer_is_401() {
    let sandbox = start(Config::samples()).await;
    let response = client()
        .get(url(&sandbox, "/customer"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let basic = client()
        .get(url(&sandbox, "/customer"))
        .basic_auth("a", Some("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_key_admits_itself_and_issued_tokens_only() {
    let sandbox = start(Config {
        api_key: Some("secret-key".into()),
        ..Config::samples()
    })
    .await;
    let with = |bearer: String| {
        client()
            .get(url(&sandbox, "/customer"))
            .bearer_auth(bearer)
            .send()
    };
    assert_eq!(with("secret-key".into()).await.unwrap().status(), 200);
    assert_eq!(with("guess".into()).await.unwrap().status(), 401);
    let token: TokenResponse = client()
        .post(url(&sandbox, "/token"))
        .json(&json!({"email": "a@b.example", "password": "p", "grant_type": "password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(with(token.token).await.unwrap().status(), 200);
}

#[tokio::test]
async fn login_must_match_when_set() {
    let sandbox = start(
        args(&["--login", "ops@example.com:hunter2"])
            .config()
            .unwrap(),
    )
    .await;
    let login = |email: &str, password: &str| {
        client()
            .post(url(&sandbox, "/token"))
            .header(CONTENT_TYPE, "application/json")
            .json(&json!({"email": email, "password": password, "grant_type": "password"}))
            .send()
    };
    assert_eq!(
        login("ops@example.com", "wrong").await.unwrap().status(),
        401
    );
    assert_eq!(
        login("OPS@example.com", "hunter2").await.unwrap().status(),
        200
    );
    let invalid = client()
        .post(url(&sandbox, "/token"))
        .json(&json!({"email": "ops@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
}

#[tokio::test]
async fn token_is_refused_once_its_ttl_has_passed() {
    let sandbox = start_with(Faults {
        token_ttl: Some(3600),
        ..Faults::default()
    })
    .await;
    let token: TokenResponse = client()
        .post(url(&sandbox, "/token"))
        .json(&json!({"email": "a@b.example", "password": "p", "grant_type": "password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let call = |bearer: &str| {
        client()
            .get(url(&sandbox, "/customer"))
            .bearer_auth(bearer)
            .send()
    };
    assert_eq!(call(&token.token).await.unwrap().status(), 200);
    // With a TTL only issued tokens count.
    assert_eq!(call("made-up").await.unwrap().status(), 401);
    // A TTL of zero has expired every token already: no need to wait a second.
    sandbox.set_faults(Faults {
        token_ttl: Some(0),
        ..Faults::default()
    });
    let expired = call(&token.token).await.unwrap();
    assert_eq!(expired.status(), 401);
    assert_eq!(message(expired).await, "Token has expired.");
}

#[tokio::test]
async fn down_answers_503_to_everything_but_admin() {
    let sandbox = start_with(Faults {
        down: true,
        ..Faults::default()
    })
    .await;
    assert_eq!(get(&sandbox, "/customer").await.status(), 503);
    assert_eq!(invite(&sandbox, 102, "a@b.example").await.status(), 503);
    let token = client()
        .post(url(&sandbox, "/token"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 503);
    assert_eq!(get(&sandbox, "/_sandbox/truth").await.status(), 200);
    assert!(sandbox.truth().keys.is_empty());
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_seconds_or_date() {
    let sandbox = start_with(Faults {
        rate_limit: Some(3),
        ..Faults::default()
    })
    .await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..5 {
        let response = get(&sandbox, "/customer").await;
        statuses.push(response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let limited = limited.unwrap();
    let seconds: u64 = limited.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(seconds >= 1);

    sandbox.set_faults(Faults {
        rate_limit: Some(3),
        retry_after_date: true,
        ..Faults::default()
    });
    let response = get(&sandbox, "/customer").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let date = response.headers()[RETRY_AFTER].to_str().unwrap().to_owned();
    let when = httpdate::parse_http_date(&date).unwrap();
    assert!(when > SystemTime::now());
    assert_eq!(sandbox.truth().requests_total, 6);
}

#[tokio::test]
async fn fail_rate_one_answers_500_and_creates_nothing() {
    let sandbox = start_with(Faults {
        fail_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let response = invite(&sandbox, 102, "a@b.example").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(message(response).await.contains("error"));
    assert!(sandbox.access(102).unwrap().is_empty());
    let truth = sandbox.truth();
    assert!(truth.keys.is_empty());
    assert_eq!(truth.post_times_ms.len(), 1);
}

#[tokio::test]
async fn drop_rate_one_closes_the_connection_after_creating() {
    let sandbox = start_with(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let sent = client()
        .post(url(&sandbox, "/customer/102/access"))
        .bearer_auth("t")
        .json(&json!({"email": "Lost@Brightwave.example", "name": "Lost Answer"}))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await;
    let error = sent.unwrap_err();
    assert!(!error.is_timeout(), "expected a closed connection: {error}");
    let truth = sandbox.truth();
    assert_eq!(
        truth.keys,
        [KeyTruth {
            customer_id: 102,
            email: "lost@brightwave.example".into(),
            created: 1,
            posts: 1,
        }]
    );
    assert_eq!(sandbox.access(102).unwrap().len(), 1);
    // Other routes still answer.
    assert_eq!(get(&sandbox, "/customer/102/access").await.status(), 200);
}

#[tokio::test]
async fn dropped_answer_sends_not_a_single_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sandbox = start_with(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let body = r#"{"email":"raw@b.example","name":"Raw"}"#;
    let request = format!(
        "POST /customer/102/access HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(sandbox.addr())
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    // A reset is as good as a close; either way nothing came back.
    assert!(read.is_err() || answer.is_empty(), "{answer:?}");
    assert_eq!(sandbox.truth().keys[0].created, 1);
}

#[tokio::test]
async fn seeded_faults_replay_the_same_sequence() {
    let run = || async {
        let sandbox = start(Config {
            faults: Faults {
                fail_rate: 0.5,
                ..Faults::default()
            },
            seed: Some(42),
            ..Config::samples()
        })
        .await;
        let mut statuses = Vec::new();
        for _ in 0..8 {
            statuses.push(get(&sandbox, "/customer/101").await.status().as_u16());
        }
        statuses
    };
    let first = run().await;
    assert_eq!(first, run().await);
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
}

#[tokio::test]
async fn truth_counts_api_calls_by_route_but_not_admin_calls() {
    let sandbox = start(Config::samples()).await;
    get(&sandbox, "/customer").await;
    get(&sandbox, "/customer/101/access?search=jane").await;
    invite(&sandbox, 102, "one@b.example").await;
    invite(&sandbox, 102, "ONE@b.example").await;
    invite(&sandbox, 103, "two@b.example").await;
    get(&sandbox, "/no/such/path").await;
    get(&sandbox, "/_sandbox/truth").await;
    get(&sandbox, "/_sandbox/access/101").await;

    let truth: Truth = get(&sandbox, "/_sandbox/truth").await.json().await.unwrap();
    assert_eq!(truth.requests_total, 6);
    assert_eq!(truth.requests_by_route["GET /customer"], 1);
    assert_eq!(truth.requests_by_route["GET /customer/{id}/access"], 1);
    assert_eq!(truth.requests_by_route["POST /customer/{id}/access"], 3);
    assert_eq!(truth.requests_by_route["unmatched"], 1);
    assert_eq!(truth.requests_by_route["POST /token"], 0);
    assert_eq!(truth.post_times_ms.len(), 3);
    assert_eq!(truth.request_times_ms.len(), 6);
    let keys: Vec<(i64, &str, u64, u64)> = truth
        .keys
        .iter()
        .map(|k| (k.customer_id, k.email.as_str(), k.created, k.posts))
        .collect();
    assert_eq!(
        keys,
        [(102, "one@b.example", 1, 2), (103, "two@b.example", 1, 1)]
    );
}

#[tokio::test]
async fn admin_faults_merge_a_partial_update() {
    let sandbox = start_with(Faults {
        page_cap: Some(7),
        ..Faults::default()
    })
    .await;
    let put = |body: Value| {
        client()
            .put(url(&sandbox, "/_sandbox/faults"))
            .json(&body)
            .send()
    };
    let merged: Faults = put(json!({"down": true, "duplicate_status": 422}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(merged.down);
    assert_eq!(merged.page_cap, Some(7));
    assert_eq!(sandbox.faults().duplicate_status, 422);
    assert_eq!(put(json!({"fail_rate": 2.0})).await.unwrap().status(), 400);
    assert_eq!(
        put(json!({"no_such_fault": 1})).await.unwrap().status(),
        400
    );
    assert!(sandbox.faults().down);
}

#[tokio::test]
async fn admin_access_lists_every_user_with_resends() {
    let sandbox = start(Config::samples()).await;
    let users: Vec<SandboxUser> = get(&sandbox, "/_sandbox/access/101")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(
        users[1].user.created_at.as_deref(),
        Some("2026-10-01T09:00:00Z")
    );
    assert_eq!(get(&sandbox, "/_sandbox/access/999").await.status(), 404);
}

#[tokio::test]
async fn generated_customers_carry_their_users() {
    let config = args(&["--generate-customers", "30", "--users-per-customer", "3"])
        .config()
        .unwrap();
    let sandbox = start(config).await;
    let page: Page<AccessUser> = get(&sandbox, "/customer/30/access")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        emails(&page),
        [
            "user1@customer30.example",
            "user2@customer30.example",
            "user3@customer30.example"
        ]
    );
    assert_eq!(page.data[0].status, Some(AccessStatus::Active));
    let customer: Customer = get(&sandbox, "/customer/reference/C00042")
        .await
        .json()
        .await
        .unwrap_or(Customer {
            id: 0,
            name: String::new(),
            reference: None,
            email: None,
            kind: None,
            status: crate::api::types::CustomerStatus::Other("none"),
        });
    assert_eq!(customer.id, 0, "only 30 were generated");
    let customers: Page<Customer> = get(&sandbox, "/customer?offset=25")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(customers.data[4].name, "Customer 00030 Ltd");
}

#[test]
fn args_are_checked() {
    assert!(args(&["--fail-rate", "1.5"]).config().is_err());
    assert!(args(&["--duplicate-status", "400"]).config().is_err());
    assert!(args(&["--login", "no-colon"]).config().is_err());
    assert!(Cli::try_parse_from(["sandbox", "--users-per-customer", "2"]).is_err());
    let config = args(&[
        "--search-matches",
        "both",
        "--page-cap",
        "10",
        "--seed",
        "1",
    ])
    .config()
    .unwrap();
    assert_eq!(config.faults.search_matches, SearchMatches::Both);
    assert_eq!(config.faults.page_cap, Some(10));
    assert_eq!(args(&[]).addr.port(), 8787);
}

#[test]
fn config_debug_hides_credentials() {
    let config = args(&["--api-key", "k3y", "--login", "a@b.example:pa55"])
        .config()
        .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("k3y") && !shown.contains("pa55"), "{shown}");
}
