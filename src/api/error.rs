//! What can go wrong talking to the API, in terms the sending stage can act on.
//!
//! Messages never carry a secret: no token, key or password is ever formatted here.

use std::time::Duration;

/// One failed API call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The server answered with a non-2xx status. `message` is what its body said.
    #[error("HTTP {status}: {message}")]
    Http {
        status: u16,
        message: String,
        /// `Retry-After`, when the server sent one we could read (seconds or HTTP date).
        retry_after: Option<Duration>,
    },
    /// No answer within the timeout. The server may have acted on the request.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made: the request never reached the server.
    #[error("could not connect: {0}")]
    Connect(String),
    /// The connection broke after the request was sent. The server may have acted on it.
    #[error("connection lost before the answer: {0}")]
    Transport(String),
    /// The credentials were refused, even after logging in again.
    #[error("{0}")]
    Unauthorized(String),
    /// A 2xx answer whose body was not what the API documents.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// A list whose pages do not add up (a server that ignores `offset`, or serves more
    /// rows than it counts): reading on would never end or lie.
    #[error("the API's list cannot be read to its end: {0}")]
    List(String),
    /// The request was never sent: the run stopped while it waited for its turn.
    #[error("not sent: the run is stopping")]
    NotSent,
}

/// How a failure is counted in the ledger's attempts and by the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    ClientError,
    ServerError,
    RateLimited,
    Timeout,
    Transport,
    Auth,
    Decode,
    NotSent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::ClientError => "4xx",
            ErrorClass::ServerError => "5xx",
            ErrorClass::RateLimited => "429",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Transport => "transport",
            ErrorClass::Auth => "auth",
            ErrorClass::Decode => "decode",
            ErrorClass::NotSent => "not_sent",
        }
    }
}

impl Error {
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Http { status: 429, .. } => ErrorClass::RateLimited,
            Error::Http { status: 401, .. } | Error::Unauthorized(_) => ErrorClass::Auth,
            Error::Http { status, .. } if *status >= 500 => ErrorClass::ServerError,
            Error::Http { .. } => ErrorClass::ClientError,
            Error::Timeout(_) => ErrorClass::Timeout,
            Error::Connect(_) | Error::Transport(_) => ErrorClass::Transport,
            Error::Decode(_) | Error::List(_) => ErrorClass::Decode,
            Error::NotSent => ErrorClass::NotSent,
        }
    }

    /// Whether the failure is this request's own trouble, telling nothing of the
    /// calls around it: a 5xx that asks for no wait, a timeout, a connection lost. A
    /// 429, a `Retry-After`, refused credentials or an answer that makes no sense speak
    /// for every call.
    pub fn one_request_only(&self) -> bool {
        match self {
            Error::Http {
                status,
                retry_after,
                ..
            } => *status >= 500 && retry_after.is_none(),
            Error::Timeout(_) | Error::Connect(_) | Error::Transport(_) => true,
            Error::Unauthorized(_) | Error::Decode(_) | Error::List(_) | Error::NotSent => false,
        }
    }

    /// Whether the server may have acted on the request although we have no answer.
    /// A POST that failed this way must be checked before it is sent again.
    pub fn maybe_applied(&self) -> bool {
        match self {
            Error::Timeout(_) | Error::Transport(_) | Error::Decode(_) => true,
            // 429 and 503 say the request was turned away; other 5xx may come from a
            // proxy after the application acted.
            Error::Http { status, .. } => *status >= 500 && *status != 503,
            Error::Connect(_) | Error::Unauthorized(_) | Error::List(_) | Error::NotSent => false,
        }
    }
}

impl Error {
    /// The same error with every message passed through `redact`: the one way an
    /// error's text leaves the client.
    pub fn redacted(self, redact: impl Fn(&str) -> String) -> Error {
        match self {
            Error::Http {
                status,
                message,
                retry_after,
            } => Error::Http {
                status,
                message: redact(&message),
                retry_after,
            },
            Error::Connect(m) => Error::Connect(redact(&m)),
            Error::Transport(m) => Error::Transport(redact(&m)),
            Error::Unauthorized(m) => Error::Unauthorized(redact(&m)),
            Error::Decode(m) => Error::Decode(redact(&m)),
            Error::List(m) => Error::List(redact(&m)),
            e @ (Error::Timeout(_) | Error::NotSent) => e,
        }
    }
}

