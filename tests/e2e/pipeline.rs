//! The whole pipeline: statuses, exactly once, resume, retry, export, bad input, secrets.

use crate::util::*;
use bbinvite::sandbox::Faults;

/// The sample file's rows, by the status each must end in.
const SAMPLE_INVITED: u64 = 27;
const SAMPLE_EXISTS: u64 = 1;
const SAMPLE_INVALID: u64 = 4;
const SAMPLE_UNRESOLVED: u64 = 3;
const SAMPLE_DUPLICATE: u64 = 1;

#[test]
fn every_row_of_a_mixed_file_lands_in_its_status_and_each_key_is_created_once() {
    let w = World::new();
    let file = samples("invitees.csv");
    let out = w.run(&[
        "run",
        file.to_str().unwrap(),
        "--rate",
        "200",
        "--concurrency",
        "8",
    ]);
    assert_eq!(code(&out), 1, "bad rows make exit 1\n{}", text(&out));
    let st = w.status();
    assert_eq!(row_count(&st, "invited"), SAMPLE_INVITED, "{st}");
    assert_eq!(row_count(&st, "exists"), SAMPLE_EXISTS, "{st}");
    assert_eq!(row_count(&st, "invalid"), SAMPLE_INVALID, "{st}");
    assert_eq!(row_count(&st, "unresolved"), SAMPLE_UNRESOLVED, "{st}");
    assert_eq!(row_count(&st, "duplicate"), SAMPLE_DUPLICATE, "{st}");
    let t = w.truth();
    let created: u64 = t.keys.iter().map(|k| k.created).sum();
    assert_eq!(
        created, SAMPLE_INVITED,
        "the sandbox created each invited key"
    );
    assert_eq!(doubled(&t), 0);
    assert!(
        t.keys.iter().all(|k| k.posts == 1),
        "no key was posted twice: {:?}",
        t.keys
    );
}

