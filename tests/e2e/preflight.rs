//! Checks before the first request, and what a failure says: a mistake that can be found
//! without the network exits 2 with nothing sent and no ledger left behind; a failure
//! once invitations went out exits 3 with the counts; absurd flags and credentials with
//! control characters are refused; every failure is one line that says each thing once.
//! Also `validate` and `run --dry-run` against what `run` really does, row by row, and
//! what a sync says of resends an earlier one left in flight.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::util::*;

/// API requests the sandbox saw, of any kind.
fn requests(w: &World) -> u64 {
    w.truth().requests_total
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `bbinvite ARGS` in the work dir with the test key, and no `--ledger` added.
fn bare(w: &World, args: &[&str]) -> Output {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("bbinvite"))
        .current_dir(w.dir.path())
        .env_clear()
        .env("BILLINGBOOTH_API_KEY", API_KEY)
        .args(args)
        .arg("--base-url")
        .arg(w.sandbox.base_url())
        .output()
        .unwrap()
}

/// A failure as users must see it: exit 2, one line on stderr, nothing sent, no ledger.
fn refused_before_sending(w: &World, out: &Output, says: &str) {
    assert_eq!(code(out), 2, "{}", text(out));
    let err = stderr(out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(says), "names {says:?}: {err}");
    assert_eq!(requests(w), 0, "nothing reached the API: {err}");
    assert!(!w.ledger().exists(), "no ledger left behind: {err}");
    assert!(
        !w.path("ledger.db.lock").exists(),
        "no lock file left behind"
    );
}

#[test]
fn a_results_path_that_cannot_be_written_stops_run_and_sync_before_any_request() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 5));
    let file = file.to_str().unwrap();
    w.write("plain-file", "");
    for results in ["no/such/folder/out.csv", "plain-file/out.csv", "."] {
        for command in ["run", "sync"] {
            let out = w.run(&[command, file, "--results", results]);
            refused_before_sending(&w, &out, results);
        }
    }
    // A writable one is tried and left as it was: absent.
    let out = w.run(&["run", file, "--results", "out.csv", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!w.path("out.csv").exists());
}

#[test]
fn a_metrics_file_in_a_missing_folder_stops_run_and_sync_before_any_request() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 5));
    let file = file.to_str().unwrap();
    let metrics = "no/such/folder/bbinvite.prom";
    for command in ["run", "sync"] {
        let out = w.run(&[command, file, "--metrics-file", metrics]);
        refused_before_sending(&w, &out, metrics);
    }
}

