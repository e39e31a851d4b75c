//! Progress: the only module that touches indicatif.
//!
//! What is to be done is known from the start (the inputs' sizes, a workbook's rows, a
//! list of jobs); the fraction and the ETA come from that, never from what has been read
//! so far. On a terminal, a bar; elsewhere (cron, a pipe, `TERM=dumb`), a plain line on
//! stderr every few seconds, such as
//! `bbinvite: run 12,345/200,000 rows (6%), 498/s, eta 6m20s, sent 12,000, failed 3`.
//! Quiet: nothing. Counting is by atomics, so every stage may tick without a lock;
//! nothing here decides anything. Every other line bbinvite prints on stderr while a
//! bar is up goes through [`say`], so the bar is never torn.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::domain::RowStatus;

/// How often a non-terminal gets a progress line.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// For tests only: the plain lines' interval in milliseconds instead of five seconds.
pub const EVERY_ENV: &str = "BBINVITE_PROGRESS_EVERY_MS";
/// How often the counts are looked at: the bar's refresh, the rate's sampling.
const TICK: Duration = Duration::from_millis(200);
/// The current rate is the requests answered over about this long.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bar,
    Plain,
    Quiet,
}

impl Mode {
    /// A bar on a terminal that can draw one, plain lines elsewhere (indicatif draws
    /// nothing when `TERM` is unset or `dumb`), nothing when quiet.
    pub fn detect(quiet: bool) -> Mode {
        let dumb = std::env::var("TERM").map_or(true, |t| t.is_empty() || t == "dumb");
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() && !dumb {
            Mode::Bar
        } else {
            Mode::Plain
        }
    }
}

/// How many items there are to do, as far as is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    Unknown,
    /// An estimate (shown with `~`).
    About(u64),
    Exact(u64),
}

type Estimate = Box<dyn Fn() -> Total + Send + Sync>;

