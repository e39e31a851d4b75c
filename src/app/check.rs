//! `validate` and `run --dry-run`: read and resolve every row and say what would
//! happen; nothing is sent and the ledger is only read.

use super::*;
use crate::rate::Rate;

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
    global: &Global,
    a: &InputArgs,
    mode: Check,
    rate: Rate,
    stop: CancellationToken,
) -> anyhow::Result<Exit> {
    let readers = open_inputs(a)?;
    let path = ledger_path(global, a.sandbox);
    ledger_folder(&path)?;
    // Only the directory and references need the API. Without credentials, a fresh
    // copy of the directory in the ledger is enough to check names; with no ledger
    // there is no copy, and none is created just to find that out.
    let endpoint = match endpoint(global, a.sandbox) {
        Err(no_api) if !path.exists() => return Err(no_api),
        other => other,
    };
    let mut ledger = open_ledger(&path)?;
    let resolver = match endpoint {
        Ok(endpoint) => {
            let api = connect(endpoint, Reach::reading(rate, stop.clone())).await?;
            resolver(&mut ledger, &api, a, &readers).await?
        }
        Err(no_api) => offline_resolver(global, &mut ledger, a, no_api, stop)?,
    };
    check_rows(global, readers, resolver, &mut ledger, mode).await
}

/// Reads and resolves every row, says what is wrong with each and what would happen.
async fn check_rows(
    global: &Global,
    readers: Vec<Reader>,
    mut resolver: Resolver,
    ledger: &mut Ledger,
    mode: Check,
) -> anyhow::Result<Exit> {
    let notes: Vec<Arc<input::Notes>> = readers.iter().map(Reader::notes).collect();
    let dry = matches!(mode, Check::DryRun { .. });
    let opts = AdmitOptions {
        retry_rejected: matches!(
            mode,
            Check::DryRun {
                retry_rejected: true
            }
        ),
    };
    // Duplicates within the input, by a keyed 64-bit hash of the key: 8 bytes a row,
    // and for a million rows a false duplicate has odds of about 1 in 30 million.
    let hasher = RandomState::new();
    let mut seen: HashSet<u64, BuildHasherDefault<PassThrough>> = HashSet::default();
    let mut summary = CheckSummary::default();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let text = !global.json && !global.quiet;
    if global.json {
        write!(out, "{{\"findings\":[")?;
    }
    let mut first = true;
    let mut emit = |out: &mut dyn Write, f: Finding<'_>| -> std::io::Result<()> {
        if global.json {
            if !first {
                write!(out, ",")?;
            }
            first = false;
            serde_json::to_writer(&mut *out, &f)?;
        } else if text && (!dry || global.verbose > 0) {
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
                out,
                "{}:{}: {}:{col}{val}: {}",
                f.file, f.line, f.severity, f.message
            )?;
        }
        Ok(())
    };
    // Reading and checking each row's text runs on the reader's thread; resolving and
    // duplicate detection here, so the two cores share the work.
    let mut batches = spawn_reader(readers, CancellationToken::new());
    while let Some(batch) = batches.recv().await {
        for record in batch? {
            summary.rows += 1;
            let who = match &record.parsed {
                Ok(who) => who,
                Err(problems) => {
                    summary.invalid += 1;
                    for p in problems {
                        emit(
                            &mut out,
                            Finding {
                                file: &record.file,
                                line: record.line,
                                severity: "invalid",
                                column: p.column.as_deref(),
                                value: &p.value,
                                message: p.message.clone(),
                            },
                        )?;
                    }
                    continue;
                }
            };
            for w in &record.warnings {
                summary.warnings += 1;
                emit(
                    &mut out,
                    Finding {
                        file: &record.file,
                        line: record.line,
                        severity: "warning",
                        column: w.column.as_deref(),
                        value: &w.value,
                        message: w.message.clone(),
                    },
                )?;
            }
            let (customer_col, customer_val) = customer_cell(&record, who, resolver.is_fixed());
            let resolved = match resolver.resolve(who).await {
                Ok(r) => r,
                Err(u) => {
                    summary.unresolved += 1;
                    emit(
                        &mut out,
                        Finding {
                            file: &record.file,
                            line: record.line,
                            severity: "unresolved",
                            column: customer_col,
                            value: customer_val,
                            message: u.to_string(),
                        },
                    )?;
                    continue;
                }
            };
            if let Some(warning) = crate::resolve::inactive_warning(&resolved) {
                summary.warnings += 1;
                emit(
                    &mut out,
                    Finding {
                        file: &record.file,
                        line: record.line,
                        severity: "warning",
                        column: customer_col,
                        value: customer_val,
                        message: warning,
                    },
                )?;
            }
            let key = ledger::email_key(&who.email);
            let hash = hasher.hash_one((resolved.id, &key));
            if !seen.insert(hash) {
                summary.duplicate += 1;
                emit(
                    &mut out,
                    Finding {
                        file: &record.file,
                        line: record.line,
                        severity: "duplicate",
                        column: record.columns.name_of(Field::Email),
                        value: &who.email,
                        message: "the same customer and e-mail appear earlier in this input".into(),
                    },
                )?;
                continue;
            }
            if !dry {
                summary.would_send += 1;
                continue;
            }
            let user = NewAccessUser {
                email: who.email.clone(),
                name: who.name.clone(),
                id: who.user_id,
                status: who.status,
            };
            match ledger::decide(ledger.peek(resolved.id, &who.email)?.as_ref(), &user, opts) {
                Decision::Send { .. } => summary.would_send += 1,
                Decision::Done(_) => summary.already_done += 1,
                Decision::StillRejected => summary.still_rejected += 1,
            }
        }
    }
    let notes_said: Vec<String> = notes.iter().flat_map(|n| n.lines()).collect();
    let no_rows = notes.iter().any(|n| n.no_rows());
    if global.json {
        write!(out, "],\"notes\":")?;
        serde_json::to_writer(&mut out, &notes_said)?;
        write!(out, ",\"summary\":")?;
        serde_json::to_writer(&mut out, &summary)?;
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
    } else {
        let attention = summary.invalid + summary.unresolved + summary.duplicate;
        if attention > 0 {
            eprintln!(
                "bbinvite: {attention} rows need attention ({} invalid, {} unresolved, {} duplicate); run the same command without -q to list them",
                summary.invalid, summary.unresolved, summary.duplicate
            );
        }
    }
    out.flush()?;
    Ok(
        if no_rows || summary.invalid + summary.unresolved + summary.still_rejected > 0 {
            Exit::Problems
        } else {
            Exit::Ok
        },
    )
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
