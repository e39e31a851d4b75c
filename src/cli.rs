//! The command line: what was typed ([`Args`]), then what it means (checked settings).
//!
//! Parsing is clap's; checking is here, once, so the commands get real values: a
//! base URL that is safe to send credentials to, credentials from the environment
//! (never from the command line), a rate and concurrency that are not zero.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::api::http::{Unsafe, check_destination, parse_address};
use crate::api::{Credentials, Secret};
use crate::domain::RowStatus;
use crate::input::{Field, Options as InputOptions};

use crate::rate::Rate;

/// The public API; customers may have their own.
pub const DEFAULT_BASE_URL: &str = "https://api.billingbooth.app";
/// The ledger when none is named.
pub const DEFAULT_LEDGER: &str = "bbinvite.db";
/// Requests per second of commands that only read (the directory for `validate`,
/// `customers`) unless `--rate` says otherwise: brisk, yet polite to an API whose
/// limit is unknown.
pub const DEFAULT_CHECK_RATE: &str = "20";
/// The ledger of `--sandbox` runs, kept apart from the real one.
pub const SANDBOX_LEDGER: &str = "bbinvite-sandbox.db";

/// The top-level help's closing part: how to start, the environment, the exit codes.
const TOP_AFTER_HELP: &str = "\
Examples:
  bbinvite run samples/invitees.csv --sandbox     try it against the built-in simulator
  bbinvite validate users.csv                     every problem, by file:line; sends nothing
  bbinvite run users.csv --rate 300/min --results results.csv

Environment (credentials come from here only, never from the command line):
  BILLINGBOOTH_API_KEY        an API key; or else the two below
  BILLINGBOOTH_EMAIL          the e-mail to log in with, and its password in
  BILLINGBOOTH_PASSWORD       the password itself, or
  BILLINGBOOTH_PASSWORD_FILE  the path of a file holding it (kept out of `ps` and history)
  BILLINGBOOTH_BASE_URL       the API (default https://api.billingbooth.app; --base-url wins)
  BBINVITE_NOTIFY_URL         a webhook that receives each sending command's summary

Exit codes:
  0  every row ended invited, exists, or was already done
  1  some rows ended failed, rejected, invalid or unresolved (see `bbinvite export`)
  2  usage, configuration or unreadable input: nothing was sent
  3  aborted: credentials refused, the API failing again and again, a signal, the
     ledger unwritable, or any failure once invitations went out
  4  the ledger is in use by another run

`bbinvite help COMMAND` or `bbinvite COMMAND --help` describes a command and its flags.";

/// The heading the flags every command takes are shown under, after the command's own.
pub const GLOBAL_HEADING: &str = "Global options";

/// Invite users to Billing Booth One customer portals in bulk, exactly once.
#[derive(Debug, Parser)]
#[command(
    name = "bbinvite",
    version,
    about,
    long_about = None,
    propagate_version = true,
    disable_help_subcommand = true,
    after_help = TOP_AFTER_HELP
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

/// Flags every command takes, before or after its name.
#[derive(Debug, ClapArgs, Clone)]
#[command(next_help_heading = GLOBAL_HEADING)]
pub struct Global {
    /// The ledger file (SQLite) [default: bbinvite.db, or bbinvite-sandbox.db with --sandbox]
    #[arg(long, global = true, value_name = "PATH")]
    pub ledger: Option<PathBuf>,
    /// The API's base URL [env: BILLINGBOOTH_BASE_URL; default: the public API, api.billingbooth.app]
    #[arg(long, global = true, value_name = "URL")]
    pub base_url: Option<String>,
    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors, and a line saying how many rows need attention
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more: -v each problem row as it happens; -vv also a line per API request
    /// (method, path, status, milliseconds; never a credential)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Run against a built-in simulator seeded with samples/, not the real API (with
    /// its own ledger, bbinvite-sandbox.db)
    #[arg(long, global = true)]
    pub sandbox: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Invite every row of FILE(s): resolve, send, record; a rerun finishes what did not
    #[command(after_help = "\
Examples:
  bbinvite run users.csv --results results.csv     invite, and write what happened per row
  bbinvite run users.csv --rate 300/min --dry-run  what would be sent; nothing is
  bbinvite run samples/invitees.csv --sandbox      against the built-in simulator")]
    Run(RunArgs),
    /// Read, validate and resolve FILE(s) and report every problem; sends nothing
    #[command(after_help = "\
Examples:
  bbinvite validate users.csv                      every problem, by file:line
  bbinvite validate users.csv --map email=\"Work E-mail\" --json
  bbinvite validate new.xlsx --sheet Invitees --customer \"Acme Telecom Ltd\"")]
    Validate(ValidateArgs),
    /// Send again the invitations that failed or never finished, from the ledger
    #[command(after_help = "\
