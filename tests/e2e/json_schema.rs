//! Every command's `--json` output against docs/json.md: the page holds a fenced
//! example per command, and each command's real output must have the example's keys
//! with the same JSON types, all the way down, so the page cannot drift from the code.
//!
//! How an example is read (the page says the same): a key in angle brackets stands for
//! any number of keys whose values have its shape; every other key must be present; a
//! real `null` stands in for any type; a list's first element is every element's shape.

use std::collections::BTreeMap;
use std::process::Output;

use serde_json::Value;

use crate::util::*;

const DOC: &str = include_str!("../../docs/json.md");

/// The section whose examples are the sending commands' summaries: each is checked
/// against the command its `command` field names.
const SUMMARY: &str = "run, retry, sync, undo: the summary";
const ERROR: &str = "the error object";

/// One fenced example: a document (```json) or JSON lines (```jsonl).
#[derive(Debug)]
struct Example {
    lines: bool,
    values: Vec<Value>,
}

/// The page's examples by section heading (`## heading`).
fn examples() -> BTreeMap<String, Vec<Example>> {
    let mut found: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    let mut heading = String::new();
    let mut block: Option<(bool, String)> = None;
    for line in DOC.lines() {
        if let Some((lines, text)) = &mut block {
            if line.trim() == "```" {
                let values = if *lines {
                    text.lines().map(|l| parse(&heading, l)).collect()
                } else {
                    vec![parse(&heading, text)]
                };
                let lines = *lines;
                found
                    .entry(heading.clone())
                    .or_default()
                    .push(Example { lines, values });
                block = None;
            } else {
                text.push_str(line);
                text.push('\n');
            }
        } else if let Some(h) = line.strip_prefix("## ") {
            heading = h.trim().to_string();
        } else if let Some(tag) = line.trim().strip_prefix("```") {
            match tag {
                "json" => block = Some((false, String::new())),
                "jsonl" => block = Some((true, String::new())),
                _ => {}
            }
        }
    }
    found
}

fn parse(heading: &str, text: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("docs/json.md, {heading}: the example is not JSON ({e})"))
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn is_placeholder(key: &str) -> bool {
    key.starts_with('<') && key.ends_with('>')
}

/// Where `real` differs in shape from `example`, each as `path: what`.
fn differences(real: &Value, example: &Value, path: &str, out: &mut Vec<String>) {
    match (real, example) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Array(items), Value::Array(shape)) => {
            if let Some(shape) = shape.first() {
                for (i, item) in items.iter().enumerate() {
                    differences(item, shape, &format!("{path}[{i}]"), out);
                }
            }
        }
        (Value::Object(fields), Value::Object(shape)) => {
            let any = shape
                .iter()
                .find(|(k, _)| is_placeholder(k))
                .map(|(_, v)| v);
            for (key, want) in shape.iter().filter(|(k, _)| !is_placeholder(k)) {
                match fields.get(key) {
                    Some(got) => differences(got, want, &format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}: missing")),
                }
            }
            for (key, got) in fields.iter().filter(|(k, _)| !shape.contains_key(*k)) {
                match any {
                    Some(want) => differences(got, want, &format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}: not in docs/json.md")),
                }
            }
        }
        _ if type_of(real) != type_of(example) => out.push(format!(
            "{path}: a {} where docs/json.md shows a {}",
            type_of(real),
            type_of(example)
        )),
        _ => {}
    }
}

/// The shape differences of a command's stdout from its one example, prefixed by the
/// section's heading.
fn check(example: &Example, heading: &str, out: &Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reals: Vec<Value> = if example.lines {
        assert!(
            !stdout.trim().is_empty(),
            "{heading}: no lines\n{}",
            text(out)
        );
        stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("{heading}: a line is not JSON ({e}): {l}\n{}", text(out))
                })
            })
            .collect()
    } else {
        vec![serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "{heading}: stdout is not one JSON document ({e})\n{}",
                text(out)
            )
        })]
    };
    let mut found = Vec::new();
    for real in &reals {
        differences(real, &example.values[0], heading, &mut found);
    }
    found
}

/// The one example of a section the page must have.
fn only<'a>(examples: &'a BTreeMap<String, Vec<Example>>, heading: &str) -> &'a Example {
    match examples.get(heading).map(Vec::as_slice) {
        Some([one]) => one,
        other => panic!("docs/json.md, {heading}: one example expected, found {other:?}"),
    }
}

