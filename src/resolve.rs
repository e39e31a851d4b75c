//! Resolving: a row's customer (name, id or reference) becomes a customer id, or the
//! reason it cannot.
//!
//! Names match after Unicode NFKC, full case folding (`Straße` is `STRASSE`) and
//! whitespace folding. Several
//! customers with one name: an active one wins over suspended, cancelled or deleted
//! ones; several active ones are ambiguous. No match: the closest names are suggested.
//! The [`Resolver`] is the only part that may ask the API: a reference it has not seen
//! is looked up (through the attempt runner, as every call) and its answer cached in a
//! [`ReferenceCache`]; names and ids are answered from the [`Directory`] alone.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use caseless::Caseless;
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

use crate::api::types::{Customer, CustomerStatus};
use crate::input::Invitee;
use crate::send::{Failure, Sender, explain};

/// How many close names an unresolved row suggests.
const SUGGESTIONS: usize = 3;
/// Names less similar than this (Jaro-Winkler on normalised names) are not suggested.
const SUGGESTION_FLOOR: f64 = 0.75;

/// Folds a name for matching: NFKC, full Unicode case folding (then NFKC again, as
/// folding may undo it), one space between words, trimmed.
///
/// ```
/// use bbinvite::resolve::normalize;
/// assert_eq!(normalize("  ACME\u{00A0}Telecom   Ltd "), "acme telecom ltd");
/// assert_eq!(normalize("Cafe\u{0301} Société"), normalize("Café SOCIÉTÉ"));
/// assert_eq!(normalize("Straße"), normalize("STRASSE"));
/// ```
pub fn normalize(name: &str) -> String {
    let folded: String = name.nfkc().default_case_fold().nfkc().collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why a row has no customer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Unresolved {
    /// No customer with that name; the closest ones.
    NotFound {
        name: String,
        suggestions: Vec<String>,
    },
    /// Several active customers share the name.
    Ambiguous {
        name: String,
        candidates: Vec<Candidate>,
    },
    /// No customer with that id in the directory.
    UnknownId { id: i64 },
    /// No customer with that reference.
    UnknownReference { reference: String },
    /// The reference lookup failed for another reason.
    LookupFailed { reference: String, error: String },
    /// The row names no customer and no `--customer` was given.
    Missing,
}

/// One of several customers a name could mean.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub id: i64,
    pub reference: Option<String>,
    pub status: &'static str,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unresolved::NotFound { name, suggestions } if suggestions.is_empty() => {
                write!(
                    f,
                    "no customer named \"{name}\"; check the spelling or use a customer_id column"
                )
            }
            Unresolved::NotFound { name, suggestions } => write!(
                f,
                "no customer named \"{name}\"; did you mean {}?",
                suggestions
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Unresolved::Ambiguous { name, candidates } => write!(
                f,
                "{} active customers are named \"{name}\" ({}); add a customer_id or customer_reference column",
                candidates.len(),
                candidates
                    .iter()
                    .map(|c| match &c.reference {
                        Some(r) => format!("id {} ref {r}", c.id),
                        None => format!("id {}", c.id),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Unresolved::UnknownId { id } => write!(f, "no customer with id {id}"),
            Unresolved::UnknownReference { reference } => {
                write!(f, "no customer with reference \"{reference}\"")
            }
            Unresolved::LookupFailed { reference, error } => {
                write!(f, "could not look up reference \"{reference}\": {error}")
            }
            Unresolved::Missing => {
                f.write_str("the row names no customer; add a customer column or use --customer")
            }
        }
    }
}

/// A resolved customer, with a warning when it is not active.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub id: i64,
    pub status: CustomerStatus,
}

/// The customer directory, indexed by normalised name and id.
#[derive(Debug, Default)]
pub struct Directory {
    customers: Vec<Customer>,
    by_name: HashMap<String, Vec<usize>>,
    by_id: HashMap<i64, usize>,
}

impl Directory {
    pub fn new(customers: Vec<Customer>) -> Directory {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_id = HashMap::new();
        for (i, c) in customers.iter().enumerate() {
            by_name.entry(normalize(&c.name)).or_default().push(i);
            by_id.insert(c.id, i);
        }
        Directory {
            customers,
            by_name,
            by_id,
        }
    }

    pub fn len(&self) -> usize {
        self.customers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }

    pub fn customers(&self) -> &[Customer] {
        &self.customers
    }

    pub fn get(&self, id: i64) -> Option<&Customer> {
        self.by_id.get(&id).map(|&i| &self.customers[i])
    }

    /// How many customers share this customer's normalised name.
    pub fn namesakes(&self, c: &Customer) -> usize {
        self.by_name.get(&normalize(&c.name)).map_or(0, Vec::len)
    }

