//! What people and monitoring read once a sending command is over: the run's figures
//! ([`Figures`]), the summary printed at its end (`summary`), a webhook to a person
//! (`notify`), a Prometheus textfile (`metrics`), the HTML report of a run (`html`,
//! drawn with `svg`), and the shapes `--json` output shares (`json`).
//!
//! Everything here works over plain data handed in by the commands or read from the
//! ledger's read-only queries; nothing here sends invitations, writes the ledger, or
//! decides an exit code. A failure to notify or to write the metrics file is one line on
//! stderr and never changes how the command ended.

pub mod html;
pub mod json;
pub mod metrics;
pub mod notify;
pub mod series;
pub mod summary;
pub mod svg;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::api::Secret;
use crate::domain::{RowStatus, RunId};
use crate::ledger::{Ledger, RunTallies};

/// The environment variable holding the webhook URL (a secret: never printed or stored).
pub const NOTIFY_URL_ENV: &str = "BBINVITE_NOTIFY_URL";

/// Set once a command has announced its end, so the fallback for commands stopped
/// before their run began does not announce it twice.
static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// The figures of one sending command, as the webhook and the metrics file tell them.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub command: String,
    /// `None` when the command stopped before its run began (bad credentials, say).
    pub run: Option<RunId>,
    pub outcome: String,
    pub exit_code: i32,
    pub rows: u64,
    /// Rows per status.
    pub statuses: BTreeMap<String, u64>,
    /// Rows this run made invited or exists, and sync actions it carried out.
    pub sent: u64,
    /// Rows whose invitation was done before this run.
    pub already_done: u64,
    pub duration_secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger: Option<String>,
    /// When the command ended, in seconds since the Unix epoch.
    pub finished_at: f64,
}

/// When to send the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyOn {
    /// After every sending command.
    Always,
    /// Only when the exit code is not 0.
    #[default]
    Problems,
}

/// What to do once a sending command is over, from its flags.
#[derive(Debug, Clone, Default)]
pub struct Announce {
    pub notify_on: NotifyOn,
    pub metrics_file: Option<PathBuf>,
    /// The webhook, as the settings read it from [`NOTIFY_URL_ENV`]; `None`: none.
    pub notify_url: Option<Secret>,
}

impl Figures {
    /// The figures of run `run`, its rows per status as the ledger counted them; what
    /// it sent and found done comes with [`Figures::with_tallies`].
    pub fn of_run(
        ledger: &Ledger,
        command: &str,
        run: RunId,
        statuses: &BTreeMap<String, u64>,
        outcome: &str,
        exit_code: i32,
        duration: Duration,
    ) -> Figures {
        Figures {
            command: command.to_string(),
            run: Some(run),
            outcome: outcome.to_string(),
            exit_code,
            rows: statuses.values().sum(),
            statuses: statuses.clone(),
            sent: 0,
            already_done: 0,
            duration_secs: duration.as_secs_f64(),
            abort_reason: abort_reason(outcome, exit_code),
            ledger: Some(ledger.path().display().to_string()),
            finished_at: unix_now(),
        }
    }

    /// The same figures with what the run sent and found done before it.
    pub fn with_tallies(self, tallies: RunTallies) -> Figures {
        Figures {
            sent: tallies.sent,
            already_done: tallies.already_done,
            ..self
        }
    }

    /// The figures of a command that stopped before its run began: no rows, no sends.
    pub fn stopped_early(
        command: &str,
        outcome: &str,
        exit_code: i32,
        duration: Duration,
    ) -> Figures {
        Figures {
            command: command.to_string(),
            run: None,
            outcome: outcome.to_string(),
            exit_code,
            rows: 0,
            statuses: BTreeMap::new(),
            sent: 0,
            already_done: 0,
            duration_secs: duration.as_secs_f64(),
            abort_reason: abort_reason(outcome, exit_code),
            ledger: None,
            finished_at: unix_now(),
        }
    }

    /// The problem statuses with rows, in [`RowStatus::ALL`] order.
    pub fn problems(&self) -> Vec<&'static str> {
        RowStatus::ALL
            .iter()
            .filter(|s| s.is_problem() && self.statuses.get(s.as_str()).is_some_and(|n| *n > 0))
            .map(|s| s.as_str())
            .collect()
    }

    /// The command that lists the rows needing attention, when there are any.
    pub fn attention_command(&self) -> Option<String> {
        let run = self.run?;
        let problems = self.problems();
        if problems.is_empty() {
            return None;
        }
        let flags: Vec<String> = problems.iter().map(|p| format!("--status {p}")).collect();
        let ledger = self
            .ledger
            .as_deref()
            .map(|l| format!(" --ledger {l}"))
            .unwrap_or_default();
        Some(format!(
            "bbinvite export --run {run} {}{ledger}",
            flags.join(" ")
        ))
    }
}

/// Writes the metrics file and sends the webhook, as `announce` asks. Never fails:
/// each failure is one line on stderr.
pub fn announce(figures: &Figures, announce: &Announce) {
    ANNOUNCED.store(true, Ordering::SeqCst);
    if let Some(path) = &announce.metrics_file
        && let Err(e) = metrics::write(path, figures)
    {
        eprintln!("bbinvite: {e}");
    }
    let wanted = match announce.notify_on {
        NotifyOn::Always => true,
        NotifyOn::Problems => figures.exit_code != 0,
    };
    if wanted
        && let Some(url) = &announce.notify_url
        && let Err(e) = notify::send(url.expose(), figures)
    {
        eprintln!("bbinvite: {e}");
    }
}

/// Whether [`announce`] ran since the last call; resets the answer.
pub fn take_announced() -> bool {
    ANNOUNCED.swap(false, Ordering::SeqCst)
}

/// Why a command stopped early (exit 2 or more): its outcome without the prefix.
fn abort_reason(outcome: &str, exit_code: i32) -> Option<String> {
    (exit_code >= 2).then(|| {
        let reason = outcome
            .strip_prefix("aborted: ")
            .or_else(|| outcome.strip_prefix("error: "))
            .unwrap_or(outcome);
        reason.to_string()
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Escapes text for HTML and SVG: element content and quoted attributes alike.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path's folder, `.` for a bare file name.
pub(crate) fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<b>"Tom" & 'Jerry'</b>"#),
            "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn attention_command_names_the_problem_statuses() {
        let mut f = Figures::stopped_early("run", "completed with problems", 1, Duration::ZERO);
        assert_eq!(f.attention_command(), None);
        f.run = Some(7);
        f.ledger = Some("x.db".into());
        f.statuses.insert("invited".into(), 3);
        f.statuses.insert("failed".into(), 2);
        f.statuses.insert("invalid".into(), 1);
        assert_eq!(
            f.attention_command().as_deref(),
            Some("bbinvite export --run 7 --status failed --status invalid --ledger x.db")
        );
    }
}
