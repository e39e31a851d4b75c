//! The webhook: a POST of the run's figures as JSON, with a `text` field that Slack and
//! Microsoft Teams incoming webhooks show as is. Three tries with backoff, 30 seconds in
//! all. The URL is a secret: it is never printed, logged or stored, and no error here
//! names it. Knows nothing of the ledger. Sends through the API client's HTTP layer
//! (`src/api/http.rs`), so the binary has one HTTP stack.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::header::HeaderValue;
use hyper::{Method, Uri};
use serde::Serialize;

use super::{Figures, NOTIFY_URL_ENV};
use crate::api::Error;
use crate::api::http::{Http, check_destination, parse_address};

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
    let target = Target::parse(url).ok_or_else(|| {
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
                match tokio::time::timeout(TOTAL, post_with_retries(target, json)).await {
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

/// Where the POST goes: the address without a user name and password, and those, if
/// the URL had them, as Basic authorization (as the general HTTP client sent them).
struct Target {
    uri: Uri,
    authorization: Option<HeaderValue>,
}

impl Target {
    /// `url` if it is safe to send to: https anywhere; plain http only to a loopback
    /// address.
    fn parse(url: &str) -> Option<Target> {
        let uri = parse_address(url.trim()).ok()?;
        check_destination(&uri).ok()?;
        let authority = uri.authority()?.as_str();
        let Some((userinfo, host_port)) = authority.rsplit_once('@') else {
            return Some(Target {
                uri,
                authorization: None,
            });
        };
        let authorization = basic(userinfo);
        let host_port = host_port.parse().ok()?;
        let mut parts = uri.into_parts();
        parts.authority = Some(host_port);
        Some(Target {
            uri: Uri::from_parts(parts).ok()?,
            authorization,
        })
    }
}

/// `user:password` (percent-encoded, as a URL holds them) as a Basic authorization,
/// marked sensitive; `None` when both are empty.
fn basic(userinfo: &str) -> Option<HeaderValue> {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    if user.is_empty() && password.is_empty() {
        return None;
    }
    let mut pair: Vec<u8> = percent_encoding::percent_decode_str(user).collect();
    pair.push(b':');
    pair.extend(percent_encoding::percent_decode_str(password));
    // Base64 is visible ASCII: always a valid header value.
    let mut value = HeaderValue::try_from(format!("Basic {}", BASE64.encode(pair))).ok()?;
    value.set_sensitive(true);
    Some(value)
}

async fn post_with_retries(target: Target, json: Vec<u8>) -> Result<(), String> {
    // Connecting is part of a try. The answer's body is not read, so its connection is
    // not kept: each try makes its own.
    let http = Http::new(1, PER_TRY).map_err(|_| "the HTTP client could not start".to_string())?;
    let mut last = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            tokio::time::sleep(BACKOFF[(attempt as usize - 1).min(BACKOFF.len() - 1)]).await;
        }
        let req = Http::request(
            Method::POST,
            target.uri.clone(),
            target.authorization.clone(),
            Some(json.clone()),
        );
        // A redirect is an answer that is not a success: it is not followed.
        match tokio::time::timeout(PER_TRY, http.send(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => return Ok(()),
            Ok(Ok(resp)) => last = format!("HTTP {}", resp.status().as_u16()),
            // The error's text may hold the URL: only its kind is told.
            Err(_) => last = format!("no answer within {} s", PER_TRY.as_secs()),
            Ok(Err(Error::Connect(_))) => last = "could not connect".into(),
            Ok(Err(_)) => last = "the request failed".into(),
        }
    }
    Err(format!("{last}, {TRIES} tries"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn ok(url: &str) -> bool {
        Target::parse(url).is_some()
    }

    #[test]
    fn only_https_or_loopback_http_is_accepted() {
        assert!(ok("https://hooks.slack.com/services/T/B/X"));
        assert!(ok("HTTPS://hooks.slack.com/services/T/B/X"));
        assert!(ok("http://127.0.0.1:9/hook"));
        assert!(ok("http://[::1]:9/hook"));
        assert!(ok("http://localhost:9/hook"));
        assert!(ok("http://LOCALHOST:9/hook"));
        assert!(!ok("http://hooks.example.com/hook"));
        assert!(!ok("http://localhost.example.com/hook"));
        assert!(!ok("http://[::2]:9/hook"));
        assert!(!ok("ftp://127.0.0.1/"));
        assert!(!ok("ws://127.0.0.1:9/"));
    }

    #[test]
    fn what_is_not_an_address_with_a_host_is_refused() {
        assert!(!ok("hooks.slack.com/services/T/B/X"));
        assert!(!ok("https:///services"));
        assert!(!ok("https://:443/services"));
        assert!(!ok("http://[]:9/hook"));
        // The http crate alone would send these to port 80 of 127.0.0.1, and to "ops".
        assert!(!ok("http://127.0.0.1:abc/hook"));
        assert!(!ok("https://ops:a/b@hooks.example.com/hook"));
    }

    #[test]
    fn a_urls_credentials_become_basic_authorization_and_leave_the_address() {
        let t = Target::parse("https://ops:p%40ss@hooks.example.com:8443/T/B?x=1").unwrap();
        assert_eq!(t.uri.to_string(), "https://hooks.example.com:8443/T/B?x=1");
        let auth = t.authorization.unwrap();
        assert_eq!(auth.to_str().unwrap(), "Basic b3BzOnBAc3M=");
        assert!(auth.is_sensitive());
        let t = Target::parse("https://ops@hooks.example.com/T").unwrap();
        assert_eq!(t.authorization.unwrap().to_str().unwrap(), "Basic b3BzOg==");
        for empty in ["http://@127.0.0.1:9/hook", "http://:@127.0.0.1:9/hook"] {
            let t = Target::parse(empty).unwrap();
            assert_eq!(t.uri.to_string(), "http://127.0.0.1:9/hook");
            assert!(t.authorization.is_none());
        }
        let t = Target::parse("https://hooks.example.com/T").unwrap();
        assert!(t.authorization.is_none());
    }

    #[test]
    fn a_bad_url_is_not_echoed() {
        let f = Figures::stopped_early("run", "aborted: x", 3, Duration::ZERO);
        let err = send("http://secret-host.example/T0/abc", &f).unwrap_err();
        assert!(!err.contains("secret-host"), "{err}");
        assert!(err.contains(NOTIFY_URL_ENV));
    }

    /// Each request a receiver got: its head (lowercased) and its body.
    type Seen = Arc<Mutex<Vec<(String, String)>>>;

    /// A receiver on 127.0.0.1:0 that answers every request with `answer` and keeps
    /// each request's head and body.
    fn receiver(answer: String) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut head, mut length) = (String::new(), 0);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&lower);
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                kept.lock().unwrap().push((head, body));
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        (address, seen)
    }

    #[test]
    fn the_post_carries_the_json_and_the_urls_credentials() {
        let (address, seen) =
            receiver("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".into());
        let f = Figures::stopped_early("run", "aborted: x", 3, Duration::ZERO);
        send(&format!("http://ops:p%40ss@{address}/hook/T0?x=1"), &f).unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let (head, body) = &seen[0];
        assert!(head.starts_with("post /hook/t0?x=1 http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("host: {address}\r\n")), "{head}");
        assert!(
            head.contains("content-type: application/json\r\n"),
            "{head}"
        );
        assert!(
            head.contains("authorization: basic b3bzonbac3m=\r\n"),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["exit_code"], 3);
        assert!(body["text"].as_str().unwrap().starts_with("bbinvite run"));
    }

    /// Three tries, 4 s of backoff: a redirect is a failed try, and its target never
    /// hears of the run.
    #[test]
    fn a_redirect_is_not_followed() {
        let (elsewhere, followed) = receiver("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".into());
        let answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://{elsewhere}/hook\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let (address, seen) = receiver(answer);
        let f = Figures::stopped_early("run", "aborted: x", 3, Duration::ZERO);
        let err = send(&format!("http://{address}/hook"), &f).unwrap_err();
        assert!(err.contains("HTTP 307, 3 tries"), "{err}");
        assert!(!err.contains(&address), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 3);
        assert!(followed.lock().unwrap().is_empty());
    }
}
