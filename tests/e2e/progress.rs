//! Progress: plain lines without a terminal (a fraction of the whole input, a rate, an
//! ETA), the same lines on a dumb terminal, and on a terminal a bar whose total is the
//! file, with the stop message on a line of its own. Terminals are pseudo-terminals
//! from `script` (util-linux), which merges stdout and stderr in the order written.

use std::io::Read;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::Duration;

use bbinvite::sandbox::Faults;

use crate::util::*;

/// The hidden interval of the plain lines, in milliseconds.
const EVERY: &str = "BBINVITE_PROGRESS_EVERY_MS";

/// A world whose every answer takes `ms` longer.
fn slow_world(ms: u64) -> World {
    let w = World::new();
    w.faults(Faults {
        latency_ms: ms,
        ..w.sandbox.faults()
    });
    w
}

/// `(done, total, estimated)` of each progress line or bar frame in `text`: the
/// `12,345/~200,000 rows` of it.
fn fractions(text: &str, unit: &str) -> Vec<(u64, u64, bool)> {
    let number = |s: &str| s.replace(',', "").parse::<u64>().ok();
    text.split(&format!(" {unit}"))
        .filter_map(|before| {
            let token = before.rsplit([' ', '\r', '\n']).next()?;
            let (done, total) = token.split_once('/')?;
            let about = total.starts_with('~');
            Some((number(done)?, number(total.trim_start_matches('~'))?, about))
        })
        .collect()
}

