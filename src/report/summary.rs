//! The one summary of a sending command (`run`, `retry`, `sync`): the text a person
//! reads at the end, the `-q` line when rows need attention, and the `--json` document.
//!
//! It tells what this run did, kept apart: what its requests sent (and what they came
//! to), the rows done before it, and what is left. A run that stopped before the end of
//! its input says how far it read and the command that continues it. `sync` adds its
//! own section (actions, prunes) to the same summary. Output only: it decides nothing
//! and is handed everything it prints.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::Figures;
use super::json::{ErrorCount, error_counts};
use crate::domain::{ActionKind, ActionState, RowStatus, RunId};

/// A run's summary; its JSON field names are a contract (docs/json.md).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub command: String,
    pub run: RunId,
    pub outcome: String,
    pub exit_code: i32,
    /// Rows of this run, whatever their status.
    pub rows: u64,
    /// Requests of this run that created, confirmed or changed something.
    pub sent: u64,
    /// What the sent requests came to: row statuses (`invited`, `exists`) and, for
    /// `sync`, action kinds.
    pub sent_outcomes: BTreeMap<String, u64>,
    /// Rows whose key was done before this run.
    pub already_done: u64,
    /// Rows per status.
    pub statuses: BTreeMap<String, u64>,
    /// `sent` over the time from the first request leaving to the last answer.
    pub requests_per_sec: f64,
    pub elapsed_secs: f64,
    pub ledger: String,
    /// What the operator should know about the inputs as a whole.
    pub notes: Vec<String>,
    pub top_errors: Vec<ErrorCount>,
    /// How far the input was read; `None` for a command that reads none (`retry` with
    /// every input read, `sync`, which reads its whole sheet before it acts).
    pub input: Option<InputRead>,
    /// The command that reads the rest of an input not read to the end.
    pub continue_with: Option<String>,
    /// `sync`'s own section.
    #[serde(flatten)]
    pub sync: Option<SyncSection>,
    /// `undo`'s own section.
    #[serde(flatten)]
    pub undo: Option<UndoSection>,
}

/// How far a run read its input.
#[derive(Debug, Clone, Serialize)]
pub struct InputRead {
    /// The run that read it: this one, or for `retry` the run that stopped early.
    pub run: RunId,
    /// Every row of every file was read.
    pub complete: bool,
    /// Rows read, when this run read them.
    pub rows_read: Option<u64>,
    /// Where reading stopped, in words, when it stopped early and it is known.
    pub stopped_reading: Option<String>,
}

/// What `sync` adds to a summary.
#[derive(Debug, Clone, Serialize)]
pub struct SyncSection {
    pub customers: usize,
    /// Actions per kind, then per state.
    pub actions: BTreeMap<String, BTreeMap<String, u64>>,
    pub prune_waiting_for_yes: usize,
    pub prune_refused: Vec<RefusedPrune>,
    /// Resends of earlier syncs that were cut off in flight, found by this one.
    pub resends_unconfirmed: u64,
    /// Lines the text summary prints after the action counts.
    #[serde(skip)]
    pub lines: Vec<String>,
}

/// What `undo` adds to a summary.
#[derive(Debug, Clone, Serialize)]
pub struct UndoSection {
    /// The run this one reverses.
    pub undoes: RunId,
    /// Actions per kind, then per state.
    pub actions: BTreeMap<String, BTreeMap<String, u64>>,
    /// Users a later run changed again: left alone.
    pub skipped: usize,
    /// Users an earlier undo already reversed.
    pub already_undone: usize,
    /// Users to reverse that are not in the access list, or could not be looked up.
    pub not_found: Vec<NotFound>,
}

/// A user an undo could not reverse, and why.
#[derive(Debug, Clone, Serialize)]
pub struct NotFound {
    pub email: String,
    pub why: String,
}

/// A customer whose prune `--max-prune` refused.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedPrune {
    pub customer_id: i64,
    pub would_suspend: usize,
    pub current: usize,
    pub percent: f64,
    pub max_prune_pct: f64,
}

/// The width of the summary's labels (`needs attention`).
const LABEL_WIDTH: usize = 15;

/// How the summary is printed: the global output flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    Text,
    /// `-q`: one line on stderr, only when rows need attention.
    Quiet,
    Json,
}

impl Summary {
    /// A summary from a closed run's figures; the caller adds what only it knows.
    pub fn new(figures: &Figures, sent_outcomes: BTreeMap<String, u64>) -> Summary {
        Summary {
            command: figures.command.clone(),
            run: figures.run.unwrap_or_default(),
            outcome: figures.outcome.clone(),
            exit_code: figures.exit_code,
            rows: figures.rows,
            sent: figures.sent,
            sent_outcomes,
            already_done: figures.already_done,
            statuses: figures.statuses.clone(),
            requests_per_sec: 0.0,
            elapsed_secs: figures.duration_secs,
            ledger: figures.ledger.clone().unwrap_or_default(),
            notes: Vec::new(),
            top_errors: Vec::new(),
            input: None,
            continue_with: None,
            sync: None,
            undo: None,
        }
    }