#[test]
fn a_rerun_sends_nothing_new_and_one_new_row_sends_one_request() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 40));
    let out = w.run(&[
        "run",
        file.to_str().unwrap(),
        "--rate",
        "500",
        "--concurrency",
        "8",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 40);

    let out = w.run(&["run", file.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 40, "a rerun posts nothing");
    assert_eq!(
        row_count(&w.status(), "invited"),
        40,
        "rows already done count as invited"
    );

    let file = w.write("in.csv", &invitees_csv(0, 41));
    let out = w.run(&["run", file.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 41, "one new row, one request");
    assert_eq!(doubled(&w.truth()), 0);
}

#[test]
fn a_run_stopped_by_a_failing_api_resumes_and_finishes_exactly_once() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv_ids(0, 30));
    w.faults(Faults {
        down: true,
        ..w.sandbox.faults()
    });
    let out = w.run(&[
        "run",
        file.to_str().unwrap(),
        "--rate",
        "500",
        "--max-attempts",
        "3",
    ]);
    assert_eq!(code(&out), 3, "the breaker aborts\n{}", text(&out));
    assert!(text(&out).contains("consecutive"), "{}", text(&out));
    assert_eq!(w.truth().keys.iter().map(|k| k.created).sum::<u64>(), 0);

    w.faults(Faults {
        down: false,
        ..w.sandbox.faults()
    });
    let out = w.run(&["run", file.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = w.truth();
    assert_eq!(t.keys.iter().filter(|k| k.created == 1).count(), 30);
    assert_eq!(doubled(&t), 0);
}

#[test]
fn retry_sends_only_the_failed_rows() {
    let w = World::new();
    let first = w.write("a.csv", &invitees_csv(0, 3));
    assert_eq!(
        code(&w.run(&["run", first.to_str().unwrap(), "--rate", "500"])),
        0
    );
    w.faults(Faults {
        fail_rate: 1.0,
        ..w.sandbox.faults()
    });
    let both = w.write("b.csv", &invitees_csv(0, 7));
    let out = w.run(&[
        "run",
        both.to_str().unwrap(),
        "--rate",
        "500",
        "--max-attempts",
        "1",
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let st = w.status();
    assert_eq!(row_count(&st, "failed"), 4, "{st}");
    assert_eq!(row_count(&st, "invited"), 3, "{st}");

    w.faults(Faults {
        fail_rate: 0.0,
        ..w.sandbox.faults()
    });
    let before = posts(&w.truth());
    let out = w.run(&["retry", "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        posts(&w.truth()) - before,
        4,
        "only the failed rows are sent"
    );
    let st = w.status();
    assert_eq!(row_count(&st, "invited"), 4, "{st}");
    assert_eq!(st["invitations"]["statuses"]["invited"].as_u64(), Some(7));
}

#[test]
fn export_mirrors_the_input_columns_then_the_outcome() {
    let w = World::new();
    let file = samples("invitees.csv");
    let results = w.path("results.csv");
    let out = w.run(&[
        "run",
        file.to_str().unwrap(),
        "--rate",
        "500",
        "--results",
        results.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let out = w.run(&["export"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let exported = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        exported,
        std::fs::read_to_string(&results).unwrap(),
        "--results and export agree"
    );
    let mut csv = csv::Reader::from_reader(exported.as_bytes());
    let header: Vec<String> = csv.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "Email Address",
            "Full Name",
            "Company",
            "Customer Ref",
            "Access Status",
            "Notes",
            "bbinvite_status",
            "bbinvite_error",
            "bbinvite_customer_id",
            "bbinvite_access_user_id",
            "bbinvite_attempts",
            "bbinvite_updated_at"
        ]
    );
    let rows: Vec<csv::StringRecord> = csv.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 36);
    let jane = rows
        .iter()
        .find(|r| &r[0] == "jane.doe@acmetelecom.example")
        .unwrap();
    assert_eq!(&jane[6], "exists");
    assert_eq!(&jane[8], "101");
    assert!(!jane[9].is_empty(), "the existing user's id is recorded");
    let ivan = rows
        .iter()
        .find(|r| &r[0] == "ivan.petrov@skyline.example")
        .unwrap();
    assert!(
        ivan[5].starts_with("'="),
        "formula cells are escaped: {}",
        &ivan[5]
    );
    let typo = rows
        .iter()
        .find(|r| &r[0] == "eli.stone@acmetelecom.example")
        .unwrap();
    assert_eq!(&typo[6], "unresolved");
    assert!(
        typo[7].contains("Acme Telecom Ltd"),
        "suggests the closest name: {}",
        &typo[7]
    );

    let out = w.run(&["export", "--status", "invalid"]);
    let only_invalid = String::from_utf8(out.stdout).unwrap();
    assert_eq!(only_invalid.lines().count(), 1 + 4);
}

#[test]
fn an_unreadable_file_exits_2_and_sends_nothing() {
    let w = World::new();
    let out = w.run(&["run", "missing.csv"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("missing.csv"), "{}", text(&out));

    let good = w.write("good.csv", &invitees_csv(0, 5));
    let no_email = w.write("no_email.csv", "Full Name,Company\nA B,Acme Telecom Ltd\n");
    let out = w.run(&["run", good.to_str().unwrap(), no_email.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("Full Name"),
        "lists the columns found: {}",
        text(&out)
    );
    assert_eq!(w.truth().requests_total, 0, "nothing at all was sent");
}

#[test]
fn secrets_never_reach_the_ledger_or_the_output() {
    use bbinvite::sandbox::Config;
    let password = "pw-Sup3r-s3cret-4411";
    let w = World::with_config(Config::samples());
    let file = samples("invitees.csv");
    let mut cmd = w.cmd(&["run", file.to_str().unwrap(), "--rate", "500", "-v"]);
    cmd.env_remove("BILLINGBOOTH_API_KEY")
        .env("BILLINGBOOTH_EMAIL", "ops@reseller.example")
        .env("BILLINGBOOTH_PASSWORD", password);
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    let out2 = w.run(&["run", file.to_str().unwrap(), "--rate", "500", "-v"]);
    let exported = w.run(&["export"]);
    let mut everything = Vec::new();
    for o in [&out, &out2, &exported] {
        everything.extend_from_slice(&o.stdout);
        everything.extend_from_slice(&o.stderr);
    }
    for f in std::fs::read_dir(w.dir.path()).unwrap() {
        everything.extend(std::fs::read(f.unwrap().path()).unwrap());
    }
    let hay = String::from_utf8_lossy(&everything);
    assert!(!hay.contains(password), "the password leaked");
    assert!(!hay.contains(API_KEY), "the API key leaked");
    assert!(
        hay.contains("alice.martin@acmetelecom.example"),
        "the search looked at real bytes"
    );
}

#[test]
fn the_ledger_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 2));
    assert_eq!(code(&w.run(&["run", file.to_str().unwrap()])), 0);
    let mode = std::fs::metadata(w.ledger()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_second_run_on_a_busy_ledger_exits_4_at_once() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 2));
    let held = bbinvite::ledger::LedgerLock::acquire(&w.ledger()).unwrap();
    let out = w.run(&["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        text(&out).contains(&format!("pid {}", std::process::id())),
        "{}",
        text(&out)
    );
    assert_eq!(w.truth().requests_total, 0);
    drop(held);
    assert_eq!(code(&w.run(&["run", file.to_str().unwrap()])), 0);
}

#[test]
fn the_builtin_sandbox_runs_the_samples_with_no_account() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("sb.db");
    for sample in ["invitees.csv", "invitees.jsonl"] {
        let out = assert_cmd::Command::cargo_bin("bbinvite")
            .unwrap()
            .current_dir(dir.path())
            .env_clear()
            .args([
                "run",
                samples(sample).to_str().unwrap(),
                "--sandbox",
                "--rate",
                "500",
                "--json",
                "--ledger",
            ])
            .arg(&ledger)
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap();
        assert_eq!(code(&out), 1, "{sample}: {}", text(&out));
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["rows"].as_u64(), Some(36), "{sample}: {summary}");
        std::fs::remove_file(&ledger).unwrap();
    }
}

/// The README's quick start, end to end on the sandbox with no account and no
/// `--ledger`: every command that reads or resends from the ledger finds the sandbox's
/// own ledger with `--sandbox`, as `run` does.
#[test]
fn the_quick_start_works_end_to_end_on_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let bbinvite = |args: &[&str]| {
        assert_cmd::Command::cargo_bin("bbinvite")
            .unwrap()
            .current_dir(dir.path())
            .env_clear()
            .args(args)
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap()
    };
    let sample = samples("invitees.csv");
    let sample = sample.to_str().unwrap();
    let out = bbinvite(&["run", sample, "--sandbox", "--rate", "500", "-q"]);
    assert_eq!(code(&out), 1, "the deliberately bad rows: {}", text(&out));
    assert!(dir.path().join("bbinvite-sandbox.db").exists());
    assert!(!dir.path().join("bbinvite.db").exists());

    let out = bbinvite(&["status", "--sandbox", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let invited = status["invitations"]["statuses"]["invited"]
        .as_u64()
        .unwrap_or(0);
    assert!(invited > 20, "{status}");

    let out = bbinvite(&["export", "--sandbox", "--status", "invited"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    assert_eq!(
        lines,
        invited + 1,
        "a header and each invited row: {}",
        text(&out)
    );

    let out = bbinvite(&["retry", "--sandbox", "--rate", "500", "--json"]);
    assert_eq!(
        code(&out),
        0,
        "nothing failed, nothing to send: {}",
        text(&out)
    );
    let retried: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(retried["rows"].as_u64(), Some(0), "{retried}");

    let out = bbinvite(&["customers", "--sandbox", "--search", "Vertex"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Vertex"),
        "{}",
        text(&out)
    );
    assert!(
        !dir.path().join("bbinvite.db").exists(),
        "no real ledger was made"
    );
}

#[test]
fn a_dry_run_reports_what_would_be_sent_and_sends_nothing() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 6));
    assert_eq!(
        code(&w.run(&["run", file.to_str().unwrap(), "--rate", "500"])),
        0
    );
    let posted = posts(&w.truth());
    let file = w.write(
        "in.csv",
        &(invitees_csv(0, 9) + "broken,Broken Row,Vertex Connect\n"),
    );
    let out = w.run(&["run", file.to_str().unwrap(), "--dry-run", "--json"]);
    assert_eq!(code(&out), 1, "the bad row makes exit 1\n{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["would_send"], 3, "{v}");
    assert_eq!(v["summary"]["already_done"], 6, "{v}");
    assert_eq!(v["summary"]["invalid"], 1, "{v}");
    assert_eq!(posts(&w.truth()), posted, "a dry run sends nothing");
    assert_eq!(
        w.status()["invitations"]["statuses"]["invited"].as_u64(),
        Some(6),
        "and records nothing"
    );
}

#[test]
fn without_a_terminal_progress_is_a_plain_line_every_few_seconds() {
    let w = World::new();
    // Two a second over 15 rows: long enough for at least one progress line.
    let file = w.write("in.csv", &invitees_csv_ids(0, 15));
    let out = w.run(&["run", file.to_str().unwrap(), "--rate", "2", "--burst", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("bbinvite: run "))
        .unwrap_or_else(|| panic!("no progress line: {stderr}"));
    assert!(
        line.contains("/15 rows (") && line.contains(", eta ") && line.contains(", sent "),
        "{line}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no terminal escapes in a log: {stderr:?}"
    );
}

#[test]
fn the_sandbox_command_serves_the_api_for_a_real_run() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut sandbox = std::process::Command::new(assert_cmd::cargo::cargo_bin("bbinvite"))
        .args(["sandbox", "--addr", "127.0.0.1:0", "--page-cap", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(sandbox.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first.trim().rsplit(' ').next().unwrap().to_string();
    assert!(
        first.starts_with("sandbox listening on http://127.0.0.1:"),
        "{first}"
    );
    let out = assert_cmd::Command::cargo_bin("bbinvite")
        .unwrap()
        .current_dir(dir.path())
        .env_clear()
        .env("BILLINGBOOTH_API_KEY", API_KEY)
        .env("BILLINGBOOTH_BASE_URL", &url)
        .args([
            "run",
            samples("invitees.csv").to_str().unwrap(),
            "--rate",
            "500",
            "--json",
        ])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    assert_eq!(code(&out), 1, "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Three customers a page: the directory was paged to its end, whatever was asked.
    assert_eq!(summary["statuses"]["invited"], 27, "{summary}");
    assert_eq!(summary["statuses"]["unresolved"], 3, "{summary}");
}

#[test]
fn a_ledger_refuses_an_api_other_than_its_own() {
    let w = World::new();
    let other = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 3));
    assert_eq!(
        code(&w.run(&["run", file.to_str().unwrap(), "--rate", "500"])),
        0
    );
    // The same ledger, another API (another account's customer 101 is another customer).
    let out = assert_cmd::Command::cargo_bin("bbinvite")
        .unwrap()
        .env_clear()
        .env("BILLINGBOOTH_API_KEY", API_KEY)
        .args(["run", file.to_str().unwrap(), "--ledger"])
        .arg(w.ledger())
        .arg("--base-url")
        .arg(other.sandbox.base_url())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("use another --ledger"),
        "{}",
        text(&out)
    );
    assert_eq!(
        other.truth().requests_total,
        0,
        "nothing sent to the other API"
    );
}

#[test]
fn a_run_keeps_its_connections_alive_and_opens_about_one_per_request_in_flight() {
    let w = World::new();
    let input = w.write("in.csv", &invitees_csv(0, 1000));
    let out = w.run(&[
        "run",
        input.to_str().unwrap(),
        "--rate",
        "1000000",
        "--burst",
        "1000000",
        "--concurrency",
        "64",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = w.truth();
    assert_eq!(posts(&t), 1000);
    // One a request in flight, a few more while the first ones are being answered, and
    // the directory's: not one opened again and again as idle ones are closed.
    assert!(
        t.connections_total <= 64 + 12,
        "{} connections for 1,000 invitations at concurrency 64",
        t.connections_total
    );
}