    /// Finds the customer a name means.
    pub fn by_name(&self, name: &str) -> Result<Resolved, Unresolved> {
        let key = normalize(name);
        let Some(found) = self.by_name.get(&key) else {
            return Err(Unresolved::NotFound {
                name: name.trim().to_string(),
                suggestions: self.suggest(&key),
            });
        };
        let active: Vec<&Customer> = found
            .iter()
            .map(|&i| &self.customers[i])
            .filter(|c| c.status == CustomerStatus::Active)
            .collect();
        let pick = match active.as_slice() {
            [one] => *one,
            [] if found.len() == 1 => &self.customers[found[0]],
            _ => {
                let pool: Vec<&Customer> = if active.is_empty() {
                    found.iter().map(|&i| &self.customers[i]).collect()
                } else {
                    active
                };
                return Err(Unresolved::Ambiguous {
                    name: name.trim().to_string(),
                    candidates: pool
                        .into_iter()
                        .map(|c| Candidate {
                            id: c.id,
                            reference: c.reference.clone(),
                            status: c.status.as_str(),
                        })
                        .collect(),
                });
            }
        };
        Ok(Resolved {
            id: pick.id,
            status: pick.status,
        })
    }

    /// Checks an id against the directory.
    pub fn by_id(&self, id: i64) -> Result<Resolved, Unresolved> {
        self.get(id)
            .map(|c| Resolved {
                id: c.id,
                status: c.status,
            })
            .ok_or(Unresolved::UnknownId { id })
    }

    /// Customers whose names or references contain `text` (normalised).
    pub fn search(&self, text: &str) -> Vec<&Customer> {
        let needle = normalize(text);
        self.customers
            .iter()
            .filter(|c| {
                normalize(&c.name).contains(&needle)
                    || c.reference
                        .as_deref()
                        .is_some_and(|r| normalize(r).contains(&needle))
            })
            .collect()
    }

    fn suggest(&self, key: &str) -> Vec<String> {
        let mut scored: Vec<(f64, &str)> = self
            .by_name
            .iter()
            .map(|(norm, idx)| {
                (
                    strsim::jaro_winkler(key, norm),
                    self.customers[idx[0]].name.as_str(),
                )
            })
            .filter(|(score, _)| *score >= SUGGESTION_FLOOR)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        scored.dedup_by(|a, b| a.1 == b.1);
        scored
            .into_iter()
            .take(SUGGESTIONS)
            .map(|(_, n)| n.to_string())
            .collect()
    }
}

/// Remembers each reference's answer for the run, so each is asked of the API once.
#[derive(Debug, Default)]
pub struct ReferenceCache {
    answers: HashMap<String, Result<Resolved, Unresolved>>,
}

impl ReferenceCache {
    pub fn get(&self, reference: &str) -> Option<&Result<Resolved, Unresolved>> {
        self.answers.get(reference.trim())
    }

    pub fn insert(&mut self, reference: &str, answer: Result<Resolved, Unresolved>) {
        self.answers.insert(reference.trim().to_string(), answer);
    }
}

/// A customer warning for `validate`: the row resolves, but to a customer that is not active.
pub fn inactive_warning(r: &Resolved) -> Option<String> {
    (r.status != CustomerStatus::Active).then(|| {
        format!(
            "customer {} is {}; its users may not be able to log in",
            r.id,
            r.status.as_str()
        )
    })
}

/// Turns a row's customer columns into a customer id.
pub struct Resolver {
    directory: Option<Directory>,
    /// `--customer`: every row goes here.
    fixed: Option<Resolved>,
    references: ReferenceCache,
    /// Each raw customer name's answer: a file names the same customers over and over,
    /// and folding Unicode per row is the costliest part of resolving. FNV: the names
    /// are the file's own, short, and hashed once a row.
    names: HashMap<String, Result<Resolved, Unresolved>, fnv::FnvBuildHasher>,
    /// `None` offline: a reference cannot be looked up.
    lookups: Option<Lookups>,
}

/// How a [`Resolver`] asks the API for a reference it has not seen.
pub struct Lookups {
    /// The attempt runner the look-ups go through (limiter, retries, breaker).
    pub sender: Arc<Sender>,
    /// What the client needs alive (the built-in sandbox it talks to), kept as long as
    /// the resolver: a reference is looked up row by row, after the command's own
    /// handle on the API may be gone.
    pub keep_alive: Option<Arc<dyn Any + Send + Sync>>,
}

/// Raw names remembered at most; past this the memo starts afresh, so memory stays flat
/// whatever the file.
pub const NAME_MEMO: usize = 100_000;

impl Resolver {
    /// A resolver over `directory` (when some row names its customer), sending every row
    /// to `fixed` (`--customer`) when given, looking references up through `lookups`.
    pub fn new(
        directory: Option<Directory>,
        fixed: Option<Resolved>,
        lookups: Option<Lookups>,
    ) -> Resolver {
        Resolver {
            directory,
            fixed,
            references: ReferenceCache::default(),
            names: HashMap::default(),
            lookups,
        }
    }

    /// Whether `--customer` sends every row to one customer.
    pub fn is_fixed(&self) -> bool {
        self.fixed.is_some()
    }