    /// Sets the rate from how long the sending took (first request to last answer).
    pub fn sending_took(mut self, secs: Option<f64>) -> Summary {
        self.requests_per_sec = match secs {
            Some(s) if self.sent > 0 => self.sent as f64 / s.max(0.001),
            _ => 0.0,
        };
        self
    }

    /// The commonest errors, as the ledger counts them.
    pub fn with_errors(mut self, errors: &[(String, u64)]) -> Summary {
        self.top_errors = error_counts(errors);
        self
    }

    /// The problem statuses with rows, and how many, in [`RowStatus::ALL`] order.
    fn problems(&self) -> Vec<(&'static str, u64)> {
        self.counted(|s| s.is_problem())
    }

    fn counted(&self, which: impl Fn(RowStatus) -> bool) -> Vec<(&'static str, u64)> {
        RowStatus::ALL
            .iter()
            .filter(|s| which(**s))
            .filter_map(|s| {
                let n = self.statuses.get(s.as_str()).copied().unwrap_or(0);
                (n > 0).then_some((s.as_str(), n))
            })
            .collect()
    }

    /// `--status S` for each problem status, for `export`.
    fn problem_flags(&self) -> String {
        self.problems()
            .iter()
            .map(|(s, _)| format!("--status {s}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `-q`'s one line when rows need attention, or the input was not read to the end;
    /// `None` when nothing does.
    pub fn attention_line(&self) -> Option<String> {
        let mut parts = Vec::new();
        let problems = self.problems();
        if !problems.is_empty() {
            let total: u64 = problems.iter().map(|(_, n)| n).sum();
            parts.push(format!(
                "{} rows need attention ({}); list them: bbinvite export --run {} {} --ledger {}",
                thousands(total),
                listed(&problems),
                self.run,
                self.problem_flags(),
                self.ledger
            ));
        }
        if let Some(next) = &self.continue_with {
            parts.push(format!(
                "the input was not read to the end; continue: {next}"
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Prints the summary as `voice` asks: text or JSON on stdout, or `-q`'s line on stderr.
pub fn print(summary: &Summary, voice: Voice) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match voice {
        Voice::Json => {
            serde_json::to_writer_pretty(&mut out, summary)?;
            writeln!(out)
        }
        Voice::Quiet => {
            if let Some(line) = summary.attention_line() {
                eprintln!("bbinvite: {line}");
            }
            Ok(())
        }
        Voice::Text => write_text(&mut out, summary),
    }
}

/// The text summary.
pub fn write_text(out: &mut dyn Write, s: &Summary) -> std::io::Result<()> {
    let customers = s
        .sync
        .as_ref()
        .map(|y| format!(", {} customers", thousands(y.customers as u64)))
        .unwrap_or_default();
    writeln!(
        out,
        "bbinvite {} (run {}): {} rows{customers} in {:.1}s, {}",
        s.command,
        s.run,
        thousands(s.rows),
        s.elapsed_secs,
        s.outcome
    )?;
    // Row statuses, then `sync`'s action kinds.
    let outcomes: Vec<(&str, u64)> = [RowStatus::Invited, RowStatus::Exists]
        .map(RowStatus::as_str)
        .into_iter()
        .chain(ActionKind::ALL.map(ActionKind::as_str))
        .filter_map(|k| s.sent_outcomes.get(k).map(|n| (k, *n)))
        .collect();
    let rate = if s.sent > 0 {
        format!(", {}/s", rate_text(s.requests_per_sec))
    } else {
        String::new()
    };
    line(out, "sent", s.sent, &outcomes, &rate)?;
    if s.already_done > 0 {
        line(out, "already done", s.already_done, &[], "")?;
    }
    let waiting = s.counted(|st| matches!(st, RowStatus::Pending | RowStatus::Sending));
    let problems = s.problems();
    let duplicates = s.counted(|st| st == RowStatus::Duplicate);
    for (label, parts) in [
        ("not sent", &waiting),
        ("needs attention", &problems),
        ("duplicates", &duplicates),
    ] {
        if !parts.is_empty() {
            let total = parts.iter().map(|(_, n)| n).sum();
            let shown: &[(&str, u64)] = if label == "duplicates" { &[] } else { parts };
            line(out, label, total, shown, "")?;
        }
    }
    write_input(out, s)?;
    if let Some(sync) = &s.sync {
        write_action_counts(out, &sync.actions, LABEL_WIDTH)?;
        for l in &sync.lines {
            writeln!(out, "{l}")?;
        }
    }
    if let Some(undo) = &s.undo {
        write_undo(out, undo)?;
    }
    for note in &s.notes {
        writeln!(out, "Note: {note}")?;
    }
    write_next_steps(out, s)
}

/// What an undo reversed, what it left alone and whom it could not find.
fn write_undo(out: &mut dyn Write, u: &UndoSection) -> std::io::Result<()> {
    writeln!(out, "Undoes run {}:", u.undoes)?;
    write_action_counts(out, &u.actions, LABEL_WIDTH)?;
    if u.skipped + u.already_undone > 0 {
        writeln!(
            out,
            "Left alone: {} changed again by a later run, {} undone before (see them with: bbinvite undo --run {})",
            u.skipped, u.already_undone, u.undoes
        )?;
    }
    for n in &u.not_found {
        writeln!(out, "Not reversed: {}: {}", n.email, n.why)?;
    }
    Ok(())
}

/// One count line: `  label  N (a 1, b 2)tail`.
fn line(
    out: &mut dyn Write,
    label: &str,
    n: u64,
    parts: &[(&str, u64)],
    tail: &str,
) -> std::io::Result<()> {
    let parts = if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", listed(parts))
    };
    writeln!(out, "  {label:<LABEL_WIDTH$} {}{parts}{tail}", thousands(n))
}

/// How far the input was read, when not to the end, and how to go on.
fn write_input(out: &mut dyn Write, s: &Summary) -> std::io::Result<()> {
    let Some(input) = s.input.as_ref().filter(|i| !i.complete) else {
        return Ok(());
    };
    let stopped = input
        .stopped_reading
        .clone()
        .unwrap_or_else(|| "it stopped before the end".to_string());
    if input.run == s.run {
        writeln!(out, "Reading stopped: {stopped}.")?;
    } else {
        writeln!(
            out,
            "Run {} did not read all of its input ({stopped}); retry sends only rows already read.",
            input.run
        )?;
    }
    if let Some(next) = &s.continue_with {
        writeln!(out, "Continue (rows done are skipped): {next}")?;
    }
    Ok(())
}

/// The commonest errors and the commands that show or resend the rows with problems.
fn write_next_steps(out: &mut dyn Write, s: &Summary) -> std::io::Result<()> {
    let problems = s.problems();
    if !problems.is_empty() {
        if !s.top_errors.is_empty() {
            writeln!(out, "Most common errors:")?;
        }
        for e in s.top_errors.iter().take(3) {
            writeln!(out, "  {} × {}", thousands(e.count), e.error)?;
        }
        writeln!(
            out,
            "See each row: bbinvite export --run {} {} --ledger {}",
            s.run,
            s.problem_flags(),
            s.ledger
        )?;
    }
    let actions = s.sync.as_ref().is_some_and(|y| !y.actions.is_empty())
        || s.undo.as_ref().is_some_and(|u| !u.actions.is_empty());
    if actions {
        writeln!(
            out,
            "See each action: bbinvite export --actions --run {} --ledger {}",
            s.run, s.ledger
        )?;
    }
    if problems
        .iter()
        .any(|(st, _)| *st == RowStatus::Failed.as_str())
    {
        writeln!(
            out,
            "Send the failed ones again: bbinvite retry --ledger {}",
            s.ledger
        )?;
    }
    Ok(())
}

/// Writes a run's actions per kind and state, as `status` and the summary show them,
/// each kind in a column `width` wide.
pub fn write_action_counts(
    out: &mut dyn Write,
    actions: &BTreeMap<String, BTreeMap<String, u64>>,
    width: usize,
) -> std::io::Result<()> {
    for kind in ActionKind::ALL {
        let Some(states) = actions.get(kind.as_str()) else {
            continue;
        };
        let parts: Vec<String> = ActionState::ALL
            .iter()
            .filter_map(|st| {
                states
                    .get(st.as_str())
                    .map(|n| format!("{} {}", thousands(*n), st.as_str()))
            })
            .collect();
        writeln!(out, "  {:<width$} {}", kind.as_str(), parts.join(", "))?;
    }
    Ok(())
}

/// `a 1, b 2`.
fn listed(parts: &[(&str, u64)]) -> String {
    parts
        .iter()
        .map(|(what, n)| format!("{what} {}", thousands(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A rate to read: a decimal below 100, whole above.
fn rate_text(per_sec: f64) -> String {
    if per_sec < 100.0 {
        format!("{per_sec:.1}")
    } else {
        thousands(per_sec.round() as u64)
    }
}

/// A count with thousands separators: 20,000.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn summary(statuses: &[(&str, u64)], sent: &[(&str, u64)], already_done: u64) -> Summary {
        let mut f = Figures::stopped_early("run", "completed", 0, Duration::from_secs(2));
        f.run = Some(3);
        f.ledger = Some("x.db".into());
        f.statuses = statuses.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        f.rows = f.statuses.values().sum();
        f.sent = sent.iter().map(|(_, n)| n).sum();
        f.already_done = already_done;
        let sent = sent.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        Summary::new(&f, sent).sending_took(Some(4.0))
    }

    fn text(s: &Summary) -> String {
        let mut out = Vec::new();
        write_text(&mut out, s).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn action_counts_read_in_a_fixed_order() {
        let counts = BTreeMap::from([
            (
                "resend".to_string(),
                BTreeMap::from([("failed".to_string(), 1), ("done".to_string(), 3)]),
            ),
            (
                "prune".to_string(),
                BTreeMap::from([("skipped".to_string(), 2)]),
            ),
        ]);
        let mut out = Vec::new();
        write_action_counts(&mut out, &counts, 11).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  resend      3 done, 1 failed\n  prune       2 skipped\n"
        );
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(20_000), "20,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_text_keeps_sent_done_and_left_apart() {
        let s = summary(
            &[
                ("invited", 18_000),
                ("exists", 1_900),
                ("pending", 5),
                ("invalid", 60),
                ("unresolved", 40),
            ],
            &[("exists", 20), ("invited", 1_180)],
            18_700,
        );
        assert_eq!(
            text(&s),
            "bbinvite run (run 3): 20,005 rows in 2.0s, completed\n  \
             sent            1,200 (invited 1,180, exists 20), 300/s\n  \
             already done    18,700\n  \
             not sent        5 (pending 5)\n  \
             needs attention 100 (invalid 60, unresolved 40)\n\
             See each row: bbinvite export --run 3 --status invalid --status unresolved --ledger x.db\n"
        );
        assert_eq!(
            s.attention_line().as_deref(),
            Some(
                "100 rows need attention (invalid 60, unresolved 40); list them: bbinvite export --run 3 --status invalid --status unresolved --ledger x.db"
            )
        );
    }

    #[test]
    fn a_rerun_that_sent_nothing_says_so() {
        let s = summary(&[("invited", 27)], &[], 27);
        let t = text(&s);
        assert!(t.contains("  sent            0\n"), "{t}");
        assert!(t.contains("  already done    27\n"), "{t}");
        assert_eq!(s.requests_per_sec, 0.0);
        assert_eq!(s.attention_line(), None);
    }

    #[test]
    fn a_run_stopped_early_says_how_far_it_read_and_how_to_go_on() {
        let mut s = summary(&[("invited", 96), ("pending", 928)], &[("invited", 96)], 0);
        s.outcome = "aborted: interrupted by a signal".into();
        s.input = Some(InputRead {
            run: 3,
            complete: false,
            rows_read: Some(1_024),
            stopped_reading: Some("read 1,024 rows, up to line 1,025 of big.csv".into()),
        });
        s.continue_with = Some("bbinvite run big.csv --ledger x.db".into());
        let t = text(&s);
        assert!(
            t.contains(
                "Reading stopped: read 1,024 rows, up to line 1,025 of big.csv.\n\
                 Continue (rows done are skipped): bbinvite run big.csv --ledger x.db\n"
            ),
            "{t}"
        );
        assert!(t.contains("  not sent        928 (pending 928)\n"), "{t}");

        // `retry` tells of an earlier run's input.
        s.run = 4;
        let t = text(&s);
        assert!(
            t.contains(
                "Run 3 did not read all of its input (read 1,024 rows, up to line 1,025 of big.csv)"
            ),
            "{t}"
        );
        assert_eq!(
            s.attention_line().as_deref(),
            Some("the input was not read to the end; continue: bbinvite run big.csv --ledger x.db")
        );
    }

    #[test]
    fn the_json_carries_the_contract_fields() {
        let s = summary(&[("invited", 2)], &[("invited", 2)], 0)
            .with_errors(&[("boom".to_string(), 2)]);
        let v = serde_json::to_value(&s).unwrap();
        for field in [
            "command",
            "run",
            "outcome",
            "exit_code",
            "rows",
            "sent",
            "already_done",
            "statuses",
            "requests_per_sec",
            "elapsed_secs",
            "ledger",
            "notes",
            "top_errors",
            "input",
            "continue_with",
        ] {
            assert!(v.get(field).is_some(), "{field} missing: {v}");
        }
        assert_eq!(v["rows"], 2);
        assert_eq!(v["requests_per_sec"], 0.5);
        assert_eq!(
            v["top_errors"][0],
            serde_json::json!({"error": "boom", "count": 2})
        );
        assert!(v.get("actions").is_none(), "{v}");
    }
}
