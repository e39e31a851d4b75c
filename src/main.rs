//! The `bbinvite` binary: parse, start the runtime, run, exit with the command's code.
//! Signals: the first SIGINT or SIGTERM stops dispatching and lets the run record what
//! is in flight; a second one exits at once. A failure is one line on stderr and, with
//! `--json`, one JSON object on stdout; a reader that closed stdout ends the run quietly.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use tokio_util::sync::CancellationToken;

use bbinvite::app::{self, Exit};
use bbinvite::cli;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let json = wants_json(&argv);
    let args = match cli::parse_from(&argv) {
        Ok(args) => args,
        Err(e) => return usage_error(&e, json),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bbinvite: cannot start: {e}");
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    let stop = CancellationToken::new();
    let code = runtime.block_on(async {
        tokio::spawn(watch_signals(stop.clone()));
        match app::run(args, stop).await {
            Ok(exit) => exit,
            // Whoever read stdout has gone (`| head`): nothing failed that matters.
            Err(e) if is_broken_pipe(&e) => Exit::Ok,
            Err(e) => {
                let exit = app::exit_for(&e);
                let line = app::error_line(&e);
                eprintln!("bbinvite: {line}");
                // A summary already on stdout carries the outcome and the exit code.
                if json && !app::json_answered() {
                    print_json_error(&line, exit as u8);
                }
                exit
            }
        }
    });
    // In-flight work has been recorded; do not wait for stray tasks (a stdin reader).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(code as u8)
}

/// First signal: stop. Second: leave now.
async fn watch_signals(stop: CancellationToken) {
    let mut count = 0;
    loop {
        if wait_signal().await.is_err() {
            return;
        }
        count += 1;
        if count == 1 {
            bbinvite::progress::say(
                "bbinvite: stopping: finishing the requests in flight (signal again to quit at once)",
            );
            stop.cancel();
        } else {
            bbinvite::progress::say(
                "bbinvite: quitting now; the next run checks the rows that were in flight",
            );
            std::process::exit(Exit::Aborted as i32);
        }
    }
}

#[cfg(unix)]
async fn wait_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}

/// Whether `--json` was typed (before a `--`): failures are then told as JSON too, even
/// when the command line itself could not be parsed.
fn wants_json(argv: &[OsString]) -> bool {
    argv.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// A command line clap refused (or `--help`, `--version`): clap's text, and with
/// `--json` the error object on stdout too.
fn usage_error(e: &clap::Error, json: bool) -> ExitCode {
    // A closed stdout while printing help is no failure either.
    let _ = e.print();
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(Exit::Usage as u8));
    }
    if json {
        let text = e.render().to_string();
        let line = match e.kind() {
            // clap's text is the whole help page: its first line is no error message.
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                "no command given; see `bbinvite --help`"
            }
            _ => text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid command line")
                .trim_start_matches("error: "),
        };
        print_json_error(line, Exit::Usage as u8);
    }
    ExitCode::from(Exit::Usage as u8)
}

/// `{"error": "...", "exit_code": N}` on one line of stdout, so a script that reads the
/// output as JSON never parses an empty string.
fn print_json_error(message: &str, exit_code: u8) {
    let object = serde_json::json!({ "error": message, "exit_code": exit_code });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{object}").and_then(|()| out.flush());
}

/// Whether `e` is a write to a pipe whose reader went away, however it was wrapped (an
/// I/O error, or one inside serde_json's or csv's).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(BrokenPipe))
            || c.downcast_ref::<csv::Error>().is_some_and(
                |c| matches!(c.kind(), csv::ErrorKind::Io(io) if io.kind() == BrokenPipe),
            )
    })
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