Examples:
  bbinvite retry                                   the last failures, at the default rate
  bbinvite retry --ledger /srv/bbinvite/bbinvite.db --rate 0.5")]
    Retry(RetryArgs),
    /// Counts per status: the last run and the whole ledger
    #[command(after_help = "\
Examples:
  bbinvite status                                  the last run and the whole ledger
  bbinvite status --run 3 --json")]
    Status(StatusArgs),
    /// Write the rows of a run as CSV: the input's columns, then what happened
    #[command(after_help = "\
Examples:
  bbinvite export --status failed --status rejected --output fix-me.csv
  bbinvite export --run 3 > run-3.csv
  bbinvite export --actions                        a sync's resends and suspensions")]
    Export(ExportArgs),
    /// List the customer directory as bbinvite resolves it
    #[command(after_help = "\
Examples:
  bbinvite customers --search acme
  bbinvite customers --refresh --json")]
    Customers(CustomersArgs),
    /// Make portal access match FILE(s): invite who is missing, resend, suspend; --plan first
    #[command(after_help = "\
Examples:
  bbinvite sync users.csv --plan --prune           what would change; nothing is sent
  bbinvite sync users.csv --resend-after 7 --apply-status
  bbinvite sync users.csv --prune --yes --max-prune 10")]
    Sync(SyncArgs),
    /// Reverse what run N changed in the portal: suspend who it invited, undo its
    /// suspensions; shows the plan unless --yes
    #[command(after_help = "\
Examples:
  bbinvite undo --run 7                            what would be reversed; nothing is sent
  bbinvite undo --run 7 --yes                      suspend who run 7 invited, reactivate who it suspended
  bbinvite undo --run 7 --json                     the plan for scripts

Users run N found already there are never touched; a user a later run changed again is
skipped and named with that run. A killed undo is finished by the same command, without
repeating a request. An undo itself cannot be undone.")]
    Undo(UndoArgs),
    /// Write a run as one self-contained HTML page: counts, customers, charts, rows to fix
    Report(ReportArgs),
    /// Serve a local simulator of the Billing Booth One API
    #[command(after_help = "\
Examples:
  bbinvite sandbox --addr 127.0.0.1:8787           then point bbinvite at http://127.0.0.1:8787
  bbinvite sandbox --latency-ms 50 --fail-rate 0.1 --rate-limit 20")]
    Sandbox(crate::sandbox::Args),
    /// Describe a command and its flags (the same as COMMAND --help)
    #[command(after_help = "\
Examples:
  bbinvite help                                    every command, the environment, exit codes
  bbinvite help run")]
    Help(HelpArgs),
    /// Print a shell completion script: bash, zsh, fish, powershell or elvish
    #[command(after_help = "\
Examples:
  bbinvite completions bash > /etc/bash_completion.d/bbinvite
  bbinvite completions zsh > \"${fpath[1]}/_bbinvite\"
  bbinvite completions fish > ~/.config/fish/completions/bbinvite.fish")]
    Completions(CompletionsArgs),
    /// Write man pages: bbinvite(1) on standard output, or one per command into --dir
    #[command(after_help = "\
Examples:
  bbinvite man | man -l -
  bbinvite man --dir /usr/local/share/man/man1")]
    Man(ManArgs),
    /// Write an input sheet to fill in: the columns bbinvite reads and one example row
    #[command(after_help = "\
Examples:
  bbinvite template > users.csv
  bbinvite template --format xlsx --output users.xlsx
  bbinvite template --output users.csv && bbinvite validate users.csv")]
    Template(TemplateArgs),
    /// Drop the row records and attempts of old runs, keeping every current state
    Compact(CompactArgs),
}

