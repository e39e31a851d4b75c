//! A ledger written by release 0.1.0 (tests/fixtures/ledger-0.1.0.db) stays readable and
//! keeps its promise: every later schema must carry it forward without losing a state.

use crate::util::{World, code, posts, samples, text};

/// A copy of the 0.1.0 ledger in the work dir, pointed at this test's sandbox (the
/// ledger belongs to the API it was written against, a sandbox on another port).
fn fixture_ledger(w: &World) {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-0.1.0.db");
    std::fs::copy(fixture, w.ledger()).unwrap();
    let db = rusqlite::Connection::open(w.ledger()).unwrap();
    db.execute("UPDATE runs SET base_url = ?1", [w.sandbox.base_url()])
        .unwrap();
}

#[test]
fn a_ledger_of_release_0_1_0_keeps_every_state() {
    let w = World::new();
    fixture_ledger(&w);
    let status = w.status();
    assert_eq!(status["invitations"]["statuses"]["invited"], 28, "{status}");
    assert_eq!(status["invitations"]["statuses"]["exists"], 1, "{status}");
    assert_eq!(status["invitations"]["statuses"]["failed"], 3, "{status}");
    assert_eq!(status["run"]["id"], 6, "{status}");

    let out = w.run(&["export", "--run", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let export = String::from_utf8_lossy(&out.stdout);
    assert_eq!(export.lines().count(), 1 + 36, "{export}");
    assert!(
        export.contains("alice.martin@acmetelecom.example"),
        "{export}"
    );

    // Carried forward: every run, row record, attempt and action is still there.
    let db = rusqlite::Connection::open(w.ledger()).unwrap();
    let n = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(n("PRAGMA user_version"), 10);
    // 0010 keeps no index keyed by an invitation's state or a row's status, nor one kept
    // for some states alone: a run's rows are found by the run, an invitation's by it.
    let indexes = |table: &str| -> String {
        db.query_row(
            "SELECT coalesce(group_concat(name || '(' || cols || ')', ' '), '') FROM (
                 SELECT m.name, (SELECT group_concat(i.name) FROM pragma_index_info(m.name) i) AS cols
                 FROM sqlite_master m
                 WHERE m.type = 'index' AND m.tbl_name = ?1 AND m.sql IS NOT NULL
                 ORDER BY m.name)",
            [table],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(indexes("invitations"), "");
    assert_eq!(
        indexes("rows"),
        "rows_first_seen(first_seen_run) rows_invitation(invitation_id) rows_run(run_id) rows_seen(seen_hash)"
    );
    // 0009 finds attempts by run, no longer by invitation alone.
    assert_eq!(
        n(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('attempts_run', 'attempts_invitation')"
        ),
        1
    );
    assert_eq!(
        n("SELECT count(*) FROM attempts INDEXED BY attempts_run"),
        39
    );
    assert_eq!(n("SELECT count(*) FROM runs"), 6);
    assert_eq!(n("SELECT count(*) FROM invitations"), 32);
    assert_eq!(n("SELECT count(*) FROM rows"), 185);
    assert_eq!(n("SELECT count(*) FROM attempts"), 39);
    assert_eq!(n("SELECT count(*) FROM actions"), 2);
    assert_eq!(n("SELECT count(*) FROM action_attempts"), 1);
    // 0004 dates each invitation to the run that made it: an undo can find them.
    assert_eq!(
        n("SELECT count(*) FROM invitations WHERE state = 'invited' AND invited_run IS NULL"),
        0
    );

    let out = w.run(&["export", "--actions"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("raj.patel@acmetelecom.example"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_rerun_on_a_ledger_of_release_0_1_0_sends_nothing_already_done() {
    let w = World::new();
    fixture_ledger(&w);
    let input = samples("invitees.csv");
    let out = w.run(&["run", input.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 0, "{}", text(&out));
    // Keys recorded before 0003 have no hash yet: their rows are recorded once more,
    // then a night with the same cells records none, and its problem rows take the
    // place of the same rows of the night before.
    let db = rusqlite::Connection::open(w.ledger()).unwrap();
    let rows = |db: &rusqlite::Connection| {
        db.query_row("SELECT count(*) FROM rows", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    let before = rows(&db);
    let out = w.run(&["run", input.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 0, "{}", text(&out));
    let problems = w.status()["statuses"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(s, _)| !["invited", "exists"].contains(&s.as_str()))
        .map(|(_, n)| n.as_u64().unwrap() as i64)
        .sum::<i64>();
    assert!(problems > 0);
    assert_eq!(
        rows(&db),
        before,
        "the problem rows seen again replace last night's records; nothing else recorded"
    );
}

#[test]
fn compact_on_a_ledger_of_release_0_1_0_keeps_every_state_and_failed_rows() {
    let w = World::new();
    fixture_ledger(&w);
    let before = w.status();
    let out = w.run(&["compact", "--older-than", "0"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let after = w.status();
    assert_eq!(before["invitations"], after["invitations"], "{after}");
    assert_eq!(
        before["statuses"], after["statuses"],
        "the last run's counts: {after}"
    );
    let db = rusqlite::Connection::open(w.ledger()).unwrap();
    let kept: i64 = db
        .query_row(
            "SELECT count(DISTINCT invitation_id) FROM rows WHERE status = 'failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 3, "the failed invitations keep a row to retry from");
    let out = w.run(&["retry"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(w.status()["invitations"]["statuses"]["invited"], 31);
}
