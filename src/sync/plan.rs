//! The sync plan: from the sheet, each customer's access list and what the ledger
//! remembers, what to do to each user, and why.
//!
//! Pure: no I/O, no clock (the time is an argument), no HTTP, no SQL. Everything is
//! decided from the arguments, so the whole policy is unit-tested here. It must not
//! send, record or print anything; [`crate::sync`] does that with what it returns.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::api::types::{AccessStatus, AccessUser};
use crate::domain::{self, ActionKind, AdmitOptions, Decision, Verdict};
use crate::ledger::KeyView;

/// What sync does, or found, for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Not in the access list: invite (the only action that creates a user).
    Invite,
    /// In the access list but not done in the ledger: recorded as there; nothing sent.
    Exists,
    /// In the access list and done in the ledger: nothing to do.
    Unchanged,
    /// Still awaiting activation, last invited longer ago than `--resend-after`.
    Resend,
    /// `--apply-status`: the sheet says suspended, the portal does not.
    Suspend,
    /// `--apply-status`: the portal says suspended, the sheet does not.
    Reactivate,
    /// `--prune`: in the access list, not in the sheet: suspend (never delete).
    Prune,
    /// Invited or found before, no longer in the access list: someone removed the user.
    /// A key is invited once, so it is not invited again.
    Gone,
    /// Rejected before and unchanged since (`--retry-rejected` sends it again).
    Rejected,
    /// The same customer and e-mail earlier in the sheet.
    Duplicate,
    /// The row cannot be read as an invitee.
    Invalid,
    /// The row's customer cannot be told.
    Unresolved,
    /// The customer's access list could not be read: nothing is done for its rows.
    Unreadable,
}

impl Action {
    /// In the order the plan and the summary list them.
    pub const ALL: [Action; 13] = [
        Action::Invite,
        Action::Exists,
        Action::Unchanged,
        Action::Resend,
        Action::Suspend,
        Action::Reactivate,
        Action::Prune,
        Action::Gone,
        Action::Rejected,
        Action::Duplicate,
        Action::Invalid,
        Action::Unresolved,
        Action::Unreadable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Invite => "invite",
            Action::Exists => "exists",
            Action::Unchanged => "unchanged",
            Action::Resend => "resend",
            Action::Suspend => "suspend",
            Action::Reactivate => "reactivate",
            Action::Prune => "prune",
            Action::Gone => "gone",
            Action::Rejected => "rejected",
            Action::Duplicate => "duplicate",
            Action::Invalid => "invalid",
            Action::Unresolved => "unresolved",
            Action::Unreadable => "unreadable",
        }
    }

    /// The ledger action that carries it out, for the four that act on an access user.
    pub fn kind(self) -> Option<ActionKind> {
        match self {
            Action::Resend => Some(ActionKind::Resend),
            Action::Suspend => Some(ActionKind::Suspend),
            Action::Reactivate => Some(ActionKind::Reactivate),
            Action::Prune => Some(ActionKind::Prune),
            _ => None,
        }
    }

    /// Ends the command with exit code 1.
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            Action::Rejected | Action::Invalid | Action::Unresolved | Action::Unreadable
        )
    }
}

/// Why a planned prune is not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// Prunes are applied only with `--yes`.
    NeedsYes,
    /// The `--max-prune` guard refused this customer's prunes.
    Refused,
}

/// Where a row was read: its file and line (shown as `file:line`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub file: String,
    pub line: u64,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One row of the sheet, as the plan needs it.
#[derive(Debug, Clone)]
pub struct SheetRow {
    pub origin: Origin,
    /// The e-mail cell as typed, even when the row is unusable: a user the sheet names in
    /// a row it cannot use is never pruned.
    pub email_cell: Option<String>,
    pub verdict: Verdict,
}

/// How to plan.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Resend to users awaiting activation last invited longer ago than this.
    pub resend_after: Option<Duration>,
    /// Suspend or reactivate users whose status differs from the sheet's.
    pub apply_status: bool,
    /// Suspend users of the sheet's customers who are not in the sheet.
    pub prune: bool,
    /// Prunes are applied, not only shown.
    pub yes: bool,
    /// No customer loses more than this share (percent) of its users to prunes.
    pub max_prune_pct: f64,
    /// How the ledger's decision treats rejected keys, as for `run`.
    pub admit: AdmitOptions,
    /// The time to measure ages against.
    pub now: SystemTime,
}

