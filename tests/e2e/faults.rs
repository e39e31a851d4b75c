//! Exactly once under faults: errors, drops, 429s, expiring tokens, kills, signals, locks.

use std::time::{Duration, Instant};

use crate::util::*;
use bbinvite::sandbox::Faults;

fn created_once(w: &World) -> usize {
    w.truth().keys.iter().filter(|k| k.created == 1).count()
}

#[test]
fn errors_drops_and_429s_end_with_every_key_created_exactly_once() {
    let w = World::new();
    w.faults(Faults {
        fail_rate: 0.15,
        drop_rate: 0.05,
        rate_limit: Some(200),
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv(0, 300));
    let mut runs = 0;
    // A read before the rows (the directory) may meet five 500s in a row and stop the
    // run with 3, as it should; the rerun takes it from there.
    for _ in 0..4 {
        runs += 1;
        let out = w.run(&[
            "run",
            file.to_str().unwrap(),
            "--rate",
            "400",
            "--concurrency",
            "8",
        ]);
        assert!([0, 1, 3].contains(&code(&out)), "{}", text(&out));
        if code(&out) == 0 {
            break;
        }
    }
    let t = w.truth();
    assert_eq!(doubled(&t), 0, "no key created twice");
    assert_eq!(
        created_once(&w),
        300,
        "every key created, after {runs} runs"
    );
    let st = w.status();
    assert_eq!(
        st["invitations"]["statuses"]["invited"].as_u64(),
        Some(300),
        "{st}"
    );
}

#[test]
fn sigkill_at_any_moment_then_rerun_invites_each_key_exactly_once() {
    let w = World::new();
    // Slow enough that a kill lands mid-run, never after the last row.
    w.faults(Faults {
        latency_ms: 20,
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv(0, 2000));
    let args = [
        "run",
        file.to_str().unwrap(),
        "--rate",
        "100000",
        "--concurrency",
        "16",
        "-q",
    ];
    // Kill points spread over the rows, each after this many more invitations left.
    for more in [150u64, 400, 90, 300] {
        let before = posts(&w.truth());
        let mut child = spawn_background(&w, &args);
        let reached = wait_for(&w, Duration::from_secs(60), |t| posts(t) >= before + more);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        assert!(reached, "the run never sent {more} more invitations");
        // Killed mid-work: some invitations marked and in flight, some not yet sent.
        let sending = ledger_count(
            &w,
            "SELECT count(*) FROM invitations WHERE state = 'sending'",
        );
        assert!(sending > 0, "no invitation was in flight at the kill");
        assert!(created_once(&w) < 2000, "the kill came after the last row");
    }
    let mut child = spawn_background(&w, &args);
    let code = wait_bounded(&mut child, Duration::from_secs(120));
    assert_eq!(code, 0);
    let t = w.truth();
    assert_eq!(doubled(&t), 0, "no key created twice");
    assert_eq!(created_once(&w), 2000, "none missing");
    assert!(t.keys.iter().all(|k| k.posts >= 1));
}

#[test]
fn sigterm_stops_with_exit_3_and_the_rerun_completes() {
    let w = World::new();
    w.faults(Faults {
        latency_ms: 20,
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv(0, 400));
    let mut child = spawn_background(
        &w,
        &[
            "run",
            file.to_str().unwrap(),
            "--rate",
            "100000",
            "--concurrency",
            "4",
        ],
    );
    // Wait until sending has begun, then ask it to stop.
    let start = Instant::now();
    while posts(&w.truth()) < 20 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&child, "-TERM");
    let code = wait_bounded(&mut child, Duration::from_secs(60));
    assert_eq!(code, 3, "a signal aborts with 3");
    let sent = posts(&w.truth());
    assert!(sent < 400, "it stopped before the end ({sent} sent)");
    let st = w.status();
    assert_eq!(
        row_count(&st, "sending"),
        0,
        "in-flight calls were recorded: {st}"
    );

    let out = w.run(&[
        "run",
        file.to_str().unwrap(),
        "--rate",
        "100000",
        "--concurrency",
        "8",
    ]);
    assert_eq!(code_of(&out), 0, "{}", text(&out));
    assert_eq!(created_once(&w), 400);
    assert_eq!(doubled(&w.truth()), 0);
}

fn code_of(out: &std::process::Output) -> i32 {
    code(out)
}

#[test]
fn tokens_that_expire_every_two_seconds_fail_no_row() {
    let w = World::with_config(sandbox_config(&[
        "--token-ttl",
        "2",
        "--login",
        "ops@reseller.example:s3cret-pw",
    ]));
    w.faults(Faults {
        latency_ms: 5,
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv(0, 250));
    let mut cmd = w.cmd(&[
        "run",
        file.to_str().unwrap(),
        "--rate",
        "50",
        "--burst",
        "5",
        "--concurrency",
        "4",
    ]);
    cmd.env_remove("BILLINGBOOTH_API_KEY")
        .env("BILLINGBOOTH_EMAIL", "ops@reseller.example")
        .env("BILLINGBOOTH_PASSWORD", "s3cret-pw");
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = w.truth();
    assert_eq!(created_once(&w), 250);
    assert!(
        t.requests_by_route.get("POST /token").copied().unwrap_or(0) >= 2,
        "logged in again: {:?}",
        t.requests_by_route
    );
}

#[test]
fn a_wrong_password_aborts_with_3_and_sends_nothing() {
    let w = World::with_config(sandbox_config(&[
        "--login",
        "ops@reseller.example:right-pw",
    ]));
    let file = w.write("in.csv", &invitees_csv(0, 5));
    let mut cmd = w.cmd(&["run", file.to_str().unwrap()]);
    cmd.env_remove("BILLINGBOOTH_API_KEY")
        .env("BILLINGBOOTH_EMAIL", "ops@reseller.example")
        .env("BILLINGBOOTH_PASSWORD", "wrong-pw-123");
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(text(&out).contains("login refused"), "{}", text(&out));
    assert!(
        !text(&out).contains("wrong-pw-123"),
        "the password is never shown"
    );
    let t = w.truth();
    assert_eq!(
        t.requests_total,
        t.requests_by_route.get("POST /token").copied().unwrap_or(0),
        "only the login was tried"
    );
}

#[test]
fn a_wrong_api_key_aborts_with_3() {
    let w = World::with_config(sandbox_config(&["--api-key", "the-right-key"]));
    let file = w.write("in.csv", &invitees_csv(0, 5));
    let out = w.run(&["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(
        text(&out).contains("BILLINGBOOTH_API_KEY"),
        "{}",
        text(&out)
    );
    assert_eq!(posts(&w.truth()), 0);
}

#[test]
fn a_run_against_a_down_api_aborts_in_bounded_time_then_a_healthy_rerun_completes() {
    let w = World::new();
    w.faults(Faults {
        down: true,
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv_ids(0, 50));
    let mut child = spawn_background(&w, &["run", file.to_str().unwrap(), "--rate", "1000"]);
    assert_eq!(wait_bounded(&mut child, Duration::from_secs(90)), 3);
    w.faults(Faults {
        down: false,
        ..w.sandbox.faults()
    });
    let out = w.run(&["run", file.to_str().unwrap(), "--rate", "1000"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(created_once(&w), 50);
}

#[test]
fn two_concurrent_runs_the_second_exits_4() {
    let w = World::new();
    w.faults(Faults {
        latency_ms: 100,
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv(0, 200));
    let mut first = spawn_background(
        &w,
        &[
            "run",
            file.to_str().unwrap(),
            "--rate",
            "10",
            "--concurrency",
            "1",
        ],
    );
    let start = Instant::now();
    while posts(&w.truth()) == 0 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = w.run(&["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(text(&out).contains("in use"), "{}", text(&out));
    let _ = first.kill();
    let _ = first.wait();
}

#[test]
fn every_attempt_is_kept_with_its_cause() {
    let w = World::new();
    w.faults(Faults {
        fail_rate: 1.0,
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv_ids(0, 2));
    let out = w.run(&[
        "run",
        file.to_str().unwrap(),
        "--rate",
        "1000",
        "--max-attempts",
        "3",
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let conn = rusqlite::Connection::open(w.ledger()).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    // Each row: one POST answered 500; since a 500 may hide a created user, the next
    // try looks in the access list first, with tries of its own (500s too), then gives
    // up rather than post blind: no POST is repeated.
    assert_eq!(
        count("SELECT count(*) FROM attempts WHERE action = 'invite'"),
        2
    );
    assert_eq!(
        count("SELECT count(*) FROM attempts WHERE action = 'confirm'"),
        6
    );
    assert_eq!(
        count("SELECT count(*) FROM attempts WHERE class = '5xx' AND http_status = 500"),
        8
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM attempts WHERE latency_ms IS NULL OR at IS NULL OR error IS NULL"
        ),
        0
    );
    let out = w.run(&["export", "--status", "failed"]);
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.contains("could not check whether an earlier try created the user"),
        "{csv}"
    );
    assert!(csv.contains("bbinvite retry"), "says what to do: {csv}");
}

#[test]
fn a_stopping_run_lets_no_waiting_request_through_the_limiter() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv_ids(0, 100));
    // Two requests a second, eight workers: most of them wait on the limiter.
    let mut child = spawn_background(
        &w,
        &[
            "run",
            file.to_str().unwrap(),
            "--rate",
            "2",
            "--burst",
            "1",
            "--concurrency",
            "8",
        ],
    );
    let start = Instant::now();
    while posts(&w.truth()) < 3 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let at_signal = posts(&w.truth());
    signal(&child, "-INT");
    assert_eq!(wait_bounded(&mut child, Duration::from_secs(60)), 3);
    let after = posts(&w.truth());
    assert!(
        after <= at_signal + 1,
        "{} requests left after the signal",
        after - at_signal
    );
    let st = w.status();
    assert_eq!(row_count(&st, "sending"), 0, "{st}");
    assert_eq!(
        row_count(&st, "invited") as usize,
        w.truth().keys.iter().filter(|k| k.created == 1).count(),
        "what the sandbox created is what the ledger recorded: {st}"
    );
}
