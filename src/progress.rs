//! Progress: the only module that touches indicatif.
//!
//! On a terminal, a bar with rows done, rate, ETA and counts so far. Elsewhere (cron,
//! a pipe), a plain line on stderr every few seconds. Quiet: nothing. Counting is by
//! atomics, so every stage may tick without a lock; nothing here decides anything.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::domain::RowStatus;

/// How often a non-terminal gets a progress line.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Plain,
    Quiet,
}

impl Mode {
    /// A bar on a terminal, plain lines elsewhere, nothing when quiet.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Plain
        }
    }
}

/// Row counts by status, shared by every stage of a run.
pub struct Progress {
    mode: Mode,
    bar: Option<ProgressBar>,
    counts: [AtomicU64; RowStatus::ALL.len()],
    total: AtomicU64,
    total_known: AtomicBool,
    started: Instant,
    verb: &'static str,
}

impl Progress {
    pub fn new(mode: Mode, verb: &'static str) -> Arc<Progress> {
        let bar = (mode == Mode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows  eta {eta}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let progress = Arc::new(Progress {
            mode,
            bar,
            counts: Default::default(),
            total: AtomicU64::new(0),
            total_known: AtomicBool::new(false),
            started: Instant::now(),
            verb,
        });
        if mode == Mode::Plain {
            let weak = Arc::downgrade(&progress);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PLAIN_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(p) => eprintln!("{}", p.line()),
                        None => return,
                    }
                }
            });
        }
        progress
    }

    /// A row reached its status for this run.
    pub fn count(&self, status: RowStatus) {
        self.counts[status as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let rate = self.done() as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!("{rate:.0}/s  {}", self.summary_counts()));
        }
    }

    /// A row was read; until reading ends, the bar's length grows with it.
    pub fn seen(&self, rows: u64) {
        self.total.fetch_add(rows, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(self.total.load(Ordering::Relaxed));
        }
    }

    /// Every row has been read.
    pub fn reading_done(&self) {
        self.total_known.store(true, Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The counts so far, as `invited 120, exists 2`.
    pub fn summary_counts(&self) -> String {
        RowStatus::ALL
            .iter()
            .filter_map(|s| {
                let n = self.counts[*s as usize].load(Ordering::Relaxed);
                (n > 0).then(|| format!("{} {n}", s.as_str()))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The plain progress line.
    pub fn line(&self) -> String {
        let done = self.done();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let total = if self.total_known.load(Ordering::Relaxed) {
            format!("/{}", self.total.load(Ordering::Relaxed))
        } else {
            String::new()
        };
        format!(
            "bbinvite: {} {done}{total} rows in {:.0}s ({:.0}/s): {}",
            self.verb,
            secs,
            done as f64 / secs,
            self.summary_counts()
        )
    }

    /// Clears the bar; the caller prints the summary.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Prints a message without tearing the bar.
    pub fn println(&self, msg: &str) {
        match (&self.bar, self.mode) {
            (_, Mode::Quiet) => {}
            (Some(bar), _) => bar.suspend(|| eprintln!("{msg}")),
            (None, _) => eprintln!("{msg}"),
        }
    }
}