/// The summary examples the page has, by the command they show.
fn summaries(examples: &BTreeMap<String, Vec<Example>>) -> BTreeMap<String, &Example> {
    examples
        .get(SUMMARY)
        .into_iter()
        .flatten()
        .map(|e| {
            let command = e.values[0]["command"].as_str().unwrap_or_default();
            (command.to_string(), e)
        })
        .collect()
}

#[test]
fn every_commands_json_has_the_shape_docs_json_md_shows() {
    let examples = examples();
    let summaries = summaries(&examples);
    let w = World::new();
    let input = samples("invitees.csv");
    let input = input.to_str().unwrap();
    let mut wrong = Vec::new();
    let mut checked = vec![SUMMARY.to_string()];
    let mut expect = |heading: &str, args: &[&str], exit: i32| {
        let out = w.run(args);
        assert_eq!(code(&out), exit, "{heading}: {args:?}\n{}", text(&out));
        wrong.extend(check(only(&examples, heading), heading, &out));
        checked.push(heading.to_string());
    };
    expect("validate", &["validate", input, "--json"], 1);
    let run = w.run(&["run", input, "--json"]);
    expect("run --dry-run", &["run", "--dry-run", input, "--json"], 1);
    let plan = ["sync", input, "--plan", "--prune", "--json"];
    expect("sync --plan", &plan, 1);
    let sync = w.run(&["sync", input, "--prune", "--yes", "--json"]);
    expect(
        "export --actions --json",
        &["export", "--actions", "--json"],
        0,
    );
    expect("status", &["status", "--json"], 0);
    expect("status --run", &["status", "--run", "1", "--json"], 0);
    expect("export --json", &["export", "--run", "1", "--json"], 0);
    expect("customers", &["customers", "--json"], 0);
    expect("report", &["report", "--output", "r.html", "--json"], 0);
    expect("template", &["template", "--output", "t.csv", "--json"], 0);
    expect(ERROR, &["validate", "missing.csv", "--json"], 2);
    let retry = w.run(&["retry", "--json"]);
    expect("undo --run", &["undo", "--run", "1", "--json"], 0);
    let undo = w.run(&["undo", "--run", "1", "--yes", "--json"]);
    expect("compact", &["compact", "--older-than", "0", "--json"], 0);
    for (command, out) in [
        ("run", run),
        ("sync", sync),
        ("retry", retry),
        ("undo", undo),
    ] {
        if let Some(example) = summaries.get(command) {
            wrong.extend(check(example, &format!("{SUMMARY} ({command})"), &out));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let untested: Vec<&String> = examples.keys().filter(|h| !checked.contains(h)).collect();
    assert!(
        untested.is_empty(),
        "docs/json.md examples no test runs: {untested:?}"
    );
}

/// Asserts `out` is the error object alone, as docs/json.md shows it, and that its
/// `exit_code` is the process's, `exit`.
fn assert_error_object(out: &Output, exit: i32, what: &[&str]) {
    assert_eq!(code(out), exit, "{what:?}\n{}", text(out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what:?}: stdout is not one JSON document ({e})\n{}",
            text(out)
        )
    });
    let mut wrong = Vec::new();
    differences(&v, &only(&examples(), ERROR).values[0], ERROR, &mut wrong);
    assert!(wrong.is_empty(), "{what:?}: {}", wrong.join("\n"));
    assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{what:?}: {v}");
    assert_eq!(v["exit_code"], exit, "{what:?}: {v}");
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what:?}: {v}"
    );
}

#[test]
fn with_json_a_missing_file_or_ledger_is_the_error_object_and_exit_2() {
    let w = World::new();
    let reading: [&[&str]; 7] = [
        &["status", "--json"],
        &["status", "--run", "1", "--json"],
        &["export", "--json"],
        &["export", "--actions", "--json"],
        &["report", "--output", "r.html", "--json"],
        &["compact", "--json"],
        &["retry", "--json"],
    ];
    for args in reading {
        assert_error_object(&w.run(args), 2, args);
    }
    assert!(!w.ledger().exists(), "no command above made a ledger");
    let missing: [&[&str]; 4] = [
        &["run", "missing.csv", "--json"],
        &["run", "missing.csv", "--dry-run", "--json"],
        &["validate", "missing.csv", "--json"],
        &["sync", "missing.csv", "--plan", "--json"],
    ];
    for args in missing {
        assert_error_object(&w.run(args), 2, args);
    }
    assert_error_object(&w.run(&["status", "--bogus", "--json"]), 2, &["--bogus"]);
}