/// `help [COMMAND]...`
#[derive(Debug, ClapArgs)]
pub struct HelpArgs {
    /// The command to describe (a subcommand's path, e.g. `run`); none: the overview
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `completions SHELL`
#[derive(Debug, ClapArgs)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man [--dir DIR]`
#[derive(Debug, ClapArgs)]
pub struct ManArgs {
    /// Write bbinvite.1 and one page per command (bbinvite-run.1, …) into DIR
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The formats `template` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TemplateFormat {
    Csv,
    Xlsx,
}

/// `template [--format csv|xlsx] [--output FILE]`
#[derive(Debug, ClapArgs)]
pub struct TemplateArgs {
    /// The sheet's format (default: from --output's extension, else csv)
    #[arg(long, value_enum)]
    pub format: Option<TemplateFormat>,
    /// Write here instead of standard output (an XLSX needs a file)
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The commands for which none of the global flags means anything: their help leaves
/// them out (they are still accepted, as everywhere).
const NO_GLOBALS: [&str; 5] = ["sandbox", "help", "completions", "man", "template"];

/// The command line as clap sees it, with the global flags hidden where they do not
/// apply. Parsing, help, completions and man pages all start here.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    // A command that already has an argument of a global's id keeps its own copy: a
    // hidden one, so the flag is still accepted but not shown.
    let hidden: Vec<clap::Arg> = Global::augment_args(clap::Command::new("global"))
        .get_arguments()
        .map(|a| a.clone().hide(true))
        .collect();
    let mut cmd = Args::command();
    for name in NO_GLOBALS {
        cmd = cmd.mut_subcommand(name, |sub| sub.args(hidden.iter().cloned()));
    }
    cmd
}

/// Parses a command line (the first item is the program's name).
pub fn parse_from<I, T>(args: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::FromArgMatches;
    let matches = command().try_get_matches_from(args)?;
    Args::from_arg_matches(&matches)
}

/// `compact`: retention for a ledger of years of nightly runs.
#[derive(Debug, ClapArgs)]
pub struct CompactArgs {
    /// Remove the row records and attempts of runs started more than DAYS days ago;
    /// every invitation's and action's state and every run's counts are kept
    #[arg(long, value_name = "DAYS", default_value_t = 90)]
    pub older_than: u32,
}

/// How input files are read.
#[derive(Debug, ClapArgs, Clone)]
pub struct InputArgs {
    /// Input files: CSV, JSONL or XLSX; `-` reads standard input
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<String>,
    /// Use this column for a field, e.g. --map email="E-mail Address" (fields: email,
    /// name, first_name, last_name, customer, customer_id, customer_reference, status, id)
    #[arg(long = "map", value_name = "FIELD=COLUMN", value_parser = parse_map)]
    pub map: Vec<(Field, String)>,
    /// CSV delimiter (default: sniffed among , ; tab |); `tab` or `\t` for tab
    #[arg(long, value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,
    /// CSV text encoding, e.g. utf-8, utf-16le, windows-1252 (default: detected)
    #[arg(long)]
    pub encoding: Option<String>,
    /// The XLSX/ODS sheet to read (default: the first)
    #[arg(long)]
    pub sheet: Option<String>,
    /// Accept quoted CSV cells that run over many lines (by default such a file is
    /// refused: a missing closing quote would merge the rows below it into one cell)
    #[arg(long)]
    pub allow_multiline_fields: bool,
    /// Take every row as this customer's, whatever the file says
    #[arg(long, value_name = "NAME")]
    pub customer: Option<String>,
    /// Reuse the ledger's copy of the customer directory while younger than this
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub customers_ttl: Duration,
    /// Fetch the customer directory now, whatever its age
    #[arg(long)]
    pub refresh_customers: bool,
}

/// How invitations are sent.
#[derive(Debug, ClapArgs, Clone)]
pub struct SendArgs {
    /// Requests per second, all requests counted: 5, 0.5 (one every 2 s), 300/min, 100/h
    #[arg(long, default_value = "5", value_parser = parse_rate, allow_negative_numbers = true)]
    pub rate: Rate,
    /// Requests that may leave at once above the rate (default: a tenth of the rate, at least 1)
    #[arg(long, value_parser = parse_burst, allow_negative_numbers = true)]
    pub burst: Option<NonZeroU32>,
    /// Requests in flight at most
    #[arg(long, default_value = "4", value_parser = parse_concurrency)]
    pub concurrency: NonZeroU32,
    /// Tries per invitation before it is recorded failed
    #[arg(long, default_value = "5", value_parser = parse_attempts)]
    pub max_attempts: NonZeroU32,
    /// Seconds to wait for an answer
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub timeout: Duration,
    /// Longest wait a server's Retry-After may impose; asked for more, the run stops
    /// (exit 3) and leaves the rows pending for the next run
    #[arg(long, value_name = "SECS", default_value = "600", value_parser = parse_secs)]
    pub max_retry_wait: Duration,
    /// Send `rejected` rows again even when unchanged
    #[arg(long)]
    pub retry_rejected: bool,
    /// Also write the rows of this run, with what happened, to this CSV file
    #[arg(long, value_name = "OUT.csv")]
    pub results: Option<PathBuf>,
    #[command(flatten)]
    pub announce: AnnounceArgs,
}

/// Who hears of a sending command's end: a webhook, a monitoring textfile.
#[derive(Debug, ClapArgs, Clone)]
pub struct AnnounceArgs {
    /// When to POST the summary to the webhook in BBINVITE_NOTIFY_URL (environment only):
    /// always, or on problems (exit code not 0)
    #[arg(long, value_name = "WHEN", default_value = "problems", value_parser = parse_notify_on)]
    pub notify_on: crate::report::NotifyOn,
    /// Write the run's figures here in the Prometheus text format (for node_exporter's
    /// textfile collector), replaced atomically
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

/// `report`: one run as an HTML page.
#[derive(Debug, ClapArgs)]
pub struct ReportArgs {
    /// The run to report (default: the last)
    #[arg(long, value_parser = parse_run)]
    pub run: Option<i64>,
    /// The HTML file to write
    #[arg(long, short, value_name = "FILE.html")]
    pub output: PathBuf,
}

fn parse_notify_on(s: &str) -> Result<crate::report::NotifyOn, String> {
    match s.trim() {
        "always" => Ok(crate::report::NotifyOn::Always),
        "problems" => Ok(crate::report::NotifyOn::Problems),
        _ => Err(format!("expected always or problems, got \"{s}\"")),
    }
}

#[derive(Debug, ClapArgs)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub send: SendArgs,
    /// Read, resolve and decide, then report what would be sent; sends and records nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, ClapArgs)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Requests per second for the reads validation needs (the directory, references):
    /// 20, 0.5, 300/min
    #[arg(long, default_value = DEFAULT_CHECK_RATE, value_parser = parse_rate, allow_negative_numbers = true)]
    pub rate: Rate,
}

#[derive(Debug, ClapArgs)]
pub struct RetryArgs {
    #[command(flatten)]
    pub send: SendArgs,
}

#[derive(Debug, ClapArgs)]
pub struct StatusArgs {
    /// The run to count (default: the last)
    #[arg(long, value_parser = parse_run)]
    pub run: Option<i64>,
}

/// `sync`: the sheet is the desired state of portal access.
#[derive(Debug, ClapArgs)]
pub struct SyncArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub send: SendArgs,
    /// Print the plan (counts per action and customer, then each row) and change
    /// nothing: only the access lists are read
    #[arg(long)]
    pub plan: bool,
    /// Send the invitation again to users still awaiting activation whose last
    /// invitation or resend is older than DAYS (decimals allowed); at most once a period
    #[arg(long, value_name = "DAYS", value_parser = parse_days)]
    pub resend_after: Option<Duration>,
    /// Suspend or reactivate users whose status differs from the sheet's status column
    /// (rows without a status leave theirs alone)
    #[arg(long)]
    pub apply_status: bool,
    /// Suspend (never delete) the users of the sheet's customers who are not in the sheet;
    /// applied only with --yes
    #[arg(long)]
    pub prune: bool,
    /// Apply the --prune suspensions; without it they are only shown
    #[arg(long, requires = "prune")]
    pub yes: bool,
    /// Refuse to prune a customer when that would suspend more than PCT percent of its
    /// users (a truncated export must not lock a customer out)
    #[arg(long, value_name = "PCT", default_value = "20", value_parser = parse_percent)]
    pub max_prune: f64,
}

/// `undo --run N [--yes]`
#[derive(Debug, ClapArgs)]
pub struct UndoArgs {
    /// The run to reverse, as `bbinvite status` numbers it
    #[arg(long, value_parser = parse_run, value_name = "N")]
    pub run: i64,
    /// Carry the reversal out; without it, only the plan is shown and nothing is sent
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub send: SendArgs,
}

#[derive(Debug, ClapArgs)]
pub struct ExportArgs {
    /// Only rows with this status (repeatable): invited, exists, pending, sending, failed,
    /// rejected, invalid, unresolved, duplicate
    #[arg(long = "status", value_parser = parse_status)]
    pub statuses: Vec<RowStatus>,
    /// The run to export (default: the last)
    #[arg(long, value_parser = parse_run)]
    pub run: Option<i64>,
    /// Write here instead of standard output
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Write a sync run's actions (resend, suspend, reactivate, prune) instead of its rows
    #[arg(long, conflicts_with = "statuses")]
    pub actions: bool,
}

#[derive(Debug, ClapArgs)]
pub struct CustomersArgs {
    /// Fetch the directory now, whatever its age
    #[arg(long)]
    pub refresh: bool,
    /// Only customers whose name or reference contains this
    #[arg(long)]
    pub search: Option<String>,
    /// Requests per second while fetching the directory: 20, 0.5, 300/min
    #[arg(long, default_value = DEFAULT_CHECK_RATE, value_parser = parse_rate, allow_negative_numbers = true)]
    pub rate: Rate,
    /// Reuse the ledger's copy while younger than this
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub customers_ttl: Duration,
}

fn parse_map(s: &str) -> Result<(Field, String), String> {
    let (field, column) = s
        .split_once('=')
        .ok_or_else(|| format!("expected FIELD=COLUMN, got \"{s}\""))?;
    let field = field.trim().parse::<Field>().map_err(|e| e.to_string())?;
    let column = column.trim().trim_matches('"').to_string();
    if column.is_empty() {
        return Err(format!("no column named for {field:?}"));
    }
    Ok((field, column))
}

fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        "comma" => Ok(b','),
        "semicolon" => Ok(b';'),
        "pipe" => Ok(b'|'),
        _ if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err(format!(
            "a delimiter is one ASCII character or tab, not \"{s}\""
        )),
    }
}