/// One thing the plan says about one user.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Index of the sheet row it comes from; `None` for a prune.
    #[serde(skip)]
    pub row: Option<usize>,
    pub customer_id: Option<i64>,
    pub email: String,
    pub action: Action,
    pub access_user_id: Option<i64>,
    pub why: String,
    pub hold: Option<Hold>,
    /// Where the row was read; `None` for a prune.
    #[serde(skip)]
    pub origin: Option<Origin>,
}

/// The `--max-prune` guard's refusal for one customer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PruneRefusal {
    pub would_suspend: usize,
    pub current: usize,
    pub max_prune_pct: f64,
}

impl PruneRefusal {
    pub fn percent(&self) -> f64 {
        self.would_suspend as f64 * 100.0 / self.current.max(1) as f64
    }
}

/// The plan for one customer the sheet names.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CustomerPlan {
    pub customer_id: i64,
    /// Access users its list holds now; `None` when the list could not be read.
    pub current: Option<usize>,
    pub list_error: Option<String>,
    /// Entries per action (`actions` in JSON, as the whole plan's counts are).
    #[serde(rename = "actions")]
    pub counts: BTreeMap<Action, usize>,
    /// Users not in the sheet left alone because an unusable row names their e-mail.
    pub protected: usize,
    pub prune_refused: Option<PruneRefusal>,
}

/// What to do, user by user, and the totals per customer.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The sheet's rows in order (a row may add a resend, suspend or reactivate after
    /// its own entry), then the prunes, by customer and e-mail.
    pub entries: Vec<Entry>,
    pub customers: BTreeMap<i64, CustomerPlan>,
}

impl Plan {
    /// Entries per action.
    pub fn counts(&self) -> BTreeMap<Action, usize> {
        let mut out = BTreeMap::new();
        for e in &self.entries {
            *out.entry(e.action).or_insert(0) += 1;
        }
        out
    }

    /// Customers whose prunes the guard refused.
    pub fn refusals(&self) -> impl Iterator<Item = (i64, &PruneRefusal)> {
        self.customers
            .values()
            .filter_map(|c| c.prune_refused.as_ref().map(|r| (c.customer_id, r)))
    }

    /// Prunes shown but not applied for want of `--yes`.
    pub fn waiting_for_yes(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.hold == Some(Hold::NeedsYes))
            .count()
    }

    /// A problem row, or a refused prune: the command exits 1.
    pub fn has_problems(&self) -> bool {
        self.entries.iter().any(|e| e.action.is_problem()) || self.refusals().next().is_some()
    }
}

/// Plans a sync: compares each sheet row with its customer's access list (`lists`, by
/// customer id: the users, or why they could not be read) and the ledger's knowledge
/// of its key (`ledger`), then, with `--prune`, the access lists with the sheet.
pub fn compute(
    rows: &[SheetRow],
    lists: &HashMap<i64, Result<Vec<AccessUser>, String>>,
    ledger: &HashMap<(i64, String), KeyView>,
    opts: &Options,
) -> Plan {
    let mut index: HashMap<i64, HashMap<String, &AccessUser>> = HashMap::new();
    let mut customers: BTreeMap<i64, CustomerPlan> = BTreeMap::new();
    for (&customer_id, list) in lists {
        if let Ok(users) = list {
            let by_key = index.entry(customer_id).or_default();
            for u in users {
                by_key.entry(domain::email_key(&u.email)).or_insert(u);
            }
        }
        customers.insert(
            customer_id,
            CustomerPlan {
                customer_id,
                current: list.as_ref().ok().map(Vec::len),
                list_error: list.as_ref().err().cloned(),
                ..CustomerPlan::default()
            },
        );
    }
    let mut rows_plan = RowsPlan {
        lists,
        index: &index,
        ledger,
        opts,
        entries: Vec::new(),
        seen: HashSet::new(),
        wanted: BTreeMap::new(),
        protected: HashSet::new(),
    };
    for (i, row) in rows.iter().enumerate() {
        rows_plan.row(i, row);
    }
    let RowsPlan {
        mut entries,
        wanted,
        protected,
        ..
    } = rows_plan;
    if opts.prune {
        for (customer_id, keys) in &wanted {
            let (Some(Ok(users)), Some(plan)) =
                (lists.get(customer_id), customers.get_mut(customer_id))
            else {
                continue;
            };
            entries.extend(prunes(*customer_id, users, keys, &protected, plan, opts));
        }
    }
    for e in &entries {
        if let Some(customer_id) = e.customer_id {
            let plan = customers
                .entry(customer_id)
                .or_insert_with(|| CustomerPlan {
                    customer_id,
                    ..CustomerPlan::default()
                });
            *plan.counts.entry(e.action).or_insert(0) += 1;
        }
    }
    Plan { entries, customers }
}

