//! The sandbox's live data: customers, their access users, and what each invitation key
//! went through (the ground truth tests compare a ledger against).
//!
//! Pure and synchronous: no HTTP, no faults, no clock but the `created_at` it is handed.
//! Callers hold its lock only for the call, never across an await.

use std::collections::{BTreeMap, HashMap};

use crate::api::types::{AccessStatus, AccessUser, Customer, NewAccessUser};

use super::seed::SeedCustomer;
use super::{KeyTruth, SearchMatches};

/// Why the store refused a call. The HTTP layer picks the status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No customer has that id or reference.
    NoCustomer,
    /// The customer has no access user with that id.
    NoUser,
    /// The body failed validation; the message says which field.
    Invalid(&'static str),
    /// The e-mail already has access to this customer.
    Exists,
    /// Only a user still awaiting activation can be sent the invitation again.
    NotAwaiting,
}

/// Filters of `GET /customer`.
#[derive(Debug, Default)]
pub(crate) struct CustomerFilter<'a> {
    pub status: Option<&'a str>,
    pub letter: Option<char>,
    pub group: Option<i64>,
}

impl CustomerFilter<'_> {
    fn is_empty(&self) -> bool {
        self.status.is_none() && self.letter.is_none() && self.group.is_none()
    }

    fn matches(&self, entry: &CustomerEntry) -> bool {
        let customer = &entry.customer;
        self.status.is_none_or(|s| customer.status.as_str() == s)
            && self.group.is_none_or(|g| entry.group == Some(g))
            && self.letter.is_none_or(|letter| {
                customer
                    .name
                    .chars()
                    .next()
                    .is_some_and(|first| first.to_lowercase().eq(letter.to_lowercase()))
            })
    }
}

/// How `GET /customer/{id}/access` narrows and orders its rows.
#[derive(Debug)]
pub(crate) struct AccessQuery<'a> {
    /// Already lower-cased; empty means no search.
    pub search: &'a str,
    pub matches: SearchMatches,
    pub by_email: bool,
}

/// An access user with what only the sandbox knows about it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SandboxUser {
    #[serde(flatten)]
    pub user: AccessUser,
    /// How many times `…/resend` succeeded for this user.
    pub resends: u64,
    /// How many times `…/suspend` was carried out for this user (a repeat included).
    #[serde(default)]
    pub suspends: u64,
}

#[derive(Debug)]
struct UserEntry {
    user: AccessUser,
    email_lc: String,
    name_lc: String,
    resends: u64,
    suspends: u64,
    /// The status a suspension interrupted, which reactivation restores.
    before_suspension: Option<AccessStatus>,
}

#[derive(Debug)]
struct CustomerEntry {
    customer: Customer,
    group: Option<i64>,
    /// In id order, which is creation order.
    users: Vec<UserEntry>,
    /// Lower-cased e-mail → index in `users`.
    by_email: HashMap<String, usize>,
}

impl CustomerEntry {
    fn push(&mut self, user: AccessUser) -> &AccessUser {
        let email_lc = user.email.to_lowercase();
        self.by_email.insert(email_lc.clone(), self.users.len());
        self.users.push(UserEntry {
            name_lc: user.name.to_lowercase(),
            email_lc,
            user,
            resends: 0,
            suspends: 0,
            before_suspension: None,
        });
        &self.users[self.users.len() - 1].user
    }

    fn user_mut(&mut self, uid: i64) -> Result<&mut UserEntry, Refusal> {
        // Ids grow with creation, so the users are sorted by id.
        let index = self
            .users
            .binary_search_by_key(&uid, |u| u.user.id)
            .map_err(|_| Refusal::NoUser)?;
        Ok(&mut self.users[index])
    }
}

/// Invitation POSTs seen for one (customer id, lower-cased e-mail).
#[derive(Debug, Default, Clone, Copy)]
struct KeyCount {
    created: u64,
    posts: u64,
}

/// Everything the API can read or change.
#[derive(Debug)]
pub(crate) struct Store {
    /// Sorted by customer id, the order `GET /customer` lists them in.
    customers: Vec<CustomerEntry>,
    by_id: HashMap<i64, usize>,
    by_reference: HashMap<String, usize>,
    next_user_id: i64,
    keys: BTreeMap<(i64, String), KeyCount>,
}