/// The most `--burst` takes: a million requests is no limit at all.
const MAX_BURST: u32 = 1_000_000;
/// The most requests in flight: far past what any API lets one client keep open.
const MAX_CONCURRENCY: u32 = 1024;
/// The most tries per request: past this a retry only delays the verdict.
const MAX_ATTEMPTS: u32 = 100;
/// `--timeout` bounds, in seconds: below a tenth no answer arrives; above an hour a hung
/// connection holds the run for good.
const TIMEOUT_SECS: std::ops::RangeInclusive<f64> = 0.1..=3600.0;
/// The longest `--customers-ttl`: a year-old directory is a stale directory.
const MAX_TTL: Duration = Duration::from_secs(366 * 86_400);

/// A whole number from 1 to `max`.
fn parse_bounded(s: &str, max: u32) -> Result<NonZeroU32, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a whole number from 1 to {max}, got \"{s}\""))?;
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= max)
        .and_then(NonZeroU32::new)
        .ok_or_else(|| format!("must be from 1 to {max}"))
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    s.parse::<Rate>().map_err(|e| e.to_string())
}

fn parse_burst(s: &str) -> Result<NonZeroU32, String> {
    parse_bounded(s, MAX_BURST)
}

fn parse_concurrency(s: &str) -> Result<NonZeroU32, String> {
    parse_bounded(s, MAX_CONCURRENCY)
}

