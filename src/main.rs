//! The `bbinvite` binary: parse, start the runtime, run, exit with the command's code.
//! Signals: the first SIGINT or SIGTERM stops dispatching and lets the run record what
//! is in flight; a second one exits at once.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use bbinvite::app::{self, Exit};
use bbinvite::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
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
            Err(e) => {
                let exit = app::exit_for(&e);
                if !is_broken_pipe(&e) {
                    eprintln!("bbinvite: {}", app::error_line(&e));
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
            eprintln!(
                "bbinvite: stopping: finishing the requests in flight (signal again to quit at once)"
            );
            stop.cancel();
        } else {
            eprintln!("bbinvite: quitting now; the next run checks the rows that were in flight");
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

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
