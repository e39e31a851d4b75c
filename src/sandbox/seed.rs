//! The sandbox's starting state: customers and the access users they already have, read
//! from a customers file or the built-in samples, or generated.
//!
//! Plain data and its checks only: this module must not know of HTTP, faults, or the live
//! state the server mutates.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::api::types::{AccessStatus, Customer, CustomerStatus};

/// The built-in customers, so a first run with `--sandbox` works from any directory.
pub(crate) const SAMPLES: &str = include_str!("../../samples/customers.json");

/// How old generated access users are: old enough for any `--resend-after` a test picks.
const GENERATED_USER_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A customer as a customers file spells it: the wire fields, plus what the sandbox needs
/// that `GET /customer` does not show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedCustomer {
    #[serde(flatten)]
    pub customer: Customer,
    /// Matched by `GET /customer?customer_group_id=`; a customer without one never matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_group_id: Option<i64>,
    /// Access users that exist before anyone invites: what a rerun or `sync` must discover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<SeedUser>,
}

/// An access user that already exists. Without an `id`, the sandbox numbers it; without a
/// `status`, it is active; without `created_at`, the API shows none (the case where no
/// resend can be dated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub email: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AccessStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// Reads a customers file: a JSON array of customer objects.
pub(crate) fn read(path: &Path) -> anyhow::Result<Vec<SeedCustomer>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading customers file {}", path.display()))?;
    parse(&text).with_context(|| format!("in customers file {}", path.display()))
}

/// Parses and checks a JSON array of customers.
pub(crate) fn parse(json: &str) -> anyhow::Result<Vec<SeedCustomer>> {
    let customers: Vec<SeedCustomer> =
        serde_json::from_str(json).context("expected a JSON array of customer objects")?;
    check(&customers)?;
    Ok(customers)
}

/// `count` synthetic customers with ids `1..=count`, all active, each with
/// `users_per_customer` active users invited 30 days before `now`.
pub(crate) fn generate(
    count: usize,
    users_per_customer: usize,
    now: SystemTime,
) -> Vec<SeedCustomer> {
    let created_at = humantime::format_rfc3339_seconds(now - GENERATED_USER_AGE).to_string();
    (1..=count)
        .map(|i| SeedCustomer {
            customer: Customer {
                id: i as i64,
                name: format!("Customer {i:05} Ltd"),
                reference: Some(format!("C{i:05}")),
                email: Some(format!("accounts@customer{i}.example")),
                kind: Some("business".to_owned()),
                status: CustomerStatus::Active,
            },
            customer_group_id: None,
            access: (1..=users_per_customer)
                .map(|j| SeedUser {
                    id: None,
                    email: format!("user{j}@customer{i}.example"),
                    name: format!("User {j}"),
                    status: Some(AccessStatus::Active),
                    created_at: Some(created_at.clone()),
                })
                .collect(),
        })
        .collect()
}

/// What would make the live state ambiguous: two customers with one id, two users with
/// one id, one e-mail twice on a customer.
fn check(customers: &[SeedCustomer]) -> anyhow::Result<()> {
    let mut customer_ids = HashSet::new();
    let mut user_ids = HashSet::new();
    for seed in customers {
        let id = seed.customer.id;
        if !customer_ids.insert(id) {
            bail!("customer id {id} appears twice");
        }
        let mut emails = HashSet::new();
        for user in &seed.access {
            if !emails.insert(user.email.to_lowercase()) {
                bail!("customer {id} lists access user {} twice", user.email);
            }
            if let Some(uid) = user.id
                && !user_ids.insert(uid)
            {
                bail!("access user id {uid} appears twice");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_acme_users() {
        let customers = parse(SAMPLES).expect("built-in samples parse");
        assert_eq!(customers.len(), 12);
        let acme = &customers[0];
        assert_eq!(acme.customer.id, 101);
        assert_eq!(acme.customer.kind.as_deref(), Some("business"));
        assert_eq!(acme.access.len(), 2);
        assert_eq!(
            acme.access[1].status,
            Some(AccessStatus::AwaitingActivation)
        );
        let cst = customers.iter().find(|c| c.customer.id == 108);
        assert_eq!(
            cst.map(|c| c.customer.name.as_str()),
            Some("Café Société Télécom")
        );
        let old = customers.iter().find(|c| c.customer.id == 104);
        assert_eq!(
            old.map(|c| c.customer.status),
            Some(CustomerStatus::Cancelled)
        );
    }

    #[test]
    fn duplicate_customer_ids_are_refused() {
        let json = r#"[{"id":1,"name":"A"},{"id":1,"name":"B"}]"#;
        assert!(parse(json).is_err());
    }

    #[test]
    fn duplicate_emails_on_one_customer_are_refused() {
        let json =
            r#"[{"id":1,"name":"A","access":[{"email":"a@x.example"},{"email":"A@x.example"}]}]"#;
        assert!(parse(json).is_err());
    }

    #[test]
    fn generated_customers_are_numbered_from_one() {
        let customers = generate(3, 2, SystemTime::now());
        assert_eq!(customers[2].customer.id, 3);
        assert_eq!(customers[2].customer.name, "Customer 00003 Ltd");
        assert_eq!(customers[2].customer.reference.as_deref(), Some("C00003"));
        assert_eq!(customers[2].access[1].email, "user2@customer3.example");
    }
}