fn parse_attempts(s: &str) -> Result<NonZeroU32, String> {
    parse_bounded(s, MAX_ATTEMPTS)
}

fn parse_run(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a run number (1 or more, as `bbinvite status` shows), got \"{s}\""
        )),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (e.g. 30m, 1h, 3600)"))?
        }
    };
    if d > MAX_TTL {
        return Err("must be at most 366 days".into());
    }
    Ok(d)
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected seconds, got \"{s}\""))?;
    if !(secs.is_finite() && TIMEOUT_SECS.contains(&secs)) {
        return Err(format!(
            "must be from {} to {} seconds",
            TIMEOUT_SECS.start(),
            TIMEOUT_SECS.end()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_status(s: &str) -> Result<RowStatus, String> {
    RowStatus::parse(s).ok_or_else(|| {
        let all: Vec<_> = RowStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown status \"{s}\"; one of {}", all.join(", "))
    })
}

fn parse_days(s: &str) -> Result<Duration, String> {
    let days: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of days, got \"{s}\""))?;
    if !(days.is_finite() && days > 0.0 && days <= 36_500.0) {
        return Err("must be more than 0 days and at most 36500".into());
    }
    Ok(Duration::from_secs_f64(days * 86_400.0))
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let pct: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("expected a percentage, got \"{s}\""))?;
    if !(pct.is_finite() && (0.0..=100.0).contains(&pct)) {
        return Err("must be between 0 and 100".into());
    }
    Ok(pct)
}

