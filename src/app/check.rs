//! `validate` and `run --dry-run`: read and resolve every row and say what would
//! happen; nothing is sent and the ledger is only read.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::io::Write;
use std::num::NonZeroU32;
use std::sync::Arc;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api::types::NewAccessUser;
use crate::cli::InputArgs;
use crate::domain::{self, AdmitOptions, Decision};
use crate::input::{self, Field, Invitee, Reader, Record};
use crate::ledger::Ledger;
use crate::resolve::Resolver;
use crate::settings::Settings;

use super::Exit;
use super::preflight::ledger_folder;
use super::setup::{
    Reach, connect, offline_resolver, open_inputs, open_ledger, resolver, spawn_reader,
};

// ---------------------------------------------------------------------------------
// `validate` and `run --dry-run`: read and resolve, send nothing.

pub(crate) enum Check {
    Validate,
    DryRun { retry_rejected: bool },
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct CheckSummary {
    rows: u64,
    would_send: u64,
    already_done: u64,
    still_rejected: u64,
    invalid: u64,
    unresolved: u64,
    duplicate: u64,
    warnings: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Finding<'a> {
    file: &'a str,
    line: u64,
    severity: &'static str,
    column: Option<&'a str>,
    value: &'a str,
    message: String,
}

pub(crate) async fn check_files(
    global: &Settings,
    a: &InputArgs,
    mode: Check,
    rate: NonZeroU32,
    stop: CancellationToken,
) -> anyhow::Result<Exit> {
    let readers = open_inputs(a)?;
    let path = global.ledger.clone();
    ledger_folder(&path)?;
    // Only the directory and references need the API. Without credentials, a fresh
    // copy of the directory in the ledger is enough to check names; with no ledger
    // there is no copy, and none is created just to find that out.
    let endpoint = match global.endpoint() {
        Err(no_api) if !path.exists() => return Err(no_api),
        other => other,
    };
    let mut ledger = open_ledger(&path)?;
    let resolver = match endpoint {
        Ok(endpoint) => {
            let api = connect(endpoint, Reach::reading(rate, stop.clone())).await?;
            resolver(&mut ledger, &api, a, &readers).await?
        }
        Err(no_api) => offline_resolver(global, &mut ledger, a, no_api)?,
    };
    check_rows(global, readers, resolver, &mut ledger, mode).await
}

/// Reads and resolves every row, says what is wrong with each and what would happen.
async fn check_rows(
    global: &Settings,
    readers: Vec<Reader>,
    resolver: Resolver,
    ledger: &mut Ledger,
    mode: Check,
) -> anyhow::Result<Exit> {
    let notes: Vec<Arc<input::Notes>> = readers.iter().map(Reader::notes).collect();
    let dry = matches!(mode, Check::DryRun { .. });
    let mut checker = Checker {
        resolver,
        ledger,
        dry,
        opts: AdmitOptions {
            retry_rejected: matches!(
                mode,
                Check::DryRun {
                    retry_rejected: true
                }
            ),
        },
        hasher: RandomState::new(),
        seen: HashSet::default(),
        summary: CheckSummary::default(),
    };
    let mut out = Findings {
        out: std::io::BufWriter::new(std::io::stdout().lock()),
        json: global.json,
        lines: !global.json && !global.quiet && (!dry || global.verbose),
        first: true,
    };
    if global.json {
        write!(out.out, "{{\"findings\":[")?;
    }
    // Reading and checking each row's text runs on the reader's thread; resolving and
    // duplicate detection here, so the two cores share the work.
    let mut batches = spawn_reader(readers, CancellationToken::new());
    while let Some(batch) = batches.recv().await {
        for record in batch? {
            checker.check(&record, &mut out).await?;
        }
    }
    let summary = checker.summary;
    print_check_summary(global, &mut out.out, dry, &summary, &notes)?;
    let no_rows = notes.iter().any(|n| n.no_rows());
    let problems = summary.invalid + summary.unresolved + summary.still_rejected > 0;
    Ok(Exit::of_problems(no_rows || problems))
}

/// The findings, written as they come: items of a JSON array, or one line each.
struct Findings<W: Write> {
    out: W,
    json: bool,
    /// One line a finding (not with `--json`, `-q`, or a dry run without `-v`).
    lines: bool,
    first: bool,
}

impl<W: Write> Findings<W> {
    fn emit(&mut self, f: Finding<'_>) -> std::io::Result<()> {
        if self.json {
            if !self.first {
                write!(self.out, ",")?;
            }
            self.first = false;
            serde_json::to_writer(&mut self.out, &f)?;
        } else if self.lines {
            let col = f
                .column
                .map(|c| format!(" column \"{c}\""))
                .unwrap_or_default();
            let val = if f.value.is_empty() {
                String::new()
            } else {
                format!(" value \"{}\"", f.value)
            };
            writeln!(
                self.out,
                "{}:{}: {}:{col}{val}: {}",
                f.file, f.line, f.severity, f.message
            )?;
        }
        Ok(())
    }
}

/// One finding about `record`.
fn finding<'a>(
    record: &'a Record,
    severity: &'static str,
    column: Option<&'a str>,
    value: &'a str,
    message: String,
) -> Finding<'a> {
    Finding {
        file: &record.file,
        line: record.line,
        severity,
        column,
        value,
        message,
    }
}

