//! `sync`: the sheet as desired state. Plans, applies, resends once per period, guards
//! prunes, and resumes after a kill without repeating an action. Every assertion is on
//! what the sandbox received and holds, or on the ledger; none on wall time.

use std::time::Duration;

use bbinvite::api::types::AccessStatus;
use bbinvite::sandbox::{Faults, SandboxUser};

use crate::util::*;

const DAY: Duration = Duration::from_secs(86_400);

/// A CSV of (customer id, e-mail) rows.
fn sheet(rows: &[(i64, String)]) -> String {
    let mut s = String::from("email,name,customer_id\n");
    for (customer, email) in rows {
        s.push_str(&format!("{email},Person {email},{customer}\n"));
    }
    s
}

/// The e-mails of a generated customer's users `range`.
fn generated(customer: i64, range: std::ops::RangeInclusive<usize>) -> Vec<(i64, String)> {
    range
        .map(|j| (customer, format!("user{j}@customer{customer}.example")))
        .collect()
}

fn users(w: &World, customer: i64) -> Vec<SandboxUser> {
    w.sandbox.access(customer).unwrap()
}

fn resends_of(w: &World, customer: i64, email: &str) -> u64 {
    users(w, customer)
        .into_iter()
        .find(|u| u.user.email == email)
        .map_or(0, |u| u.resends)
}

