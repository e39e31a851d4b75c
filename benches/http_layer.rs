//! What an HTTP client layer costs a request: `requests` POSTs of an invitation to a
//! sandbox, `concurrency` at a time, through reqwest, through hyper-util's connection
//! pool, or on hyper's connections alone, one per sender (what the API client's layer
//! does with its idle list). Each answer's body is read and decoded as JSON, as the
//! client does. Prints requests a second; measure its CPU from outside
//! (`/usr/bin/time -f "%U %S"`), divided by `requests`.
//!
//! Usage: `cargo bench --bench http_layer -- reqwest|pool|connection BASE_URL [REQUESTS] [CONCURRENCY]`,
//! with `bbinvite sandbox` answering at BASE_URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Failure = Box<dyn std::error::Error + Send + Sync>;

fn body(i: u64) -> Vec<u8> {
    format!("{{\"email\": \"u{i}@layer.example\", \"name\": \"U {i}\"}}").into_bytes()
}

/// The next request's number, while fewer than `requests` are taken.
fn take(next: &AtomicU64, requests: u64) -> Option<u64> {
    Some(next.fetch_add(1, Ordering::Relaxed)).filter(|i| *i < requests)
}

/// Sends requests numbered from `next` until `requests` are taken, through reqwest.
async fn through_reqwest(
    client: reqwest::Client,
    url: reqwest::Url,
    next: Arc<AtomicU64>,
    requests: u64,
) -> Result<(), Failure> {
    while let Some(i) = take(&next, requests) {
        let answer = client
            .post(url.clone())
            .header("authorization", "Bearer bench-key")
            .header("content-type", "application/json")
            .body(body(i))
            .send()
            .await?;
        let bytes = answer.bytes().await?;
        let _: serde_json::Value = serde_json::from_slice(&bytes)?;
    }
    Ok(())
}

/// The same through hyper's pool alone.
async fn through_pool(
    client: Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    next: Arc<AtomicU64>,
    requests: u64,
) -> Result<(), Failure> {
    while let Some(i) = take(&next, requests) {
        let request = hyper::Request::post(uri.clone())
            .header("authorization", "Bearer bench-key")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body(i))))?;
        let answer =
            tokio::time::timeout(Duration::from_secs(30), client.request(request)).await??;
        let bytes = answer.into_body().collect().await?.to_bytes();
        let _: serde_json::Value = serde_json::from_slice(&bytes)?;
    }
    Ok(())
}

/// The same on one connection of its own, no pool: hyper's connection alone, as oha
/// sends.
async fn through_connection(
    uri: hyper::Uri,
    next: Arc<AtomicU64>,
    requests: u64,
) -> Result<(), Failure> {
    let authority = uri.authority().ok_or("no host")?.as_str().to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    while let Some(i) = take(&next, requests) {
        let request = hyper::Request::post(uri.clone())
            .header("host", &authority)
            .header("authorization", "Bearer bench-key")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body(i))))?;
        sender.ready().await?;
        let answer =
            tokio::time::timeout(Duration::from_secs(30), sender.send_request(request)).await??;
        let bytes = answer.into_body().collect().await?.to_bytes();
        let _: serde_json::Value = serde_json::from_slice(&bytes)?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    // cargo bench passes `--bench`; the rest are positional.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (Some(layer), Some(base)) = (args.first(), args.get(1)) else {
        eprintln!("usage: http_layer reqwest|pool|connection BASE_URL [REQUESTS] [CONCURRENCY]");
        std::process::exit(2);
    };
    let requests: u64 = args.get(2).map_or(Ok(100_000), |n| n.parse())?;
    let concurrency: u64 = args.get(3).map_or(Ok(64), |n| n.parse())?;
    let url = format!("{}/customer/1/access", base.trim_end_matches('/'));
    let next = Arc::new(AtomicU64::new(0));
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let reqwest = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency as usize * 2)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let pool = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency as usize * 2)
        .build(connector);
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let next = next.clone();
        match layer.as_str() {
            "reqwest" => senders.spawn(through_reqwest(
                reqwest.clone(),
                reqwest::Url::parse(&url)?,
                next,
                requests,
            )),
            "pool" => senders.spawn(through_pool(pool.clone(), url.parse()?, next, requests)),
            "connection" => senders.spawn(through_connection(url.parse()?, next, requests)),
            other => return Err(format!("no layer {other}: reqwest, pool or connection").into()),
        };
    }
    while let Some(sent) = senders.join_next().await {
        sent??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"layer\": \"{layer}\", \"requests\": {requests}, \"secs\": {secs:.3}, \"per_second\": {:.0}}}",
        requests as f64 / secs
    );
    Ok(())
}