    pub async fn resolve(&mut self, who: &Invitee) -> Result<Resolved, Unresolved> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        if let Some(id) = who.customer_id {
            return match &self.directory {
                Some(d) => d.by_id(id),
                None => Ok(Resolved {
                    id,
                    status: CustomerStatus::Active,
                }),
            };
        }
        if let Some(reference) = who
            .customer_reference
            .as_deref()
            .filter(|r| !r.trim().is_empty())
        {
            if let Some(known) = self.references.get(reference) {
                return known.clone();
            }
            let answer = match &self.lookups {
                None => Err(Unresolved::LookupFailed {
                    reference: reference.into(),
                    error: "no API to ask".into(),
                }),
                Some(l) => match l
                    .sender
                    .read("reference", &mut Vec::new(), || {
                        l.sender.client().customer_by_reference(reference.trim())
                    })
                    .await
                    .map_err(Failure::into_error)
                {
                    Ok(Some(c)) => Ok(Resolved {
                        id: c.id,
                        status: c.status,
                    }),
                    Ok(None) => Err(Unresolved::UnknownReference {
                        reference: reference.trim().into(),
                    }),
                    Err(e) => Err(Unresolved::LookupFailed {
                        reference: reference.into(),
                        error: explain(&e),
                    }),
                },
            };
            self.references.insert(reference, answer.clone());
            return answer;
        }
        match (&who.customer, &self.directory) {
            (Some(name), Some(d)) => {
                if let Some(known) = self.names.get(name.as_str()) {
                    return known.clone();
                }
                if self.names.len() >= NAME_MEMO {
                    self.names.clear();
                }
                let answer = d.by_name(name);
                self.names.insert(name.clone(), answer.clone());
                answer
            }
            (Some(name), None) => Err(Unresolved::NotFound {
                name: name.clone(),
                suggestions: vec![],
            }),
            (None, _) => Err(Unresolved::Missing),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn c(id: i64, name: &str, status: CustomerStatus) -> Customer {
        Customer {
            id,
            name: name.into(),
            reference: Some(format!("R{id}")),
            email: None,
            kind: None,
            status,
        }
    }

    fn dir() -> Directory {
        Directory::new(vec![
            c(1, "Acme Telecom Ltd", CustomerStatus::Active),
            c(2, "Northern Fibre Co", CustomerStatus::Active),
            c(3, "Northern  Fibre co", CustomerStatus::Cancelled),
            c(4, "Harbour Networks", CustomerStatus::Active),
            c(5, "Harbour Networks", CustomerStatus::Active),
            c(6, "Café Société", CustomerStatus::Suspended),
        ])
    }

    #[test]
    fn names_fold_case_space_and_unicode() {
        assert_eq!(
            normalize("  ACME\u{00A0}Telecom   Ltd "),
            "acme telecom ltd"
        );
        assert_eq!(normalize("Cafe\u{0301} Société"), normalize("Café Société"));
        assert_eq!(normalize("ＡＣＭＥ"), "acme");
        assert_eq!(dir().by_name("acme telecom LTD").unwrap().id, 1);
        assert_eq!(dir().by_name("Cafe\u{0301} Société").unwrap().id, 6);
    }

    #[test]
    fn names_fold_letters_whose_capital_is_two_letters() {
        assert_eq!(normalize("Straße Telecom"), normalize("STRASSE TELECOM"));
        assert_eq!(normalize("ǅemal"), normalize("DŽEMAL"));
        let dir = Directory::new(vec![
            c(1, "Straße Telecom", CustomerStatus::Active),
            c(2, "Weiss Networks", CustomerStatus::Active),
            c(3, "WEISS NETWORKS", CustomerStatus::Active),
        ]);
        assert_eq!(dir.by_name("STRASSE telecom").unwrap().id, 1);
        assert_eq!(
            dir.namesakes(&c(9, "Weiß Networks", CustomerStatus::Active)),
            2
        );
        assert!(matches!(
            dir.by_name("Weiß Networks"),
            Err(Unresolved::Ambiguous { .. })
        ));
    }

    #[test]
    fn active_wins_and_two_active_are_ambiguous() {
        assert_eq!(dir().by_name("northern fibre co").unwrap().id, 2);
        match dir().by_name("Harbour Networks") {
            Err(Unresolved::Ambiguous { candidates, .. }) => {
                assert_eq!(candidates.iter().map(|c| c.id).collect::<Vec<_>>(), [4, 5]);
            }
            other => panic!("{other:?}"),
        }
        let msg = dir().by_name("Harbour Networks").unwrap_err().to_string();
        assert!(
            msg.contains("id 4 ref R4") && msg.contains("id 5 ref R5"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_names_get_the_closest_suggestions() {
        match dir().by_name("Acme Telcom Ltd") {
            Err(Unresolved::NotFound { suggestions, .. }) => {
                assert_eq!(suggestions[0], "Acme Telecom Ltd")
            }
            other => panic!("{other:?}"),
        }
        match dir().by_name("Zzzz") {
            Err(Unresolved::NotFound { suggestions, .. }) => assert!(suggestions.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ids_are_checked_against_the_directory() {
        assert_eq!(dir().by_id(4).unwrap().id, 4);
        assert_eq!(dir().by_id(99), Err(Unresolved::UnknownId { id: 99 }));
        assert!(inactive_warning(&dir().by_id(6).unwrap()).is_some());
    }
}
