//! The words every stage shares: where an invitation and a row stand, what a row was
//! judged to be, an invitation to send and what became of it, the actions `sync` takes
//! and what became of them, and the rule that keys an invitation.
//!
//! The bottom of the crate: plain data and pure rules. It imports nothing of the crate
//! but the API's types, and must never touch SQL, HTTP, the input or the terminal; the
//! ledger stores these, the send stage produces them, `sync` and `app` drive them.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::api::types::{AccessStatus, NewAccessUser};

/// A run's id in the ledger.
pub type RunId = i64;

/// Where an invitation stands. Stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Sending,
    Invited,
    Exists,
    Failed,
    Rejected,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Sending => "sending",
            State::Invited => "invited",
            State::Exists => "exists",
            State::Failed => "failed",
            State::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "sending" => State::Sending,
            "invited" => State::Invited,
            "exists" => State::Exists,
            "failed" => State::Failed,
            "rejected" => State::Rejected,
            _ => return None,
        })
    }

    /// Invited or exists: nothing more to send, ever.
    pub fn is_done(self) -> bool {
        matches!(self, State::Invited | State::Exists)
    }
}

/// What became of one input row. The first six mirror its invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowStatus {
    Invited,
    Exists,
    Pending,
    Sending,
    Failed,
    Rejected,
    Invalid,
    Unresolved,
    Duplicate,
}

impl RowStatus {
    pub const ALL: [RowStatus; 9] = [
        RowStatus::Invited,
        RowStatus::Exists,
        RowStatus::Pending,
        RowStatus::Sending,
        RowStatus::Failed,
        RowStatus::Rejected,
        RowStatus::Invalid,
        RowStatus::Unresolved,
        RowStatus::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Invited => "invited",
            RowStatus::Exists => "exists",
            RowStatus::Pending => "pending",
            RowStatus::Sending => "sending",
            RowStatus::Failed => "failed",
            RowStatus::Rejected => "rejected",
            RowStatus::Invalid => "invalid",
            RowStatus::Unresolved => "unresolved",
            RowStatus::Duplicate => "duplicate",
        }
    }

    pub fn parse(s: &str) -> Option<RowStatus> {
        RowStatus::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn from_state(s: State) -> RowStatus {
        match s {
            State::Pending => RowStatus::Pending,
            State::Sending => RowStatus::Sending,
            State::Invited => RowStatus::Invited,
            State::Exists => RowStatus::Exists,
            State::Failed => RowStatus::Failed,
            State::Rejected => RowStatus::Rejected,
        }
    }

    /// A row that ends like this makes the run exit 1.
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            RowStatus::Failed | RowStatus::Rejected | RowStatus::Invalid | RowStatus::Unresolved
        )
    }
}

/// One request made for an invitation, for the audit trail.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: SystemTime,
    /// `invite`, `confirm` (a look at the access list), `resend`, `suspend`, `reactivate`.
    pub action: &'static str,
    pub http_status: Option<u16>,
    pub latency: Duration,
    /// `ok`, or an [`crate::api::ErrorClass`] name.
    pub class: &'static str,
    pub error: Option<String>,
}

/// What the read and resolve stages made of a row.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Bad input: the reason says which column and what to fix.
    Invalid(String),
    /// No customer, or several.
    Unresolved {
        customer_id: Option<i64>,
        reason: String,
    },
    /// Ready to invite.
    Invite {
        customer_id: i64,
        user: NewAccessUser,
    },
}

/// What the ledger decided for a row with an invitation to send.
#[derive(Debug, Clone)]
pub enum Admission {
    /// Recorded with this final status; nothing to send.
    Settled { row_id: i64, status: RowStatus },
    /// To be sent.
    Send(Job),
}

/// What a rerun does with a `rejected` invitation.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitOptions {
    pub retry_rejected: bool,
}

/// The state of one key as a read-only look sees it (`validate`, `--dry-run`).
#[derive(Debug, Clone)]
pub struct Existing {
    pub state: State,
    pub email: String,
    pub name: String,
    pub user_id: Option<i64>,
    pub access_status: Option<String>,
    pub unsure: bool,
    pub last_error: Option<String>,
}

/// The decision for a row whose key the ledger may already know, shared by the real
/// admission and the read-only plan so the two can never disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Never seen, or pending/failed: send it. `check_first` when an earlier call may
    /// have created the user without our seeing the answer.
    Send { check_first: bool },
    /// Invited or exists already.
    Done(State),
    /// Rejected before, and the row did not change.
    StillRejected,
}