/// The sending settings, checked.
pub fn send_settings(a: &SendArgs) -> crate::send::Settings {
    let burst = a.burst.unwrap_or_else(|| {
        NonZeroU32::new((a.rate.per_second_whole().get() / 10).max(1)).unwrap_or(NonZeroU32::MIN)
    });
    crate::send::Settings {
        rate: a.rate,
        burst,
        concurrency: a.concurrency.get() as usize,
        max_attempts: a.max_attempts.get(),
        max_retry_wait: a.max_retry_wait,
    }
}

/// Input reading options from the flags.
pub fn input_options(a: &InputArgs) -> InputOptions {
    InputOptions {
        delimiter: a.delimiter,
        encoding: a.encoding.clone(),
        sheet: a.sheet.clone(),
        format: None,
        map: a.map.clone(),
        allow_multiline: a.allow_multiline_fields,
    }
}

/// Where to send, checked: https, or plain http only to this machine; no user name or
/// password in it (the credentials come from the environment); a host.
pub fn check_base_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/');
    let shown = crate::api::redact::strip_url_credentials(url);
    let parsed = parse_address(url)
        .map_err(|why| anyhow!("the base URL \"{shown}\" is not a URL ({why})"))?;
    if parsed.authority().is_some_and(|a| a.as_str().contains('@')) {
        bail!(
            "the base URL \"{shown}\" carries a user name or password; remove them and give the credentials in BILLINGBOOTH_API_KEY, or BILLINGBOOTH_EMAIL with BILLINGBOOTH_PASSWORD"
        );
    }
    match check_destination(&parsed) {
        Ok(()) => Ok(url.to_string()),
        Err(Unsafe::Scheme(scheme)) => bail!("the base URL must be https, not {scheme}:"),
        Err(Unsafe::NoHost) => bail!("the base URL \"{url}\" has no host"),
        Err(Unsafe::PlainHttp) => bail!(
            "refusing to send credentials over plain http to {url}; use https (plain http is allowed only to this machine)"
        ),
    }
}