impl Store {
    /// The state at start. Seed users without an id are numbered after the highest given
    /// one, in file order; invitations continue the sequence.
    pub fn new(seeds: Vec<SeedCustomer>) -> Store {
        let mut seeds = seeds;
        seeds.sort_by_key(|s| s.customer.id);
        let highest = seeds
            .iter()
            .flat_map(|s| s.access.iter().filter_map(|u| u.id))
            .max()
            .unwrap_or(0);
        let mut store = Store {
            customers: Vec::with_capacity(seeds.len()),
            by_id: HashMap::with_capacity(seeds.len()),
            by_reference: HashMap::with_capacity(seeds.len()),
            next_user_id: highest.max(0) + 1,
            keys: BTreeMap::new(),
        };
        for seed in seeds {
            let index = store.customers.len();
            store.by_id.insert(seed.customer.id, index);
            if let Some(reference) = &seed.customer.reference {
                store.by_reference.entry(reference.clone()).or_insert(index);
            }
            let mut entry = CustomerEntry {
                customer: seed.customer,
                group: seed.customer_group_id,
                users: Vec::with_capacity(seed.access.len()),
                by_email: HashMap::with_capacity(seed.access.len()),
            };
            let mut users: Vec<AccessUser> = seed
                .access
                .into_iter()
                .map(|u| AccessUser {
                    id: u.id.unwrap_or_else(|| store.take_user_id()),
                    email: u.email,
                    name: u.name,
                    status: Some(u.status.unwrap_or(AccessStatus::Active)),
                    created_at: u.created_at,
                })
                .collect();
            users.sort_by_key(|u| u.id);
            for user in users {
                entry.push(user);
            }
            store.customers.push(entry);
        }
        store
    }

    fn take_user_id(&mut self) -> i64 {
        let id = self.next_user_id;
        self.next_user_id += 1;
        id
    }

    fn entry(&self, customer_id: i64) -> Result<&CustomerEntry, Refusal> {
        let index = self.by_id.get(&customer_id).ok_or(Refusal::NoCustomer)?;
        Ok(&self.customers[*index])
    }

    fn entry_mut(&mut self, customer_id: i64) -> Result<&mut CustomerEntry, Refusal> {
        let index = self.by_id.get(&customer_id).ok_or(Refusal::NoCustomer)?;
        Ok(&mut self.customers[*index])
    }

    /// One page of customers, in id order.
    pub fn customers(&self, filter: &CustomerFilter, offset: u64, limit: u64) -> Vec<Customer> {
        let (offset, limit) = (to_usize(offset), to_usize(limit));
        if filter.is_empty() {
            let start = offset.min(self.customers.len());
            let end = start.saturating_add(limit).min(self.customers.len());
            return self.customers[start..end]
                .iter()
                .map(|e| e.customer.clone())
                .collect();
        }
        self.customers
            .iter()
            .filter(|e| filter.matches(e))
            .skip(offset)
            .take(limit)
            .map(|e| e.customer.clone())
            .collect()
    }

    pub fn customer(&self, id: i64) -> Result<Customer, Refusal> {
        Ok(self.entry(id)?.customer.clone())
    }

    pub fn customer_by_reference(&self, reference: &str) -> Result<Customer, Refusal> {
        let index = self
            .by_reference
            .get(reference)
            .ok_or(Refusal::NoCustomer)?;
        Ok(self.customers[*index].customer.clone())
    }