/// The plan of the sheet's rows, built a row at a time.
struct RowsPlan<'a> {
    lists: &'a HashMap<i64, Result<Vec<AccessUser>, String>>,
    /// Each readable access list, by e-mail key.
    index: &'a HashMap<i64, HashMap<String, &'a AccessUser>>,
    ledger: &'a HashMap<(i64, String), KeyView>,
    opts: &'a Options,
    entries: Vec<Entry>,
    seen: HashSet<(i64, String)>,
    /// The keys the sheet wants, by customer.
    wanted: BTreeMap<i64, HashSet<String>>,
    /// E-mails of rows that could not be used: never pruned.
    protected: HashSet<String>,
}

impl RowsPlan<'_> {
    /// Plans one row: a problem, a user to invite, or one already there (and what its
    /// access needs).
    fn row(&mut self, i: usize, row: &SheetRow) {
        let entry = |customer_id, email: &str, action, why: String| Entry {
            row: Some(i),
            customer_id,
            email: email.to_string(),
            action,
            access_user_id: None,
            why,
            hold: None,
            origin: Some(row.origin.clone()),
        };
        let (customer_id, user) = match &row.verdict {
            Verdict::Invalid(reason) | Verdict::Unresolved { reason, .. } => {
                let email = row.email_cell.as_deref().unwrap_or("").trim();
                if !email.is_empty() {
                    self.protected.insert(domain::email_key(email));
                }
                let (customer_id, action) = match &row.verdict {
                    Verdict::Unresolved { customer_id, .. } => (*customer_id, Action::Unresolved),
                    _ => (None, Action::Invalid),
                };
                self.entries
                    .push(entry(customer_id, email, action, reason.clone()));
                return;
            }
            Verdict::Invite { customer_id, user } => (*customer_id, user),
        };
        let key = domain::email_key(&user.email);
        self.wanted
            .entry(customer_id)
            .or_default()
            .insert(key.clone());
        let Some(users) = self.index.get(&customer_id) else {
            let why = match self.lists.get(&customer_id) {
                Some(Err(e)) => format!("could not read customer {customer_id}'s access list: {e}"),
                _ => format!("customer {customer_id}'s access list was not read"),
            };
            let unreadable = entry(Some(customer_id), &user.email, Action::Unreadable, why);
            self.entries.push(unreadable);
            return;
        };
        if !self.seen.insert((customer_id, key.clone())) {
            let why = "the same customer and e-mail appear earlier in this input".into();
            let duplicate = entry(Some(customer_id), &user.email, Action::Duplicate, why);
            self.entries.push(duplicate);
            return;
        }
        let view = self.ledger.get(&(customer_id, key.clone()));
        let existing = view.and_then(|v| v.existing.as_ref());
        let Some(there) = users.get(&key) else {
            let (action, why) = missing(existing, user, self.opts);
            self.entries
                .push(entry(Some(customer_id), &user.email, action, why));
            return;
        };
        let done = existing.is_some_and(|e| e.state.is_done());
        let (action, why) = if done {
            (Action::Unchanged, "already there".to_string())
        } else {
            (
                Action::Exists,
                "already in the access list; recorded, nothing sent".to_string(),
            )
        };
        let mut membership = entry(Some(customer_id), &there.email, action, why);
        membership.access_user_id = Some(there.id);
        self.entries.push(membership);
        if let Some((action, why)) = access_action(user.status, there, view, self.opts) {
            let mut act = entry(Some(customer_id), &there.email, action, why);
            act.access_user_id = Some(there.id);
            self.entries.push(act);
        }
    }
}