/// `bbinvite ARGS --ledger … --base-url …` on a pseudo-terminal with `TERM=term` and
/// `env`; stdout is the terminal's output. Its process id is written to `pid` in the
/// work dir once it has started.
fn on_a_terminal(w: &World, args: &[&str], term: &str, env: &[(&str, &str)]) -> Child {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let bin = assert_cmd::cargo::cargo_bin("bbinvite");
    let mut line = format!("echo $$ > pid; exec {}", quote(bin.to_str().unwrap()));
    let ledger = w.ledger();
    let base = w.sandbox.base_url();
    for a in args
        .iter()
        .chain(&["--ledger", ledger.to_str().unwrap(), "--base-url", &base])
    {
        line += &format!(" {}", quote(a));
    }
    StdCommand::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .current_dir(w.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BILLINGBOOTH_API_KEY", API_KEY)
        .env("TERM", term)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Everything the terminal showed, once the command has ended.
fn screen(mut child: Child) -> String {
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child.wait().unwrap();
    out
}

/// Sends SIGINT to the command started by [`on_a_terminal`] once `posts` requests have
/// been answered.
fn interrupt_after(w: &World, posts: u64) {
    assert!(
        wait_for(w, Duration::from_secs(60), |t| crate::util::posts(t)
            >= posts),
        "sending never began"
    );
    let pid = std::fs::read_to_string(w.path("pid")).unwrap();
    let sent = StdCommand::new("kill")
        .args(["-INT", pid.trim()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[test]
fn without_a_terminal_lines_carry_the_fraction_of_the_file_and_an_eta() {
    let w = slow_world(20);
    let file = w.write("in.csv", &invitees_csv(0, 200));
    let out = w
        .cmd(&["run", file.to_str().unwrap(), "--rate", "100000"])
        .args(["--concurrency", "2"])
        .env(EVERY, "100")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("bbinvite: run "))
        .collect();
    assert!(lines.len() >= 3, "{}", text(&out));
    for line in &lines {
        assert!(line.contains("/s, "), "a rate: {line}");
        assert!(line.contains(", sent "), "{line}");
        assert!(line.contains(", failed 0"), "{line}");
    }
    let seen = fractions(&stderr, "rows");
    assert_eq!(
        seen.len(),
        lines.len(),
        "each line has a fraction: {stderr}"
    );
    assert!(
        seen.iter().all(|(_, total, _)| (180..=220).contains(total)),
        "the total is the file's rows from the first line on: {stderr}"
    );
    assert!(
        lines.iter().filter(|l| l.contains(", eta ")).count() >= lines.len() - 1,
        "an ETA once anything is done: {stderr}"
    );
    let done: Vec<u64> = seen.iter().map(|(d, _, _)| *d).collect();
    assert!(done.windows(2).all(|p| p[0] <= p[1]), "{done:?}");
    assert!(done.last() > done.first(), "the fraction grows: {done:?}");
}

#[test]
fn a_dumb_terminal_gets_plain_lines_and_none_after_the_summary() {
    let w = slow_world(20);
    let file = w.write("in.csv", &invitees_csv(0, 100));
    let args = ["run", file.to_str().unwrap(), "--rate", "100000"];
    let child = on_a_terminal(&w, &args, "dumb", &[(EVERY, "1")]);
    let out = screen(child);
    let lines: Vec<&str> = out.lines().collect();
    let summary = lines
        .iter()
        .position(|l| l.starts_with("bbinvite run (run 1)"))
        .unwrap_or_else(|| panic!("no summary: {out}"));
    let progress = |l: &&&str| l.starts_with("bbinvite: run ") && l.contains(" rows");
    assert!(
        lines[..summary].iter().filter(progress).count() >= 2,
        "plain lines on a dumb terminal: {out}"
    );
    assert!(!out.contains('\u{1b}'), "no bar drawn: {out:?}");
    assert!(
        !lines[summary..].iter().any(|l| progress(&l)),
        "no progress after the summary: {out}"
    );
}

/// What a terminal shows of a run of `rows` invitees stopped by SIGINT once sending
/// is under way.
fn stopped_on_a_terminal(w: &World, rows: usize) -> String {
    let file = w.write("in.csv", &invitees_csv(0, rows));
    let args = ["run", file.to_str().unwrap(), "--rate", "100000"];
    let child = on_a_terminal(w, &args, "xterm", &[]);
    // Frames draw at most 8 times a second: a second of sending shows several.
    interrupt_after(w, 100);
    screen(child)
}

#[test]
fn on_a_terminal_the_bars_total_is_the_whole_file() {
    let w = slow_world(30);
    let rows = 20_000;
    let out = stopped_on_a_terminal(&w, rows);
    let frames = fractions(&out, "rows");
    assert!(!frames.is_empty(), "a bar was drawn: {out:?}");
    let rows = rows as u64;
    assert!(
        frames
            .iter()
            .all(|(_, total, _)| (rows * 9 / 10..=rows * 11 / 10).contains(total)),
        "the bar's total is the file, not the rows read so far: {frames:?}"
    );
}

#[test]
fn on_a_terminal_the_stop_message_starts_its_own_line() {
    let w = slow_world(30);
    let out = stopped_on_a_terminal(&w, 2_000);
    let stop = out
        .find("bbinvite: stopping")
        .unwrap_or_else(|| panic!("no stop message: {out:?}"));
    let before = strip_trailing_escapes(&out[..stop]);
    assert!(
        before.is_empty() || before.ends_with(['\n', '\r']),
        "the stop message is glued to the bar: {:?}",
        &out[stop.saturating_sub(120)..stop + 20]
    );
}

#[test]
fn sync_shows_the_lists_read_and_then_the_rows_and_actions() {
    let w = slow_world(20);
    let file = w.write("in.csv", &invitees_csv_ids(0, 60));
    let out = w
        .cmd(&["sync", file.to_str().unwrap(), "--rate", "100000"])
        .args(["--concurrency", "1"])
        .env(EVERY, "10")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lists = fractions(&stderr, "access lists");
    assert!(
        !lists.is_empty() && lists.iter().all(|(_, total, about)| *total == 4 && !about),
        "the lists read of the four customers: {stderr}"
    );
    let rows = fractions(&stderr, "rows and actions");
    assert!(
        rows.len() >= 2 && rows.iter().all(|(_, total, _)| *total == 60),
        "then the rows: {stderr}"
    );
    let last_list = stderr.rfind("access lists").unwrap();
    let first_row = stderr.find("rows and actions").unwrap();
    assert!(last_list < first_row, "lists first: {stderr}");
}

/// `text` without the terminal escape sequences at its end.
fn strip_trailing_escapes(mut text: &str) -> &str {
    while let Some(esc) = text.rfind('\u{1b}') {
        let tail = &text[esc + 1..];
        let is_sequence = tail.starts_with('[')
            && tail.len() >= 2
            && tail[1..tail.len() - 1]
                .chars()
                .all(|c| c.is_ascii_digit() || c == ';')
            && tail.ends_with(|c: char| c.is_ascii_alphabetic());
        if !is_sequence {
            break;
        }
        text = &text[..esc];
    }
    text
}

#[test]
fn trailing_escapes_are_stripped() {
    assert_eq!(strip_trailing_escapes("bar\r\u{1b}[2K\u{1b}[1A"), "bar\r");
    assert_eq!(strip_trailing_escapes("rows 3"), "rows 3");
}