    /// One page of a customer's access users, searched and sorted as asked.
    pub fn access_page(
        &self,
        customer_id: i64,
        query: &AccessQuery,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<AccessUser>, Refusal> {
        let entry = self.entry(customer_id)?;
        let (offset, limit) = (to_usize(offset), to_usize(limit));
        let hit = |u: &&UserEntry| {
            query.search.is_empty()
                || match query.matches {
                    SearchMatches::Name => u.name_lc.contains(query.search),
                    SearchMatches::Email => u.email_lc.contains(query.search),
                    SearchMatches::Both => {
                        u.name_lc.contains(query.search) || u.email_lc.contains(query.search)
                    }
                }
        };
        let page = if query.by_email {
            let mut rows: Vec<&UserEntry> = entry.users.iter().filter(hit).collect();
            rows.sort_by(|a, b| {
                (a.email_lc.as_str(), a.user.id).cmp(&(b.email_lc.as_str(), b.user.id))
            });
            rows.into_iter()
                .skip(offset)
                .take(limit)
                .map(|u| u.user.clone())
                .collect()
        } else {
            entry
                .users
                .iter()
                .filter(hit)
                .skip(offset)
                .take(limit)
                .map(|u| u.user.clone())
                .collect()
        };
        Ok(page)
    }

    /// Every access user of a customer, with resend counts: the admin view.
    pub fn access_all(&self, customer_id: i64) -> Result<Vec<SandboxUser>, Refusal> {
        Ok(self
            .entry(customer_id)?
            .users
            .iter()
            .map(|u| SandboxUser {
                user: u.user.clone(),
                resends: u.resends,
                suspends: u.suspends,
            })
            .collect())
    }

    pub fn user(&self, customer_id: i64, uid: i64) -> Result<AccessUser, Refusal> {
        let entry = self.entry(customer_id)?;
        entry
            .users
            .binary_search_by_key(&uid, |u| u.user.id)
            .map(|i| entry.users[i].user.clone())
            .map_err(|_| Refusal::NoUser)
    }

    /// `POST /customer/{id}/access`. Every call is counted against its key, whatever the
    /// answer; only the first one for a key creates.
    pub fn invite(
        &mut self,
        customer_id: i64,
        new: NewAccessUser,
        created_at: String,
    ) -> Result<AccessUser, Refusal> {
        let email_lc = new.email.trim().to_lowercase();
        let key = self
            .keys
            .entry((customer_id, email_lc.clone()))
            .or_default();
        key.posts += 1;
        let entry_index = *self.by_id.get(&customer_id).ok_or(Refusal::NoCustomer)?;
        if !email_address::EmailAddress::is_valid(new.email.trim()) {
            return Err(Refusal::Invalid("The email must be a valid email address."));
        }
        if new.name.trim().is_empty() {
            return Err(Refusal::Invalid("The name field is required."));
        }
        if self.customers[entry_index].by_email.contains_key(&email_lc) {
            return Err(Refusal::Exists);
        }
        key.created += 1;
        let user = AccessUser {
            id: self.take_user_id(),
            email: new.email.trim().to_owned(),
            name: new.name.trim().to_owned(),
            status: Some(new.status.unwrap_or(AccessStatus::AwaitingActivation)),
            created_at: Some(created_at),
        };
        Ok(self.customers[entry_index].push(user).clone())
    }

    /// `POST …/resend`: counted, and only for users still awaiting activation.
    pub fn resend(&mut self, customer_id: i64, uid: i64) -> Result<AccessUser, Refusal> {
        let user = self.entry_mut(customer_id)?.user_mut(uid)?;
        if user.user.status != Some(AccessStatus::AwaitingActivation) {
            return Err(Refusal::NotAwaiting);
        }
        user.resends += 1;
        Ok(user.user.clone())
    }

    /// `PUT …/suspend`: idempotent; remembers what reactivation should restore.
    pub fn suspend(&mut self, customer_id: i64, uid: i64) -> Result<AccessUser, Refusal> {
        let user = self.entry_mut(customer_id)?.user_mut(uid)?;
        user.suspends += 1;
        if user.user.status != Some(AccessStatus::Suspended) {
            user.before_suspension = user.user.status;
            user.user.status = Some(AccessStatus::Suspended);
        }
        Ok(user.user.clone())
    }

    /// `PUT …/reactivate`: a suspended user gets back the status it had (active, or still
    /// awaiting activation); anyone else is left as they are.
    pub fn reactivate(&mut self, customer_id: i64, uid: i64) -> Result<AccessUser, Refusal> {
        let user = self.entry_mut(customer_id)?.user_mut(uid)?;
        if user.user.status == Some(AccessStatus::Suspended) {
            let restored = user.before_suspension.take();
            user.user.status = Some(restored.unwrap_or(AccessStatus::Active));
        }
        Ok(user.user.clone())
    }

    /// Every key that saw an invitation POST, in (customer id, e-mail) order.
    pub fn keys(&self) -> Vec<KeyTruth> {
        self.keys
            .iter()
            .map(|((customer_id, email), count)| KeyTruth {
                customer_id: *customer_id,
                email: email.clone(),
                created: count.created,
                posts: count.posts,
            })
            .collect()
    }
}

/// Offsets and limits past `usize` cannot select anything anyway.
fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::sandbox::seed;

    fn store() -> Store {
        Store::new(seed::parse(seed::SAMPLES).unwrap())
    }

    fn new_user(email: &str) -> NewAccessUser {
        NewAccessUser {
            email: email.to_owned(),
            name: "New Person".to_owned(),
            id: None,
            status: None,
        }
    }

    #[test]
    fn seeded_users_are_numbered_and_active_by_default() {
        let store = store();
        let users = store.access_all(101).unwrap();
        assert_eq!(users[0].user.id, 1);
        assert_eq!(users[1].user.id, 2);
        assert_eq!(users[0].user.status, Some(AccessStatus::Active));
    }

    #[test]
    fn invite_creates_once_and_counts_every_post() {
        let mut store = store();
        let made = store
            .invite(102, new_user("A@B.example"), "t".into())
            .unwrap();
        assert_eq!(made.id, 3);
        assert_eq!(made.status, Some(AccessStatus::AwaitingActivation));
        let again = store.invite(102, new_user("a@b.example"), "t".into());
        assert_eq!(again, Err(Refusal::Exists));
        let keys = store.keys();
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0].created, keys[0].posts), (1, 2));
        assert_eq!(keys[0].email, "a@b.example");
    }

    #[test]
    fn suspend_then_reactivate_restores_awaiting() {
        let mut store = store();
        let raj = store.suspend(101, 2).unwrap();
        assert_eq!(raj.status, Some(AccessStatus::Suspended));
        let raj = store.reactivate(101, 2).unwrap();
        assert_eq!(raj.status, Some(AccessStatus::AwaitingActivation));
    }

    #[test]
    fn letter_filter_ignores_case() {
        let store = store();
        let filter = CustomerFilter {
            letter: Some('n'),
            ..CustomerFilter::default()
        };
        let ids: Vec<i64> = store
            .customers(&filter, 0, 100)
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, vec![103, 104]);
    }
}
