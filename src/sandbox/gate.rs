//! The sandbox's front door: counts every API request, then lets it through or picks the
//! fault that answers it (down, rate limited, unauthorized, failed), and decides whether
//! an invitation's answer will be dropped.
//!
//! It only decides: it must not touch customers or users, and knows nothing of HTTP but
//! route names. One short lock per request; nothing in here awaits.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::Faults;

/// The window `rate_limit` counts requests in.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// An API route, as `Truth::requests_by_route` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Token,
    ListCustomers,
    Customer,
    CustomerByReference,
    ListAccess,
    Invite,
    Access,
    Resend,
    Suspend,
    Reactivate,
    /// Any path the API does not have.
    Unmatched,
}

impl Route {
    const ALL: [Route; 11] = [
        Route::Token,
        Route::ListCustomers,
        Route::Customer,
        Route::CustomerByReference,
        Route::ListAccess,
        Route::Invite,
        Route::Access,
        Route::Resend,
        Route::Suspend,
        Route::Reactivate,
        Route::Unmatched,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Route::Token => "POST /token",
            Route::ListCustomers => "GET /customer",
            Route::Customer => "GET /customer/{id}",
            Route::CustomerByReference => "GET /customer/reference/{reference}",
            Route::ListAccess => "GET /customer/{id}/access",
            Route::Invite => "POST /customer/{id}/access",
            Route::Access => "GET /customer/{id}/access/{uid}",
            Route::Resend => "POST /customer/{id}/access/{uid}/resend",
            Route::Suspend => "PUT /customer/{id}/access/{uid}/suspend",
            Route::Reactivate => "PUT /customer/{id}/access/{uid}/reactivate",
            Route::Unmatched => "unmatched",
        }
    }

    /// `/token` is how one gets credentials, so it cannot ask for them.
    fn needs_auth(self) -> bool {
        self != Route::Token
    }
}

/// A request let through to its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admitted {
    /// Drawn by `drop_rate`: once handled, the connection is closed without an answer.
    pub hang_up: bool,
}

/// Why a request is answered before its handler runs, so before any change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `down`: 503.
    Down,
    /// Over `rate_limit`: 429, retry after this many seconds (at least 1).
    Limited { retry_after_secs: u64 },
    /// No usable credentials: 401 with this message.
    Unauthorized(&'static str),
    /// Drawn by `fail_rate`: 500.
    Failed,
}

/// What a snapshot of the request counters holds.
pub(crate) struct Counters {
    pub requests_total: u64,
    pub requests_by_route: BTreeMap<String, u64>,
    pub post_times_ms: Vec<u64>,
    pub request_times_ms: Vec<u64>,
}

/// Faults, credentials and request counters: everything decided before a handler runs.
#[derive(Debug)]
pub(crate) struct Gate {
    started: Instant,
    faults: Faults,
    /// Draws `fail_rate` and `drop_rate` only, so a seed replays the same faults.
    rng: StdRng,
    api_key: Option<String>,
    /// Tokens `/token` issued, with when.
    tokens: HashMap<String, Instant>,
    /// Arrival times of the requests let through in the last `RATE_WINDOW` (a sliding
    /// log: at most `rate_limit` requests are admitted in any window of that length;
    /// refused requests do not count).
    admitted: VecDeque<Instant>,
    counts: [u64; Route::ALL.len()],
    requests_total: u64,
    request_times_ms: Vec<u64>,
    post_times_ms: Vec<u64>,
}

impl Gate {
    pub fn new(faults: Faults, seed: Option<u64>, api_key: Option<String>) -> Gate {
        Gate {
            started: Instant::now(),
            faults,
            rng: seed.map_or_else(|| StdRng::from_rng(&mut rand::rng()), StdRng::seed_from_u64),
            api_key,
            tokens: HashMap::new(),
            admitted: VecDeque::new(),
            counts: [0; Route::ALL.len()],
            requests_total: 0,
            request_times_ms: Vec::new(),
            post_times_ms: Vec::new(),
        }
    }