/// Credentials from the environment: an API key, or e-mail with password (or a file
/// holding it). Never from the command line, where `ps` and shell history would show them.
/// A value with a control character in it is refused, naming the variable, never the value.
pub fn credentials_from_env() -> anyhow::Result<Credentials> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if let Some(key) = var("BILLINGBOOTH_API_KEY") {
        let key = no_control("BILLINGBOOTH_API_KEY", key.trim())?;
        return Ok(Credentials::ApiKey(Secret::new(key)));
    }
    let Some(email) = var("BILLINGBOOTH_EMAIL") else {
        bail!(
            "no credentials: set BILLINGBOOTH_API_KEY, or BILLINGBOOTH_EMAIL with BILLINGBOOTH_PASSWORD (or BILLINGBOOTH_PASSWORD_FILE); or try --sandbox"
        );
    };
    let email = no_control("BILLINGBOOTH_EMAIL", email.trim())?;
    let password = match (
        var("BILLINGBOOTH_PASSWORD"),
        var("BILLINGBOOTH_PASSWORD_FILE"),
    ) {
        (Some(p), _) => no_control("BILLINGBOOTH_PASSWORD", end_of_line_trimmed(&p))?,
        (None, Some(file)) => {
            // The path is not shown: a password given by mistake in its place would be.
            let text = std::fs::read_to_string(&file).map_err(|e| {
                anyhow!(
                    "cannot read the file BILLINGBOOTH_PASSWORD_FILE names ({e}); it must hold the path of a file containing the password, not the password"
                )
            })?;
            let p = end_of_line_trimmed(&text);
            if p.is_empty() {
                bail!("the file BILLINGBOOTH_PASSWORD_FILE names is empty; put the password in it");
            }
            no_control("BILLINGBOOTH_PASSWORD_FILE", p)?
        }
        (None, None) => {
            return Err(anyhow!(
                "BILLINGBOOTH_EMAIL is set but no password: set BILLINGBOOTH_PASSWORD or BILLINGBOOTH_PASSWORD_FILE"
            ));
        }
    };
    Ok(Credentials::Password {
        email,
        password: Secret::new(password),
    })
}

/// A password as a file or `echo` leaves it: without the line's end.
fn end_of_line_trimmed(text: &str) -> &str {
    text.trim_end_matches(['\n', '\r'])
}

