//! The ledger's side of `undo`: what a run changed in the portal (the users it invited,
//! the suspensions and reactivations it carried out), what later runs did to the same
//! users, and the marks an undo run and a sending run's pace leave on `runs`.
//!
//! SQL only: the facts go to the pure planner (`sync::undo`), which decides what to
//! reverse. Nothing here decides anything about HTTP or about what to do to a user.

use rusqlite::params;

use crate::domain::ActionKind;

use super::{Ledger, Result, RunId, RunInfo};

/// A user run N changed, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct UndoTarget {
    pub customer_id: i64,
    pub email_key: String,
    pub email: String,
    /// The name the invitation was sent with; empty for an action's user.
    pub name: String,
    /// The access user's id, when the ledger knows it.
    pub access_user_id: Option<i64>,
    /// `None`: run N invited the user; else the action it carried out.
    pub did: Option<ActionKind>,
}

/// Something a later run did (or began) to one of the targets' users.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub customer_id: i64,
    pub email_key: String,
    pub run: RunId,
    /// The later run's command (`sync`, `undo`, …).
    pub command: String,
    /// When the later run is an undo: the run it reverses.
    pub undoes: Option<RunId>,
    /// `invite`, or an action's kind.
    pub kind: String,
    /// `done` for an invitation; an action's state.
    pub state: String,
    /// The call may have acted without the answer being seen.
    pub unsure: bool,
}

/// What the ledger knows of run N's changes, for the undo planner.
#[derive(Debug, Clone)]
pub struct UndoFacts {
    pub run: RunInfo,
    pub targets: Vec<UndoTarget>,
    /// Later changes to the targets' users, in run order.
    pub changes: Vec<Change>,
    /// Users run N found already in the portal (`exists`): never touched.
    pub found_there: u64,
}

/// The keys run ?1 changed: its invitations and its done suspensions or reactivations.
const TARGET_KEYS: &str = "SELECT customer_id, email_key FROM invitations
        WHERE invited_run = ?1 AND state = 'invited'
     UNION SELECT customer_id, email_key FROM actions
        WHERE run_id = ?1 AND state = 'done' AND kind IN ('suspend', 'prune', 'reactivate')";

impl Ledger {
    /// Run `run`'s changes to the portal and what later runs did to the same users;
    /// `None` when the ledger has no such run.
    pub fn undo_facts(&mut self, run: RunId) -> Result<Option<UndoFacts>> {
        let Some(info) = self.run_info(Some(run))? else {
            return Ok(None);
        };
        self.sql(|c| {
            let mut targets = Vec::new();
            let mut invited = c.prepare(
                "SELECT customer_id, email_key, email, name, access_user_id FROM invitations
                 WHERE invited_run = ?1 AND state = 'invited' ORDER BY id",
            )?;
            let mut rows = invited.query([run])?;
            while let Some(r) = rows.next()? {
                targets.push(UndoTarget {
                    customer_id: r.get(0)?,
                    email_key: r.get(1)?,
                    email: r.get(2)?,
                    name: r.get(3)?,
                    access_user_id: r.get(4)?,
                    did: None,
                });
            }
            let mut acted = c.prepare(
                "SELECT customer_id, email_key, email, access_user_id, kind FROM actions
                 WHERE run_id = ?1 AND state = 'done' AND kind IN ('suspend', 'prune', 'reactivate')
                 ORDER BY id",
            )?;
            let mut rows = acted.query([run])?;
            while let Some(r) = rows.next()? {
                let kind: String = r.get(4)?;
                targets.push(UndoTarget {
                    customer_id: r.get(0)?,
                    email_key: r.get(1)?,
                    email: r.get(2)?,
                    name: String::new(),
                    access_user_id: Some(r.get(3)?),
                    did: ActionKind::parse(&kind),
                });
            }
            let changes = later_changes(c, run)?;
            let found_there = c.query_row(
                "SELECT count(*) FROM rows WHERE run_id = ?1 AND status = 'exists'",
                [run],
                |r| r.get::<_, i64>(0),
            )? as u64;
            Ok(Some(UndoFacts {
                run: info,
                targets,
                changes,
                found_there,
            }))
        })
    }

    /// Marks `run` as the undo of `undoes`.
    pub fn set_undoes(&mut self, run: RunId, undoes: RunId) -> Result<()> {
        self.write(|c| {
            c.execute(
                "UPDATE runs SET undoes = ?2 WHERE id = ?1",
                params![run, undoes],
            )
            .map(drop)
        })
    }

