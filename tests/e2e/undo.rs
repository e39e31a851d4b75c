//! `undo --run N`: the plan without `--yes`, the reversal with it (sandbox truth), users
//! a later run changed skipped and named, a killed undo finished without a repeat, a
//! second undo that finds nothing, and an undo of an undo refused.

use std::time::Duration;

use bbinvite::api::types::AccessStatus;
use bbinvite::sandbox::Faults;

use crate::util::*;

/// A sandbox whose customer 1 already holds user1..user5.
fn world() -> World {
    World::with_config(sandbox_config(&[
        "--generate-customers",
        "1",
        "--users-per-customer",
        "5",
    ]))
}

/// A sheet of user1..user20 of customer 1, with a status for one user if asked.
fn sheet(w: &World, status_of_user7: &str) -> String {
    let mut csv = String::from("email,name,customer_id,status\n");
    for i in 1..=20 {
        let status = if i == 7 { status_of_user7 } else { "" };
        csv.push_str(&format!("user{i}@customer1.example,User {i},1,{status}\n"));
    }
    w.write("in.csv", &csv).to_str().unwrap().to_string()
}

fn email(i: usize) -> String {
    format!("user{i}@customer1.example")
}

/// Run 1: 20 rows, 5 of them already in the portal.
fn first_run(w: &World) {
    let file = sheet(w, "");
    let out = w.run(&["run", &file, "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let status = w.status();
    assert_eq!(row_count(&status, "invited"), 15, "{status}");
    assert_eq!(row_count(&status, "exists"), 5, "{status}");
}

fn suspends(w: &World, i: usize) -> u64 {
    sandbox_user(w, 1, &email(i)).map_or(0, |u| u.suspends)
}

#[test]
fn undo_plans_then_suspends_exactly_who_the_run_invited_once() {
    let w = world();
    first_run(&w);
    let before = w.truth().requests_total;
    let out = w.run(&["undo", "--run", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_eq!(plan.matches("  suspend ").count(), 15, "{plan}");
    assert!(
        plan.contains("left alone, found already there by run 1: 5"),
        "{plan}"
    );
    assert!(plan.contains("Nothing was sent"), "{plan}");
    assert_eq!(w.truth().requests_total, before, "a plan makes no request");

    let out = w.run(&["undo", "--run", "1", "--json"]);
    let plan = json(&out);
    assert_eq!(plan["command"], "undo", "{plan}");
    assert_eq!(plan["run"], 1);
    assert_eq!(plan["something_to_undo"], true);
    assert_eq!(plan["counts"]["reverse"], 15);
    assert_eq!(plan["counts"]["found_there"], 5);
    let entries = plan["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 15);
    assert_eq!(entries[0]["decision"], "reverse", "{plan}");
    assert_eq!(entries[0]["action"], "suspend");
    assert_eq!(entries[0]["did"], "invited");
    assert!(entries[0]["access_user_id"].is_i64(), "{plan}");

    let out = w.run(&["undo", "--run", "1", "--yes", "--rate", "500", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let summary = json(&out);
    assert_eq!(summary["command"], "undo", "{summary}");
    assert_eq!(summary["run"], 2);
    assert_eq!(summary["undoes"], 1);
    assert_eq!(summary["outcome"], "completed");
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["actions"]["suspend"]["done"], 15, "{summary}");
    assert_eq!(route(&w.truth(), SUSPEND), 15);
    for i in 1..=20 {
        let (want, n) = if i <= 5 {
            (AccessStatus::Active, 0)
        } else {
            (AccessStatus::Suspended, 1)
        };
        assert_eq!(status_of(&w, 1, &email(i)), Some(want), "user{i}");
        assert_eq!(suspends(&w, i), n, "user{i}");
    }
    // The undo is a run of its own that `status` and `export --actions` show.
    let status = w.status();
    assert_eq!(status["run"]["id"], 2, "{status}");
    assert_eq!(status["run"]["command"], "undo");
    assert_eq!(status["run"]["undoes"], 1);
    let out = w.run(&["export", "--actions", "--run", "2"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1 + 15);

    // Undone already: nothing the second time, no request.
    let before = w.truth().requests_total;
    let out = w.run(&["undo", "--run", "1", "--yes"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("Nothing to undo for run 1"),
        "{}",
        text(&out)
    );
    assert_eq!(w.truth().requests_total, before);

    // An undo is not undone.
    let out = w.run(&["undo", "--run", "2", "--yes"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("run 2 is an undo"), "{}", text(&out));
    let out = w.run(&["undo", "--run", "9"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert_eq!(route(&w.truth(), SUSPEND), 15);
}

#[test]
fn a_user_a_later_sync_changed_is_skipped_and_named_with_that_run() {
    let w = world();
    first_run(&w);
    for (status, run) in [("suspended", 2), ("active", 3)] {
        let file = sheet(&w, status);
        let out = w.run(&["sync", &file, "--apply-status", "--rate", "500"]);
        assert_eq!(code(&out), 0, "run {run}: {}", text(&out));
    }
    let back = Some(AccessStatus::AwaitingActivation);
    assert_eq!(status_of(&w, 1, &email(7)), back, "reactivated");
    let plan = json(&w.run(&["undo", "--run", "1", "--json"]));
    assert_eq!(plan["counts"]["reverse"], 14, "{plan}");
    assert_eq!(plan["counts"]["skipped"], 1, "{plan}");
    let skipped = plan["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["decision"] == "skip")
        .unwrap();
    assert_eq!(skipped["email"], email(7), "{plan}");
    assert_eq!(skipped["by_run"], 3, "{plan}");
    let out = w.run(&["undo", "--run", "1"]);
    let shown = text(&out);
    let line = shown
        .lines()
        .find(|l| l.contains(&email(7)))
        .unwrap_or_default();
    assert!(
        line.starts_with("  skip ") && line.ends_with("changed again by run 3 (sync: reactivate)"),
        "{shown}"
    );
    // A user whose access id the ledger lacks is looked up in the access list.
    let db = rusqlite::Connection::open(w.ledger()).unwrap();
    let forgotten = "UPDATE invitations SET access_user_id = NULL WHERE email_key = ?1";
    assert_eq!(db.execute(forgotten, [email(8)]).unwrap(), 1);
    drop(db);
    let before = route(&w.truth(), SUSPEND);
    let out = w.run(&["undo", "--run", "1", "--yes", "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(route(&w.truth(), SUSPEND) - before, 14);
    assert_eq!(status_of(&w, 1, &email(7)), back, "left alone");
    assert_eq!(status_of(&w, 1, &email(8)), Some(AccessStatus::Suspended));
    assert_eq!(suspends(&w, 8), 1);
}

#[test]
fn a_killed_undo_resumes_without_repeating_a_suspension() {
    let w = world();
    first_run(&w);
    w.faults(Faults {
        latency_ms: 150,
        ..w.sandbox.faults()
    });
    let mut child = spawn_background(
        &w,
        &[
            "undo",
            "--run",
            "1",
            "--yes",
            "--rate",
            "500",
            "--concurrency",
            "2",
        ],
    );
    let some = wait_for(&w, Duration::from_secs(60), |t| route(t, SUSPEND) >= 4);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(some, "the undo was under way before the kill");
    w.faults(Faults {
        latency_ms: 0,
        ..w.sandbox.faults()
    });
    let out = w.run(&["undo", "--run", "1", "--yes", "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for i in 6..=20 {
        assert_eq!(
            status_of(&w, 1, &email(i)),
            Some(AccessStatus::Suspended),
            "user{i}"
        );
        assert_eq!(suspends(&w, i), 1, "user{i} suspended once");
    }
    let out = w.run(&["undo", "--run", "1", "--yes"]);
    assert!(
        text(&out).contains("Nothing to undo for run 1"),
        "{}",
        text(&out)
    );
}
