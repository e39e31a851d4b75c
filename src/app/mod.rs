//! Each command's wiring, one file a command, on [`crate::settings::Settings`] built once
//! from the flags and the environment.
//!
//! `run`: open the inputs → lock and open the ledger → log in → load the directory →
//! read and resolve rows → admit them to the ledger (skipping what is done) → the
//! engine marks, sends, records → summary. The stages live in their own modules; this
//! one wires them. Errors that stop a command are `anyhow` errors whose kind
//! ([`Aborted`], a busy ledger, anything else) picks the exit code in `main`
//! ([`exit_for`]); a run that began ends through the engine's one exit-code rule.
//!
//! `preflight.rs` checks what can be checked before the first request; `setup.rs` opens
//! what every command needs (the API, the ledger, the inputs, the resolver);
//! `engine.rs` is the mark → send → record loop and the end of every command that
//! changes the portal; `invite.rs` is `run` and `retry`; `sync.rs` is `sync` (its
//! printing in `sync/report.rs`); `undo.rs` is `undo`; `check.rs` is `validate` and `run --dry-run`;
//! `report.rs` is `status`, `export` and `customers`; `report_html.rs` is `report` (and
//! the word sent when a sending command stops before its run began); `message.rs` says a
//! failure in one line; `manual.rs` is `help`, `completions` and `man`; `template.rs` is
//! `template`. Files import from each other by name; nothing is re-exported by glob.

mod check;
mod compact;
mod engine;
mod invite;
mod manual;
mod message;
mod preflight;
mod report;
mod report_html;
mod setup;
mod sync;
mod template;
mod undo;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::cli::{Args, Command};
use crate::ledger;
use crate::sandbox;
use crate::settings::Settings;

use check::{Check, check_files};
use invite::{invite_rows, retry};
pub use message::error_line;
pub use report::spreadsheet_safe;
use report::{customers, export, status};

/// Rows read and admitted to the ledger per transaction (the first batches are smaller,
/// see `spawn_reader`): each transaction costs its commit and a few statements, so a
/// million rows go in 500 of them rather than 2,000.
pub(crate) const ADMIT_BATCH: usize = 2048;
/// Batches read ahead of the ledger; bounded so memory stays flat however big the file.
const READ_AHEAD: usize = 4;

/// How a command ended, as the process's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every row ended invited, exists or already done.
    Ok = 0,
    /// Some rows ended failed, rejected, invalid or unresolved.
    Problems = 1,
    /// Usage, configuration or unreadable input; nothing sent.
    Usage = 2,
    /// Aborted: authentication, the breaker, a signal.
    Aborted = 3,
    /// The ledger is busy with another run.
    Busy = 4,
}

/// Set once a command has printed its JSON answer (a summary that already carries the
/// outcome and exit code): a failure after it adds no second JSON object.
static JSON_ANSWERED: AtomicBool = AtomicBool::new(false);

/// Notes that the command's one JSON document is on stdout.
pub(crate) fn mark_json_answered() {
    JSON_ANSWERED.store(true, Ordering::Relaxed);
}

/// Whether the command already printed its JSON document (its summary, set by `mark_json_answered`).
pub fn json_answered() -> bool {
    JSON_ANSWERED.load(Ordering::Relaxed)
}

impl Exit {
    /// The code of a command that ran to its end: 1 when something needs a person's
    /// attention (a row with a problem, a refused prune, a file with no rows), else 0.
    pub fn of_problems(problems: bool) -> Exit {
        if problems { Exit::Problems } else { Exit::Ok }
    }
}

/// A command stopped for a reason that makes the exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Aborted(pub String);

/// The exit code an error means.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        match cause.downcast_ref::<ledger::Error>() {
            Some(ledger::Error::Busy { .. }) => return Exit::Busy,
            // The ledger failed under a run, after requests may have left.
            Some(ledger::Error::Unwritable { .. } | ledger::Error::Gone { .. }) => {
                return Exit::Aborted;
            }
            _ => {}
        }
        if cause.downcast_ref::<Aborted>().is_some() {
            return Exit::Aborted;
        }
    }
    Exit::Usage
}

/// Runs the command that was typed.
pub async fn run(args: Args, stop: CancellationToken) -> anyhow::Result<Exit> {
    let global = Settings::new(&args.global);
    crate::api::log_requests((global.verbose >= 2).then_some(crate::progress::say as fn(&str)));
    match args.command {
        Command::Run(a) if a.dry_run => {
            check_files(
                &global,
                &a.input,
                Check::DryRun {
                    retry_rejected: a.send.retry_rejected,
                },
                a.send.rate,
                stop,
            )
            .await
        }
        Command::Run(a) => {
            let (started, flags) = (Instant::now(), global.announce(&a.send.announce));
            let ended = invite_rows(&global, a.input, a.send, stop).await;
            report_html::announce_unless_done("run", started, ended, flags)
        }
        Command::Validate(a) => check_files(&global, &a.input, Check::Validate, a.rate, stop).await,
        Command::Retry(a) => {
            let (started, flags) = (Instant::now(), global.announce(&a.send.announce));
            let ended = retry(&global, a.send, stop).await;
            report_html::announce_unless_done("retry", started, ended, flags)
        }
        Command::Status(a) => status(&global, a.run),
        Command::Export(a) => export(&global, a),
        Command::Customers(a) => customers(&global, a, stop).await,
        Command::Sync(a) if a.plan => sync::run(&global, a, stop).await,
        Command::Sync(a) => {
            let (started, flags) = (Instant::now(), global.announce(&a.send.announce));
            let ended = sync::run(&global, a, stop).await;
            report_html::announce_unless_done("sync", started, ended, flags)
        }
        Command::Undo(a) if !a.yes => undo::run(&global, a, stop).await,
        Command::Undo(a) => {
            let (started, flags) = (Instant::now(), global.announce(&a.send.announce));
            let ended = undo::run(&global, a, stop).await;
            report_html::announce_unless_done("undo", started, ended, flags)
        }
        Command::Report(a) => report_html::report(&global, a),
        Command::Compact(a) => compact::compact(&global, a),
        Command::Sandbox(a) => {
            sandbox::serve(a).await?;
            Ok(Exit::Ok)
        }
        Command::Help(a) => manual::help(&a.command),
        Command::Completions(a) => manual::completions(&a),
        Command::Man(a) => manual::man(&a),
        Command::Template(a) => template::template(&global, &a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_error_kind() {
        assert_eq!(
            exit_for(&anyhow::Error::new(Aborted("x".into()))),
            Exit::Aborted
        );
        let busy = ledger::Error::Busy {
            path: "x".into(),
            holder: "pid 1".into(),
        };
        assert_eq!(
            exit_for(&anyhow::Error::new(busy).context("opening")),
            Exit::Busy
        );
        let full = ledger::Error::Unwritable {
            path: "x".into(),
            reason: "database or disk is full".into(),
        };
        assert_eq!(exit_for(&anyhow::Error::new(full)), Exit::Aborted);
        let gone = ledger::Error::Gone { path: "x".into() };
        assert_eq!(exit_for(&anyhow::Error::new(gone)), Exit::Aborted);
        assert_eq!(exit_for(&anyhow::anyhow!("bad file")), Exit::Usage);
    }
}
