//! Real spreadsheets in, a results sheet out: encodings, dialects, workbooks, validate,
//! and the export → fix → rerun round trip.

use std::path::PathBuf;

use crate::util::*;
use bbinvite::api::types::AccessStatus;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A world whose sandbox holds the fixtures' five customers.
fn fixture_world() -> World {
    let customers = fixture("customers.json");
    World::with_customers(&customers)
}

/// The five invitees every fixture describes: (customer id, e-mail, name, status).
const FIVE: [(i64, &str, &str, Option<AccessStatus>); 5] = [
    (
        1001,
        "ann.lee@example.com",
        "Ann Lee",
        Some(AccessStatus::Active),
    ),
    (
        1002,
        "bob.ray@example.org",
        "Bob Ray",
        Some(AccessStatus::Active),
    ),
    (
        1003,
        "zoe.dubois@example.fr",
        "Zoë Dubois",
        Some(AccessStatus::AwaitingActivation),
    ),
    (
        1004,
        "mags.smith@example.co.uk",
        "Margaret “Mags” Smith",
        None,
    ),
    (
        1005,
        "soren@example.dk",
        "Søren Østergaard",
        Some(AccessStatus::Suspended),
    ),
];

/// What the API received for the fixture customers: (customer, e-mail, name, status).
fn received(w: &World) -> Vec<(i64, String, String, Option<AccessStatus>)> {
    let mut out = Vec::new();
    for (id, ..) in FIVE {
        for u in w.sandbox.access(id).unwrap_or_default() {
            out.push((id, u.user.email, u.user.name, u.user.status));
        }
    }
    out
}

#[test]
fn every_encoding_dialect_and_workbook_invites_the_same_five_people_exactly() {
    let files = [
        "utf8.csv",
        "utf8_bom.csv",
        "utf16le.csv",
        "utf16be.csv",
        "windows1252.csv",
        "pipes.csv",
        "pipe.tsv",
        "tabs.tsv",
        "quoted.csv",
        "invitees.xlsx",
        "invitees.ods",
    ];
    for file in files {
        let w = fixture_world();
        let out = w.run(&["run", fixture(file).to_str().unwrap(), "--rate", "500"]);
        assert_eq!(code(&out), 0, "{file}\n{}", text(&out));
        let got = received(&w);
        assert_eq!(got.len(), 5, "{file}: {got:?}");
        for (id, email, name, status) in FIVE {
            let user = got
                .iter()
                .find(|g| g.1 == email)
                .unwrap_or_else(|| panic!("{file}: {email} missing"));
            assert_eq!(user.0, id, "{file}: {email} went to the right customer");
            assert_eq!(user.2, name, "{file}: the name arrived intact");
            if file != "quoted.csv" {
                // quoted.csv has no status column: the API's default applies.
                let want = status.unwrap_or(AccessStatus::AwaitingActivation);
                assert_eq!(user.3, Some(want), "{file}: {email}");
            }
        }
        assert_eq!(doubled(&w.truth()), 0);
    }
}

