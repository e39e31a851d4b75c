//! `undo`'s decisions: what run N changed in the portal, reversed, unless a later run
//! changed the same user again.
//!
//! Pure: ledger facts in ([`UndoFacts`]), an [`UndoPlan`] out; no file, no request, no
//! SQL, no printing. A user run N invited is suspended; one it suspended (or pruned) is
//! reactivated; one it reactivated is suspended again. Users run N found already there
//! are never touched. A user a later run changed (an invitation or an action that did,
//! or may have, acted) is skipped and named with that run, unless the later run is an
//! undo of N itself: then its reversal is done already, or (left `sending` by an undo
//! that died, or failed after the server may have acted) is looked at before it is sent.

use serde::Serialize;

use crate::domain::{ActionKind, RunId};
use crate::ledger::{Change, UndoFacts, UndoTarget};

/// What becomes of one user run N changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Step {
    /// Send the reversal; `check_first` when an earlier undo of the same run may have
    /// sent it already: look at the user before sending.
    Reverse { check_first: bool },
    /// An earlier undo of the same run reversed it.
    Undone { by_run: RunId },
    /// A later run changed the user again: left as it is.
    Skip {
        by_run: RunId,
        command: String,
        change: String,
    },
}

/// One user run N changed, and what the undo does about it.
#[derive(Debug, Clone, Serialize)]
pub struct UndoEntry {
    pub customer_id: i64,
    pub email: String,
    #[serde(skip)]
    pub name: String,
    pub access_user_id: Option<i64>,
    /// What run N did: `invited`, `suspend`, `prune` or `reactivate`.
    pub did: &'static str,
    /// The reversal: suspend or reactivate.
    pub action: ActionKind,
    #[serde(flatten)]
    pub step: Step,
}

/// The undo of one run.
#[derive(Debug, Clone, Serialize)]
pub struct UndoPlan {
    pub run: RunId,
    pub entries: Vec<UndoEntry>,
    /// Users run N found already there: never touched.
    pub found_there: u64,
}

impl UndoPlan {
    /// The entries still to reverse.
    pub fn to_reverse(&self) -> impl Iterator<Item = &UndoEntry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.step, Step::Reverse { .. }))
    }

    /// How many entries ended each way: reverse, undone, skip.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut n = (0, 0, 0);
        for e in &self.entries {
            match e.step {
                Step::Reverse { .. } => n.0 += 1,
                Step::Undone { .. } => n.1 += 1,
                Step::Skip { .. } => n.2 += 1,
            }
        }
        n
    }
}

/// Why an undo is refused outright.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Run N is itself an undo.
    #[error(
        "run {run} is an undo (of run {undoes}); an undo is not undone: to make those users' access as it was, run `bbinvite sync` with the sheet you want"
    )]
    UndoOfUndo { run: RunId, undoes: RunId },
}

/// Plans the undo of `facts.run`.
pub fn compute(facts: &UndoFacts) -> Result<UndoPlan, Refusal> {
    let run = facts.run.id;
    if facts.run.command == "undo" {
        return Err(Refusal::UndoOfUndo {
            run,
            undoes: facts.run.undoes.unwrap_or_default(),
        });
    }
    let entries = facts
        .targets
        .iter()
        .map(|t| {
            let later = facts
                .changes
                .iter()
                .filter(|c| c.customer_id == t.customer_id && c.email_key == t.email_key);
            UndoEntry {
                customer_id: t.customer_id,
                email: t.email.clone(),
                name: t.name.clone(),
                access_user_id: t.access_user_id,
                did: t.did.map_or("invited", ActionKind::as_str),
                action: reversal(t),
                step: step(run, later),
            }
        })
        .collect();
    Ok(UndoPlan {
        run,
        entries,
        found_there: facts.found_there,
    })
}

/// The action that reverses what run N did to a target.
fn reversal(t: &UndoTarget) -> ActionKind {
    match t.did {
        Some(ActionKind::Suspend | ActionKind::Prune) => ActionKind::Reactivate,
        _ => ActionKind::Suspend,
    }
}

/// A change that did, or may have, acted.
fn acted(c: &Change) -> bool {
    matches!(c.state.as_str(), "done" | "sending") || c.unsure
}

