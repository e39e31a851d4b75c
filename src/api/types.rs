//! The API's data as it travels on the wire: customers, access users, page envelopes.
//!
//! Shared by the client and the sandbox so both speak the same JSON. Knows nothing of
//! the pipeline. Unknown fields are ignored on read: the real API carries many more.

use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What the API calls a customer (section 1 of the spec); only the fields we use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub status: CustomerStatus,
}

/// A customer's standing. Anything unknown is kept as its text (`Other`) rather than
/// failing the page: the API may add a standing tomorrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CustomerStatus {
    #[default]
    Active,
    Suspended,
    Cancelled,
    Deleted,
    /// A standing this tool does not know, as the API spelled it.
    Other(&'static str),
}

impl CustomerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerStatus::Active => "active",
            CustomerStatus::Suspended => "suspended",
            CustomerStatus::Cancelled => "cancelled",
            CustomerStatus::Deleted => "deleted",
            CustomerStatus::Other(text) => text,
        }
    }

    pub fn parse(s: &str) -> CustomerStatus {
        match s {
            "active" => CustomerStatus::Active,
            "suspended" => CustomerStatus::Suspended,
            "cancelled" => CustomerStatus::Cancelled,
            "deleted" => CustomerStatus::Deleted,
            _ => CustomerStatus::Other(intern(s)),
        }
    }
}

/// The status of a portal user, as the API and the input sheet spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessStatus {
    Active,
    Suspended,
    AwaitingActivation,
    /// A status the API sent that this tool does not know, as it spelled it (the input
    /// sheet never yields one: [`AccessStatus::parse_loose`] refuses unknown text).
    Other(&'static str),
}

impl AccessStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessStatus::Active => "active",
            AccessStatus::Suspended => "suspended",
            AccessStatus::AwaitingActivation => "awaitingActivation",
            AccessStatus::Other(text) => text,
        }
    }

    /// Reads a status exactly as the API spells it; anything else is kept as `Other`.
    pub fn parse(s: &str) -> AccessStatus {
        match s {
            "active" => AccessStatus::Active,
            "suspended" => AccessStatus::Suspended,
            "awaitingActivation" => AccessStatus::AwaitingActivation,
            _ => AccessStatus::Other(intern(s)),
        }
    }

    /// Reads a status the way people type it: case, spaces, hyphens and underscores ignored.
    pub fn parse_loose(s: &str) -> Option<AccessStatus> {
        let folded: String = s
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        match folded.as_str() {
            "active" => Some(AccessStatus::Active),
            "suspended" => Some(AccessStatus::Suspended),
            "awaitingactivation" => Some(AccessStatus::AwaitingActivation),
            _ => None,
        }
    }
}

/// Both statuses travel as plain strings; an unknown one is kept, never a decode error.
macro_rules! status_as_string {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Ok(<$ty>::parse(&text))
            }
        }
    };
}
status_as_string!(CustomerStatus);
status_as_string!(AccessStatus);

/// Distinct unknown status texts kept; past this many (a server gone wrong), the rest
/// read as `other`. Bounds what [`intern`] may ever hold.
const MAX_UNKNOWN_STATUSES: usize = 64;
/// An unknown status longer than this is cut: it is a label, not a document.
const MAX_STATUS_LEN: usize = 40;

/// A `'static` copy of an unknown status text, so the status types stay `Copy`. Each
/// distinct text is stored once, and at most [`MAX_UNKNOWN_STATUSES`] of them.
fn intern(text: &str) -> &'static str {
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let text: String = text.trim().chars().take(MAX_STATUS_LEN).collect();
    if text.is_empty() {
        return "other";
    }
    let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = seen.iter().find(|s| **s == text) {
        return known;
    }
    if seen.len() >= MAX_UNKNOWN_STATUSES {
        return "other";
    }
    let kept: &'static str = Box::leak(text.into_boxed_str());
    seen.push(kept);
    kept
}

/// A user with access to a customer's portal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessUser {
    pub id: i64,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AccessStatus>,
    /// Likely but not known to exist on the real API; dates an invitation the ledger never saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// What a run reads of the answer to an invitation: the access user's id (the rest
/// of the object is read past, not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Invited {
    pub id: i64,
}

/// The body of `POST /customer/{id}/access`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAccessUser {
    pub email: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AccessStatus>,
}

/// What a list row is known by: how paging tells one page from the next.
pub trait Keyed {
    fn key(&self) -> i64;
}

impl Keyed for Customer {
    fn key(&self) -> i64 {
        self.id
    }
}

impl Keyed for AccessUser {
    fn key(&self) -> i64 {
        self.id
    }
}

/// The envelope of every list call. `limit` and `count` say what the server served,
/// which need not be what was asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

/// `POST /token` request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    pub email: String,
    pub password: String,
    pub grant_type: String,
}

/// `POST /token` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_statuses_are_kept_as_text_not_refused() {
        let page: Page<AccessUser> = serde_json::from_str(
            r#"{"data":[{"id":1,"email":"a@b.c","status":"deleted"},{"id":2,"status":"active"}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.data[0].status, Some(AccessStatus::Other("deleted")));
        assert_eq!(page.data[1].status, Some(AccessStatus::Active));
        let back = serde_json::to_string(&page.data[0]).unwrap_or_default();
        assert!(back.contains(r#""status":"deleted""#), "{back}");
        let c: Customer = serde_json::from_str(r#"{"id":3,"status":"archived"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.status, CustomerStatus::Other("archived"));
        assert_eq!(CustomerStatus::parse(c.status.as_str()), c.status);
        assert_eq!(AccessStatus::parse_loose("deleted"), None);
    }
}