/// What to do with a user of the sheet the access list does not hold, as the ledger's
/// one admission rule decides it, and why.
fn missing(
    existing: Option<&crate::domain::Existing>,
    user: &crate::api::types::NewAccessUser,
    opts: &Options,
) -> (Action, String) {
    match domain::decide(existing, user, opts.admit) {
        Decision::Send { .. } => (Action::Invite, "not in the access list".to_string()),
        Decision::Done(state) => (
            Action::Gone,
            format!(
                "{} before, but no longer in the access list (removed on the portal?); a user is invited once, so not again",
                state.as_str()
            ),
        ),
        Decision::StillRejected => (
            Action::Rejected,
            format!(
                "{} (unchanged since; fix the row or use --retry-rejected)",
                existing
                    .and_then(|e| e.last_error.clone())
                    .unwrap_or_else(|| "rejected earlier".into())
            ),
        ),
    }
}

/// The prunes of one customer: its users the sheet does not want, unless suspended
/// already or named by a row that could not be used; held without `--yes`, refused
/// (all of them) beyond `--max-prune`.
fn prunes(
    customer_id: i64,
    users: &[AccessUser],
    keys: &HashSet<String>,
    protected: &HashSet<String>,
    plan: &mut CustomerPlan,
    opts: &Options,
) -> Vec<Entry> {
    let mut candidates: Vec<&AccessUser> = Vec::new();
    for u in users {
        let key = domain::email_key(&u.email);
        if keys.contains(&key) || u.status == Some(AccessStatus::Suspended) {
            continue;
        }
        if protected.contains(&key) {
            plan.protected += 1;
            continue;
        }
        candidates.push(u);
    }
    if candidates.is_empty() {
        return Vec::new();
    }
    candidates.sort_by_key(|u| (domain::email_key(&u.email), u.id));
    let current = users.len();
    let refused = candidates.len() as f64 * 100.0 > opts.max_prune_pct * current as f64;
    let hold = if refused {
        plan.prune_refused = Some(PruneRefusal {
            would_suspend: candidates.len(),
            current,
            max_prune_pct: opts.max_prune_pct,
        });
        Some(Hold::Refused)
    } else if !opts.yes {
        Some(Hold::NeedsYes)
    } else {
        None
    };
    candidates
        .into_iter()
        .map(|u| Entry {
            row: None,
            customer_id: Some(customer_id),
            email: u.email.clone(),
            action: Action::Prune,
            access_user_id: Some(u.id),
            why: format!("not in the sheet; {}", status_text(u.status)),
            hold,
            origin: None,
        })
        .collect()
}

/// The resend, suspension or reactivation a user of the sheet who is in the access list
/// needs, if any, and why.
fn access_action(
    wanted: Option<AccessStatus>,
    there: &AccessUser,
    view: Option<&KeyView>,
    opts: &Options,
) -> Option<(Action, String)> {
    let current = there.status;
    if opts.apply_status
        && let Some(want) = wanted
    {
        match (want, current) {
            (AccessStatus::Suspended, Some(AccessStatus::Suspended)) => {}
            (AccessStatus::Suspended, _) => {
                return Some((
                    Action::Suspend,
                    format!(
                        "the sheet says suspended; the portal says {}",
                        status_text(current)
                    ),
                ));
            }
            (_, Some(AccessStatus::Suspended)) => {
                return Some((
                    Action::Reactivate,
                    format!(
                        "the sheet says {}; the portal says suspended",
                        want.as_str()
                    ),
                ));
            }
            _ => {}
        }
    }
    let period = opts.resend_after?;
    // Only an invitation still waiting can be sent again, and not to someone the sheet
    // wants suspended.
    if current != Some(AccessStatus::AwaitingActivation) || wanted == Some(AccessStatus::Suspended)
    {
        return None;
    }
    let (last, source) = match view.and_then(|v| v.last_contact) {
        Some(t) => (t, "last invitation or resend in the ledger"),
        None => (
            there.created_at.as_deref().and_then(parse_api_time)?,
            "created_at",
        ),
    };
    let age = opts.now.duration_since(last).unwrap_or(Duration::ZERO);
    (age > period).then(|| {
        (
            Action::Resend,
            format!(
                "awaiting activation; invited {} ago ({source}), longer than --resend-after {}",
                days(age),
                days(period)
            ),
        )
    })
}