/// The step for one target, from the later changes to its user.
fn step<'a>(run: RunId, later: impl Iterator<Item = &'a Change> + Clone) -> Step {
    let ours = |c: &&Change| c.command == "undo" && c.undoes == Some(run);
    if let Some(c) = later.clone().filter(ours).find(|c| c.state == "done") {
        return Step::Undone { by_run: c.run };
    }
    if let Some(c) = later.clone().filter(|c| !ours(c) && acted(c)).last() {
        return Step::Skip {
            by_run: c.run,
            command: c.command.clone(),
            change: c.kind.clone(),
        };
    }
    Step::Reverse {
        check_first: later.filter(ours).any(acted),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ledger::RunInfo;

    fn info(id: RunId, command: &str, undoes: Option<RunId>) -> RunInfo {
        RunInfo {
            id,
            command: command.into(),
            started_at: String::new(),
            finished_at: None,
            files: vec![],
            dry_run: false,
            outcome: None,
            exit_code: None,
            undoes,
            rate: None,
            burst: None,
        }
    }

    fn target(i: i64, did: Option<ActionKind>) -> UndoTarget {
        UndoTarget {
            customer_id: 101,
            email_key: format!("u{i}@x.test"),
            email: format!("u{i}@x.test"),
            name: format!("U {i}"),
            access_user_id: Some(i),
            did,
        }
    }

    fn change(i: i64, run: RunId, command: &str, undoes: Option<RunId>, state: &str) -> Change {
        Change {
            customer_id: 101,
            email_key: format!("u{i}@x.test"),
            run,
            command: command.into(),
            undoes,
            kind: "reactivate".into(),
            state: state.into(),
            unsure: false,
        }
    }

    fn facts(targets: Vec<UndoTarget>, changes: Vec<Change>) -> UndoFacts {
        UndoFacts {
            run: info(3, "run", None),
            targets,
            changes,
            found_there: 5,
        }
    }

    #[test]
    fn each_change_is_reversed_by_its_opposite() {
        let f = facts(
            vec![
                target(1, None),
                target(2, Some(ActionKind::Suspend)),
                target(3, Some(ActionKind::Prune)),
                target(4, Some(ActionKind::Reactivate)),
            ],
            vec![],
        );
        let plan = compute(&f).unwrap();
        let actions: Vec<_> = plan.entries.iter().map(|e| (e.did, e.action)).collect();
        assert_eq!(
            actions,
            [
                ("invited", ActionKind::Suspend),
                ("suspend", ActionKind::Reactivate),
                ("prune", ActionKind::Reactivate),
                ("reactivate", ActionKind::Suspend),
            ]
        );
        assert!(
            plan.entries
                .iter()
                .all(|e| e.step == Step::Reverse { check_first: false })
        );
        assert_eq!(plan.found_there, 5);
    }

    #[test]
    fn a_user_a_later_run_changed_is_skipped_with_that_run() {
        let f = facts(
            vec![target(1, None), target(2, None)],
            vec![
                change(1, 4, "sync", None, "failed"),
                change(1, 5, "sync", None, "done"),
                change(1, 6, "sync", None, "done"),
                change(1, 7, "sync", None, "pending"),
            ],
        );
        let plan = compute(&f).unwrap();
        assert_eq!(
            plan.entries[0].step,
            Step::Skip {
                by_run: 6,
                command: "sync".into(),
                change: "reactivate".into()
            },
            "the last run that acted; a failed or pending action changed nothing"
        );
        assert_eq!(plan.to_reverse().count(), 1);
    }

    #[test]
    fn an_earlier_undo_of_the_same_run_is_done_or_looked_at_first() {
        let f = facts(
            vec![target(1, None), target(2, None), target(3, None)],
            vec![
                change(1, 4, "undo", Some(3), "done"),
                change(2, 4, "undo", Some(3), "sending"),
                change(3, 4, "undo", Some(3), "pending"),
            ],
        );
        let plan = compute(&f).unwrap();
        let steps: Vec<_> = plan.entries.iter().map(|e| e.step.clone()).collect();
        assert_eq!(
            steps,
            [
                Step::Undone { by_run: 4 },
                Step::Reverse { check_first: true },
                Step::Reverse { check_first: false },
            ]
        );
        assert_eq!(plan.counts(), (2, 1, 0));
    }

    #[test]
    fn an_undo_of_an_undo_is_refused() {
        let mut f = facts(vec![target(1, None)], vec![]);
        f.run = info(4, "undo", Some(3));
        let e = compute(&f).unwrap_err();
        assert_eq!(e, Refusal::UndoOfUndo { run: 4, undoes: 3 });
        assert!(e.to_string().contains("run 4 is an undo"));
    }
}