/// The value, unless a control character is in it: then an error naming the variable
/// (never the value: it is a secret, or half of one).
fn no_control(variable: &str, value: &str) -> anyhow::Result<String> {
    if value.chars().any(char::is_control) {
        bail!(
            "{variable} contains a control character (a stray newline from `echo`?); set it again without one"
        );
    }
    Ok(value.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_base_url("https://api.billingbooth.app/").is_ok());
        assert!(check_base_url("http://127.0.0.1:8787").is_ok());
        assert!(check_base_url("http://localhost:1").is_ok());
        assert!(check_base_url("http://[::1]:1").is_ok());
        assert!(check_base_url("http://api.billingbooth.app").is_err());
        assert!(check_base_url("http://10.0.0.1").is_err());
        assert!(check_base_url("ftp://x").is_err());
        let e = check_base_url("https://ops:s3cret@api.billingbooth.app")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("user name or password") && !e.contains("s3cret"),
            "{e}"
        );
    }

    /// The error `check_base_url` gives for `url`, or "" if it accepts it.
    fn refusal(url: &str) -> String {
        check_base_url(url)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn credentials_anywhere_in_the_authority_are_refused_unshown() {
        for url in [
            "https://ops@api.billingbooth.app",
            "https://ops:@api.billingbooth.app",
            "http://ops:Pw%20q%2F7@127.0.0.1:9",
            "http://@localhost:9",
            "https://a@b@api.billingbooth.app",
        ] {
            let e = refusal(url);
            assert!(e.contains("user name or password"), "{url}: {e}");
            assert!(!e.contains("ops") && !e.contains("Pw"), "{url}: {e}");
        }
        // A `/` in the password makes the URL unreadable; it is still not shown.
        let e = refusal("https://ops:se/cret@api.billingbooth.app");
        assert!(!e.contains("ops") && !e.contains("cret"), "{e}");
        assert_eq!(
            check_base_url("https://api.billingbooth.app/v1/users@x").ok(),
            Some("https://api.billingbooth.app/v1/users@x".into()),
            "an @ in the path is not a credential"
        );
    }

    #[test]
    fn this_machine_is_named_in_any_of_its_forms() {
        for url in [
            "http://[::1]:9",
            "http://[::1]",
            "http://localhost",
            "http://LocalHost:9/api",
            "HTTP://127.0.0.1:9",
            "http://127.0.0.2:9",
        ] {
            assert_eq!(refusal(url), "", "{url}");
        }
        for url in [
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "http://[::2]:9",
            "http://[::ffff:127.0.0.1]:9",
            "http://0.0.0.0:9",
        ] {
            assert!(refusal(url).contains("plain http"), "{url}");
        }
    }

    #[test]
    fn only_https_and_http_are_schemes() {
        assert!(refusal("ftp://x").contains("must be https, not ftp:"));
        assert!(refusal("FTP://x").contains("must be https, not ftp:"));
        assert!(refusal("ws://127.0.0.1:9").contains("must be https, not ws:"));
        assert_eq!(refusal("HTTPS://api.billingbooth.app"), "");
    }

    #[test]
    fn an_address_without_a_host_is_refused() {
        assert!(refusal("https://:443").contains("has no host"));
        assert!(refusal("http://:9").contains("has no host"));
        assert!(refusal("https:///v1").contains("is not a URL"));
    }

    #[test]
    fn what_is_not_an_address_is_not_a_url() {
        for url in [
            "api.billingbooth.app",
            "/v1",
            "https://api.billingbooth.app:abc",
            "https://api.billingbooth.app:99999",
            "https://api.billingbooth.app:+443",
            "http://127.0.0.1:9:9",
            "https://[::zz]:443",
            "https://api billingbooth.app",
            "https://bücher.example",
        ] {
            let e = refusal(url);
            assert!(e.contains("is not a URL"), "{url}: {e}");
        }
        // What the general parser read as a port "a", the http crate as host "ops".
        assert!(refusal("https://ops:a/b@api.billingbooth.app").contains("is not a URL"));
    }

    #[test]
    fn the_base_url_is_kept_as_given_without_its_trailing_slash() {
        assert_eq!(
            check_base_url("  https://api.billingbooth.app:8443/v1/ \n").ok(),
            Some("https://api.billingbooth.app:8443/v1".into())
        );
        assert_eq!(
            check_base_url("http://[::1]:9/").ok(),
            Some("http://[::1]:9".into())
        );
    }

    #[test]
    fn flags_parse() {
        assert_eq!(parse_delimiter("tab").unwrap(), b'\t');
        assert_eq!(parse_delimiter(";").unwrap(), b';');
        assert!(parse_delimiter(";;").is_err());
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(
            parse_map("email=E-mail Address").unwrap(),
            (Field::Email, "E-mail Address".into())
        );
        assert!(parse_map("nope").is_err());
    }

    #[test]
    fn numbers_are_held_to_sane_bounds() {
        assert_eq!(parse_rate("500").unwrap().per_second_whole().get(), 500);
        assert_eq!(
            parse_rate("1000000").unwrap().per_second_whole().get(),
            1_000_000
        );
        assert_eq!(parse_rate("1.5").unwrap().per_second_whole().get(), 1);
        for bad in ["0", "1000001", "4294967295", "99999999999", "-1", "x"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(parse_burst("1000000").is_ok() && parse_burst("0").is_err());
        assert!(parse_concurrency("1024").is_ok() && parse_concurrency("1025").is_err());
        assert!(parse_attempts("100").is_ok() && parse_attempts("101").is_err());
        assert_eq!(parse_secs("2.5").unwrap(), Duration::from_millis(2500));
        for bad in ["1e300", "inf", "NaN", "0", "0.01", "3601", "-5"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("366days").is_ok());
        assert!(parse_duration("367days").is_err());
        assert!(parse_duration("500000000years").is_err());
        assert!(parse_duration("18446744073709551615").is_err());
        assert_eq!(parse_run("3").unwrap(), 3);
        assert!(parse_run("0").is_err() && parse_run("-2").is_err());
    }

    #[test]
    fn a_credential_with_a_control_character_is_named_not_shown() {
        assert_eq!(no_control("V", "abc").unwrap(), "abc");
        let e = no_control("BILLINGBOOTH_API_KEY", "sk\nhidden")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("BILLINGBOOTH_API_KEY contains a control character"));
        assert!(!e.contains("hidden"));
        assert_eq!(end_of_line_trimmed("pw\r\n"), "pw");
        assert_eq!(end_of_line_trimmed("pw \n"), "pw ");
    }

    #[test]
    fn global_flags_go_after_the_command_too() {
        let a = Args::try_parse_from(["bbinvite", "status", "--ledger", "x.db", "--json"]).unwrap();
        assert!(a.global.json);
        let a = Args::try_parse_from(["bbinvite", "--json", "status"]).unwrap();
        assert!(a.global.json);
    }
}