#[test]
fn retry_checks_its_results_path_before_any_request() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv_ids(0, 3));
    // Every invitation fails: there is something to retry.
    w.faults(bbinvite::sandbox::Faults {
        fail_rate: 1.0,
        ..w.sandbox.faults()
    });
    let out = w.run(&[
        "run",
        file.to_str().unwrap(),
        "--rate",
        "500",
        "--max-attempts",
        "1",
    ]);
    assert_ne!(row_count(&w.status(), "failed"), 0, "{}", text(&out));
    w.faults(bbinvite::sandbox::Faults {
        fail_rate: 0.0,
        ..w.sandbox.faults()
    });
    let before = requests(&w);
    let out = w.run(&["retry", "--rate", "500", "--results", "no/such/out.csv"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(stderr(&out).contains("no/such/out.csv"), "{}", text(&out));
    assert_eq!(requests(&w), before, "nothing reached the API");
}

#[test]
fn missing_credentials_or_ledger_folder_stop_before_any_request_and_leave_no_ledger() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 5));
    let file = file.to_str().unwrap();
    for command in ["run", "sync", "validate"] {
        let out = w
            .cmd(&[command, file])
            .env_remove("BILLINGBOOTH_API_KEY")
            .output()
            .unwrap();
        refused_before_sending(&w, &out, "no credentials");
    }
    let out = bare(&w, &["run", file, "--ledger", "no/such/dir/l.db"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(stderr(&out).contains("no/such/dir"), "{}", text(&out));
    assert_eq!(requests(&w), 0);
}

#[test]
fn a_failure_after_invitations_went_out_exits_3_with_the_counts() {
    let w = World::new();
    w.faults(bbinvite::sandbox::Faults {
        latency_ms: 30,
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv_ids(0, 20));
    let args = [
        "run",
        file.to_str().unwrap(),
        "--concurrency",
        "1",
        "--rate",
        "500",
        "--results",
        "out.csv",
    ];
    let child = spawn_kept(&w, &args);
    assert!(wait_for(&w, Duration::from_secs(60), |t| posts(t) >= 1));
    // The results file cannot be written any more: a folder stands in its place.
    std::fs::create_dir(w.path("out.csv")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("sent            20 (invited 20)"),
        "the counts: {}",
        text(&out)
    );
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("out.csv") && err.contains("bbinvite export --run 1"),
        "{err}"
    );
    let status = w.status();
    assert_eq!(row_count(&status, "invited"), 20);
    assert_eq!(status["run"]["exit_code"], 3, "{status}");
}

#[test]
fn absurd_numbers_are_refused_by_the_flag_parser() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 2));
    let file = file.to_str().unwrap();
    let cases: [(&str, &[&str]); 11] = [
        ("run", &["--timeout", "1e300"]),
        ("run", &["--timeout", "NaN"]),
        ("run", &["--timeout", "0.0000001"]),
        ("run", &["--rate", "99999999999"]),
        ("run", &["--rate", "4294967295"]),
        ("run", &["--burst", "4294967295"]),
        ("run", &["--concurrency", "4294967295"]),
        ("run", &["--max-attempts", "4294967295"]),
        ("run", &["--customers-ttl", "500000000years"]),
        ("validate", &["--rate", "0"]),
        ("sync", &["--concurrency", "0"]),
    ];
    for (command, flags) in cases {
        let mut args = vec![command, file];
        args.extend(flags);
        let out = w.run(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("invalid value '{}' for '{}", flags[1], flags[0])),
            "{args:?}: {err}"
        );
    }
    for flags in [["--run", "0"], ["--run", "-1"]] {
        let out = w.run(&["status", flags[0], flags[1]]);
        assert_eq!(code(&out), 2, "{}", text(&out));
    }
    assert_eq!(requests(&w), 0);
    assert!(!w.ledger().exists());
}

#[test]
fn credentials_with_a_control_character_are_refused_by_name_never_by_value() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 3));
    let file = file.to_str().unwrap();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("BILLINGBOOTH_API_KEY", "sk-live\nsecretpart")],
            "BILLINGBOOTH_API_KEY",
        ),
        (
            &[("BILLINGBOOTH_API_KEY", "sk-live\u{7}secretpart")],
            "BILLINGBOOTH_API_KEY",
        ),
        (
            &[
                ("BILLINGBOOTH_EMAIL", "ops@r.example\u{1}"),
                ("BILLINGBOOTH_PASSWORD", "secretpart"),
            ],
            "BILLINGBOOTH_EMAIL",
        ),
        (
            &[
                ("BILLINGBOOTH_EMAIL", "ops@r.example"),
                ("BILLINGBOOTH_PASSWORD", "secret\rpart"),
            ],
            "BILLINGBOOTH_PASSWORD",
        ),
    ];
    for (vars, name) in cases {
        let mut cmd = w.cmd(&["run", file]);
        cmd.env_remove("BILLINGBOOTH_API_KEY");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        refused_before_sending(&w, &out, &format!("{name} contains a control character"));
        assert!(!text(&out).contains("secretpart"), "{}", text(&out));
    }
}

#[test]
fn a_password_ending_in_a_newline_is_used_without_it() {
    let w = World::with_config(sandbox_config(&["--login", "ops@r.example:s3cret pass"]));
    let file = w.write("in.csv", &invitees_csv_ids(0, 2));
    let file = file.to_str().unwrap();
    let password_file = w.write("password", "s3cret pass\n");
    let out = w
        .cmd(&["run", file, "--rate", "500"])
        .env_remove("BILLINGBOOTH_API_KEY")
        .env("BILLINGBOOTH_EMAIL", "ops@r.example")
        .env("BILLINGBOOTH_PASSWORD_FILE", &password_file)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let file2 = w.write("in2.csv", &invitees_csv_ids(10, 2));
    let out = w
        .cmd(&["run", file2.to_str().unwrap(), "--rate", "500"])
        .env_remove("BILLINGBOOTH_API_KEY")
        .env("BILLINGBOOTH_EMAIL", "ops@r.example")
        .env("BILLINGBOOTH_PASSWORD", "s3cret pass\r\n")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 4);
}

