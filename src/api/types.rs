//! The API's data as it travels on the wire: customers, access users, page envelopes.
//!
//! Shared by the client and the sandbox so both speak the same JSON. Knows nothing of
//! the pipeline. Unknown fields are ignored on read: the real API carries many more.

use serde::{Deserialize, Serialize};

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

/// A customer's standing. Anything unknown reads as `Other` rather than failing the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomerStatus {
    #[default]
    Active,
    Suspended,
    Cancelled,
    Deleted,
    #[serde(other)]
    Other,
}

impl CustomerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerStatus::Active => "active",
            CustomerStatus::Suspended => "suspended",
            CustomerStatus::Cancelled => "cancelled",
            CustomerStatus::Deleted => "deleted",
            CustomerStatus::Other => "other",
        }
    }

    pub fn parse(s: &str) -> CustomerStatus {
        match s {
            "active" => CustomerStatus::Active,
            "suspended" => CustomerStatus::Suspended,
            "cancelled" => CustomerStatus::Cancelled,
            "deleted" => CustomerStatus::Deleted,
            _ => CustomerStatus::Other,
        }
    }
}

/// The status of a portal user, as the API and the input sheet spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessStatus {
    #[serde(rename = "active")]
    Active,
    #[serde(rename = "suspended")]
    Suspended,
    #[serde(rename = "awaitingActivation")]
    AwaitingActivation,
}

impl AccessStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessStatus::Active => "active",
            AccessStatus::Suspended => "suspended",
            AccessStatus::AwaitingActivation => "awaitingActivation",
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
