//! What an operator meets before and around a run: help that teaches, humane flag values
//! and clear refusals, `-vv` request lines without a credential, `-q`, completions, man
//! pages, the input template, the JSON error object and a closed pipe.

use std::process::{Output, Stdio};

use assert_cmd::Command;
use bbinvite::sandbox::{Config, Login};

use crate::util::*;

/// The binary alone: no sandbox, no ledger, no credentials.
fn bare(args: &[&str]) -> Output {
    Command::cargo_bin("bbinvite")
        .unwrap()
        .env_clear()
        .args(args)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The commands that work on a ledger or the API: their help shows the global flags.
const WITH_GLOBALS: [&str; 7] = [
    "run",
    "validate",
    "retry",
    "status",
    "export",
    "customers",
    "sync",
];
/// The commands none of the global flags applies to.
const WITHOUT_GLOBALS: [&str; 5] = ["sandbox", "help", "completions", "man", "template"];

#[test]
fn each_command_help_has_its_flags_then_the_global_ones_then_examples() {
    for command in WITH_GLOBALS {
        for flag in ["--help", "-h"] {
            let out = bare(&[command, flag]);
            assert_eq!(code(&out), 0, "{command} {flag}: {}", text(&out));
            let help = stdout(&out);
            let own = help.find("Options:").unwrap_or(usize::MAX);
            let global = help.find("Global options:").unwrap_or(usize::MAX);
            let ledger = help.find("--ledger").unwrap_or(usize::MAX);
            let examples = help.find("Examples:\n  bbinvite ").unwrap_or(usize::MAX);
            assert!(
                own < global && global < ledger && ledger < examples && examples < help.len(),
                "{command} {flag}: own flags, then global, then examples:\n{help}"
            );
        }
    }
    for command in WITHOUT_GLOBALS {
        let out = bare(&[command, "--help"]);
        assert_eq!(code(&out), 0, "{command}: {}", text(&out));
        let help = stdout(&out);
        assert!(
            help.contains("Examples:\n  bbinvite "),
            "{command}:\n{help}"
        );
        for global in ["--ledger", "--base-url", "--json", "Global options"] {
            assert!(!help.contains(global), "{command} shows {global}:\n{help}");
        }
    }
    let validate = stdout(&bare(&["validate", "--help"]));
    assert!(!validate.contains("Send every row"), "{validate}");
}

#[test]
fn top_level_help_lists_the_environment_and_the_exit_codes() {
    for args in [&["--help"][..], &["help"], &["-h"]] {
        let out = bare(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out));
        let help = stdout(&out);
        for var in [
            "BILLINGBOOTH_API_KEY",
            "BILLINGBOOTH_EMAIL",
            "BILLINGBOOTH_PASSWORD ",
            "BILLINGBOOTH_PASSWORD_FILE",
            "BILLINGBOOTH_BASE_URL",
            "BBINVITE_NOTIFY_URL",
        ] {
            assert!(help.contains(var), "{args:?} lacks {var}:\n{help}");
        }
        let codes = &help[help.find("Exit codes:").expect("an exit code section")..];
        for n in 0..=4 {
            assert!(codes.contains(&format!("\n  {n}  ")), "exit {n}:\n{codes}");
        }
    }
    let out = bare(&["help", "--help"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        stdout(&out).contains("Usage: bbinvite help"),
        "{}",
        text(&out)
    );
    let out = bare(&["help", "run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        stdout(&out).contains("Usage: bbinvite run"),
        "{}",
        text(&out)
    );
    let out = bare(&["help", "nope"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        stderr(&out).contains("no command \"nope\""),
        "{}",
        text(&out)
    );
}

#[test]
fn rate_takes_a_count_a_fraction_or_a_period_and_refuses_clearly() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 2));
    let file = file.to_str().unwrap();
    for rate in ["5", "0.5", "300/min", "3600/h", "20/s"] {
        let out = w.run(&["run", file, "--dry-run", "--rate", rate]);
        assert_eq!(code(&out), 0, "--rate {rate}: {}", text(&out));
        let out = w.run(&["validate", file, "--rate", rate]);
        assert_eq!(code(&out), 0, "validate --rate {rate}: {}", text(&out));
    }
    // Below one a second, for real: one invitation at one every two seconds.
    let one = w.write("one.csv", &invitees_csv_ids(0, 1));
    let out = w.run(&["run", one.to_str().unwrap(), "--rate", "0.5"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 1);
    let before = w.truth().requests_total;
    for (rate, says) in [
        ("0", "the smallest is 1/h"),
        ("-5", "the smallest is 1/h"),
        ("abc", "expected requests per period"),
        ("5/week", "use /s, /min or /h"),
        ("2000000", "the largest rate is 1000000 a second"),
    ] {
        for command in ["run", "validate"] {
            let out = w.run(&[command, file, "--rate", rate]);
            assert_eq!(code(&out), 2, "{command} --rate {rate}: {}", text(&out));
            let err = stderr(&out);
            assert!(err.contains(says), "{command} --rate {rate}: {err}");
            assert!(!err.contains("-- -5"), "{err}");
            assert!(!err.contains("non-zero type"), "{err}");
        }
    }
    assert_eq!(
        w.truth().requests_total,
        before,
        "a refused flag sends nothing"
    );
}

/// Every `-vv` request line: method, a path without a query, a status, milliseconds and
/// the attempt; returns how many there were.
fn request_lines(err: &str) -> Vec<String> {
    let lines: Vec<String> = err
        .lines()
        .filter_map(|l| l.strip_prefix("bbinvite: request "))
        .map(str::to_string)
        .collect();
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 6, "{line}");
        assert!(
            ["GET", "POST", "PUT", "DELETE"].contains(&parts[0]),
            "{line}"
        );
        assert!(
            parts[1].starts_with('/') && !parts[1].contains('?'),
            "{line}"
        );
        assert!(
            parts[2].parse::<u16>().is_ok() || parts[2] == "no-answer",
            "{line}"
        );
        let ms = parts[3].strip_suffix("ms").expect("milliseconds");
        assert!(ms.parse::<u64>().is_ok(), "{line}");
        assert_eq!(parts[4], "attempt", "{line}");
        assert!(parts[5].parse::<u32>().is_ok_and(|n| n >= 1), "{line}");
    }
    lines
}