pub fn decide(existing: Option<&Existing>, user: &NewAccessUser, opts: AdmitOptions) -> Decision {
    let Some(e) = existing else {
        return Decision::Send { check_first: false };
    };
    match e.state {
        State::Invited | State::Exists => Decision::Done(e.state),
        State::Sending => Decision::Send { check_first: true },
        State::Pending | State::Failed => Decision::Send {
            check_first: e.unsure,
        },
        State::Rejected => {
            let changed = e.email != user.email
                || e.name != user.name
                || e.user_id != user.id
                || e.access_status.as_deref() != user.status.map(AccessStatus::as_str);
            if changed || opts.retry_rejected {
                Decision::Send {
                    check_first: e.unsure,
                }
            } else {
                Decision::StillRejected
            }
        }
    }
}

/// The lower-cased, trimmed e-mail that keys an invitation.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// An invitation to send.
#[derive(Debug, Clone)]
pub struct Job {
    pub invitation_id: i64,
    /// The input row this run recorded for it.
    pub row_id: i64,
    pub customer_id: i64,
    pub user: NewAccessUser,
    /// An earlier call may have created the user without our seeing the answer: look
    /// in the access list before sending.
    pub check_first: bool,
    /// `file:line` of the row, for messages.
    pub origin: String,
}

/// What became of a [`Job`].
#[derive(Debug, Clone)]
pub struct Outcome {
    pub invitation_id: i64,
    pub row_id: i64,
    /// Invited, exists, failed, rejected, or pending (never sent: the run stopped).
    pub state: State,
    pub access_user_id: Option<i64>,
    /// For a person: what went wrong and what to do.
    pub error: Option<String>,
    pub http_status: Option<u16>,
    /// The last call may have acted without our seeing the answer.
    pub unsure: bool,
    pub attempts: Vec<Attempt>,
}

/// What an action does to an access user. Stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// `POST …/resend`: sends an e-mail, so never twice in one period.
    Resend,
    /// `PUT …/suspend` because the sheet's status says so.
    Suspend,
    /// `PUT …/reactivate` because the sheet's status says so.
    Reactivate,
    /// `PUT …/suspend` of a user who is not in the sheet (never a deletion).
    Prune,
}

impl ActionKind {
    pub const ALL: [ActionKind; 4] = [
        ActionKind::Resend,
        ActionKind::Suspend,
        ActionKind::Reactivate,
        ActionKind::Prune,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Resend => "resend",
            ActionKind::Suspend => "suspend",
            ActionKind::Reactivate => "reactivate",
            ActionKind::Prune => "prune",
        }
    }

    pub fn parse(s: &str) -> Option<ActionKind> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where an action stands. Stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionState {
    /// Decided, not yet sent (or never sent: the run stopped first).
    Pending,
    /// Committed before the request leaves; left so only by a process that died.
    Sending,
    Done,
    Failed,
    /// A prune without `--yes`: shown, not applied.
    Skipped,
    /// A prune the `--max-prune` guard refused.
    Refused,
}

impl ActionState {
    pub const ALL: [ActionState; 6] = [
        ActionState::Pending,
        ActionState::Sending,
        ActionState::Done,
        ActionState::Failed,
        ActionState::Skipped,
        ActionState::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Pending => "pending",
            ActionState::Sending => "sending",
            ActionState::Done => "done",
            ActionState::Failed => "failed",
            ActionState::Skipped => "skipped",
            ActionState::Refused => "refused",
        }
    }
}

/// An action a sync run decided on, on its way into the ledger.
#[derive(Debug, Clone)]
pub struct NewAction {
    pub customer_id: i64,
    pub email: String,
    pub access_user_id: i64,
    pub kind: ActionKind,
    /// The input row that asked for it; `None` for a prune.
    pub row_id: Option<i64>,
    pub why: String,
    /// Pending, or skipped or refused when it is not to be applied.
    pub state: ActionState,
}

/// An action to send.
#[derive(Debug, Clone)]
pub struct ActionJob {
    /// The action's id in the ledger.
    pub id: i64,
    pub customer_id: i64,
    pub access_user_id: i64,
    pub kind: ActionKind,
    pub email: String,
}

/// What became of an action.
#[derive(Debug, Clone)]
pub struct ActionOutcome {
    pub action_id: i64,
    /// Done, failed, or pending (never sent: the run stopped or the credentials failed).
    pub state: ActionState,
    pub error: Option<String>,
    pub http_status: Option<u16>,
    /// The last call may have acted without our seeing the answer.
    pub unsure: bool,
    pub attempts: Vec<Attempt>,
}

#[cfg(test)]
impl Verdict {
    /// An invitation of `email` (named "Some One") to `customer_id`, as tests write one.
    pub(crate) fn invite_of(
        customer_id: i64,
        email: &str,
        status: Option<AccessStatus>,
    ) -> Verdict {
        Verdict::Invite {
            customer_id,
            user: NewAccessUser {
                email: email.into(),
                name: "Some One".into(),
                id: None,
                status,
            },
        }
    }
}
