//! The one redaction step: every message that comes from the API or the network passes
//! here before anything prints or stores it, and leaves without the secrets the client
//! knows (password, API key, token) in any form a server might echo them (as sent,
//! JSON-escaped, URL-encoded), nor credentials written into a URL.
//!
//! It only rewrites text: it must not log, and never hands a secret back out.

use std::sync::{PoisonError, RwLock};

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// The secrets to hide, each in every form it may take in an echo.
#[derive(Default)]
pub struct Redactor {
    forms: RwLock<Vec<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor(***)")
    }
}

impl Redactor {
    /// Hides `secret` from now on. Empty secrets are ignored.
    pub fn add(&self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let mut forms = self.forms.write().unwrap_or_else(PoisonError::into_inner);
        for form in forms_of(secret) {
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
        // Longest first, so a form never leaves a tail of a longer one behind.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    }

    /// `text` without any known secret, nor a URL's user name and password.
    pub fn redact(&self, text: &str) -> String {
        let mut out = strip_url_credentials(text);
        let forms = self.forms.read().unwrap_or_else(PoisonError::into_inner);
        for form in forms.iter() {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), REDACTED);
            }
        }
        out
    }
}

/// A secret as sent, JSON-escaped (as serde writes it, and with `\u` escapes for
/// anything not ASCII, in either case), and percent-encoded (space as `%20` or `+`, hex
/// in either case).
fn forms_of(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    for upper in [false, true] {
        forms.push(ascii_json(secret, upper));
    }
    // PHP's json_encode also escapes `/`.
    let slashed: Vec<String> = forms[1..].iter().map(|f| f.replace('/', "\\/")).collect();
    forms.extend(slashed);
    for space in ["%20", "+"] {
        let encoded = percent_encode(secret, space);
        forms.push(lowercase_hex(&encoded));
        forms.push(encoded);
    }
    forms
}

/// JSON string content with every non-ASCII or control character as `\uXXXX`.
fn ascii_json(s: &str, upper: bool) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    if upper {
                        out.push_str(&format!("\\u{u:04X}"));
                    } else {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
        }
    }
    out
}

/// Percent-encodes every byte but the unreserved ones; a space becomes `space`.
fn percent_encode(s: &str, space: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b' ' => out.push_str(space),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `%2F` → `%2f`, the rest as it is.
fn lowercase_hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&code.to_ascii_lowercase());
        rest = &rest[at + code.len()..];
    }
    out.push_str(rest);
    out
}

/// `scheme://user:password@host` → `scheme://[redacted]@host`, wherever it occurs. A
/// password may hold a `/` that was not escaped (`https://ops:a/b@host`), so the `@`
/// that ends the credentials is looked for up to the query, not only to the path: an
/// `@` in a path hides that part of the path too, which is the safe side.
pub fn strip_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| matches!(c, '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace())
            .unwrap_or(after.len());
        let address = &after[..end];
        match address.rfind('@') {
            Some(userinfo_end) => {
                out.push_str(REDACTED);
                out.push_str(&address[userinfo_end..]);
            }
            None => out.push_str(address),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "Pw \"q/7\\ü&x=y+z";

    #[test]
    fn every_echoed_form_of_a_secret_is_hidden() {
        let r = Redactor::default();
        r.add(PW);
        let json =
            serde_json::to_string(&serde_json::json!({ "password": PW })).unwrap_or_default();
        let echoed = format!(
            "body {json} query password=Pw+%22q%2F7%5C%C3%BC%26x%3Dy%2Bz or Pw%20%22q%2f7%5c%c3%bc%26x%3dy%2bz ascii Pw \\\"q/7\\\\\\u00fc&x=y+z raw {PW}"
        );
        let clean = r.redact(&echoed);
        assert!(!clean.contains("q/7"), "{clean}");
        assert!(
            !clean.contains("q%2F7") && !clean.contains("q%2f7"),
            "{clean}"
        );
        assert_eq!(clean.matches(REDACTED).count(), 5, "{clean}");
    }

    #[test]
    fn credentials_in_urls_are_hidden() {
        let r = Redactor::default();
        assert_eq!(
            r.redact("error sending request for url (https://ops:s3cret@api.example/token)"),
            "error sending request for url (https://[redacted]@api.example/token)"
        );
        assert_eq!(
            r.redact("see https://api.example/x"),
            "see https://api.example/x"
        );
        assert_eq!(r.redact("no url"), "no url");
        // A `/` in the password, unescaped: the credentials end at the last `@`.
        assert_eq!(
            r.redact("the base URL \"https://ops:a/b@api.example/v1\" is not a URL"),
            "the base URL \"https://[redacted]@api.example/v1\" is not a URL"
        );
        // An `@` in a query is an e-mail searched for, not a credential.
        assert_eq!(
            r.redact("GET https://api.example/customer/1/access?search=a@b.io"),
            "GET https://api.example/customer/1/access?search=a@b.io"
        );
    }
}
