//! The ledger's side of `sync`: the actions it takes besides invitations (resend,
//! suspend, reactivate, prune), when a user was last sent an invitation, and users
//! found already in an access list.
//!
//! SQL only, like the rest of the ledger: it stores what the sync stage decided and
//! reports, and answers what the plan needs to know. It decides nothing about HTTP, and
//! never what to do to a user. Each write is a savepoint: atomic alone, and nested when
//! a caller holds a transaction.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use rusqlite::params;

use crate::domain::{ActionOutcome, NewAction};

use super::{
    EXISTING_COLUMNS, Error, Existing, Ledger, Result, RowStatus, RunId, State, now_text, time_text,
};

/// What the ledger knows of one (customer, e-mail) key, for the plan.
#[derive(Debug, Clone, Default)]
pub struct KeyView {
    /// The key's invitation, if it has one.
    pub existing: Option<Existing>,
    /// The last time an invitation or a resend was sent to this user, as far as the
    /// ledger knows. A resend left `sending` by a process that died counts as sent.
    pub last_contact: Option<SystemTime>,
}

/// A user of the sheet found already in the access list.
#[derive(Debug, Clone)]
pub struct Present {
    /// This run's row for the user.
    pub row_id: i64,
    pub customer_id: i64,
    pub email_key: String,
    pub access_user_id: i64,
}

/// One action, as `export --actions` writes it (its JSON keys are the CSV's columns).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActionRow {
    pub run: RunId,
    pub customer_id: i64,
    pub email: String,
    #[serde(rename = "action")]
    pub kind: String,
    pub state: String,
    pub why: String,
    pub error: Option<String>,
    pub access_user_id: i64,
    pub attempts: i64,
    pub sent_at: Option<String>,
    pub updated_at: String,
}

/// Reads a time the ledger wrote.
fn read_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

impl Ledger {
    /// Every key the ledger knows for these customers: its invitation and when its user
    /// was last sent an invitation (an invitation of ours, or a resend).
    pub fn sync_view(&mut self, customer_ids: &[i64]) -> Result<HashMap<(i64, String), KeyView>> {
        self.sql(|c| {
            let mut out: HashMap<(i64, String), KeyView> = HashMap::new();
            let mut invitations = c.prepare_cached(&format!(
                "SELECT email_key, {EXISTING_COLUMNS}, CASE WHEN state = 'invited' THEN done_at END
                 FROM invitations WHERE customer_id = ?1"
            ))?;
            let mut resends = c.prepare_cached(
                "SELECT email_key, max(sent_at) FROM actions
                 WHERE customer_id = ?1 AND kind = 'resend' AND sent_at IS NOT NULL
                   AND (state IN ('sending', 'done') OR unsure = 1)
                 GROUP BY email_key",
            )?;
            for &customer_id in customer_ids {
                let mut rows = invitations.query([customer_id])?;
                while let Some(r) = rows.next()? {
                    let key: String = r.get(0)?;
                    let invited: Option<String> = r.get(8)?;
                    let view = out.entry((customer_id, key)).or_default();
                    view.existing = Some(Existing::read(r, 1)?);
                    view.last_contact = invited.as_deref().and_then(read_time);
                }
                let mut rows = resends.query([customer_id])?;
                while let Some(r) = rows.next()? {
                    let key: String = r.get(0)?;
                    let sent: Option<String> = r.get(1)?;
                    let Some(sent) = sent.as_deref().and_then(read_time) else {
                        continue;
                    };
                    let view = out.entry((customer_id, key)).or_default();
                    view.last_contact = Some(view.last_contact.map_or(sent, |t| t.max(sent)));
                }
            }
            Ok(out)
        })
    }