    /// Keeps the `--rate` (requests per second) and `--burst` a sending run was given.
    pub fn set_pace(&mut self, run: RunId, rate: f64, burst: u32) -> Result<()> {
        self.write(|c| {
            c.execute(
                "UPDATE runs SET rate = ?2, burst = ?3 WHERE id = ?1",
                params![run, rate, burst],
            )
            .map(drop)
        })
    }
}

/// Invitations and actions of runs after `run` on the keys `run` changed, in run order.
fn later_changes(c: &rusqlite::Connection, run: RunId) -> rusqlite::Result<Vec<Change>> {
    let mut stmt = c.prepare(&format!(
        "SELECT a.customer_id, a.email_key, a.run_id, u.command, u.undoes, a.kind, a.state, a.unsure
         FROM actions a JOIN runs u ON u.id = a.run_id
         WHERE a.run_id > ?1 AND (a.customer_id, a.email_key) IN ({TARGET_KEYS})
         UNION ALL
         SELECT i.customer_id, i.email_key, i.invited_run, u.command, u.undoes, 'invite', 'done', 0
         FROM invitations i JOIN runs u ON u.id = i.invited_run
         WHERE i.invited_run > ?1 AND (i.customer_id, i.email_key) IN ({TARGET_KEYS})
         ORDER BY 3"
    ))?;
    let mut rows = stmt.query([run])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(Change {
            customer_id: r.get(0)?,
            email_key: r.get(1)?,
            run: r.get(2)?,
            command: r.get(3)?,
            undoes: r.get(4)?,
            kind: r.get(5)?,
            state: r.get(6)?,
            unsure: r.get(7)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::types::NewAccessUser;
    use crate::domain::{ActionState, Admission, AdmitOptions, NewAction, State, Verdict};
    use crate::ledger::NewRow;
    use crate::ledger::tests::answered;

    /// Admits and records one invitation of `email` in `run`, ending `state`.
    fn invite(l: &mut Ledger, run: RunId, email: &str, state: State) {
        let source = l.add_source(run, "a.csv", &["email".into()]).unwrap();
        let user = NewAccessUser {
            email: email.into(),
            name: "Some One".into(),
            id: None,
            status: None,
        };
        let row = NewRow {
            source,
            line: 2,
            cells: format!("[\"{email}\"]"),
            email: Some(email.into()),
            verdict: Verdict::Invite {
                customer_id: 1,
                user,
            },
        };
        let Admission::Send(job) = l
            .admit(run, &[row], AdmitOptions::default())
            .unwrap()
            .remove(0)
        else {
            panic!("not sent");
        };
        l.record(run, &[answered(&job, state, None)]).unwrap();
    }

    #[test]
    fn the_facts_name_what_a_run_made_and_what_later_runs_did() {
        let mut l = Ledger::open_in_memory().unwrap();
        let first = l.begin_run("run", "http://x", &[], false).unwrap();
        invite(&mut l, first, "a@x.io", State::Invited);
        invite(&mut l, first, "b@x.io", State::Exists);
        let sync = l.begin_run("sync", "http://x", &[], false).unwrap();
        let suspend = NewAction {
            customer_id: 1,
            email: "A@x.io".into(),
            access_user_id: 7,
            kind: ActionKind::Suspend,
            row_id: None,
            why: "test".into(),
            state: ActionState::Done,
        };
        l.add_actions(sync, &[suspend]).unwrap();
        l.set_undoes(sync, first).unwrap();
        l.set_pace(sync, 2.5, 3).unwrap();

        let facts = l.undo_facts(first).unwrap().unwrap();
        assert_eq!(
            facts.targets.len(),
            1,
            "the invited one, not the one found there"
        );
        assert_eq!(facts.targets[0].email_key, "a@x.io");
        assert_eq!(facts.targets[0].access_user_id, Some(7));
        assert_eq!(facts.targets[0].did, None);
        assert_eq!(facts.found_there, 1);
        assert_eq!(facts.changes.len(), 1);
        assert_eq!(facts.changes[0].run, sync);
        assert_eq!(facts.changes[0].undoes, Some(first));
        assert_eq!(facts.changes[0].kind, "suspend");

        let later = l.undo_facts(sync).unwrap().unwrap();
        assert_eq!(later.targets[0].did, Some(ActionKind::Suspend));
        assert_eq!((later.run.rate, later.run.burst), (Some(2.5), Some(3)));
        assert!(l.undo_facts(99).unwrap().is_none());
    }
}
