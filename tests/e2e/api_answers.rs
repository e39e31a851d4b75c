//! Odd answers from the API: a 422 that only sounds like "exists", a login that echoes
//! the password, a Retry-After of years, a list that ignores `offset`, a body of
//! gigabytes, a status nobody documented. Each ends in a clear outcome, in bounded time.

use std::process::{Child, Output};
use std::time::{Duration, Instant};

use bbinvite::sandbox::Faults;

use crate::util::*;

/// The password of the echo test: each of its JSON-escaped and URL-encoded forms differs
/// from the others and from the raw text.
const PASSWORD: &str = "Pw \"q/7\\ü&x=y+z";

/// Waits for a child, killing it if it outlives `limit` (a bound, not a timing assertion).
fn wait_bounded(child: &mut Child, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the command did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ends a spawned command within `limit` and returns its output.
fn finish(mut child: Child, limit: Duration) -> (i32, String) {
    let code = wait_bounded(&mut child, limit);
    let out = child.wait_with_output().unwrap();
    (code, text(&out))
}

fn ledger_rows(w: &World, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(w.ledger()).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get::<_, Option<String>>(0))
        .unwrap()
        .map(|r| r.unwrap().unwrap_or_default())
        .collect()
}

#[test]
fn a_422_saying_the_customer_does_not_exist_is_rejected_not_exists() {
    let w = World::new();
    // Two rows tried once against a failing API: unsure, so the next run looks first.
    w.faults(Faults {
        fail_rate: 1.0,
        ..w.sandbox.faults()
    });
    let first = w.write("first.csv", &invitees_csv_ids(0, 2));
    let out = w.run(&["run", first.to_str().unwrap(), "--max-attempts", "1"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    // Then the customer goes away: every invitation answers 422 "does not exist".
    w.faults(Faults {
        fail_rate: 0.0,
        customer_gone: true,
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv_ids(0, 4));
    let out = w.run(&["run", file.to_str().unwrap(), "--rate", "100"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let st = w.status();
    assert_eq!(row_count(&st, "exists"), 0, "nobody was confirmed: {st}");
    assert_eq!(row_count(&st, "rejected"), 4, "{st}");
    assert!(w.truth().keys.iter().all(|k| k.created == 0));
    let out = w.run(&["export", "--status", "rejected"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.contains("The selected customer does not exist."),
        "{csv}"
    );
    // Rejected, not done: with the customer back, a rerun that asks for it invites them.
    w.faults(Faults {
        customer_gone: false,
        ..w.sandbox.faults()
    });
    let out = w.run(&["run", file.to_str().unwrap(), "--retry-rejected"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(w.truth().keys.iter().filter(|k| k.created == 1).count(), 4);
}

/// Every form the password could take in an output or a file.
fn password_forms() -> Vec<String> {
    let json = serde_json::to_string(PASSWORD).unwrap();
    let json = json[1..json.len() - 1].to_string();
    let mut forms = vec![PASSWORD.to_string(), json];
    for space in ["+", "%20"] {
        let mut enc = String::new();
        for b in PASSWORD.bytes() {
            match b {
                b' ' => enc.push_str(space),
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    enc.push(b as char)
                }
                _ => enc.push_str(&format!("%{b:02X}")),
            }
        }
        forms.push(enc.clone());
        forms.push(enc.to_lowercase());
    }
    forms
}

fn assert_no_password(what: &str, bytes: &[u8]) {
    for form in password_forms() {
        let hit = bytes
            .windows(form.len())
            .any(|w| w.eq_ignore_ascii_case(form.as_bytes()));
        assert!(!hit, "{what} holds the password as {form:?}");
    }
}

fn with_password(mut cmd: assert_cmd::Command) -> assert_cmd::Command {
    cmd.env_remove("BILLINGBOOTH_API_KEY")
        .env("BILLINGBOOTH_EMAIL", "ops@reseller.example")
        .env("BILLINGBOOTH_PASSWORD", PASSWORD);
    cmd
}

#[test]
fn a_login_answer_that_echoes_the_password_leaves_it_nowhere() {
    let login = format!("ops@reseller.example:{PASSWORD}");
    let w = World::with_config(sandbox_config(&["--token-ttl", "1", "--login", &login]));
    // The first login works; every later one answers 500 with the request echoed.
    w.faults(Faults {
        token_echo_after: Some(1),
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv_ids(0, 40));
    let results = w.path("results.csv");
    let out = with_password(w.cmd(&[
        "run",
        file.to_str().unwrap(),
        "--rate",
        "10",
        "--concurrency",
        "2",
        "--max-attempts",
        "2",
        "--results",
        results.to_str().unwrap(),
    ]))
    .output()
    .unwrap();
    assert!([1, 3].contains(&code(&out)), "{}", text(&out));
    assert_no_password("stdout", &out.stdout);
    assert_no_password("stderr", &out.stderr);
    assert_no_password("the results sheet", &std::fs::read(&results).unwrap());
    let export = w.run(&["export"]);
    assert_no_password("export", &export.stdout);
    let export = w.run(&["export", "--json"]);
    assert_no_password("export --json", &export.stdout);
    for suffix in ["", "-wal", "-journal"] {
        let path = format!("{}{suffix}", w.ledger().display());
        if let Ok(bytes) = std::fs::read(&path) {
            assert_no_password(&path, &bytes);
        }
    }
    assert!(
        text(&out).contains("[redacted]") || ledger_text(&w).contains("[redacted]"),
        "the echo was seen, then redacted: {}",
        text(&out)
    );
}

#[test]
fn a_failing_login_is_tried_again_like_any_read_then_stops_before_any_row() {
    let login = format!("ops@reseller.example:{PASSWORD}");
    let w = World::with_config(sandbox_config(&["--login", &login]));
    // Every login answers 500 (with the request echoed).
    w.faults(Faults {
        token_echo_after: Some(0),
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv_ids(0, 5));
    let out = with_password(w.cmd(&["run", file.to_str().unwrap(), "-vv", "--max-attempts", "3"]))
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", text(&out));
    let tries = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("request POST /token 500"))
        .count();
    assert_eq!(tries, 3, "{}", text(&out));
    assert!(w.truth().keys.is_empty(), "{}", text(&out));
    assert_no_password("stderr", &out.stderr);
}

/// Every error the ledger holds, for the assertion message.
fn ledger_text(w: &World) -> String {
    let mut all = ledger_rows(w, "SELECT error FROM attempts");
    all.extend(ledger_rows(w, "SELECT last_error FROM invitations"));
    all.join("\n")
}

#[test]
fn a_base_url_with_credentials_or_a_password_for_a_path_is_refused_unechoed() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv_ids(0, 2));
    let url = w
        .sandbox
        .base_url()
        .replace("http://", &format!("http://ops:{}@", "Pw%20q%2F7"));
    let out = assert_cmd::Command::cargo_bin("bbinvite")
        .unwrap()
        .current_dir(w.dir.path())
        .env_clear()
        .env("BILLINGBOOTH_API_KEY", API_KEY)
        .env("BILLINGBOOTH_BASE_URL", &url)
        .args(["run", file.to_str().unwrap(), "--ledger"])
        .arg(w.ledger())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(!text(&out).contains("Pw%20q%2F7"), "{}", text(&out));
    assert!(!text(&out).contains("Pw q/7"), "{}", text(&out));
    assert!(
        text(&out).contains("user name or password"),
        "{}",
        text(&out)
    );

    let mut cmd = w.cmd(&["run", file.to_str().unwrap()]);
    cmd.env_remove("BILLINGBOOTH_API_KEY")
        .env("BILLINGBOOTH_EMAIL", "ops@reseller.example")
        .env("BILLINGBOOTH_PASSWORD_FILE", PASSWORD);
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert_no_password("stderr", &out.stderr);
    assert!(
        text(&out).contains("BILLINGBOOTH_PASSWORD_FILE"),
        "{}",
        text(&out)
    );
    assert_eq!(w.truth().requests_total, 0, "nothing was sent");
}

#[test]
fn a_retry_after_of_years_leaves_the_rows_pending_and_exits_3() {
    for as_date in [false, true] {
        let w = World::new();
        w.faults(Faults {
            rate_limit: Some(1),
            retry_after_secs: Some(100_000_000),
            retry_after_date: as_date,
            ..w.sandbox.faults()
        });
        let file = w.write("in.csv", &invitees_csv_ids(0, 10));
        let child = spawn_kept(&w, &["run", file.to_str().unwrap(), "--rate", "100"]);
        let (code, out) = finish(child, Duration::from_secs(60));
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("--max-retry-wait"), "says what to do: {out}");
        let st = w.status();
        assert_eq!(row_count(&st, "sending"), 0, "{st}");
        assert_eq!(row_count(&st, "failed"), 0, "{st}");
        assert!(row_count(&st, "pending") >= 9, "{st}");
        // The lock went with the process: the next run is not refused as busy.
        w.faults(Faults {
            rate_limit: None,
            ..w.sandbox.faults()
        });
        let out = w.run(&["run", file.to_str().unwrap(), "--rate", "100"]);
        assert_eq!(code_of(&out), 0, "{}", text(&out));
    }
}

fn code_of(out: &Output) -> i32 {
    code(out)
}

#[test]
fn a_list_that_ignores_offset_stops_with_an_error() {
    let w = World::new();
    w.faults(Faults {
        ignore_offset: true,
        page_cap: Some(2),
        ..w.sandbox.faults()
    });
    let child = spawn_kept(&w, &["customers", "--refresh", "--rate", "1000"]);
    let (code, out) = finish(child, Duration::from_secs(60));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("offset"), "names the cause: {out}");
    // The first wave (four pages), then one wave of eight whose first page repeats.
    let pages = w.truth().requests_by_route["GET /customer"];
    assert!(pages <= 12, "{pages} pages read");
}

/// The peak resident memory of a running process so far, in KiB (Linux).
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_huge_success_body_is_cut_and_the_row_is_confirmed_through_the_list() {
    const BODY: u64 = 512 << 20;
    let w = World::new();
    w.faults(Faults {
        huge_body: Some(BODY),
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv_ids(0, 2));
    let mut child = spawn_kept(&w, &["run", file.to_str().unwrap(), "--rate", "100"]);
    let mut peak = 0;
    let start = Instant::now();
    let code = loop {
        if let Some(kib) = peak_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status.code().unwrap_or(-1);
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the run did not end");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(code, 0, "{}", text(&out));
    assert!(
        peak < 128 * 1024,
        "peak memory {peak} KiB for a {BODY}-byte body"
    );
    let st = w.status();
    assert_eq!(row_count(&st, "invited"), 2, "{st}");
    assert_eq!(doubled(&w.truth()), 0);
    // Each answer was cut (a decode error), then the user confirmed through the list.
    let cut = ledger_rows(&w, "SELECT error FROM attempts WHERE class = 'decode'");
    assert_eq!(cut.len(), 2, "{cut:?}");
    assert!(cut.iter().all(|e| e.contains("over 1024 KiB")), "{cut:?}");
}

#[test]
fn an_access_user_with_an_unknown_status_does_not_spoil_the_list() {
    let customers = r#"[
      {"id": 101, "name": "Acme Telecom Ltd", "status": "active", "access": [
        {"email": "gone@acme.example", "name": "Gone", "status": "deleted"},
        {"email": "jane@acme.example", "name": "Jane", "status": "active"}
      ]},
      {"id": 102, "name": "Brightwave", "status": "archived"}
    ]"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.json");
    std::fs::write(&path, customers).unwrap();
    let w = World::with_config(sandbox_config(&["--customers", path.to_str().unwrap()]));
    let file = w.write(
        "in.csv",
        "email,name,customer_id\njane@acme.example,Jane,101\nnew@acme.example,New,101\n",
    );
    let out = w.run(&["sync", file.to_str().unwrap(), "--plan", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = w.run(&["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let st = w.status();
    assert_eq!(row_count(&st, "invited"), 1, "{st}");
    let out = w.run(&["customers", "--refresh", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("archived"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_422_saying_the_email_is_taken_is_exists_once_the_list_shows_the_user() {
    let w = World::new();
    w.faults(Faults {
        duplicate_status: 422,
        ..w.sandbox.faults()
    });
    // Jane already has access to Acme (101) in the samples.
    let file = w.write(
        "in.csv",
        "email,name,customer_id\njane.doe@acmetelecom.example,Jane Doe,101\n",
    );
    let out = w.run(&["run", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let st = w.status();
    assert_eq!(row_count(&st, "exists"), 1, "{st}");
}

#[test]
fn a_directory_read_told_to_wait_beyond_max_retry_wait_stops_like_an_invitation() {
    let w = World::new();
    // One request a second, one customer a page: the directory's second page meets a
    // 429 asking for 30 s, more than the run allows.
    w.faults(Faults {
        rate_limit: Some(1),
        retry_after_secs: Some(30),
        page_cap: Some(1),
        ..w.sandbox.faults()
    });
    let file = w.write("in.csv", &invitees_csv(0, 4));
    let args = ["run", file.to_str().unwrap(), "--max-retry-wait", "1"];
    let (code, out) = finish(spawn_kept(&w, &args), Duration::from_secs(20));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("--max-retry-wait"), "says what to do: {out}");
    assert_eq!(posts(&w.truth()), 0, "nothing was sent: {out}");
}

/// The directory's first four pages are asked for together: 250 customers come in one
/// round trip. Asked one page first, then the later ones together, the third page
/// would leave 200 ms after the first.
#[test]
fn the_directory_asks_for_its_first_pages_together() {
    let w = World::with_config(sandbox_config(&[
        "--generate-customers",
        "250",
        "--latency-ms",
        "200",
    ]));
    let out = w.run(&["customers", "--refresh", "--rate", "1000"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("250"), "{}", text(&out));
    let truth = w.truth();
    assert_eq!(
        route(&truth, "GET /customer"),
        4,
        "{:?}",
        truth.requests_by_route
    );
    let at = &truth.request_times_ms;
    assert!(
        at[3] < at[0] + 100,
        "the first four pages go together: {at:?}"
    );
}

/// Past the first wave the pages go in waves that double, each after the one before:
/// 950 customers are the first four pages, then the next eight (six of them served).
#[test]
fn the_directory_asks_for_its_later_pages_in_a_wave_after_the_first() {
    let w = World::with_config(sandbox_config(&[
        "--generate-customers",
        "950",
        "--latency-ms",
        "200",
    ]));
    let out = w.run(&["customers", "--refresh", "--rate", "1000"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let truth = w.truth();
    assert_eq!(
        route(&truth, "GET /customer"),
        12,
        "{:?}",
        truth.requests_by_route
    );
    let at = &truth.request_times_ms;
    assert!(
        at[4] >= at[3] + 200,
        "the second wave waits for the first: {at:?}"
    );
    assert!(
        at[11] < at[4] + 100,
        "the second wave's pages go together: {at:?}"
    );
}

/// A server that serves fewer rows a page than asked: the first wave's pages past the
/// first were asked at offsets it does not reach, so they are asked again where the
/// list goes on, and every customer is read once.
#[test]
fn a_directory_served_in_short_pages_is_read_whole_once() {
    let w = World::with_config(sandbox_config(&["--generate-customers", "250"]));
    w.faults(Faults {
        page_cap: Some(30),
        ..w.sandbox.faults()
    });
    let out = w.run(&["customers", "--refresh", "--json", "--rate", "1000"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: std::collections::BTreeSet<i64> = listed["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 250, "{listed}");
    assert_eq!(listed["total"], 250, "read once each: {listed}");
}
