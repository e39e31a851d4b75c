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
    assert_eq!(status["ledger"]["invited"], 28, "{status}");
    assert_eq!(status["ledger"]["exists"], 1, "{status}");
    assert_eq!(status["ledger"]["failed"], 3, "{status}");
    assert_eq!(status["run"]["id"], 6, "{status}");

    let out = w.run(&["export", "--run", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let export = String::from_utf8_lossy(&out.stdout);
    assert_eq!(export.lines().count(), 1 + 36, "{export}");
    assert!(
        export.contains("alice.martin@acmetelecom.example"),
        "{export}"
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
}