fn status_text(status: Option<AccessStatus>) -> &'static str {
    status.map_or("no status", AccessStatus::as_str)
}

/// A duration in days, for people.
fn days(d: Duration) -> String {
    let n = d.as_secs_f64() / 86_400.0;
    if (n - n.round()).abs() < 0.05 {
        format!("{:.0} days", n.round())
    } else {
        format!("{n:.1} days")
    }
}

/// Reads an access user's `created_at`, whose format the API does not document: RFC 3339
/// (with `Z`, an offset, or none, meaning UTC; `T` or a space), a bare date, or Unix
/// seconds. Anything else is `None`: no resend can be dated by it.
///
/// ```
/// use bbinvite::sync::plan::parse_api_time;
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_secs(1_790_845_200);
/// assert_eq!(parse_api_time("2026-10-01T09:00:00Z"), Some(t));
/// assert_eq!(parse_api_time("2026-10-01T11:00:00+02:00"), Some(t));
/// assert_eq!(parse_api_time("1790845200"), Some(t));
/// assert_eq!(parse_api_time("yesterday"), None);
/// ```
pub fn parse_api_time(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = text.parse().ok()?;
        // Milliseconds when too large to be seconds of this era.
        let secs = if n > 100_000_000_000 { n / 1000 } else { n };
        return UNIX_EPOCH.checked_add(Duration::from_secs(secs));
    }
    if text.len() == 10 {
        return humantime::parse_rfc3339_weak(&format!("{text}T00:00:00Z")).ok();
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Some(t);
    }
    // An offset such as +02:00 or -0530 after the seconds.
    let (local, offset) = [6, 5].into_iter().find_map(|width| {
        let at = text.len().checked_sub(width).filter(|&at| at >= 19)?;
        // An ASCII sign, so `at` is a character boundary.
        matches!(text.as_bytes()[at], b'+' | b'-').then(|| text.split_at(at))
    })?;
    let sign = if offset.starts_with('+') { 1 } else { -1 };
    let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: u64 = digits[..2].parse().ok()?;
    let minutes: u64 = digits[2..].parse().ok()?;
    let shift = Duration::from_secs(hours * 3600 + minutes * 60);
    let local = humantime::parse_rfc3339_weak(local).ok()?;
    if sign > 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::{Existing, State};

    const DAY: Duration = Duration::from_secs(86_400);

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn opts() -> Options {
        Options {
            resend_after: None,
            apply_status: false,
            prune: false,
            yes: false,
            max_prune_pct: 20.0,
            admit: AdmitOptions::default(),
            now: now(),
        }
    }

    /// Prunes confirmed, with no cap on their share.
    fn pruning_all() -> Options {
        Options {
            prune: true,
            yes: true,
            max_prune_pct: 100.0,
            ..opts()
        }
    }

    fn row(customer_id: i64, email: &str) -> SheetRow {
        row_with(customer_id, email, None)
    }

    fn row_with(customer_id: i64, email: &str, status: Option<AccessStatus>) -> SheetRow {
        SheetRow {
            origin: Origin {
                file: format!("{email}.csv"),
                line: 2,
            },
            email_cell: Some(email.into()),
            verdict: Verdict::invite_of(customer_id, email, status),
        }
    }

    fn user(id: i64, email: &str, status: AccessStatus, age: Option<Duration>) -> AccessUser {
        AccessUser {
            id,
            email: email.into(),
            name: "Some One".into(),
            status: Some(status),
            created_at: age.map(|a| humantime::format_rfc3339_seconds(now() - a).to_string()),
        }
    }

    fn lists(
        entries: Vec<(i64, Vec<AccessUser>)>,
    ) -> HashMap<i64, Result<Vec<AccessUser>, String>> {
        entries.into_iter().map(|(c, u)| (c, Ok(u))).collect()
    }

    fn done(state: State, email: &str) -> KeyView {
        KeyView {
            existing: Some(Existing {
                state,
                email: email.into(),
                name: "Some One".into(),
                user_id: None,
                access_status: None,
                unsure: false,
                last_error: Some("HTTP 422: nope".into()),
            }),
            last_contact: None,
        }
    }

    fn actions(plan: &Plan) -> Vec<(String, Action)> {
        plan.entries
            .iter()
            .map(|e| (e.email.clone(), e.action))
            .collect()
    }

    use AccessStatus::{Active, AwaitingActivation as Awaiting, Suspended};

    #[test]
    fn missing_users_are_invited_and_present_ones_recorded_once() {
        let rows = [row(1, "a@x.io"), row(1, "B@x.io"), row(1, "b@x.io")];
        let lists = lists(vec![(1, vec![user(7, "b@X.io", Active, None)])]);
        let plan = compute(&rows, &lists, &HashMap::new(), &opts());
        assert_eq!(
            actions(&plan),
            [
                ("a@x.io".to_string(), Action::Invite),
                ("b@X.io".to_string(), Action::Exists),
                ("b@x.io".to_string(), Action::Duplicate),
            ]
        );
        assert_eq!(plan.entries[1].access_user_id, Some(7));
        assert_eq!(plan.customers[&1].current, Some(1));
        assert_eq!(plan.customers[&1].counts[&Action::Invite], 1);
        assert!(!plan.has_problems());
    }

    #[test]
    fn the_ledger_decides_what_is_done_gone_or_still_rejected() {
        let rows = [row(1, "a@x.io"), row(1, "b@x.io"), row(1, "c@x.io")];
        let lists = lists(vec![(1, vec![user(7, "a@x.io", Active, None)])]);
        let ledger = HashMap::from([
            ((1, "a@x.io".to_string()), done(State::Invited, "a@x.io")),
            ((1, "b@x.io".to_string()), done(State::Invited, "b@x.io")),
            ((1, "c@x.io".to_string()), done(State::Rejected, "c@x.io")),
        ]);
        let plan = compute(&rows, &lists, &ledger, &opts());
        let got: Vec<Action> = plan.entries.iter().map(|e| e.action).collect();
        assert_eq!(got, [Action::Unchanged, Action::Gone, Action::Rejected]);
        assert!(plan.has_problems(), "a rejected row is a problem");
        let retry = Options {
            admit: AdmitOptions {
                retry_rejected: true,
            },
            ..opts()
        };
        let plan = compute(&rows, &lists, &ledger, &retry);
        assert_eq!(plan.entries[2].action, Action::Invite);
    }

    #[test]
    fn resend_is_due_by_the_ledger_first_then_created_at_and_never_to_active_users() {
        let rows = [
            row(1, "old@x.io"),
            row(1, "young@x.io"),
            row(1, "undated@x.io"),
            row(1, "active@x.io"),
            row(1, "resent@x.io"),
            row(1, "leaving@x.io"),
        ];
        let lists = lists(vec![(
            1,
            vec![
                user(1, "old@x.io", Awaiting, Some(30 * DAY)),
                user(2, "young@x.io", Awaiting, Some(2 * DAY)),
                user(3, "undated@x.io", Awaiting, None),
                user(4, "active@x.io", Active, Some(30 * DAY)),
                user(5, "resent@x.io", Awaiting, Some(30 * DAY)),
                user(6, "leaving@x.io", Awaiting, Some(30 * DAY)),
            ],
        )]);
        let mut rows = rows.to_vec();
        rows[5] = row_with(1, "leaving@x.io", Some(Suspended));
        // The ledger resent to this one yesterday: not due, whatever created_at says.
        let ledger = HashMap::from([(
            (1, "resent@x.io".to_string()),
            KeyView {
                existing: None,
                last_contact: Some(now() - DAY),
            },
        )]);
        let o = Options {
            resend_after: Some(7 * DAY),
            ..opts()
        };
        let plan = compute(&rows, &lists, &ledger, &o);
        let resends: Vec<&str> = plan
            .entries
            .iter()
            .filter(|e| e.action == Action::Resend)
            .map(|e| e.email.as_str())
            .collect();
        assert_eq!(resends, ["old@x.io"]);
        assert!(plan.entries.iter().any(|e| e.why.contains("30 days")));
        // Without --resend-after, nothing is resent.
        let plan = compute(&rows, &lists, &ledger, &opts());
        assert!(plan.entries.iter().all(|e| e.action != Action::Resend));
        // The ledger's time wins when it is older than the period too.
        let ledger = HashMap::from([(
            (1, "young@x.io".to_string()),
            KeyView {
                existing: None,
                last_contact: Some(now() - 8 * DAY),
            },
        )]);
        let plan = compute(&rows, &lists, &ledger, &o);
        assert_eq!(
            plan.entries
                .iter()
                .filter(|e| e.action == Action::Resend)
                .count(),
            3,
            "old, young (ledger 8 days), resent (created 30 days, no ledger time now)"
        );
    }

    #[test]
    fn status_is_applied_only_when_asked_and_only_where_the_sheet_says_one() {
        let rows = [
            row_with(1, "a@x.io", Some(Suspended)),
            row_with(1, "b@x.io", Some(Active)),
            row_with(1, "c@x.io", None),
            row_with(1, "d@x.io", Some(Suspended)),
        ];
        let lists = lists(vec![(
            1,
            vec![
                user(1, "a@x.io", Active, None),
                user(2, "b@x.io", Suspended, None),
                user(3, "c@x.io", Suspended, None),
                user(4, "d@x.io", Suspended, None),
            ],
        )]);
        let plan = compute(&rows, &lists, &HashMap::new(), &opts());
        assert!(plan.entries.iter().all(|e| e.action == Action::Exists));
        let o = Options {
            apply_status: true,
            ..opts()
        };
        let plan = compute(&rows, &lists, &HashMap::new(), &o);
        let acts: Vec<(&str, Action)> = plan
            .entries
            .iter()
            .filter(|e| e.action != Action::Exists)
            .map(|e| (e.email.as_str(), e.action))
            .collect();
        assert_eq!(
            acts,
            [("a@x.io", Action::Suspend), ("b@x.io", Action::Reactivate)]
        );
    }

    #[test]
    fn prune_suspends_only_users_missing_from_the_sheet_and_not_already_suspended() {
        let rows = [row(1, "a@x.io"), row(1, "b@x.io")];
        let mut users: Vec<AccessUser> = (0..10)
            .map(|i| user(i, &format!("u{i}@x.io"), Active, None))
            .collect();
        users[0].email = "a@x.io".into();
        users[1].email = "b@x.io".into();
        for u in &mut users[2..9] {
            u.status = Some(Suspended);
        }
        // Left: u9, active and not in the sheet: one prune of ten users.
        let lists = lists(vec![
            (1, users),
            (2, vec![user(20, "z@x.io", Active, None)]),
        ]);
        let o = Options {
            prune: true,
            ..opts()
        };
        let plan = compute(&rows, &lists, &HashMap::new(), &o);
        let prunes: Vec<&Entry> = plan
            .entries
            .iter()
            .filter(|e| e.action == Action::Prune)
            .collect();
        assert_eq!(prunes.len(), 1, "customer 2 is not in the sheet: untouched");
        assert_eq!(prunes[0].email, "u9@x.io");
        assert_eq!(prunes[0].hold, Some(Hold::NeedsYes));
        assert_eq!(plan.waiting_for_yes(), 1);
        let plan = compute(&rows, &lists, &HashMap::new(), &Options { yes: true, ..o });
        assert_eq!(plan.waiting_for_yes(), 0);
        assert!(
            plan.entries
                .iter()
                .any(|e| e.action == Action::Prune && e.hold.is_none())
        );
        let plan = compute(&rows, &lists, &HashMap::new(), &opts());
        assert!(plan.entries.iter().all(|e| e.action != Action::Prune));
    }

    #[test]
    fn the_guard_refuses_a_customer_that_would_lose_too_many_users() {
        let users: Vec<AccessUser> = (0..10)
            .map(|i| user(i, &format!("u{i}@x.io"), Active, None))
            .collect();
        let lists = lists(vec![(1, users.clone()), (2, users.clone())]);
        // Customer 1 keeps 8 of 10 (2 prunes, 20%: allowed); customer 2 keeps 2 (8 prunes).
        let mut rows: Vec<SheetRow> = (0..8).map(|i| row(1, &format!("u{i}@x.io"))).collect();
        rows.extend((0..2).map(|i| row(2, &format!("u{i}@x.io"))));
        rows.push(row(2, "new@x.io"));
        let o = Options {
            prune: true,
            yes: true,
            ..opts()
        };
        let plan = compute(&rows, &lists, &HashMap::new(), &o);
        let refusals: Vec<(i64, PruneRefusal)> = plan.refusals().map(|(c, r)| (c, *r)).collect();
        assert_eq!(refusals.len(), 1);
        assert_eq!(refusals[0].0, 2);
        assert_eq!(refusals[0].1.would_suspend, 8);
        assert_eq!(refusals[0].1.percent(), 80.0);
        assert!(plan.has_problems());
        let held = |c: i64| {
            plan.entries
                .iter()
                .filter(|e| e.action == Action::Prune && e.customer_id == Some(c))
                .map(|e| e.hold)
                .collect::<Vec<_>>()
        };
        assert_eq!(held(1), [None, None]);
        assert_eq!(held(2), [Some(Hold::Refused); 8]);
        assert_eq!(
            plan.customers[&2].counts[&Action::Invite],
            1,
            "the customer's other actions stand"
        );
        let lenient = Options {
            max_prune_pct: 80.0,
            ..o
        };
        assert!(
            compute(&rows, &lists, &HashMap::new(), &lenient)
                .refusals()
                .next()
                .is_none()
        );
    }

    #[test]
    fn a_user_named_in_an_unusable_row_is_never_pruned() {
        let rows = [
            row(1, "a@x.io"),
            SheetRow {
                origin: Origin {
                    file: "in.csv".into(),
                    line: 3,
                },
                email_cell: Some(" B@x.io ".into()),
                verdict: Verdict::Invalid("name: missing".into()),
            },
        ];
        let lists = lists(vec![(
            1,
            (0..10)
                .map(|i| user(i, &format!("u{i}@x.io"), Active, None))
                .chain([
                    user(20, "a@x.io", Active, None),
                    user(21, "b@x.io", Active, None),
                ])
                .collect(),
        )]);
        let plan = compute(&rows, &lists, &HashMap::new(), &pruning_all());
        assert!(
            !plan
                .entries
                .iter()
                .any(|e| e.action == Action::Prune && e.email == "b@x.io")
        );
        assert_eq!(plan.customers[&1].protected, 1);
        assert_eq!(plan.entries[1].action, Action::Invalid);
    }

    #[test]
    fn an_unreadable_list_stops_every_action_for_its_customer_only() {
        let rows = [row(1, "a@x.io"), row(2, "b@x.io")];
        let mut lists = lists(vec![(2, vec![user(3, "c@x.io", Active, None)])]);
        lists.insert(1, Err("HTTP 404: Customer not found.".into()));
        let plan = compute(&rows, &lists, &HashMap::new(), &pruning_all());
        let got: Vec<(i64, Action)> = plan
            .entries
            .iter()
            .map(|e| (e.customer_id.unwrap_or(0), e.action))
            .collect();
        assert_eq!(
            got,
            [
                (1, Action::Unreadable),
                (2, Action::Invite),
                (2, Action::Prune)
            ]
        );
        assert!(plan.entries[0].why.contains("404"));
        assert_eq!(plan.customers[&1].current, None);
        assert!(plan.has_problems());
    }

    #[test]
    fn api_times_in_the_shapes_an_api_may_use() {
        let t = UNIX_EPOCH + Duration::from_secs(1_790_845_200);
        for text in [
            "2026-10-01T09:00:00Z",
            "2026-10-01 09:00:00",
            "2026-10-01T09:00:00",
            "2026-10-01T04:30:00-04:30",
            "2026-10-01T11:00:00+0200",
            "1790845200",
            "1790845200000",
        ] {
            assert_eq!(parse_api_time(text), Some(t), "{text}");
        }
        assert_eq!(
            parse_api_time("2026-10-01"),
            Some(t - Duration::from_secs(9 * 3600))
        );
        assert!(parse_api_time("2026-10-01T09:00:00.250Z").is_some());
        for bad in ["", "soon", "2026-13-01T00:00:00Z", "2026-10-01T09:00:00+2"] {
            assert_eq!(parse_api_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn days_read_well() {
        assert_eq!(days(7 * DAY), "7 days");
        assert_eq!(days(DAY + DAY / 2), "1.5 days");
    }
}