    pub fn faults(&self) -> Faults {
        self.faults
    }

    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Counts the request, then decides its fate. Faults are checked in this order: down,
    /// rate limit, credentials, `fail_rate`; then `drop_rate` for an invitation.
    pub fn admit(&mut self, route: Route, bearer: Option<&str>) -> Result<Admitted, Refused> {
        let now = Instant::now();
        let ms = now.duration_since(self.started).as_millis() as u64;
        self.requests_total += 1;
        self.counts[route as usize] += 1;
        self.request_times_ms.push(ms);
        if route == Route::Invite {
            self.post_times_ms.push(ms);
        }

        if self.faults.down {
            return Err(Refused::Down);
        }
        if let Some(limit) = self.faults.rate_limit {
            while let Some(&first) = self.admitted.front() {
                if now.duration_since(first) < RATE_WINDOW {
                    break;
                }
                self.admitted.pop_front();
            }
            if let Some(&first) = self.admitted.front()
                && self.admitted.len() >= limit.max(1) as usize
            {
                let wait = RATE_WINDOW.saturating_sub(now.duration_since(first));
                let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return Err(Refused::Limited {
                    retry_after_secs: retry_after_secs.max(1),
                });
            }
            self.admitted.push_back(now);
        }
        if route.needs_auth()
            && let Err(message) = self.authorize(bearer, now)
        {
            return Err(Refused::Unauthorized(message));
        }
        if self.draw(self.faults.fail_rate) {
            return Err(Refused::Failed);
        }
        let hang_up = route == Route::Invite && self.draw(self.faults.drop_rate);
        Ok(Admitted { hang_up })
    }

    /// True with probability `rate`; draws nothing when the rate is 0, so a seeded
    /// sequence does not depend on faults that are off.
    fn draw(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.random::<f64>() < rate
    }

    /// By default any non-empty bearer passes. With an API key or a token TTL, only the
    /// key and tokens from `/token` (younger than the TTL) do.
    fn authorize(&self, bearer: Option<&str>, now: Instant) -> Result<(), &'static str> {
        let Some(bearer) = bearer.filter(|b| !b.is_empty()) else {
            return Err("Unauthenticated.");
        };
        if self.api_key.as_deref() == Some(bearer) {
            return Ok(());
        }
        if let Some(issued) = self.tokens.get(bearer) {
            let expired = self
                .faults
                .token_ttl
                .is_some_and(|ttl| now.duration_since(*issued) >= Duration::from_secs(ttl));
            return if expired {
                Err("Token has expired.")
            } else {
                Ok(())
            };
        }
        if self.api_key.is_none() && self.faults.token_ttl.is_none() {
            return Ok(());
        }
        Err("Invalid token.")
    }

    /// A fresh random token, remembered for `authorize`.
    pub fn issue_token(&mut self) -> String {
        let token = format!("sbx_{:032x}", rand::rng().random::<u128>());
        self.tokens.insert(token.clone(), Instant::now());
        token
    }

    /// Logins that succeeded so far.
    pub fn logins(&self) -> u64 {
        self.tokens.len() as u64
    }

    pub fn counters(&self) -> Counters {
        Counters {
            requests_total: self.requests_total,
            requests_by_route: Route::ALL
                .iter()
                .map(|r| (r.key().to_owned(), self.counts[*r as usize]))
                .collect(),
            post_times_ms: self.post_times_ms.clone(),
            request_times_ms: self.request_times_ms.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(faults: Faults) -> Gate {
        Gate::new(faults, Some(7), None)
    }

    #[test]
    fn any_bearer_passes_by_default_but_not_none() {
        let mut gate = gate(Faults::default());
        let pass = Ok(Admitted { hang_up: false });
        assert_eq!(gate.admit(Route::ListCustomers, Some("x")), pass);
        assert!(matches!(
            gate.admit(Route::ListCustomers, Some("")),
            Err(Refused::Unauthorized(_))
        ));
        assert_eq!(gate.admit(Route::Token, None), pass);
    }

    #[test]
    fn api_key_admits_only_itself_and_issued_tokens() {
        let mut gate = Gate::new(Faults::default(), None, Some("k".into()));
        let pass = Ok(Admitted { hang_up: false });
        assert_eq!(gate.admit(Route::Invite, Some("k")), pass);
        assert!(matches!(
            gate.admit(Route::Invite, Some("other")),
            Err(Refused::Unauthorized(_))
        ));
        let token = gate.issue_token();
        assert_eq!(gate.admit(Route::Invite, Some(&token)), pass);
    }

    #[test]
    fn rate_limit_admits_n_per_window() {
        let mut gate = gate(Faults {
            rate_limit: Some(3),
            ..Faults::default()
        });
        let verdicts: Vec<Result<Admitted, Refused>> = (0..5)
            .map(|_| gate.admit(Route::ListCustomers, Some("t")))
            .collect();
        assert_eq!(verdicts[2], Ok(Admitted { hang_up: false }));
        assert_eq!(
            verdicts[3],
            Err(Refused::Limited {
                retry_after_secs: 1
            })
        );
        assert_eq!(gate.counters().requests_total, 5);
    }

    #[test]
    fn every_route_is_counted_by_name() {
        let mut gate = gate(Faults::default());
        assert!(gate.admit(Route::Invite, Some("t")).is_ok());
        let counters = gate.counters();
        assert_eq!(counters.requests_by_route["POST /customer/{id}/access"], 1);
        assert_eq!(counters.requests_by_route["GET /customer"], 0);
        assert_eq!(counters.post_times_ms.len(), 1);
    }
}