#[test]
fn a_second_sync_of_an_unchanged_sheet_reads_the_lists_and_sends_nothing() {
    let w = World::new();
    // Acme (101) already has Jane (active) and Raj (awaiting activation).
    let file = w.write(
        "in.csv",
        &sheet(&[
            (101, "jane.doe@acmetelecom.example".into()),
            (101, "raj.patel@acmetelecom.example".into()),
            (102, "new1@brightwave.example".into()),
            (102, "new2@brightwave.example".into()),
            (112, "new3@vertex.example".into()),
        ]),
    );
    let file = file.to_str().unwrap();
    let out = w.run(&["sync", file, "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let st = w.status();
    assert_eq!(row_count(&st, "invited"), 3, "{st}");
    assert_eq!(row_count(&st, "exists"), 2, "{st}");
    assert_eq!(posts(&w.truth()), 3);
    // The ledger knows the users that were already there, with their ids.
    assert_eq!(
        ledger_count(
            &w,
            "SELECT count(*) FROM invitations WHERE state = 'exists' AND access_user_id IS NOT NULL"
        ),
        2
    );

    let before = w.truth();
    let out = w.run(&["sync", file, "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let delta = route_delta(&before, &w.truth());
    assert_eq!(
        delta,
        [(LIST_ACCESS.to_string(), 3)].into(),
        "one list read per customer, nothing else"
    );
    let st = w.status();
    assert_eq!(row_count(&st, "invited"), 3, "{st}");
    assert_eq!(row_count(&st, "exists"), 2, "{st}");

    // `run` shares the ledger's keys: nothing is invited again.
    let out = w.run(&["run", file, "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 3);
    assert_eq!(doubled(&w.truth()), 0);
}

#[test]
fn a_key_invited_by_run_is_not_invited_again_by_sync() {
    let w = World::new();
    let first = w.write("a.csv", &sheet(&[(102, "early@brightwave.example".into())]));
    let out = w.run(&["run", first.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let both = w.write(
        "b.csv",
        &sheet(&[
            (102, "early@brightwave.example".into()),
            (102, "late@brightwave.example".into()),
        ]),
    );
    let out = w.run(&["sync", both.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = w.truth();
    assert_eq!(posts(&t), 2, "one POST per key, whichever command sent it");
    assert_eq!(doubled(&t), 0);
    let st = w.status();
    assert_eq!(row_count(&st, "invited"), 2, "{st}");
}

#[test]
fn three_new_and_two_removed_users_plan_then_apply_with_prune_yes() {
    let w = World::with_config(sandbox_config(&[
        "--generate-customers",
        "2",
        "--users-per-customer",
        "12",
    ]));
    // Customer 1 keeps users 1-10, loses 11 and 12, gains three; customer 2 is unchanged.
    let mut rows = generated(1, 1..=10);
    rows.extend((1..=3).map(|i| (1, format!("new{i}@customer1.example"))));
    rows.extend(generated(2, 1..=12));
    let file = w.write("in.csv", &sheet(&rows));
    let file = file.to_str().unwrap();

    let before = w.truth();
    let out = w.run(&["sync", file, "--plan", "--prune", "--json", "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let plan = json(&out);
    assert_eq!(plan["actions"]["invite"], 3, "{plan}");
    assert_eq!(plan["actions"]["prune"], 2, "{plan}");
    assert_eq!(plan["actions"]["exists"], 22, "{plan}");
    assert_eq!(plan["prune_waiting_for_yes"], 2, "{plan}");
    let mut pruned: Vec<&str> = plan["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "prune")
        .map(|e| e["email"].as_str().unwrap())
        .collect();
    pruned.sort_unstable();
    assert_eq!(
        pruned,
        ["user11@customer1.example", "user12@customer1.example"]
    );
    let customer1 = plan["customers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["customer_id"] == 1)
        .unwrap();
    assert_eq!(customer1["actions"]["invite"], 3, "{customer1}");
    assert_eq!(customer1["current"], 12, "{customer1}");
    assert_eq!(
        route_delta(&before, &w.truth()),
        [(LIST_ACCESS.to_string(), 2)].into(),
        "a plan only reads"
    );
    // The text plan says the same in words.
    let out = w.run(&["sync", file, "--plan", "--prune", "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let words = String::from_utf8_lossy(&out.stdout);
    let line = |email: &str| {
        words
            .lines()
            .find(|l| l.contains(email))
            .unwrap_or_else(|| panic!("no {email} in {words}"))
    };
    assert!(
        line("user11@customer1.example").contains("prune [not without --yes]"),
        "{words}"
    );
    assert!(
        line("new2@customer1.example").contains("invite "),
        "{words}"
    );

    let before = w.truth();
    let out = w.run(&["sync", file, "--prune", "--yes", "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let delta = route_delta(&before, &w.truth());
    assert_eq!(
        delta,
        [
            (LIST_ACCESS.to_string(), 2),
            (INVITE.to_string(), 3),
            (SUSPEND.to_string(), 2)
        ]
        .into()
    );
    let now = users(&w, 1);
    assert_eq!(now.len(), 15);
    for u in &now {
        let expected = match u.user.email.as_str() {
            "user11@customer1.example" | "user12@customer1.example" => AccessStatus::Suspended,
            e if e.starts_with("new") => AccessStatus::AwaitingActivation,
            _ => AccessStatus::Active,
        };
        assert_eq!(u.user.status, Some(expected), "{}", u.user.email);
    }
    assert!(
        users(&w, 2)
            .iter()
            .all(|u| u.user.status == Some(AccessStatus::Active))
    );
    // The ledger shows the night: rows, and the actions beside them.
    let st = w.status();
    assert_eq!(st["actions"]["prune"]["done"], 2, "{st}");
    let out = w.run(&["export", "--actions"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.lines()
            .skip(1)
            .all(|l| l.contains(",prune,done,not in the sheet")),
        "{csv}"
    );

    // Nothing is left to do.
    let before = w.truth();
    let out = w.run(&["sync", file, "--prune", "--yes", "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        route_delta(&before, &w.truth()),
        [(LIST_ACCESS.to_string(), 2)].into()
    );
}

#[test]
fn prune_without_yes_is_reported_as_skipped_and_changes_nothing() {
    let w = World::with_config(sandbox_config(&[
        "--generate-customers",
        "1",
        "--users-per-customer",
        "10",
    ]));
    let file = w.write("in.csv", &sheet(&generated(1, 1..=9)));
    let out = w.run(&["sync", file.to_str().unwrap(), "--prune", "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Prune skipped: 1 users"), "{said}");
    assert!(said.contains("--prune --yes"), "says how to apply: {said}");
    assert_eq!(route(&w.truth(), SUSPEND), 0);
    assert_eq!(
        status_of(&w, 1, "user10@customer1.example"),
        Some(AccessStatus::Active)
    );
    assert_eq!(
        ledger_count(
            &w,
            "SELECT count(*) FROM actions WHERE kind = 'prune' AND state = 'skipped'"
        ),
        1
    );
    let out = w.run(&["sync", file.to_str().unwrap(), "--yes"]);
    assert_eq!(code(&out), 2, "--yes needs --prune: {}", text(&out));
}

#[test]
fn resend_happens_once_per_period_and_never_to_active_users() {
    let seed = serde_json::json!([{
        "id": 500,
        "name": "Resend Test Ltd",
        "access": [
            {"email": "old@r.example", "name": "Old", "status": "awaitingActivation", "created_at": ago(30 * DAY)},
            {"email": "young@r.example", "name": "Young", "status": "awaitingActivation", "created_at": ago(DAY)},
            {"email": "undated@r.example", "name": "Undated", "status": "awaitingActivation"},
            {"email": "active@r.example", "name": "Active", "status": "active", "created_at": ago(30 * DAY)},
            {"email": "offsheet@r.example", "name": "Off", "status": "awaitingActivation", "created_at": ago(30 * DAY)}
        ]
    }]);
    let w = World::seeded(&seed);
    let file = w.write(
        "in.csv",
        &sheet(&[
            (500, "old@r.example".into()),
            (500, "young@r.example".into()),
            (500, "undated@r.example".into()),
            (500, "active@r.example".into()),
        ]),
    );
    let file = file.to_str().unwrap();
    let sync = |w: &World| {
        let out = w.run(&["sync", file, "--resend-after", "7", "--rate", "500"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    };

    sync(&w);
    assert_eq!(
        route(&w.truth(), RESEND),
        1,
        "only the old invitation is due"
    );
    assert_eq!(resends_of(&w, 500, "old@r.example"), 1);
    for quiet in [
        "young@r.example",
        "undated@r.example",
        "active@r.example",
        "offsheet@r.example",
    ] {
        assert_eq!(resends_of(&w, 500, quiet), 0, "{quiet}");
    }

    // The same night again, and the next: the period has not passed.
    sync(&w);
    sync(&w);
    assert_eq!(route(&w.truth(), RESEND), 1, "once per period");

    // A week and a day later (the ledger's clock is moved back instead).
    let conn = rusqlite::Connection::open(w.ledger()).unwrap();
    let moved = conn
        .execute(
            "UPDATE actions SET sent_at = ?1 WHERE kind = 'resend'",
            [
                humantime::format_rfc3339_millis(std::time::SystemTime::now() - 8 * DAY)
                    .to_string(),
            ],
        )
        .unwrap();
    assert_eq!(moved, 1);
    drop(conn);
    sync(&w);
    assert_eq!(resends_of(&w, 500, "old@r.example"), 2, "due again");
    sync(&w);
    assert_eq!(route(&w.truth(), RESEND), 2, "and then once only");
    assert_eq!(resends_of(&w, 500, "active@r.example"), 0);
    assert_eq!(resends_of(&w, 500, "young@r.example"), 0);
    assert_eq!(
        ledger_count(
            &w,
            "SELECT count(*) FROM actions WHERE kind = 'resend' AND state = 'done'"
        ),
        2
    );
}

#[test]
fn apply_status_suspends_and_reactivates_only_where_the_sheet_says() {
    let w = World::with_config(sandbox_config(&[
        "--generate-customers",
        "1",
        "--users-per-customer",
        "3",
    ]));
    let file = w.write(
        "in.csv",
        "email,name,customer_id,status\n\
         user1@customer1.example,User 1,1,suspended\n\
         user2@customer1.example,User 2,1,\n\
         user3@customer1.example,User 3,1,active\n",
    );
    let file = file.to_str().unwrap();
    let out = w.run(&["sync", file, "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(route(&w.truth(), SUSPEND), 0, "not without --apply-status");
    let out = w.run(&["sync", file, "--apply-status", "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        status_of(&w, 1, "user1@customer1.example"),
        Some(AccessStatus::Suspended)
    );
    assert_eq!(route(&w.truth(), SUSPEND), 1);
    assert_eq!(route(&w.truth(), REACTIVATE), 0);
    // User 3 is suspended on the sheet's say, then the sheet wants them back.
    let status3 = |status: &str| {
        format!(
            "email,name,customer_id,status\n\
             user1@customer1.example,User 1,1,suspended\n\
             user2@customer1.example,User 2,1,\n\
             user3@customer1.example,User 3,1,{status}\n"
        )
    };
    let file = w.write("in.csv", &status3("suspended"));
    let file = file.to_str().unwrap();
    let out = w.run(&["sync", file, "--apply-status", "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        route(&w.truth(), SUSPEND),
        2,
        "user 3 now, user 1 not again"
    );
    let file = w.write("in.csv", &status3("active"));
    let out = w.run(&[
        "sync",
        file.to_str().unwrap(),
        "--apply-status",
        "--rate",
        "500",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = w.truth();
    assert_eq!((route(&t, SUSPEND), route(&t, REACTIVATE)), (2, 1));
    assert_eq!(
        status_of(&w, 1, "user3@customer1.example"),
        Some(AccessStatus::Active)
    );
    assert_eq!(
        status_of(&w, 1, "user2@customer1.example"),
        Some(AccessStatus::Active),
        "no status in the sheet: left alone"
    );
}

#[test]
fn the_prune_guard_refuses_a_sheet_that_would_suspend_most_of_a_customer() {
    let w = World::with_config(sandbox_config(&[
        "--generate-customers",
        "2",
        "--users-per-customer",
        "10",
    ]));
    // Customer 1's export was cut short: 2 of its 10 users, and one new one. Customer 2
    // lost one user of ten, which is within the default 20%.
    let mut rows = generated(1, 1..=2);
    rows.push((1, "new@customer1.example".into()));
    rows.extend(generated(2, 1..=9));
    let file = w.write("in.csv", &sheet(&rows));
    let out = w.run(&[
        "sync",
        file.to_str().unwrap(),
        "--prune",
        "--yes",
        "--rate",
        "500",
    ]);
    assert_eq!(code(&out), 1, "a refused prune exits 1\n{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("prune refused for customer 1: it would suspend 8 of its 10 users"),
        "{said}"
    );
    let t = w.truth();
    assert_eq!(route(&t, SUSPEND), 1, "only customer 2's prune");
    assert_eq!(
        route(&t, INVITE),
        1,
        "customer 1's other actions still happen"
    );
    assert!(
        users(&w, 1)
            .iter()
            .all(|u| u.user.status != Some(AccessStatus::Suspended)),
        "nobody of customer 1 is locked out"
    );
    assert_eq!(
        status_of(&w, 2, "user10@customer2.example"),
        Some(AccessStatus::Suspended)
    );
    assert_eq!(
        ledger_count(
            &w,
            "SELECT count(*) FROM actions WHERE customer_id = 1 AND state = 'refused'"
        ),
        8
    );
    let out = w.run(&[
        "sync",
        file.to_str().unwrap(),
        "--prune",
        "--yes",
        "--json",
        "--rate",
        "500",
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let summary = json(&out);
    assert_eq!(summary["prune_refused"][0]["customer_id"], 1, "{summary}");
    assert_eq!(summary["prune_refused"][0]["would_suspend"], 8, "{summary}");
}

/// Resends the ledger holds `sending` (marked, answer not recorded), and how many of
/// them never reached the API; none before the first sync.
fn resends_in_flight(w: &World) -> (i64, usize) {
    if !w.ledger().exists() {
        return (0, 0);
    }
    let conn = rusqlite::Connection::open(w.ledger()).unwrap();
    let mut stmt = conn
        .prepare("SELECT email FROM actions WHERE kind = 'resend' AND state = 'sending'")
        .unwrap();
    let marked: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let reached: std::collections::HashSet<String> = users(w, 900)
        .into_iter()
        .filter(|u| u.resends > 0)
        .map(|u| u.user.email)
        .collect();
    let unsent = marked.iter().filter(|e| !reached.contains(*e)).count();
    (marked.len() as i64, unsent)
}

#[test]
fn a_sync_killed_midway_resumes_without_repeating_actions() {
    // One customer: 200 users awaiting activation for a month (resends due), 100 active
    // users the sheet no longer has (prunes), and 150 new users in the sheet (invites).
    let old = ago(30 * DAY);
    let mut access: Vec<serde_json::Value> = (0..200)
        .map(|i| serde_json::json!({"email": format!("wait{i}@k.example"), "name": format!("Wait {i}"), "status": "awaitingActivation", "created_at": old}))
        .collect();
    access.extend((0..100).map(|i| serde_json::json!({"email": format!("gone{i}@k.example"), "name": format!("Gone {i}"), "status": "active", "created_at": old})));
    let seed = serde_json::json!([{"id": 900, "name": "Kill Test Ltd", "access": access}]);
    let w = World::seeded(&seed);
    w.faults(Faults {
        latency_ms: 20,
        ..w.sandbox.faults()
    });
    let mut rows: Vec<(i64, String)> = (0..200)
        .map(|i| (900, format!("wait{i}@k.example")))
        .collect();
    rows.extend((0..150).map(|i| (900, format!("new{i}@k.example"))));
    let file = w.write("in.csv", &sheet(&rows));
    let args = [
        "sync",
        file.to_str().unwrap(),
        "--resend-after",
        "7",
        "--prune",
        "--yes",
        "--max-prune",
        "50",
        "--rate",
        "100000",
        "--concurrency",
        "4",
        "-q",
    ];
    let bound = Duration::from_secs(60);
    // Once among the invitations, once among the resends. A kill that lands while
    // nothing is in flight (the workers between two requests on a busy machine) proves
    // nothing: the sync is killed again further on, up to three times.
    type Count = fn(&bbinvite::sandbox::Truth) -> u64;
    let phases: [(Count, u64); 2] = [(posts, 30), (|t| route(t, RESEND), 20)];
    for (count, more) in phases {
        let mut sending = 0;
        for attempt in 0..3 {
            let before = count(&w.truth());
            let (_, unsent_before) = resends_in_flight(&w);
            let mut child = spawn_background(&w, &args);
            let reached = wait_for(&w, bound, |t| count(t) >= before + more);
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            assert!(reached, "the sync never got that far");
            // Killed mid-work: something marked and in flight, something not yet sent.
            sending = ledger_count(
                &w,
                "SELECT (SELECT count(*) FROM invitations WHERE state = 'sending') + (SELECT count(*) FROM actions WHERE state = 'sending')",
            );
            // An answer may wait a moment to be recorded, but a resend is marked
            // alone, just before its request: those the kill cut off before they left
            // are at most one a worker.
            let unsent = resends_in_flight(&w).1.saturating_sub(unsent_before);
            assert!(
                unsent <= 4,
                "{unsent} resends marked and never sent at kill {attempt}: more than the workers"
            );
            if sending > 0 {
                break;
            }
        }
        assert!(sending > 0, "nothing was in flight at any of three kills");
        let t = w.truth();
        let created = t.keys.iter().filter(|k| k.created == 1).count();
        assert!(
            created < 150 || route(&t, RESEND) < 200 || route(&t, SUSPEND) < 100,
            "the kill came after the last request"
        );
    }
    // Resends cut off in flight are never sent again: at most these go without.
    let (in_flight, _) = resends_in_flight(&w);
    let out = w.run(&args);
    assert_eq!(code(&out), 0, "{}", text(&out));

    let t = w.truth();
    assert_eq!(doubled(&t), 0, "no user invited twice");
    assert_eq!(t.keys.iter().filter(|k| k.created == 1).count(), 150);
    let now = users(&w, 900);
    let waiting: Vec<&SandboxUser> = now
        .iter()
        .filter(|u| u.user.email.starts_with("wait"))
        .collect();
    assert!(
        waiting.iter().all(|u| u.resends <= 1),
        "never a second e-mail in one period"
    );
    let missed = waiting.iter().filter(|u| u.resends == 0).count() as i64;
    assert!(
        missed <= in_flight,
        "only resends cut off in flight may be lost ({missed} missed, {in_flight} in flight)"
    );
    assert!(
        now.iter()
            .filter(|u| u.user.email.starts_with("gone"))
            .all(|u| u.user.status == Some(AccessStatus::Suspended)),
        "every prune done"
    );
    assert!(
        route(&t, SUSPEND) <= 100 + 4,
        "a suspension is repeated only when cut off in flight: {}",
        route(&t, SUSPEND)
    );

    // Resumed exactly once: one more night has nothing left to do.
    let before = w.truth();
    let out = w.run(&args);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let delta = route_delta(&before, &w.truth());
    assert_eq!(delta.keys().collect::<Vec<_>>(), [LIST_ACCESS], "{delta:?}");
}