/// What `validate` and a dry run keep while they read.
struct Checker<'l> {
    resolver: Resolver,
    ledger: &'l mut Ledger,
    dry: bool,
    opts: AdmitOptions,
    /// Duplicates within the input, by a keyed 64-bit hash of the key: 8 bytes a row,
    /// and for a million rows a false duplicate has odds of about 1 in 30 million.
    hasher: RandomState,
    seen: HashSet<u64, BuildHasherDefault<PassThrough>>,
    summary: CheckSummary,
}

impl Checker<'_> {
    /// Checks one record: its problems and warnings, its customer, a duplicate, and
    /// (dry run) what the ledger would decide.
    async fn check<W: Write>(
        &mut self,
        record: &Record,
        out: &mut Findings<W>,
    ) -> anyhow::Result<()> {
        self.summary.rows += 1;
        let who = match &record.parsed {
            Ok(who) => who,
            Err(problems) => {
                self.summary.invalid += 1;
                for p in problems {
                    let (column, value) = (p.column.as_deref(), p.value.as_str());
                    out.emit(finding(record, "invalid", column, value, p.message.clone()))?;
                }
                return Ok(());
            }
        };
        for w in &record.warnings {
            self.summary.warnings += 1;
            let (column, value) = (w.column.as_deref(), w.value.as_str());
            out.emit(finding(record, "warning", column, value, w.message.clone()))?;
        }
        let (column, value) = customer_cell(record, who, self.resolver.is_fixed());
        let resolved = match self.resolver.resolve(who).await {
            Ok(r) => r,
            Err(u) => {
                self.summary.unresolved += 1;
                out.emit(finding(record, "unresolved", column, value, u.to_string()))?;
                return Ok(());
            }
        };
        if let Some(warning) = crate::resolve::inactive_warning(&resolved) {
            self.summary.warnings += 1;
            out.emit(finding(record, "warning", column, value, warning))?;
        }
        let key = domain::email_key(&who.email);
        if !self.seen.insert(self.hasher.hash_one((resolved.id, &key))) {
            self.summary.duplicate += 1;
            let column = record.columns.name_of(Field::Email);
            let message = "the same customer and e-mail appear earlier in this input";
            out.emit(finding(
                record,
                "duplicate",
                column,
                &who.email,
                message.into(),
            ))?;
            return Ok(());
        }
        if !self.dry {
            self.summary.would_send += 1;
            return Ok(());
        }
        let user = NewAccessUser {
            email: who.email.clone(),
            name: who.name.clone(),
            id: who.user_id,
            status: who.status,
        };
        let existing = self.ledger.peek(resolved.id, &who.email)?;
        match domain::decide(existing.as_ref(), &user, self.opts) {
            Decision::Send { .. } => self.summary.would_send += 1,
            Decision::Done(_) => self.summary.already_done += 1,
            Decision::StillRejected => self.summary.still_rejected += 1,
        }
        Ok(())
    }
}

/// The end of the findings: the notes and the counts, as JSON or a few lines.
fn print_check_summary(
    global: &Settings,
    out: &mut impl Write,
    dry: bool,
    summary: &CheckSummary,
    notes: &[Arc<input::Notes>],
) -> anyhow::Result<()> {
    let notes_said: Vec<String> = notes.iter().flat_map(|n| n.lines()).collect();
    if global.json {
        write!(out, "],\"notes\":")?;
        serde_json::to_writer(&mut *out, &notes_said)?;
        write!(out, ",\"summary\":")?;
        serde_json::to_writer(&mut *out, summary)?;
        writeln!(out, "}}")?;
    } else if !global.quiet {
        let verb = if dry { "dry run" } else { "validate" };
        writeln!(
            out,
            "bbinvite {verb}: {} rows: {} would be sent, {} invalid, {} unresolved, {} duplicate, {} warnings",
            summary.rows,
            summary.would_send,
            summary.invalid,
            summary.unresolved,
            summary.duplicate,
            summary.warnings
        )?;
        if dry {
            writeln!(
                out,
                "  already invited or existing: {}, rejected before and unchanged: {}",
                summary.already_done, summary.still_rejected
            )?;
        }
        for note in &notes_said {
            writeln!(out, "Note: {note}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The column and value a row's customer is taken from, in the order the resolver
/// tries them: `--customer` (no column), the id, a reference, the name.
fn customer_cell<'a>(
    record: &'a Record,
    who: &'a Invitee,
    fixed: bool,
) -> (Option<&'a str>, &'a str) {
    let cell = |field: Field, value: &'a str| (record.columns.name_of(field), value);
    if fixed {
        (None, "")
    } else if who.customer_id.is_some() {
        cell(
            Field::CustomerId,
            record.get(Field::CustomerId).unwrap_or("").trim(),
        )
    } else if let Some(reference) = who
        .customer_reference
        .as_deref()
        .filter(|r| !r.trim().is_empty())
    {
        cell(Field::CustomerReference, reference)
    } else {
        cell(Field::Customer, who.customer.as_deref().unwrap_or(""))
    }
}

/// A hasher for keys that are already uniformly random hashes: it passes them through.
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}
