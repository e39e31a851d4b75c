//! What reaches the API is what the sheet says: no row swallowed by a stray quote, no
//! byte guessed into another alphabet, no invisible character making a second person,
//! a results sheet that reads back as its input, and no binary read as a sheet.

use std::collections::BTreeSet;

use crate::util::*;

/// The e-mails the sandbox received an invitation POST for.
fn sent(w: &World) -> BTreeSet<String> {
    w.truth().keys.into_iter().map(|k| k.email).collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// 1,000 invitees with an unterminated quote in the one on line 601.
fn stray_quote_csv() -> String {
    let mut s = String::from("email,name,customer\n");
    for i in 2..=1001 {
        let name = if i == 601 {
            format!("\"User {i}")
        } else {
            format!("User {i}")
        };
        s.push_str(&format!("user{i}@example.com,{name},Acme Telecom Ltd\n"));
    }
    s
}

#[test]
fn a_stray_quote_that_swallows_rows_refuses_the_file_naming_the_lines() {
    let w = World::new();
    let file = w.write("stray.csv", &stray_quote_csv());
    for command in ["run", "validate"] {
        let out = w.run(&[command, file.to_str().unwrap(), "--rate", "500"]);
        assert_eq!(code(&out), 2, "{command}\n{}", text(&out));
        let said = stderr(&out);
        assert!(said.contains("stray.csv:601-1001"), "{command}: {said}");
        assert!(said.contains("--allow-multiline-fields"), "{said}");
        assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    }
    assert_eq!(posts(&w.truth()), 0, "nothing sent");

    // Accepted: every row has a line in the output, the swallowing one invalid.
    let out = w.run(&[
        "validate",
        file.to_str().unwrap(),
        "--allow-multiline-fields",
    ]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let said = stdout(&out);
    assert!(said.contains("stray.csv:601: invalid"), "{said}");
    assert!(said.contains("lines 601-1001"), "{said}");
}

#[test]
fn a_short_quoted_multiline_note_is_still_fine() {
    let w = World::new();
    let file = w.write(
        "notes.csv",
        "email,name,customer,notes\n\
         a@example.com,Ann,Acme Telecom Ltd,\"one\ntwo\nthree\"\n\
         b@example.com,Bob,Acme Telecom Ltd,\n",
    );
    let out = w.run(&["run", file.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 2);
}

/// 300 UTF-8 names and one line with a lone Windows-1252 byte.
fn mostly_utf8_csv() -> Vec<u8> {
    let mut s = b"email,name,customer\n".to_vec();
    for i in 0..300 {
        s.extend_from_slice(
            format!("zoe{i}@example.com,Zoë Brontë {i},Acme Telecom Ltd\n").as_bytes(),
        );
    }
    s.extend_from_slice(b"jose@example.com,Jos\xE9 Ruiz,Acme Telecom Ltd\n");
    s
}

#[test]
fn one_stray_byte_does_not_turn_a_utf8_file_into_windows_1252() {
    let w = World::new();
    let file = w.path("mostly.csv");
    std::fs::write(&file, mostly_utf8_csv()).unwrap();
    let out = w.run(&["validate", file.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let said = stdout(&out);
    assert!(
        said.contains("mostly.csv:302: invalid")
            && said.contains("byte 0xE9 at column 21 is not UTF-8"),
        "{said}"
    );
    let out = w.run(&["run", file.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let names: BTreeSet<String> = w
        .sandbox
        .access(101)
        .unwrap()
        .into_iter()
        .map(|u| u.user.name)
        .collect();
    let zoes = names
        .iter()
        .filter(|n| n.starts_with("Zoë Brontë "))
        .count();
    assert_eq!(zoes, 300, "{names:?}");
    assert!(!names.iter().any(|n| n.contains('Ã') || n.contains("Jos")));
}

#[test]
fn a_file_read_as_windows_1252_says_so() {
    let w = World::new();
    let file = w.path("legacy.csv");
    std::fs::write(
        &file,
        b"email,name,customer\nzoe@example.com,Zo\xEB Bront\xEB,Acme Telecom Ltd\n",
    )
    .unwrap();
    let out = w.run(&["validate", file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("read as Windows-1252"),
        "{}",
        text(&out)
    );
    let out = w.run(&["run", file.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("read as Windows-1252"),
        "{}",
        text(&out)
    );
    let names: Vec<String> = w
        .sandbox
        .access(101)
        .unwrap()
        .into_iter()
        .map(|u| u.user.name)
        .collect();
    assert!(names.contains(&"Zoë Brontë".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains('Ã')), "{names:?}");
}

#[test]
fn invisible_and_full_width_characters_do_not_make_a_second_person() {
    let w = World::new();
    let file = w.write(
        "lookalike.csv",
        "email,name,customer\n\
         ann@example.com,Ann,Acme Telecom Ltd\n\
         an\u{200B}n@example.com,Ann Again,Acme Telecom Ltd\n\
         ann@exam\u{AD}ple.com,Ann Soft,Acme Telecom Ltd\n\
         ａｎｎ@example.com,Ann Wide,Acme Telecom Ltd\n\
         p\u{0430}ul@example.com,Paul,Acme Telecom Ltd\n",
    );
    let out = w.run(&["validate", file.to_str().unwrap()]);
    let said = stdout(&out);
    assert!(
        said.contains("lookalike.csv:3: invalid") && said.contains("U+200B ZERO WIDTH SPACE"),
        "{said}"
    );
    assert!(
        said.contains("lookalike.csv:4: invalid") && said.contains("U+00AD SOFT HYPHEN"),
        "{said}"
    );
    assert!(said.contains("lookalike.csv:5: duplicate"), "{said}");
    assert!(
        said.contains("lookalike.csv:6: warning") && said.contains("Cyrillic"),
        "{said}"
    );
    let out = w.run(&["run", file.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("mixes scripts"), "{}", text(&out));
    assert_eq!(
        sent(&w),
        BTreeSet::from([
            "ann@example.com".to_string(),
            "p\u{0430}ul@example.com".into()
        ])
    );
}

#[test]
fn a_results_sheet_fed_back_sends_nothing_new_and_never_the_escapes() {
    let w = World::new();
    let input = w.write(
        "formula.csv",
        "email,name,customer,status\n\
         =cmd@r.example,=Eve Formula,Acme Telecom Ltd,active\n\
         +plus@r.example,+Pat Plus,Acme Telecom Ltd,\n\
         'quote@r.example,Quinn,Acme Telecom Ltd,\n\
         ok@r.example,-Oscar,Acme Telecom Ltd,active\n",
    );
    let results = w.path("results.csv");
    let out = w.run(&[
        "run",
        input.to_str().unwrap(),
        "--rate",
        "500",
        "--results",
        results.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let sheet = std::fs::read_to_string(&results).unwrap();
    assert!(
        sheet.starts_with(
            "email,name,customer,status,bbinvite_status,bbinvite_error,bbinvite_customer_id,\
             bbinvite_access_user_id,bbinvite_attempts,bbinvite_updated_at\n"
        ),
        "{sheet}"
    );
    assert!(sheet.contains("'=cmd@r.example,'=Eve Formula"), "{sheet}");
    let first = sent(&w);
    assert_eq!(
        first,
        BTreeSet::from([
            "=cmd@r.example".to_string(),
            "+plus@r.example".into(),
            "'quote@r.example".into(),
            "ok@r.example".into()
        ])
    );
    let before = posts(&w.truth());

    // Fed back twice: the same rows, the same people, nothing new sent.
    let again = w.path("again.csv");
    for round in [&results, &again] {
        let out = w.run(&[
            "run",
            round.to_str().unwrap(),
            "--rate",
            "500",
            "--results",
            again.to_str().unwrap(),
        ]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        assert_eq!(posts(&w.truth()), before, "nothing new sent");
        assert_eq!(sent(&w), first);
        let back = std::fs::read_to_string(&again).unwrap();
        assert_eq!(back.lines().next(), sheet.lines().next(), "one block only");
    }
    let names: BTreeSet<String> = w
        .sandbox
        .access(101)
        .unwrap()
        .into_iter()
        .map(|u| u.user.name)
        .collect();
    assert!(
        names.contains("=Eve Formula") && names.contains("-Oscar"),
        "{names:?}"
    );
}

#[cfg(unix)]
#[test]
fn the_results_sheet_and_exports_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    let input = w.write("few.csv", &invitees_csv(0, 3));
    let results = w.path("results.csv");
    let out = w.run(&[
        "run",
        input.to_str().unwrap(),
        "--rate",
        "500",
        "--results",
        results.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let exported = w.path("export.csv");
    let actions = w.path("actions.csv");
    let out = w.run(&["export", "--output", exported.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = w.run(&["export", "--actions", "--output", actions.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for path in [&results, &exported, &actions] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}

#[test]
fn customer_names_match_under_full_case_folding() {
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.json");
    std::fs::write(
        &customers,
        r#"[{"id": 2001, "name": "Straße Telecom", "reference": "STR-1", "status": "active", "type": "business"},
            {"id": 2002, "name": "Weiss Networks", "reference": "WEI-1", "status": "active", "type": "business"},
            {"id": 2003, "name": "WEISS NETWORKS", "reference": "WEI-2", "status": "active", "type": "business"}]"#,
    )
    .unwrap();
    let w = World::with_customers(&customers);
    let file = w.write(
        "fold.csv",
        "email,name,customer\n\
         a@example.com,Ann,STRASSE TELECOM\n\
         b@example.com,Bob,strasse telecom\n\
         c@example.com,Cat,Weiß Networks\n",
    );
    let out = w.run(&["run", file.to_str().unwrap(), "--rate", "500"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert_eq!(w.sandbox.access(2001).unwrap().len(), 2, "{}", text(&out));
    let st = w.status();
    assert_eq!(row_count(&st, "unresolved"), 1, "{st}");
    let out = w.run(&["validate", file.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("fold.csv:4: unresolved") && stdout(&out).contains("2 active"),
        "{}",
        text(&out)
    );
}

#[test]
fn binary_input_is_refused_naming_what_it_looks_like() {
    let w = World::new();
    let png = w.path("photo.csv");
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.extend((0u8..=255).cycle().take(2000));
    std::fs::write(&png, &bytes).unwrap();
    let junk = w.path("junk.dat");
    let noise: Vec<u8> = (0u32..4000)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&junk, &noise).unwrap();
    let zip = w.path("archive.dat");
    std::fs::write(&zip, b"PK\x03\x04\x14\0\0\0\0\0notes/readme.txt hello").unwrap();
    for (path, looks) in [(&png, "PNG image"), (&junk, "binary data"), (&zip, "zip")] {
        let out = w.run(&["validate", path.to_str().unwrap()]);
        assert_eq!(code(&out), 2, "{}", text(&out));
        let said = stderr(&out);
        assert!(said.contains(looks), "{said}");
        assert_eq!(said.trim().lines().count(), 1, "{said}");
        assert!(
            !said.chars().any(|c| c.is_control() && c != '\n'),
            "no control bytes echoed: {said:?}"
        );
    }
    assert_eq!(posts(&w.truth()), 0);
}

#[test]
fn control_bytes_in_a_header_are_escaped_in_messages() {
    let w = World::new();
    let file = w.write("ctl.csv", "Mail\u{1b}[31m,Who\u{7}\nx@example.com,X\n");
    let out = w.run(&["validate", file.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let said = text(&out);
    assert!(
        !said.contains('\u{1b}') && !said.contains('\u{7}'),
        "{said:?}"
    );
    assert!(said.contains("\\u{1b}"), "{said}");
}

#[test]
fn a_header_without_rows_is_a_problem() {
    let w = World::new();
    let file = w.write("truncated.csv", "email,name,customer\n");
    for command in ["run", "validate"] {
        let out = w.run(&[command, file.to_str().unwrap(), "--rate", "500"]);
        assert_eq!(code(&out), 1, "{command}\n{}", text(&out));
        assert!(text(&out).contains("no rows"), "{}", text(&out));
    }
}

#[test]
fn an_oversized_cell_makes_its_row_invalid() {
    let w = World::new();
    let big = "x".repeat(5000);
    let file = w.write(
        "big.csv",
        &format!(
            "email,name,customer,notes\n\
             a@example.com,Ann,Acme Telecom Ltd,{big}\n\
             b@example.com,Bob,Acme Telecom Ltd,short\n"
        ),
    );
    let out = w.run(&["validate", file.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let said = stdout(&out);
    assert!(
        said.contains("big.csv:2: invalid: column \"notes\"") && said.contains("5000 bytes"),
        "{said}"
    );
    assert!(!said.contains(&big), "the cell is not echoed whole");
}
