//! The summary of a sending command says what this run did: what it sent, what was
//! done before it, what is left, at its own request rate; and a run stopped before the
//! end of its input says how far it read and the command that continues it.

use std::process::Command as StdCommand;
use std::time::Duration;

use crate::util::*;
use bbinvite::sandbox::Faults;

#[test]
fn a_rerun_says_it_sent_nothing_and_counts_what_was_done_before() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv_ids(0, 30));
    let file = file.to_str().unwrap();
    let first = w.run(&["run", file, "--rate", "1000", "--json"]);
    assert_eq!(code(&first), 0, "{}", text(&first));
    let v = json(&first);
    assert_eq!(v["sent"], 30, "{v}");
    assert_eq!(v["sent_outcomes"]["invited"], 30, "{v}");
    assert_eq!(v["already_done"], 0, "{v}");

    let again = w.run(&["run", file, "--rate", "1000"]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    let out = String::from_utf8_lossy(&again.stdout);
    assert!(out.contains("  sent            0\n"), "{out}");
    assert!(out.contains("  already done    30\n"), "{out}");
    assert!(
        !out.contains("invited"),
        "nothing was invited by this run: {out}"
    );

    let again = w.run(&["run", file, "--rate", "1000", "--json"]);
    let v = json(&again);
    assert_eq!(v["command"], "run", "{v}");
    assert_eq!(v["rows"], 30, "a number: {v}");
    assert_eq!(v["sent"], 0, "{v}");
    assert_eq!(v["already_done"], 30, "{v}");
    assert_eq!(v["statuses"]["invited"], 30, "{v}");
    assert_eq!(v["requests_per_sec"], 0.0, "{v}");
    assert!(v["top_errors"].is_array(), "{v}");
    assert_eq!(v["input"]["complete"], true, "{v}");
    assert_eq!(v["continue_with"], serde_json::Value::Null, "{v}");
}

#[test]
fn a_resume_reports_its_own_request_rate() {
    let w = World::new();
    w.faults(Faults {
        latency_ms: 20,
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv_ids(0, 600));
    let file = file.to_str().unwrap();
    let mut child = spawn_background(&w, &["run", file, "--rate", "100000", "-q"]);
    let reached = wait_for(&w, Duration::from_secs(60), |t| posts(t) >= 400);
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    assert!(reached, "the first run never sent 400 invitations");
    w.faults(Faults {
        latency_ms: 0,
        ..w.sandbox.faults()
    });

    let out = w.run(&["run", file, "--rate", "50", "--burst", "1", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v = json(&out);
    let sent = v["sent"].as_u64().unwrap();
    assert!(sent > 0 && sent < 600, "{v}");
    assert!(v["already_done"].as_u64().unwrap() >= 300, "{v}");
    let rate = v["requests_per_sec"].as_f64().unwrap();
    // Generous: the limiter allows 50/s; rows per second here would be far above.
    assert!(
        rate > 0.0 && rate <= 60.0,
        "requests per second {rate}: {v}"
    );
}

/// Starts a run of `rows` rows on a slow sandbox and stops it with SIGINT once sending
/// has begun; returns its output (exit 3) and the file.
fn interrupted_run(w: &World, rows: usize, more: &[&str]) -> (std::process::Output, String) {
    w.faults(Faults {
        latency_ms: 50,
        ..w.sandbox.faults()
    });
    let file = w.write("big.csv", &invitees_csv_ids(0, rows));
    let file = file.to_str().unwrap().to_string();
    let mut args = vec![
        "run",
        file.as_str(),
        "--rate",
        "100000",
        "--concurrency",
        "2",
    ];
    args.extend(more);
    let child = spawn_kept(w, &args);
    let reached = wait_for(w, Duration::from_secs(60), |t| posts(t) >= 10);
    assert!(reached, "sending never began");
    signal(&child, "-INT");
    let out = finish_bounded(child, Duration::from_secs(60));
    assert_eq!(code(&out), 3, "{}", text(&out));
    w.faults(Faults {
        latency_ms: 0,
        ..w.sandbox.faults()
    });
    (out, file)
}

/// The command a summary says continues the run, split as a shell would.
fn continue_command(out: &std::process::Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Continue (rows done are skipped): "))
        .unwrap_or_else(|| panic!("no command to continue: {}", text(out)));
    shlex::split(line).unwrap()
}

#[test]
fn an_interrupted_run_says_how_far_it_read_and_its_continue_command_finishes_the_job() {
    let w = World::new();
    let rows = 6000;
    let (out, file) = interrupted_run(&w, rows, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("aborted"), "{stdout}");
    assert!(!stdout.contains("completed"), "{stdout}");
    assert!(
        stdout.contains("rows, up to line ")
            && stdout.contains("of ")
            && stdout.contains("big.csv"),
        "says how far it read: {stdout}"
    );
    let words = continue_command(&out);
    assert_eq!(words[..3], ["bbinvite", "run", file.as_str()], "{words:?}");
    assert!(words.contains(&"--ledger".to_string()), "{words:?}");

    // `retry` sends what was read, but does not call the file done.
    let retried = w.run(&["retry", "--rate", "100000"]);
    assert_eq!(code(&retried), 1, "{}", text(&retried));
    let said = String::from_utf8_lossy(&retried.stdout);
    assert!(!said.contains("completed"), "{said}");
    assert!(said.contains("did not read all of its input"), "{said}");
    assert_eq!(continue_command(&retried), words);
    assert!(
        (created(&w) as usize) < rows,
        "retry read nothing beyond what the run read"
    );

    // The command it printed finishes the job, exactly once (faster than the default rate).
    let done = StdCommand::new(assert_cmd::cargo::cargo_bin("bbinvite"))
        .args(&words[1..])
        .args(["--rate", "100000"])
        .current_dir(w.dir.path())
        .env_clear()
        .env("BILLINGBOOTH_API_KEY", API_KEY)
        .output()
        .unwrap();
    assert_eq!(code(&done), 0, "{}", text(&done));
    assert_eq!(created(&w) as usize, rows);
    assert_eq!(doubled(&w.truth()), 0);

    // Once the input was read whole, retry has nothing unread to tell of.
    let retried = w.run(&["retry", "--json"]);
    assert_eq!(code(&retried), 0, "{}", text(&retried));
    let v = json(&retried);
    assert_eq!(v["outcome"], "completed", "{v}");
    assert_eq!(v["continue_with"], serde_json::Value::Null, "{v}");
}

#[test]
fn an_interrupted_run_in_json_says_where_reading_stopped() {
    let w = World::new();
    let (out, _) = interrupted_run(&w, 6000, &["--json"]);
    let v = json(&out);
    assert_eq!(v["exit_code"], 3, "{v}");
    assert_eq!(v["input"]["complete"], false, "{v}");
    let read = v["input"]["rows_read"].as_u64().unwrap();
    assert!(read > 0 && read < 6000, "{v}");
    assert!(
        v["continue_with"]
            .as_str()
            .unwrap()
            .starts_with("bbinvite run "),
        "{v}"
    );
}

fn created(w: &World) -> u64 {
    w.truth().keys.iter().filter(|k| k.created >= 1).count() as u64
}