#[test]
fn with_json_refused_credentials_are_the_error_object_and_exit_3() {
    let mut config = bbinvite::sandbox::Config::samples();
    config.api_key = Some("another-key".into());
    let w = World::with_config(config);
    let input = samples("invitees.csv");
    let input = input.to_str().unwrap();
    let refused: [&[&str]; 4] = [
        &["validate", input, "--json"],
        &["run", input, "--dry-run", "--json"],
        &["sync", input, "--plan", "--json"],
        &["customers", "--refresh", "--json"],
    ];
    for args in refused {
        assert_error_object(&w.run(args), 3, args);
    }
}

#[test]
fn with_json_a_busy_ledger_is_the_error_object_and_exit_4() {
    let w = World::with_config(sandbox_config(&["--latency-ms", "200"]));
    let file = w.write("in.csv", &invitees_csv(0, 200));
    let file = file.to_str().unwrap();
    let mut holder = spawn_background(&w, &["run", file, "--concurrency", "1"]);
    let started = wait_for(&w, std::time::Duration::from_secs(60), |t| posts(t) > 0);
    let busy: [&[&str]; 4] = [
        &["run", file, "--json"],
        &["retry", "--json"],
        &["sync", file, "--json"],
        &["compact", "--json"],
    ];
    let outs: Vec<Output> = busy.iter().map(|args| w.run(args)).collect();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(started, "the first run never sent");
    for (args, out) in busy.iter().zip(&outs) {
        assert_error_object(out, 4, args);
    }
}

#[test]
fn export_json_is_a_line_a_row_with_the_cells_as_read_and_numbers_as_numbers() {
    let w = World::new();
    let file = w.write(
        "in.csv",
        "email,name,customer_id,notes\na@example.com,=1+1,101,@home\nb@example.com,B,999,\n",
    );
    w.run(&["run", file.to_str().unwrap()]);
    let out = w.run(&["export", "--json", "--output", "rows.jsonl"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        out.stdout.is_empty(),
        "the rows go to --output: {}",
        text(&out)
    );
    let written = std::fs::read_to_string(w.path("rows.jsonl")).unwrap();
    let rows: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{written}");
    let keys: Vec<&str> = rows[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let sheet = w.run(&["export"]).stdout;
    let header = String::from_utf8_lossy(&sheet);
    let header: Vec<&str> = header.lines().next().unwrap().split(',').collect();
    assert_eq!(keys, header, "the CSV's columns, in its order");
    assert_eq!(keys[..4], ["email", "name", "customer_id", "notes"]);
    let invited = &rows[0];
    assert_eq!(invited["name"], "=1+1", "no spreadsheet escape in JSON");
    assert_eq!(invited["notes"], "@home");
    assert_eq!(invited["bbinvite_status"], "invited");
    assert_eq!(invited["bbinvite_customer_id"], 101);
    assert!(invited["bbinvite_access_user_id"].is_u64(), "{invited}");
    assert_eq!(invited["bbinvite_attempts"], 1);
    assert!(invited["bbinvite_error"].is_null(), "{invited}");
    let refused = &rows[1];
    assert_eq!(refused["bbinvite_status"], "rejected", "{refused}");
    assert!(refused["bbinvite_error"].is_string(), "{refused}");
    assert!(refused["bbinvite_access_user_id"].is_null(), "{refused}");
}

#[test]
fn template_json_describes_the_sheet_and_prints_no_csv() {
    let w = World::new();
    let out = w.run(&["template", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", text(&out)));
    assert_eq!(v["format"], "csv", "{v}");
    assert!(v["output"].is_null(), "{v}");
    assert_eq!(v["example"]["Email"], "jo.bloggs@example.com", "{v}");
}

#[test]
fn a_plan_entry_names_its_row_by_file_and_line_as_a_finding_does() {
    let w = World::new();
    let input = samples("invitees.csv");
    let input = input.to_str().unwrap();
    let parsed = |args: &[&str]| -> Value { serde_json::from_slice(&w.run(args).stdout).unwrap() };
    let checked = parsed(&["validate", input, "--json"]);
    let finding = &checked["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["value"] == "not-an-email")
        .unwrap();
    let plan = parsed(&["sync", input, "--plan", "--json"]);
    let entry = plan["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["email"] == "not-an-email")
        .unwrap();
    assert_eq!(entry["file"], finding["file"], "{entry}\n{finding}");
    assert_eq!(entry["line"], finding["line"], "{entry}\n{finding}");
    assert_eq!(entry["line"], 29, "{entry}");
}