// ---------------------------------------------------------------------------------
// One line, each thing said once.

/// A message says no part twice: "x: y: y" is the doubling this guards against.
fn says_each_thing_once(line: &str) {
    let parts: Vec<&str> = line.split(": ").map(str::trim).collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..]
                .iter()
                .any(|q| q.contains(p) || p.contains(q)),
            "\"{p}\" said twice in: {line}"
        );
    }
}

#[test]
fn each_failure_is_one_line_that_says_each_thing_once() {
    let w = World::new();
    let good = w.write("in.csv", &invitees_csv(0, 2));
    let good = good.to_str().unwrap();
    w.write("not-a-db.db", "this is not a database, it is a note\n");
    w.write("plain-file", "");
    let cases: [(&[&str], &str); 3] = [
        (&["run", "missing.csv", "--ledger", "l.db"], "missing.csv"),
        (
            &[
                "run",
                good,
                "--results",
                "plain-file/out.csv",
                "--ledger",
                "l.db",
            ],
            "plain-file",
        ),
        (&["status", "--ledger", "not-a-db.db"], "not-a-db.db"),
    ];
    for (args, names) in cases {
        let out = bare(&w, args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
        let err = stderr(&out);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert!(lines[0].contains(names), "{args:?}: {err}");
        says_each_thing_once(lines[0]);
    }
    let out = w.run(&["run", "missing.csv"]);
    assert!(
        stderr(&out).contains("check the file name"),
        "{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------
// `validate`, `run --dry-run` and `run`: one verdict per row.

/// Each data row's verdict (line → invalid, unresolved, duplicate or send) from the
/// findings of `validate --json` or `run --dry-run --json`.
fn verdicts_of_check(w: &World, args: &[&str], rows: usize) -> BTreeMap<u64, String> {
    let out = w.run(args);
    assert!(matches!(code(&out), 0 | 1), "{args:?}: {}", text(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let mut verdicts: BTreeMap<u64, String> =
        (2..rows as u64 + 2).map(|l| (l, "send".into())).collect();
    for f in v["findings"].as_array().unwrap() {
        let severity = f["severity"].as_str().unwrap();
        if severity != "warning" {
            verdicts.insert(f["line"].as_u64().unwrap(), severity.into());
        }
    }
    verdicts
}

/// The same from what `run` recorded, via `export` (rows in input order).
fn verdicts_of_run(w: &World, args: &[&str]) -> BTreeMap<u64, String> {
    let out = w.run(args);
    assert!(matches!(code(&out), 0 | 1), "{args:?}: {}", text(&out));
    let out = w.run(&["export"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let mut csv = csv::Reader::from_reader(out.stdout.as_slice());
    let at = csv
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "bbinvite_status")
        .unwrap();
    csv.records()
        .enumerate()
        .map(|(i, r)| {
            let status = r.unwrap()[at].to_string();
            let verdict = match status.as_str() {
                "invalid" | "unresolved" | "duplicate" => status,
                _ => "send".to_string(),
            };
            (i as u64 + 2, verdict)
        })
        .collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Holds `validate`, `run --dry-run` and `run` to one verdict for every row of `file`.
fn one_verdict_per_row(file: &str, rows: usize, sandbox: bool) {
    let w = World::new();
    let extra: &[&str] = if sandbox { &["--sandbox"] } else { &[] };
    let with = |base: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let validate = with(&["validate", file, "--json"]);
    let dry = with(&["run", file, "--dry-run", "--json"]);
    let run = with(&["run", file, "--rate", "500", "-q"]);
    let by_validate = verdicts_of_check(&w, &refs(&validate), rows);
    let by_dry_run = verdicts_of_check(&w, &refs(&dry), rows);
    let by_run = verdicts_of_run(&w, &refs(&run));
    assert_eq!(by_validate, by_dry_run, "validate and --dry-run, {file}");
    assert_eq!(by_validate, by_run, "validate and run, {file}");
    assert!(
        by_run.values().any(|v| v == "send") && by_run.values().any(|v| v != "send"),
        "a file with both kinds of rows: {by_run:?}"
    );
}

#[test]
fn validate_dry_run_and_run_agree_on_the_samples_with_and_without_sandbox() {
    let file = samples("invitees.csv");
    let rows = std::fs::read_to_string(&file).unwrap().lines().count() - 1;
    for sandbox in [true, false] {
        one_verdict_per_row(file.to_str().unwrap(), rows, sandbox);
    }
}

/// A mix of good rows, bad e-mails, unknown and ambiguous customers, references good
/// and unknown, a suspended customer, and duplicates.
fn generated_sheet(seed: u64, rows: usize) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let names = [
        "Acme Telecom Ltd",
        "Vertex Connect",
        "skyline  DATA ltd",
        "Pennine Voice",
    ];
    let mut s = String::from("Email Address,Full Name,Company,Customer Ref\n");
    let mut earlier: Vec<String> = Vec::new();
    for i in 0..rows {
        let line = match rng.random_range(0..9) {
            0 => format!("user{i}.example.com,User {i},Acme Telecom Ltd,"),
            1 => format!("user{i}@g.example,User {i},Nowhere {i} Ltd,"),
            2 => format!("user{i}@g.example,User {i},Harbour Networks,"),
            3 => format!("user{i}@g.example,User {i},,HBN-105"),
            4 => format!("user{i}@g.example,User {i},,NOPE-{i}"),
            5 if !earlier.is_empty() => earlier[rng.random_range(0..earlier.len())].clone(),
            6 => format!("user{i}@g.example,,Vertex Connect,"),
            _ => format!(
                "user{i}@g.example,User {i},{},",
                names[rng.random_range(0..names.len())]
            ),
        };
        earlier.push(line.clone());
        s.push_str(&line);
        s.push('\n');
    }
    s
}

#[test]
fn validate_dry_run_and_run_agree_on_a_generated_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("generated.csv");
    let rows = 120;
    std::fs::write(&file, generated_sheet(7, rows)).unwrap();
    for sandbox in [true, false] {
        one_verdict_per_row(file.to_str().unwrap(), rows, sandbox);
    }
}

#[test]
fn validate_blames_the_reference_column_for_a_reference() {
    let w = World::new();
    let file = w.write(
        "in.csv",
        "Email Address,Full Name,Company,Customer Ref\na@r.example,A,,NOPE-9\n",
    );
    let out = w.run(&["validate", file.to_str().unwrap(), "--sandbox"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("column \"Customer Ref\" value \"NOPE-9\": no customer with reference"),
        "{}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------------
// Resends cut off in flight.

#[test]
fn resends_cut_off_in_flight_are_reported_once_and_counted_by_status() {
    let old = ago(Duration::from_secs(30 * 86_400));
    let seed = serde_json::json!([{
        "id": 500,
        "name": "Resend Test Ltd",
        "access": [
            {"email": "a@r.example", "name": "A", "status": "awaitingActivation", "created_at": old},
            {"email": "b@r.example", "name": "B", "status": "awaitingActivation", "created_at": old}
        ]
    }]);
    let w = World::seeded(&seed);
    let file = w.write(
        "in.csv",
        "email,name,customer_id\na@r.example,A,500\nb@r.example,B,500\n",
    );
    let args = [
        "sync",
        file.to_str().unwrap(),
        "--resend-after",
        "7",
        "--rate",
        "500",
    ];
    let out = w.run(&args);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(route(&w.truth(), RESEND), 2);
    // As a sync killed after marking both and before either answer leaves them.
    let conn = rusqlite::Connection::open(w.ledger()).unwrap();
    conn.execute(
        "UPDATE actions SET state = 'sending' WHERE kind = 'resend'",
        [],
    )
    .unwrap();
    drop(conn);

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = w.run(&json_args);
    assert_eq!(
        code(&out),
        0,
        "nothing a person can do about it: {}",
        text(&out)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["resends_unconfirmed"], 2, "{summary}");
    assert_eq!(route(&w.truth(), RESEND), 2, "not sent again");

    let status = w.status();
    assert_eq!(status["resends_unconfirmed"], 2, "{status}");
    let out = w.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 sync resends unconfirmed"),
        "{}",
        text(&out)
    );

    // Told once: the next sync has nothing new to say of them.
    let out = w.run(&args);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("unconfirmed"),
        "{}",
        text(&out)
    );
    assert_eq!(route(&w.truth(), RESEND), 2);
}
