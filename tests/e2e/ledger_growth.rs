//! A ledger that lasts years of nightly runs: a night that changes nothing writes no
//! row record, `export` and `--results` still give back what they must, `compact`
//! keeps every current state and refuses a busy ledger, and reading commands neither
//! lock nor create anything.

use std::path::Path;

use std::time::Duration;

use bbinvite::sandbox::Faults;

use crate::util::{
    World, code, invitees_csv, posts, row_count, samples, spawn_background, text, wait_for,
};

/// A count from the ledger, read on a connection of the test's own.
fn count(ledger: &Path, sql: &str) -> i64 {
    let db = rusqlite::Connection::open(ledger).unwrap();
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The names of the files in the work dir.
fn files(w: &World) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_no_op_rerun_writes_no_row_record_yet_counts_every_row() {
    let w = World::new();
    let input = w.write("in.csv", &invitees_csv(0, 400));
    let input = input.to_str().unwrap();
    let out = w.run(&["run", input, "--rate", "100000"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let rows = count(&w.ledger(), "SELECT count(*) FROM rows");
    let size = std::fs::metadata(w.ledger()).unwrap().len();
    for night in 2..=4 {
        let out = w.run(&["run", input]);
        assert_eq!(code(&out), 0, "night {night}: {}", text(&out));
    }
    assert_eq!(posts(&w.truth()), 400, "nothing sent again");
    assert_eq!(
        count(&w.ledger(), "SELECT count(*) FROM rows"),
        rows,
        "no row record for rows already done and unchanged"
    );
    let grown = std::fs::metadata(w.ledger()).unwrap().len() - size;
    assert!(
        grown <= 32 * 1024,
        "three no-op nights grew the ledger {grown} bytes"
    );
    let st = w.status();
    assert_eq!(row_count(&st, "invited"), 400, "{st}");
    assert_eq!(st["run"]["id"], 4, "{st}");

    let results = w.path("results.csv");
    let out = w.run(&["run", input, "--results", results.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let sheet = std::fs::read_to_string(&results).unwrap();
    assert_eq!(
        sheet.lines().count(),
        1 + 400,
        "every row of the input comes back"
    );
    assert!(
        sheet
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("user0@example.com,User 0,"),
        "in input order"
    );
    assert_eq!(sheet.matches(",invited,").count(), 400, "{sheet}");
    assert_eq!(count(&w.ledger(), "SELECT count(*) FROM rows"), rows);
}

#[test]
fn a_changed_row_of_a_done_key_is_recorded_once_and_sent_nowhere() {
    let w = World::new();
    let first = w.write("in.csv", &invitees_csv(0, 20));
    assert_eq!(code(&w.run(&["run", first.to_str().unwrap()])), 0);
    let changed = invitees_csv(0, 20).replace("User 3,", "User Three,");
    let second = w.write("in2.csv", &changed);
    for _ in 0..2 {
        let out = w.run(&["run", second.to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    assert_eq!(posts(&w.truth()), 20);
    assert_eq!(
        count(&w.ledger(), "SELECT count(*) FROM rows WHERE run_id > 1"),
        1,
        "the changed row recorded on the night it changed, then counted"
    );
}

#[test]
fn export_of_a_no_op_run_and_of_a_run_with_bad_rows() {
    let w = World::new();
    let input = samples("invitees.csv");
    let input = input.to_str().unwrap();
    assert_eq!(code(&w.run(&["run", input])), 1);
    let out = w.run(&["run", input]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let st = w.status();
    let invalid = row_count(&st, "invalid");
    assert!(invalid > 0, "{st}");
    let again = w.run(&["export", "--run", "2", "--status", "invalid"]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).lines().count() as u64,
        1 + invalid,
        "the last night's export has every bad row: {}",
        text(&again)
    );
    // Seen again, a bad row is stored once: in the last run that saw it.
    assert_eq!(
        count(
            &w.ledger(),
            "SELECT count(*) FROM rows WHERE status = 'invalid'"
        ) as u64,
        invalid
    );
    let night1 = w.run(&["status", "--run", "1", "--json"]);
    let night1: serde_json::Value = serde_json::from_slice(&night1.stdout).unwrap();
    assert_eq!(
        row_count(&night1, "invalid"),
        invalid,
        "night 1 keeps its counts"
    );
    let all = w.run(&["export", "--run", "2"]);
    let sheet = String::from_utf8_lossy(&all.stdout);
    assert!(
        !sheet.contains(",invited,"),
        "done rows are counted, not copied: {sheet}"
    );
    assert!(String::from_utf8_lossy(&all.stderr).contains("counted, not recorded"));
    let total: u64 = st["statuses"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 36, "the counts still add up to the rows read: {st}");
}

#[test]
fn export_of_an_old_night_lists_the_bad_rows_a_later_night_saw_again() {
    let w = World::new();
    let input = samples("invitees.csv");
    let input = input.to_str().unwrap();
    // Each row of an export but its last column (updated_at, which a bad row seen
    // again moves forward).
    let night1 = |w: &World| -> Vec<String> {
        let out = w.run(&["export", "--run", "1"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(code(&w.run(&["run", input])), 1);
    let first = night1(&w);
    assert_eq!(first.len(), 1 + 36);
    for night in 2..=3 {
        let out = w.run(&["run", input]);
        assert_eq!(code(&out), 1, "night {night}: {}", text(&out));
    }
    assert_eq!(
        night1(&w),
        first,
        "night 1 exports as it did, in input order"
    );
    let invalid = row_count(&w.status(), "invalid");
    assert!(invalid > 0);
    for night in ["1", "2", "3"] {
        let out = w.run(&["export", "--run", night, "--status", "invalid"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let sheet = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            sheet.lines().count() as u64,
            1 + invalid,
            "night {night} lists every bad row it saw: {sheet}"
        );
    }
    let night1: serde_json::Value =
        serde_json::from_slice(&w.run(&["status", "--run", "1", "--json"]).stdout).unwrap();
    assert_eq!(
        night1["top_errors"],
        w.status()["top_errors"],
        "night 1's commonest errors are its bad rows'"
    );
    // Still stored once: in the last night that saw it, the first night named on it.
    assert_eq!(
        count(
            &w.ledger(),
            "SELECT count(*) FROM rows WHERE status = 'invalid' AND run_id = 3 AND first_seen_run = 1"
        ) as u64,
        invalid
    );
    assert_eq!(
        count(
            &w.ledger(),
            "SELECT count(*) FROM rows WHERE status = 'invalid'"
        ) as u64,
        invalid
    );
}

#[test]
fn compact_keeps_every_current_state_and_the_counts_of_each_run() {
    let w = World::new();
    let input = samples("invitees.csv");
    let input = input.to_str().unwrap();
    w.run(&["run", input]);
    w.run(&[
        "run",
        w.write("more.csv", &invitees_csv(0, 30)).to_str().unwrap(),
    ]);
    let before = w.status();
    let run1 = w.run(&["status", "--run", "1", "--json"]).stdout;
    {
        let db = rusqlite::Connection::open(w.ledger()).unwrap();
        db.execute(
            "UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z'",
            [],
        )
        .unwrap();
    }
    let out = w.run(&["compact", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(done["rows_removed"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(count(&w.ledger(), "SELECT count(*) FROM attempts"), 0);
    let after = w.status();
    assert_eq!(
        before["invitations"], after["invitations"],
        "every invitation's state kept"
    );
    let run1_after = w.run(&["status", "--run", "1", "--json"]).stdout;
    let counts =
        |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap()["statuses"].clone();
    assert_eq!(counts(&run1), counts(&run1_after), "run 1's counts kept");
    let sent = posts(&w.truth());
    let out = w.run(&["run", input]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(posts(&w.truth()), sent, "nothing done is sent again");
}

/// The schema of `ledger` (without where each table starts) and its `user_version`.
fn schema(ledger: &Path) -> (Vec<(String, String, String)>, i64) {
    let db = rusqlite::Connection::open(ledger).unwrap();
    let entries = db
        .prepare("SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let version = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    (entries, version)
}

#[test]
fn compact_leaves_the_kept_runs_and_the_schema_as_they_were() {
    let w = World::new();
    let first = w.write("first.csv", &invitees_csv(0, 30));
    assert_eq!(code(&w.run(&["run", first.to_str().unwrap()])), 0);
    let second = w.write("second.csv", &invitees_csv(20, 50));
    assert_eq!(code(&w.run(&["run", second.to_str().unwrap()])), 0);
    {
        let db = rusqlite::Connection::open(w.ledger()).unwrap();
        db.execute(
            "UPDATE runs SET started_at = '2020-01-01T00:00:00.000Z' WHERE id = 1",
            [],
        )
        .unwrap();
    }
    let report = |w: &World, run: &str| {
        let out = w.run(&["report", "--run", run, "--output", "r.html"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let page = std::fs::read_to_string(w.dir.path().join("r.html")).unwrap();
        // The page says when it was made: the one thing that differs by design.
        let made = page.rfind("</p></main>").unwrap();
        let at = page[..made].rfind(" at ").unwrap();
        format!("{}{}", &page[..at], &page[made..])
    };
    // What the commands say of the kept run and of every run's counts, but the file's
    // size and the oldest run whose records it keeps.
    let seen = |w: &World| {
        let status = |args: &[&str]| {
            let out = w.run(args);
            let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            v["ledger_bytes"].take();
            v["oldest_kept_run"].take();
            v.to_string()
        };
        [
            status(&["status", "--json"]),
            status(&["status", "--run", "1", "--json"]),
            status(&["status", "--run", "2", "--json"]),
            text(&w.run(&["export", "--run", "2", "--json"])),
            text(&w.run(&["export", "--actions", "--json"])),
            report(w, "2"),
        ]
    };
    let before = (seen(&w), schema(&w.ledger()));
    let out = w.run(&["compact", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["rows_removed"], 30, "{done}");
    assert_eq!(done["oldest_kept_run"], 2, "{done}");
    assert_eq!(
        count(&w.ledger(), "SELECT count(*) FROM rows WHERE run_id = 1"),
        0
    );
    assert_eq!(
        before.1,
        schema(&w.ledger()),
        "the same schema and user_version"
    );
    for (i, (was, is)) in before.0.iter().zip(seen(&w)).enumerate() {
        let at = was
            .chars()
            .zip(is.chars())
            .take_while(|(a, b)| a == b)
            .count();
        let near = |s: &str| {
            s.chars()
                .skip(at.saturating_sub(80))
                .take(200)
                .collect::<String>()
        };
        assert!(*was == is, "#{i} was: {}\nis: {}", near(was), near(&is));
    }
}

#[test]
fn a_compact_that_cannot_write_its_copy_leaves_the_ledger_as_it_was() {
    let w = World::new();
    let input = w.write("in.csv", &invitees_csv(0, 40));
    assert_eq!(code(&w.run(&["run", input.to_str().unwrap()])), 0);
    let rows = "SELECT (SELECT count(*) FROM rows) + (SELECT count(*) FROM attempts)";
    let before = count(&w.ledger(), rows);
    // A folder where the copy goes: it can neither be removed nor written.
    let mut copy = w.ledger().into_os_string();
    copy.push(".compacting");
    std::fs::create_dir_all(Path::new(&copy).join("in-the-way")).unwrap();
    let out = w.run(&["compact", "--older-than", "0"]);
    assert_ne!(code(&out), 0, "{}", text(&out));
    assert_eq!(count(&w.ledger(), rows), before, "nothing removed");
    std::fs::remove_dir_all(&copy).unwrap();
    let out = w.run(&["compact", "--older-than", "0", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(count(&w.ledger(), rows) < before);
}

#[test]
fn compact_after_one_that_died_mid_copy_replaces_the_ledger_whole() {
    let w = World::new();
    let input = w.write("in.csv", &invitees_csv(0, 40));
    assert_eq!(code(&w.run(&["run", input.to_str().unwrap()])), 0);
    let before = w.status();
    // What a compact killed while it wrote its copy leaves beside the ledger.
    let mut copy = w.ledger().into_os_string();
    copy.push(".compacting");
    std::fs::write(&copy, b"half a copy").unwrap();
    let out = w.run(&["compact", "--older-than", "0", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        !std::path::Path::new(&copy).exists(),
        "the copy took the ledger's place"
    );
    assert_eq!(before["invitations"], w.status()["invitations"]);
    let mode = std::fs::metadata(w.ledger()).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let db = rusqlite::Connection::open(w.ledger()).unwrap();
    let journal: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    drop(db);
    // The compacted ledger takes the next night and its lock as before.
    let out = w.run(&["run", input.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 40, "nothing done is sent again");
}

#[test]
fn compact_refuses_a_busy_ledger() {
    let w = World::new();
    w.run(&[
        "run",
        w.write("in.csv", &invitees_csv(0, 5)).to_str().unwrap(),
    ]);
    let held = std::fs::File::open(w.ledger()).unwrap();
    held.try_lock().unwrap();
    let out = w.run(&["compact", "--older-than", "0"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    drop(held);
    assert_eq!(code(&w.run(&["compact", "--older-than", "0"])), 0);
}

#[test]
fn reading_commands_take_no_lock_and_create_no_file() {
    let w = World::new();
    let input = w.write("in.csv", &invitees_csv(0, 10));
    assert_eq!(code(&w.run(&["run", input.to_str().unwrap()])), 0);
    let mut mode = std::fs::metadata(w.ledger()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o444);
    std::fs::set_permissions(w.ledger(), mode).unwrap();
    let before = files(&w);
    // A run holds the ledger's lock meanwhile.
    let held = std::fs::File::open(w.ledger()).unwrap();
    held.try_lock().unwrap();
    let st = w.status();
    assert_eq!(row_count(&st, "invited"), 10, "{st}");
    let out = w.run(&["export"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = w.run(&["customers", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(files(&w), before, "no -wal, -shm or lock file created");

    let missing = w.path("none.db");
    let out = assert_cmd::Command::cargo_bin("bbinvite")
        .unwrap()
        .current_dir(w.dir.path())
        .args(["status", "--ledger", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("none.db"), "{}", text(&out));
    assert!(!missing.exists(), "no empty ledger made");
}

#[test]
fn status_and_export_work_while_a_run_writes_the_ledger() {
    let w = World::new();
    w.faults(Faults {
        latency_ms: 50,
        ..w.sandbox.faults()
    });
    let input = w.write("in.csv", &invitees_csv(0, 200));
    let args = [
        "run",
        input.to_str().unwrap(),
        "--rate",
        "100000",
        "--concurrency",
        "1",
    ];
    let mut child = spawn_background(&w, &args);
    assert!(
        wait_for(&w, Duration::from_secs(60), |t| posts(t) >= 5),
        "the run started"
    );
    let st = w.status();
    assert!(
        st["run"]["outcome"].is_null(),
        "the run going is shown: {st}"
    );
    let out = w.run(&["export"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn customers_without_a_ledger_is_an_error_naming_it_and_creates_nothing() {
    let w = World::new();
    let out = w.run(&["customers"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("ledger.db"), "{}", text(&out));
    assert!(files(&w).is_empty(), "no file created: {:?}", files(&w));
    let out = w.run(&["customers", "--refresh", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        w.ledger().exists(),
        "--refresh keeps the directory in a new ledger"
    );
}