#[test]
fn first_and_last_name_columns_are_joined() {
    let w = fixture_world();
    let out = w.run(&[
        "run",
        fixture("first_last.csv").to_str().unwrap(),
        "--rate",
        "500",
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let names: Vec<String> = received(&w).into_iter().map(|r| r.2).collect();
    assert!(names.contains(&"Ann Lee".to_string()), "{names:?}");
    assert!(names.contains(&"Søren Østergaard".to_string()), "{names:?}");
}

#[test]
fn ragged_rows_and_broken_json_lines_are_recorded_and_the_rest_is_sent() {
    let w = fixture_world();
    let out = w.run(&[
        "run",
        fixture("ragged.csv").to_str().unwrap(),
        "--rate",
        "500",
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let st = w.status();
    assert_eq!(
        (row_count(&st, "invited"), row_count(&st, "invalid")),
        (3, 2),
        "{st}"
    );

    let out = w.run(&[
        "run",
        fixture("broken.jsonl").to_str().unwrap(),
        "--rate",
        "500",
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let st = w.status();
    // Ann, Zoë and Søren were invited by the ragged file already; Bob and Mags are new.
    assert_eq!(row_count(&st, "invalid"), 3, "{st}");
    assert_eq!(row_count(&st, "invited"), 5, "{st}");
    assert_eq!(received(&w).len(), 5);
    assert!(
        w.truth().keys.iter().all(|k| k.posts == 1),
        "nothing sent twice"
    );

    let out = w.run(&["validate", fixture("broken.jsonl").to_str().unwrap()]);
    let said = text(&out);
    for line in [":3: invalid", ":6: invalid", ":8: invalid"] {
        assert!(said.contains(line), "validate names {line}: {said}");
    }
}

#[test]
fn validate_names_each_problem_by_file_line_column_and_value_and_sends_nothing() {
    let w = World::new();
    let file = samples("invitees.csv");
    let out = w.run(&["validate", file.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let expect = [
        "invitees.csv:29: invalid: column \"Email Address\" value \"not-an-email\"",
        "invitees.csv:30: invalid: column \"Email Address\" value \"carl.jones@acmetelecom..example\"",
        "invitees.csv:31: invalid: column \"Full Name\"",
        "invitees.csv:34: invalid: column \"Access Status\" value \"pending\"",
        "invitees.csv:32: unresolved: column \"Company\" value \"Acme Telecomm Ltd\": no customer named \"Acme Telecomm Ltd\"; did you mean \"Acme Telecom Ltd\"",
        "invitees.csv:9: unresolved: column \"Company\" value \"Harbour Networks\": 2 active customers are named \"Harbour Networks\" (id 105 ref HBN-105; id 106 ref HBN-106)",
        "invitees.csv:11: warning: column \"Company\" value \"Pennine Voice\": customer 107 is suspended",
        "invitees.csv:33: duplicate:",
        "36 rows: 28 would be sent, 4 invalid, 3 unresolved, 1 duplicate, 1 warnings",
    ];
    for e in expect {
        assert!(said.contains(e), "missing {e:?} in\n{said}");
    }
    let t = w.truth();
    assert_eq!(posts(&t), 0, "validate sends no invitation");

    let out = w.run(&["validate", file.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["invalid"], 4);
    assert_eq!(v["summary"]["unresolved"], 3);
    let findings = v["findings"].as_array().unwrap();
    assert!(findings.iter().any(|f| f["line"] == 29
        && f["column"] == "Email Address"
        && f["value"] == "not-an-email"));

    let clean = w.write("clean.csv", &invitees_csv(0, 10));
    assert_eq!(code(&w.run(&["validate", clean.to_str().unwrap()])), 0);
}

#[test]
fn a_results_sheet_fixed_and_fed_back_sends_only_the_fixed_rows() {
    let w = World::new();
    let results = w.path("results.csv");
    let out = w.run(&[
        "run",
        samples("invitees.csv").to_str().unwrap(),
        "--rate",
        "500",
        "--results",
        results.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let before = posts(&w.truth());

    // The operator fixes two rows in the sheet and saves it.
    let sheet = std::fs::read_to_string(&results).unwrap();
    let fixed = sheet
        .replace("not-an-email,", "bad.email@acmetelecom.example,")
        .replace("Acme Telecomm Ltd", "Acme Telecom Ltd");
    assert_ne!(fixed, sheet);
    let again = w.write("fixed.csv", &fixed);
    let out = w.run(&["run", again.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(
        code(&out),
        1,
        "the unfixed bad rows still fail\n{}",
        text(&out)
    );
    assert_eq!(
        posts(&w.truth()) - before,
        2,
        "only the two fixed rows are sent"
    );
    let st = w.status();
    assert_eq!(row_count(&st, "invited"), 27 + 2, "{st}");
    assert_eq!(row_count(&st, "invalid"), 3, "{st}");
    assert_eq!(row_count(&st, "unresolved"), 2, "{st}");
}

#[test]
fn customers_lists_the_directory_and_flags_shared_names() {
    let w = World::new();
    // No ledger yet: `--refresh` fetches the directory and keeps it in a new one.
    let out = w.run(&["customers", "--refresh", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["shown"], 12, "{listed}");
    assert_eq!(listed["total"], 12, "{listed}");
    let list = listed["customers"].as_array().unwrap();
    assert_eq!(list.len(), 12);
    let harbour: Vec<_> = list
        .iter()
        .filter(|c| c["name"] == "Harbour Networks")
        .collect();
    assert!(harbour.iter().all(|c| c["ambiguous"] == true));
    let cafe = list.iter().find(|c| c["id"] == 108).unwrap();
    assert_eq!(cafe["normalized"], "café société télécom");

    let out = w.run(&["customers", "--search", "fibre"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("NFC-003") && said.contains("NFC-OLD"),
        "{said}"
    );
    assert!(said.contains("2 of 12 customers"), "{said}");
}

#[test]
fn validate_without_credentials_uses_the_ledgers_copy_of_the_directory() {
    let w = World::new();
    let file = samples("invitees.csv");
    let mut cmd = w.cmd(&["validate", file.to_str().unwrap()]);
    cmd.env_remove("BILLINGBOOTH_API_KEY");
    let out = cmd.output().unwrap();
    assert_eq!(
        code(&out),
        2,
        "no copy yet: credentials are needed\n{}",
        text(&out)
    );
    assert!(text(&out).contains("no credentials"), "{}", text(&out));

    assert_eq!(
        code(&w.run(&["customers", "--refresh"])),
        0,
        "fetches and keeps the directory"
    );
    let requests = w.truth().requests_total;
    let mut cmd = w.cmd(&["validate", file.to_str().unwrap()]);
    cmd.env_remove("BILLINGBOOTH_API_KEY");
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("did you mean \"Acme Telecom Ltd\""),
        "{}",
        text(&out)
    );
    // The one reference in the file cannot be looked up offline; names can.
    assert!(text(&out).contains("HBN-105"), "{}", text(&out));
    assert_eq!(w.truth().requests_total, requests, "no request at all");
}

#[test]
fn standard_input_is_read_as_a_file_named_stdin() {
    let w = World::new();
    let out = w
        .cmd(&["run", "-", "--rate", "500"])
        .write_stdin(invitees_csv(0, 4) + "not-an-email,Bad Row,Acme Telecom Ltd\n")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 4);
    let out = w.run(&["validate", "-"]);
    assert_eq!(
        code(&out),
        2,
        "an empty standard input is unreadable input\n{}",
        text(&out)
    );
    let out = w
        .cmd(&["validate", "-"])
        .write_stdin(
            "email,name,customer\nx@y.example,X Y,Vertex Connect\nbad,Bad,Vertex Connect\n",
        )
        .output()
        .unwrap();
    assert!(text(&out).contains("<stdin>:3: invalid"), "{}", text(&out));
}