    /// Records users of the sheet that the access list already holds: their invitation
    /// becomes done (`invited` when an interrupted call of ours may have created the user,
    /// else `exists`) with the access user's id, and this run's row says so. Keys already
    /// done keep their state and gain the id if they lacked one. Returns each row's final
    /// status, in order.
    pub fn settle_present(&mut self, present: &[Present]) -> Result<Vec<RowStatus>> {
        let now = now_text();
        self.write(|tx| {
            let mut out = Vec::with_capacity(present.len());
            {
                let mut find = tx.prepare_cached(
                    "SELECT id, state, unsure FROM invitations WHERE customer_id = ?1 AND email_key = ?2",
                )?;
                let mut fill = tx.prepare_cached(
                    "UPDATE invitations SET access_user_id = COALESCE(access_user_id, ?2) WHERE id = ?1",
                )?;
                let mut settle = tx.prepare_cached(
                    "UPDATE invitations SET state = ?2, access_user_id = ?3, unsure = 0, last_error = NULL,
                            updated_at = ?4, done_at = ?4,
                            invited_run = CASE WHEN ?2 = 'invited'
                                THEN (SELECT run_id FROM rows WHERE id = ?5) END
                     WHERE id = ?1",
                )?;
                let mut row = tx.prepare_cached(
                    "UPDATE rows SET status = ?2, error = NULL, updated_at = ?3 WHERE id = ?1",
                )?;
                for p in present {
                    let (id, state, unsure): (i64, String, bool) = find
                        .query_row(params![p.customer_id, p.email_key], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })?;
                    let state = State::parse(&state).unwrap_or(State::Pending);
                    let status = if state.is_done() {
                        fill.execute(params![id, p.access_user_id])?;
                        RowStatus::from_state(state)
                    } else {
                        let now_state = if state == State::Sending || unsure {
                            State::Invited
                        } else {
                            State::Exists
                        };
                        settle.execute(params![
                            id,
                            now_state.as_str(),
                            p.access_user_id,
                            now,
                            p.row_id
                        ])?;
                        RowStatus::from_state(now_state)
                    };
                    row.execute(params![p.row_id, status.as_str(), now])?;
                    out.push(status);
                }
            }
            Ok(out)
        })
    }

    /// Records the actions a run decided on, in one transaction; returns their ids in order.
    pub fn add_actions(&mut self, run: RunId, actions: &[NewAction]) -> Result<Vec<i64>> {
        let now = now_text();
        self.write(|tx| {
            let mut ids = Vec::with_capacity(actions.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO actions (run_id, customer_id, email_key, email, kind, access_user_id, row_id,
                                          state, why, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
                )?;
                for a in actions {
                    insert.execute(params![
                        run,
                        a.customer_id,
                        crate::domain::email_key(&a.email),
                        a.email,
                        a.kind.as_str(),
                        a.access_user_id,
                        // 0: the row was counted, not recorded (already done, unchanged).
                        a.row_id.filter(|&id| id > 0),
                        a.state.as_str(),
                        a.why,
                        now
                    ])?;
                    ids.push(tx.last_insert_rowid());
                }
            }
            Ok(ids)
        })
    }

    /// Marks actions `sending` in one transaction, before any of their requests leave.
    /// The first mark dates the action: a resend counts as sent from then on.
    pub fn mark_actions_sending(&mut self, ids: &[i64]) -> Result<()> {
        let now = now_text();
        self.write(|tx| {
            {
                let mut mark = tx.prepare_cached(
                    "UPDATE actions SET state = 'sending', sent_at = COALESCE(sent_at, ?2), updated_at = ?2
                     WHERE id = ?1",
                )?;
                for id in ids {
                    mark.execute(params![id, now])?;
                }
            }
            Ok(())
        })
    }

    /// Records what became of actions, with their attempts, in one transaction.
    pub fn record_actions(&mut self, run: RunId, outcomes: &[ActionOutcome]) -> Result<()> {
        let now = now_text();
        self.write(|tx| {
            {
                let mut update = tx.prepare_cached(
                    "UPDATE actions SET state = ?2, attempts = attempts + ?3, last_http = COALESCE(?4, last_http),
                            last_error = ?5, unsure = ?6, updated_at = ?7,
                            done_at = CASE WHEN ?2 = 'done' THEN ?7 ELSE done_at END
                     WHERE id = ?1",
                )?;
                let mut attempt = tx.prepare_cached(
                    "INSERT INTO action_attempts (action_id, run_id, at, http_status, latency_ms, class, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for o in outcomes {
                    update.execute(params![
                        o.action_id,
                        o.state.as_str(),
                        o.attempts.len() as i64,
                        o.http_status,
                        o.error,
                        o.unsure,
                        now
                    ])?;
                    for a in &o.attempts {
                        attempt.execute(params![
                            o.action_id,
                            run,
                            time_text(a.at),
                            a.http_status,
                            a.latency.as_millis() as i64,
                            a.class,
                            a.error
                        ])?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Resends left `sending` by a sync that stopped while they were in flight: whether
    /// they reached the user is unknown, so they become failed and unsure (as a resend
    /// whose answer was lost) and still count as sent in their period. Returns how many.
    /// Only a holder of the run lock may call this: then no other process is sending.
    pub fn settle_interrupted_resends(&mut self, error: &str) -> Result<u64> {
        let now = now_text();
        self.sql(|c| {
            c.execute(
                "UPDATE actions SET state = 'failed', unsure = 1, last_error = ?1, updated_at = ?2
                 WHERE kind = 'resend' AND state = 'sending'",
                params![error, now],
            )
            .map(|n| n as u64)
        })
    }

    /// Resends over the whole ledger whose delivery is unknown: left `sending`, or failed
    /// after the server may have acted on them. None of them is sent again in its period.
    pub fn unconfirmed_resends(&mut self) -> Result<u64> {
        self.sql(|c| {
            c.query_row(
                "SELECT count(*) FROM actions
                 WHERE kind = 'resend' AND (state = 'sending' OR (state = 'failed' AND unsure = 1))",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    /// A run's actions counted per kind, then per state.
    pub fn action_counts(&mut self, run: RunId) -> Result<BTreeMap<String, BTreeMap<String, u64>>> {
        self.sql(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT kind, state, count(*) FROM actions WHERE run_id = ?1 GROUP BY kind, state",
            )?;
            let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
            let mut rows = stmt.query([run])?;
            while let Some(r) = rows.next()? {
                out.entry(r.get(0)?)
                    .or_default()
                    .insert(r.get(1)?, r.get::<_, i64>(2)? as u64);
            }
            Ok(out)
        })
    }

    /// Streams the actions of a run (the last with rows when `None`), in the order they
    /// were decided. Returns the run whose actions were written, if there is one.
    pub fn export_actions(
        &mut self,
        run: Option<RunId>,
        row: &mut dyn FnMut(ActionRow) -> std::io::Result<()>,
    ) -> Result<Option<RunId>> {
        let Some(info) = self.run_info(run)? else {
            return Ok(None);
        };
        let mut io_failure = None;
        self.sql(|c| {
            let mut stmt = c.prepare(
                "SELECT run_id, customer_id, email, kind, state, why, last_error, access_user_id, attempts,
                        sent_at, updated_at
                 FROM actions WHERE run_id = ?1 ORDER BY id",
            )?;
            let mut rows = stmt.query([info.id])?;
            while let Some(r) = rows.next()? {
                let action = ActionRow {
                    run: r.get(0)?,
                    customer_id: r.get(1)?,
                    email: r.get(2)?,
                    kind: r.get(3)?,
                    state: r.get(4)?,
                    why: r.get(5)?,
                    error: r.get(6)?,
                    access_user_id: r.get(7)?,
                    attempts: r.get(8)?,
                    sent_at: r.get(9)?,
                    updated_at: r.get(10)?,
                };
                if let Err(e) = row(action) {
                    io_failure = Some(e);
                    return Ok(());
                }
            }
            Ok(())
        })?;
        match io_failure {
            Some(e) => Err(Error::Output(e)),
            None => Ok(Some(info.id)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::Outcome;
    use crate::domain::{ActionKind, ActionState, Admission, AdmitOptions, Attempt, Verdict};
    use crate::ledger::NewRow;

    fn admit_one(l: &mut Ledger, run: RunId, customer_id: i64, email: &str) -> Admission {
        let src = l.add_source(run, "a.csv", &["email".into()]).unwrap();
        let row = NewRow {
            source: src,
            line: 2,
            cells: "[]".into(),
            email: Some(email.into()),
            verdict: Verdict::invite_of(customer_id, email, None),
        };
        l.admit(run, &[row], AdmitOptions::default())
            .unwrap()
            .remove(0)
    }

    fn resend(customer_id: i64, email: &str, uid: i64) -> NewAction {
        NewAction {
            customer_id,
            email: email.into(),
            access_user_id: uid,
            kind: ActionKind::Resend,
            row_id: None,
            why: "test".into(),
            state: ActionState::Pending,
        }
    }

    fn outcome(id: i64, state: ActionState, unsure: bool) -> ActionOutcome {
        ActionOutcome {
            action_id: id,
            state,
            error: None,
            http_status: None,
            unsure,
            attempts: vec![Attempt {
                at: SystemTime::now(),
                action: "resend",
                http_status: Some(200),
                latency: Duration::from_millis(3),
                class: "ok",
                error: None,
            }],
        }
    }

    #[test]
    fn a_resend_counts_once_marked_sending_and_only_then() {
        let mut l = Ledger::open_in_memory().unwrap();
        let run = l.begin_run("sync", "http://x", &[], false).unwrap();
        let ids = l
            .add_actions(
                run,
                &[
                    resend(1, "A@x.io", 10),
                    resend(1, "b@x.io", 11),
                    resend(1, "c@x.io", 12),
                    resend(1, "d@x.io", 13),
                ],
            )
            .unwrap();
        l.mark_actions_sending(&ids[..3]).unwrap();
        l.record_actions(
            run,
            &[
                outcome(ids[1], ActionState::Failed, false),
                outcome(ids[2], ActionState::Failed, true),
            ],
        )
        .unwrap();
        let view = l.sync_view(&[1]).unwrap();
        // a: left sending by a process that died: counted as sent.
        assert!(view[&(1, "a@x.io".to_string())].last_contact.is_some());
        // b: failed for sure: not sent.
        assert!(!view.contains_key(&(1, "b@x.io".to_string())));
        // c: failed but may have been sent: counted.
        assert!(view[&(1, "c@x.io".to_string())].last_contact.is_some());
        // d: never marked: not sent.
        assert!(!view.contains_key(&(1, "d@x.io".to_string())));
        let counts = l.action_counts(run).unwrap();
        assert_eq!(counts["resend"]["sending"], 1);
        assert_eq!(counts["resend"]["failed"], 2);
        assert_eq!(counts["resend"]["pending"], 1);
    }

    #[test]
    fn an_invitation_of_ours_dates_the_user_but_an_existing_one_does_not() {
        let mut l = Ledger::open_in_memory().unwrap();
        let run = l.begin_run("run", "http://x", &[], false).unwrap();
        for (email, state) in [("a@x.io", State::Invited), ("b@x.io", State::Exists)] {
            let Admission::Send(job) = admit_one(&mut l, run, 1, email) else {
                panic!("expected a job");
            };
            l.record(
                run,
                &[Outcome {
                    invitation_id: job.invitation_id,
                    row_id: job.row_id,
                    state,
                    access_user_id: Some(5),
                    error: None,
                    http_status: None,
                    unsure: false,
                    attempts: vec![],
                }],
            )
            .unwrap();
        }
        let view = l.sync_view(&[1, 2]).unwrap();
        let a = &view[&(1, "a@x.io".to_string())];
        assert!(a.last_contact.is_some());
        assert_eq!(a.existing.as_ref().map(|e| e.state), Some(State::Invited));
        assert!(view[&(1, "b@x.io".to_string())].last_contact.is_none());
    }

    #[test]
    fn present_users_settle_as_exists_or_invited_by_what_the_ledger_saw() {
        let mut l = Ledger::open_in_memory().unwrap();
        let run = l.begin_run("sync", "http://x", &[], false).unwrap();
        let Admission::Send(fresh) = admit_one(&mut l, run, 1, "a@x.io") else {
            panic!("expected a job");
        };
        let Admission::Send(cut) = admit_one(&mut l, run, 1, "b@x.io") else {
            panic!("expected a job");
        };
        // b was in flight when the process died.
        l.mark_sending(&[cut.invitation_id]).unwrap();
        let present = |job: &crate::domain::Job, key: &str, uid| Present {
            row_id: job.row_id,
            customer_id: 1,
            email_key: key.into(),
            access_user_id: uid,
        };
        let statuses = l
            .settle_present(&[present(&fresh, "a@x.io", 7), present(&cut, "b@x.io", 8)])
            .unwrap();
        assert_eq!(statuses, [RowStatus::Exists, RowStatus::Invited]);
        let a = l.peek(1, "a@x.io").unwrap().unwrap();
        assert_eq!(a.state, State::Exists);
        let id: Option<i64> = l
            .conn
            .query_row(
                "SELECT access_user_id FROM invitations WHERE email_key = 'a@x.io'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(id, Some(7));
    }
}