/// Pulls a person-readable message out of an error body: JSON with a message somewhere,
/// or plain text. `redact` runs on the whole text, then on what was picked out (the
/// JSON's strings unescaped), and only then is the message cut, so a cut never leaves
/// the start of a secret behind. Bounded, so a megabyte of HTML does not end up in the
/// ledger.
pub fn message_from_body(body: &[u8], redact: impl Fn(&str) -> String) -> String {
    const MAX: usize = 300;
    let text = redact(&String::from_utf8_lossy(body));
    let text = text.trim();
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        let mut parts = Vec::new();
        collect_messages(&json, &mut parts);
        if !parts.is_empty() {
            return truncate(&redact(&parts.join("; ")), MAX);
        }
    }
    if text.is_empty() {
        return "(empty body)".to_string();
    }
    truncate(text, MAX)
}

fn collect_messages(v: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    const KEYS: [&str; 6] = [
        "message",
        "error_description",
        "error",
        "detail",
        "title",
        "errors",
    ];
    match v {
        Value::String(s) if !s.trim().is_empty() && !out.iter().any(|o| o == s.trim()) => {
            out.push(s.trim().to_string());
        }
        Value::Array(items) => items.iter().for_each(|i| collect_messages(i, out)),
        Value::Object(map) => {
            let mut any = false;
            for key in KEYS {
                if let Some(inner) = map.get(key) {
                    any = true;
                    collect_messages(inner, out);
                }
            }
            if !any {
                // {"errors": {"email": ["taken"]}}: field-keyed lists
                for inner in map.values() {
                    if inner.is_array() || inner.is_string() {
                        collect_messages(inner, out);
                    }
                }
            }
        }
        _ => {}
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}

/// Reads `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        // Past what a Duration holds is "forever": the longest there is, not a panic.
        return Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_from_body(body: &[u8]) -> String {
        super::message_from_body(body, str::to_string)
    }

    #[test]
    fn a_secret_is_redacted_before_the_message_is_cut() {
        let body = format!("{}s3cret-password-here", "x".repeat(290));
        let m = super::message_from_body(body.as_bytes(), |t| {
            t.replace("s3cret-password-here", "[redacted]")
        });
        assert!(!m.contains("s3cret"), "{m}");
    }

    #[test]
    fn messages_from_json_shapes() {
        assert_eq!(
            message_from_body(br#"{"message":"User exists"}"#),
            "User exists"
        );
        assert_eq!(
            message_from_body(br#"{"message":"Invalid","errors":{"email":["The email has already been taken."]}}"#),
            "Invalid; The email has already been taken."
        );
        assert_eq!(message_from_body(br#"{"error":{"detail":"nope"}}"#), "nope");
        assert_eq!(message_from_body(b"Bad Gateway"), "Bad Gateway");
        assert_eq!(message_from_body(b""), "(empty body)");
        assert!(message_from_body(&[b'x'; 1000]).chars().count() <= 301);
    }

    #[test]
    fn retry_after_both_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let future = std::time::SystemTime::now() + Duration::from_secs(10);
        let d = parse_retry_after(&httpdate::fmt_http_date(future)).unwrap_or_default();
        assert!(d > Duration::from_secs(7) && d <= Duration::from_secs(10));
        let past = httpdate::fmt_http_date(std::time::SystemTime::UNIX_EPOCH);
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("1e30"), Some(Duration::MAX));
        assert_eq!(
            parse_retry_after("100000000"),
            Some(Duration::from_secs(100_000_000))
        );
    }

    #[test]
    fn ambiguity_of_failures() {
        let http = |status| Error::Http {
            status,
            message: String::new(),
            retry_after: None,
        };
        assert!(http(500).maybe_applied());
        assert!(http(504).maybe_applied());
        assert!(!http(503).maybe_applied());
        assert!(!http(429).maybe_applied());
        assert!(!http(404).maybe_applied());
        assert!(Error::Timeout(Duration::from_secs(1)).maybe_applied());
        assert!(!Error::Connect("refused".into()).maybe_applied());
        assert_eq!(http(429).class(), ErrorClass::RateLimited);
        assert_eq!(http(503).class(), ErrorClass::ServerError);
        assert_eq!(http(403).class(), ErrorClass::ClientError);
    }
}