#[test]
fn very_verbose_logs_each_request_and_never_a_credential() {
    const EMAIL: &str = "ops@reseller.example";
    const PASSWORD: &str = "pw-9d8e7f6a5b";
    let mut config = Config::samples();
    config.login = Some(Login {
        email: EMAIL.into(),
        password: PASSWORD.into(),
    });
    let w = World::with_config(config);
    let file = w.write("in.csv", &invitees_csv(0, 6));
    let file = file.to_str().unwrap();

    // An API key (the sandbox takes any bearer token for the calls).
    let out = w.run(&["run", file, "-vv"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = request_lines(&stderr(&out));
    let invites = lines
        .iter()
        .filter(|l| l.starts_with("POST /customer/") && l.contains("/access 201 "))
        .count();
    assert_eq!(invites, 6, "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("GET /customer 200 ")));
    // A `-v` alone shows no request line.
    let out = w.run(&["retry", "-v"]);
    assert!(request_lines(&stderr(&out)).is_empty(), "{}", text(&out));

    // A password login.
    let more = w.write("more.csv", &invitees_csv(6, 3));
    let out = w
        .cmd(&["run", more.to_str().unwrap(), "-vv"])
        .env_remove("BILLINGBOOTH_API_KEY")
        .env("BILLINGBOOTH_EMAIL", EMAIL)
        .env("BILLINGBOOTH_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = request_lines(&stderr(&out));
    assert!(
        lines.iter().any(|l| l.starts_with("POST /token 200 ")),
        "{lines:?}"
    );
    assert!(lines.len() >= 4, "{lines:?}");
    let all = text(&out);
    for secret in [
        PASSWORD,
        API_KEY,
        "Bearer",
        "authorization",
        "Authorization",
    ] {
        assert!(!all.contains(secret), "{secret} shown:\n{all}");
    }
}

#[test]
fn quiet_prints_one_line_saying_how_many_rows_need_attention_and_where() {
    let w = World::new();
    let mut csv = invitees_csv(0, 3);
    csv.push_str("not-an-email,Nobody,Acme Telecom Ltd\n");
    csv.push_str("x@example.com,X,Nobody Ltd\n");
    let file = w.write("in.csv", &csv);
    let out = w.run(&["run", file.to_str().unwrap(), "-q"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("2 rows need attention"), "{err}");
    assert!(
        lines[0].contains("bbinvite export --run 1 --status invalid --status unresolved"),
        "{err}"
    );
    let out = w.run(&["validate", file.to_str().unwrap(), "-q"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("2 rows need attention (1 invalid, 1 unresolved, 0 duplicate)"),
        "{err}"
    );
    let out = w.run(&["sync", file.to_str().unwrap(), "-q"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("2 rows need attention"), "{err}");
    assert!(
        err.contains("bbinvite export --run 2 --status invalid"),
        "{err}"
    );
    // Nothing to attend to: nothing at all.
    let clean = w.write("clean.csv", &invitees_csv(10, 2));
    let out = w.run(&["run", clean.to_str().unwrap(), "-q"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );
}

#[test]
fn completions_for_each_shell_name_the_commands() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = bare(&["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", text(&out));
        let script = stdout(&out);
        for command in ["run", "validate", "sync", "template"] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
        assert!(script.contains("rate"), "{shell} lacks --rate");
    }
    let out = bare(&["completions", "tcsh"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
}

#[test]
fn man_writes_a_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = bare(&["man", "--dir", pages.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for name in [
        "bbinvite",
        "bbinvite-run",
        "bbinvite-sync",
        "bbinvite-template",
    ] {
        let page = std::fs::read_to_string(pages.join(format!("{name}.1"))).unwrap();
        // roff's prelude, then the title macro.
        assert!(page.contains("\n.TH "), "{name}: {page}");
    }
    let out = bare(&["man"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let page = stdout(&out);
    assert!(page.contains("\n.TH ") && page.contains("BILLINGBOOTH_API_KEY"));
}

#[test]
fn the_template_is_read_back_as_one_row_to_send() {
    let w = World::new();
    for name in ["t.csv", "t.xlsx"] {
        let out = w.run(&["template", "--output", name]);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        let out = w.run(&["validate", name, "--json"]);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["summary"]["rows"], 1, "{v}");
        assert_eq!(v["summary"]["would_send"], 1, "{v}");
        let out = w.run(&["run", name, "--dry-run", "--json"]);
        assert_eq!(code(&out), 0, "{name}: {}", text(&out));
        // Never over a sheet that is there.
        let out = w.run(&["template", "--output", name]);
        assert_eq!(code(&out), 2, "{}", text(&out));
        assert!(stderr(&out).contains("already exists"), "{}", text(&out));
    }
    let out = bare(&["template"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(stdout(&out).starts_with("Email,Name,Customer,"));
    let out = bare(&["template", "--format", "xlsx"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert_eq!(posts(&w.truth()), 0);
}

/// The one JSON line a failure with `--json` prints on stdout.
fn json_error(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    v
}

#[test]
fn a_failure_with_json_is_one_error_object_on_stdout() {
    let w = World::new();
    let out = w.run(&["status", "--json"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let v = json_error(&out);
    assert_eq!(v["exit_code"], 2);
    assert!(v["error"].as_str().unwrap().contains("no ledger"), "{v}");
    // Usage errors too, wherever --json stands.
    for args in [
        &["--json", "run", "x.csv", "--rate", "0"][..],
        &["status", "--bogus", "--json"],
        &["--json", "nope"],
        &["--json"],
    ] {
        let out = bare(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
        let v = json_error(&out);
        assert_eq!(v["exit_code"], 2, "{args:?}: {v}");
    }
    // Without --json, stdout stays empty.
    let out = bare(&["status", "--bogus"]);
    assert!(out.stdout.is_empty());
    // No credentials: exit 2, told as JSON.
    let file = w.write("in.csv", &invitees_csv(0, 1));
    let out = w
        .cmd(&["run", file.to_str().unwrap(), "--json"])
        .env_remove("BILLINGBOOTH_API_KEY")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        json_error(&out)["error"]
            .as_str()
            .unwrap()
            .contains("no credentials")
    );
}

#[test]
fn a_reader_that_closed_stdout_ends_the_command_quietly() {
    let w = World::new();
    let file = w.write("in.csv", &invitees_csv(0, 4));
    assert_eq!(code(&w.run(&["run", file.to_str().unwrap()])), 0);
    for args in [&["status", "--json"][..], &["export"], &["status"]] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("bbinvite"))
            .current_dir(w.dir.path())
            .env_clear()
            .args(args)
            .arg("--ledger")
            .arg(w.ledger())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // As `| head -0` would: the reader is gone before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", text(&out));
    }
}

#[test]
fn a_failure_after_the_summary_adds_no_second_json_document() {
    // The API refuses the key at the first invitation: the run stops (exit 3) after
    // printing its summary, which already says so.
    let mut config = Config::samples();
    config.api_key = Some("another-key".into());
    let w = World::with_config(config);
    let file = w.write("in.csv", &invitees_csv_ids(0, 3));
    let out = w.run(&["run", file.to_str().unwrap(), "--json"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", text(&out)));
    assert_eq!(v["exit_code"], 3, "{v}");
    assert!(v["outcome"].as_str().unwrap().starts_with("aborted"), "{v}");
}

#[test]
fn very_verbose_numbers_the_attempts_of_a_retried_call() {
    let w = World::with_config(sandbox_config(&["--fail-rate", "0.3", "--seed", "11"]));
    let file = w.write("in.csv", &invitees_csv(0, 12));
    let out = w.run(&["run", file.to_str().unwrap(), "-vv", "--max-attempts", "10"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let lines = request_lines(&stderr(&out));
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" 500 ") && l.ends_with(" attempt 1")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.ends_with(" attempt 2")), "{lines:?}");
}

#[test]
fn verbose_shows_each_problem_row_by_file_and_line() {
    let w = World::new();
    let mut csv = invitees_csv(0, 2);
    csv.push_str("not-an-email,Nobody,Acme Telecom Ltd\n");
    csv.push_str("x@example.com,X,Nobody Ltd\n");
    let file = w.write("in.csv", &csv);
    let out = w.run(&["run", file.to_str().unwrap(), "-v"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("in.csv:4: invalid: "), "{err}");
    assert!(err.contains("in.csv:5: unresolved: "), "{err}");
    let again = w.write("again.csv", &csv);
    let out = w.run(&["run", again.to_str().unwrap()]);
    assert!(!stderr(&out).contains("again.csv:4:"), "{}", text(&out));
}
