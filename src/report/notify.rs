//! The webhook: a POST of the run's figures as JSON, with a `text` field that Slack and
//! Microsoft Teams incoming webhooks show as is. Three tries with backoff, 30 seconds in
//! all. The URL is a secret: it is never printed, logged or stored, and no error here
//! names it. Knows nothing of the ledger.

use std::time::Duration;

use serde::Serialize;

use super::{Figures, NOTIFY_URL_ENV};

/// Tries per notification.
const TRIES: u32 = 3;
/// The wait before the second and the third try.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
/// How long one try may take: three of them and the backoff fit in [`TOTAL`].
const PER_TRY: Duration = Duration::from_secs(8);
/// The longest a notification may hold up the end of a command.
const TOTAL: Duration = Duration::from_secs(30);

/// The body: the figures, and the line a chat shows.
#[derive(Serialize)]
struct Body<'a> {
    text: String,
    #[serde(flatten)]
    figures: &'a Figures,
    #[serde(skip_serializing_if = "Option::is_none")]
    attention: Option<String>,
}

/// The one line a person reads in the chat.
pub fn text(f: &Figures) -> String {
    let run = f.run.map(|r| format!(" (run {r})")).unwrap_or_default();
    let counts: Vec<String> = f
        .statuses
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    let counts = if counts.is_empty() {
        "no rows".to_string()
    } else {
        format!("{} rows: {}", f.rows, counts.join(", "))
    };
    let mut line = format!(
        "bbinvite {}{run}: {} (exit {}). {counts}; {} sent, {} done before; {:.1} s.",
        f.command, f.outcome, f.exit_code, f.sent, f.already_done, f.duration_secs
    );
    if let Some(cmd) = f.attention_command() {
        line.push_str(&format!(" Rows needing attention: {cmd}"));
    }
    line
}

/// POSTs the figures to `url`; the error, if any, is one line that does not show `url`.
/// Runs on a thread of its own, so it can be called from synchronous code inside or
/// outside an async runtime.
pub fn send(url: &str, f: &Figures) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).ok().filter(safe_scheme).ok_or_else(|| {
        format!("{NOTIFY_URL_ENV} is not an https URL (plain http only to this machine); no notification sent")
    })?;
    let body = Body {
        text: text(f),
        figures: f,
        attention: f.attention_command(),
    };
    let json = serde_json::to_vec(&body)
        .map_err(|e| format!("the notification could not be built: {e}"))?;
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("the notification could not start: {e}"))?;
            rt.block_on(async {
                match tokio::time::timeout(TOTAL, post_with_retries(parsed, json)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {} s", TOTAL.as_secs())),
                }
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the notification thread failed".into()))
    });
    outcome.map_err(|why| {
        format!(
            "the webhook in {NOTIFY_URL_ENV} was not notified ({why}); the exit code is unchanged; check the webhook URL and the network"
        )
    })
}

/// https anywhere; plain http only to a loopback address.
fn safe_scheme(url: &reqwest::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => url.host_str().is_some_and(|h| {
            h == "localhost"
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

async fn post_with_retries(url: reqwest::Url, json: Vec<u8>) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(PER_TRY)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|_| "the HTTP client could not start".to_string())?;
    let mut last = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            tokio::time::sleep(BACKOFF[(attempt as usize - 1).min(BACKOFF.len() - 1)]).await;
        }
        let sent = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json.clone())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => last = format!("HTTP {}", resp.status().as_u16()),
            // The error's text may hold the URL: only its kind is told.
            Err(e) if e.is_timeout() => last = format!("no answer within {} s", PER_TRY.as_secs()),
            Err(e) if e.is_connect() => last = "could not connect".into(),
            Err(_) => last = "the request failed".into(),
        }
    }
    Err(format!("{last}, {TRIES} tries"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_accepted() {
        let ok = |u: &str| {
            reqwest::Url::parse(u)
                .map(|u| safe_scheme(&u))
                .unwrap_or(false)
        };
        assert!(ok("https://hooks.slack.com/services/T/B/X"));
        assert!(ok("http://127.0.0.1:9/hook"));
        assert!(ok("http://[::1]:9/hook"));
        assert!(!ok("http://hooks.example.com/hook"));
        assert!(!ok("ftp://127.0.0.1/"));
    }

    #[test]
    fn a_bad_url_is_not_echoed() {
        let f = Figures::stopped_early("run", "aborted: x", 3, Duration::ZERO);
        let err = send("http://secret-host.example/T0/abc", &f).unwrap_err();
        assert!(!err.contains("secret-host"), "{err}");
        assert!(err.contains(NOTIFY_URL_ENV));
    }
}