/// The bar of the progress on screen, for [`say`].
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Prints one line on stderr; with a bar on screen, on a line of its own above it.
pub fn say(line: &str) {
    let shown = SHOWN.lock().unwrap_or_else(PoisonError::into_inner);
    match shown.as_ref() {
        Some(bar) => bar.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

/// What a command has done so far, shared by every stage of it.
pub struct Progress {
    mode: Mode,
    bar: Option<ProgressBar>,
    /// The command, and what it counts (`rows`, `access lists`).
    verb: &'static str,
    unit: &'static str,
    /// Rows by the status they reached.
    counts: [AtomicU64; RowStatus::ALL.len()],
    /// Items other than rows done (`sync`'s actions, lists read).
    items: AtomicU64,
    /// Requests answered: rows and items.
    sent: AtomicU64,
    /// Rows done by an earlier run, counted without a request.
    before: AtomicU64,
    /// Items that failed (a failed row is in `counts`).
    items_failed: AtomicU64,
    total: Mutex<Estimate>,
    started: Instant,
    /// (when, requests answered) of the last few seconds, oldest first.
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// Held while a progress line prints; true once [`Progress::finish`] has run.
    stopped: Mutex<bool>,
}

impl Progress {
    /// Progress of `verb` counting `unit`; its total is unknown until
    /// [`Progress::set_total`] says.
    pub fn new(mode: Mode, verb: &'static str, unit: &'static str) -> Arc<Progress> {
        let bar = (mode == Mode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
            let style = ProgressStyle::with_template("{spinner} {bar:12} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            *SHOWN.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
            bar
        });
        let progress = Arc::new(Progress {
            mode,
            bar,
            verb,
            unit,
            counts: Default::default(),
            items: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            before: AtomicU64::new(0),
            items_failed: AtomicU64::new(0),
            total: Mutex::new(Box::new(|| Total::Unknown)),
            started: Instant::now(),
            samples: Mutex::new(VecDeque::new()),
            stopped: Mutex::new(false),
        });
        if mode != Mode::Quiet {
            tokio::spawn(tick(Arc::downgrade(&progress), plain_every()));
        }
        progress
    }

    /// Where the total comes from: asked each time progress is shown.
    pub fn set_total(&self, total: impl Fn() -> Total + Send + Sync + 'static) {
        *self.total.lock().unwrap_or_else(PoisonError::into_inner) = Box::new(total);
    }

    /// A row reached its status without a request (invalid, a duplicate, done before).
    pub fn count(&self, status: RowStatus) {
        self.counts[status as usize].fetch_add(1, Ordering::Relaxed);
        if matches!(status, RowStatus::Invited | RowStatus::Exists) {
            self.before.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A row's request was answered and the row reached its status.
    pub fn sent(&self, status: RowStatus) {
        self.counts[status as usize].fetch_add(1, Ordering::Relaxed);
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// An item other than a row (an action, a list read) was done by a request.
    pub fn item(&self, failed: bool) {
        self.items.fetch_add(1, Ordering::Relaxed);
        self.sent.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.items_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Rows and items done.
    pub fn done(&self) -> u64 {
        let rows: u64 = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        rows + self.items.load(Ordering::Relaxed)
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

    fn total(&self) -> Total {
        (self.total.lock().unwrap_or_else(PoisonError::into_inner))()
    }

    /// Requests answered per second over the last few seconds (since the start, when
    /// that is all there is).
    fn rate(&self) -> f64 {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let now = (Instant::now(), self.sent.load(Ordering::Relaxed));
        let then = samples
            .front()
            .copied()
            .filter(|(at, _)| now.0.duration_since(*at) >= TICK)
            .unwrap_or((self.started, 0));
        let secs = now.0.duration_since(then.0).as_secs_f64().max(0.001);
        now.1.saturating_sub(then.1) as f64 / secs
    }

    /// Keeps the count of requests answered now, for the current rate.
    fn sample(&self) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        samples.push_back((now, self.sent.load(Ordering::Relaxed)));
        while samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// What the bar and the plain line say after the command's name:
    /// `12,345/~200,000 rows (6%), 498/s, eta 6m20s, sent 12,000, failed 3`.
    fn status(&self, done: u64, total: Total) -> String {
        let mut out = format!("{}", HumanCount(done));
        if let Total::About(n) | Total::Exact(n) = total {
            let about = if matches!(total, Total::About(_)) {
                "~"
            } else {
                ""
            };
            let n = n.max(done);
            out += &format!("/{about}{} {}", HumanCount(n), self.unit);
            let fraction = done as f64 / n.max(1) as f64;
            out += &format!(" ({:.0}%)", (fraction * 100.0).floor());
            out += &format!(", {}/s", rate_text(self.rate()));
            if done > 0 {
                // The rate since the start applied to what is left.
                let secs = self.started.elapsed().as_secs_f64() * (1.0 - fraction) / fraction;
                out += &format!(", eta {}", duration_text(secs));
            }
        } else {
            out += &format!(" {}, {}/s", self.unit, rate_text(self.rate()));
        }
        out += &format!(", sent {}", HumanCount(self.sent.load(Ordering::Relaxed)));
        let before = self.before.load(Ordering::Relaxed);
        if before > 0 {
            out += &format!(", done before {}", HumanCount(before));
        }
        let failed = self.counts[RowStatus::Failed as usize].load(Ordering::Relaxed)
            + self.items_failed.load(Ordering::Relaxed);
        out + &format!(", failed {}", HumanCount(failed))
    }

    /// The plain progress line.
    pub fn line(&self) -> String {
        format!(
            "bbinvite: {} {}",
            self.verb,
            self.status(self.done(), self.total())
        )
    }

    /// Brings the bar up to date.
    fn draw(&self) {
        let Some(bar) = &self.bar else { return };
        let (done, total) = (self.done(), self.total());
        if let Total::About(n) | Total::Exact(n) = total {
            bar.set_length(n.max(done));
        }
        bar.set_position(done);
        bar.set_message(self.status(done, total));
    }

    /// Stops the progress lines and clears the bar; nothing of it prints after this
    /// returns, so the caller's summary is the last word.
    pub fn finish(&self) {
        let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        if std::mem::replace(&mut *stopped, true) {
            return;
        }
        if let Some(bar) = &self.bar {
            // One progress is on screen at a time: this one.
            *SHOWN.lock().unwrap_or_else(PoisonError::into_inner) = None;
            bar.finish_and_clear();
        }
    }

    /// Prints a message (a `-v` line) without tearing the bar; nothing when quiet.
    pub fn println(&self, msg: &str) {
        if self.mode != Mode::Quiet {
            say(msg);
        }
    }
}

impl Drop for Progress {
    /// A command that failed before its end leaves no bar behind for [`say`].
    fn drop(&mut self) {
        self.finish();
    }
}

/// The plain lines' interval: five seconds, or what [`EVERY_ENV`] says.
fn plain_every() -> Duration {
    std::env::var(EVERY_ENV)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(PLAIN_EVERY, Duration::from_millis)
}

/// Samples the rate and redraws the bar every [`TICK`]; prints a plain line every
/// `every`; ends when the progress is finished or gone.
async fn tick(progress: std::sync::Weak<Progress>, every: Duration) {
    let mut tick = tokio::time::interval(TICK.min(every));
    let mut printed = Instant::now();
    loop {
        tick.tick().await;
        let Some(p) = progress.upgrade() else { return };
        let stopped = p.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        if *stopped {
            return;
        }
        p.sample();
        match p.mode {
            Mode::Bar => p.draw(),
            Mode::Plain if printed.elapsed() >= every => {
                printed = Instant::now();
                eprintln!("{}", p.line());
            }
            _ => {}
        }
        drop(stopped);
    }
}

/// `498`, or `2.5` below ten.
fn rate_text(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1}")
    } else {
        HumanCount(rate.round() as u64).to_string()
    }
}

/// `42s`, `6m20s`, `2h05m`.
fn duration_text(secs: f64) -> String {
    let s = if secs.is_finite() {
        secs.round() as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_text(0.4), "0s");
        assert_eq!(duration_text(42.0), "42s");
        assert_eq!(duration_text(380.0), "6m20s");
        assert_eq!(duration_text(7500.0), "2h05m");
        assert_eq!(duration_text(f64::INFINITY), "0s");
        assert_eq!(rate_text(2.46), "2.5");
        assert_eq!(rate_text(12345.4), "12,345");
    }

    #[tokio::test]
    async fn the_line_has_the_fraction_of_the_total_and_the_counts() {
        let p = Progress::new(Mode::Quiet, "run", "rows");
        assert_eq!(p.line(), "bbinvite: run 0 rows, 0.0/s, sent 0, failed 0");
        p.set_total(|| Total::About(200_000));
        for _ in 0..12_000 {
            p.sent(RowStatus::Invited);
        }
        for _ in 0..300 {
            p.count(RowStatus::Exists);
        }
        p.sent(RowStatus::Failed);
        p.count(RowStatus::Invalid);
        let line = p.line();
        assert!(
            line.starts_with("bbinvite: run 12,302/~200,000 rows (6%), "),
            "{line}"
        );
        assert!(line.contains(", eta "), "{line}");
        assert!(
            line.ends_with(", sent 12,001, done before 300, failed 1"),
            "{line}"
        );
        p.set_total(|| Total::Exact(12_302));
        assert!(p.line().contains("12,302/12,302 rows (100%)"));
    }
}
