//! `compact`: retention. Locks the ledger like a run (a busy ledger exits 4), drops
//! the row records and attempts of runs older than `--older-than` days, and reports
//! what it removed and how the file shrank. The SQL lives in the ledger.

use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use crate::cli::CompactArgs;
use crate::ledger::Compacted;
use crate::settings::Settings;

use super::Exit;
use super::setup::open_ledger;

/// `compact --json` (docs/json.md): the ledger, then what was removed.
#[derive(Serialize)]
struct CompactReport<'a> {
    ledger: String,
    #[serde(flatten)]
    done: &'a Compacted,
}

/// Seconds in a day, for `--older-than`.
const DAY: u64 = 24 * 60 * 60;

pub(crate) fn compact(global: &Settings, a: CompactArgs) -> anyhow::Result<Exit> {
    let path = &global.ledger;
    if !path.is_file() {
        anyhow::bail!(
            "no ledger at {}; nothing to compact (name one with --ledger)",
            path.display()
        );
    }
    let mut ledger = open_ledger(path)?;
    let done = ledger.compact(Duration::from_secs(u64::from(a.older_than) * DAY))?;
    let mut out = std::io::stdout().lock();
    if global.json {
        let report = CompactReport {
            ledger: path.display().to_string(),
            done: &done,
        };
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(Exit::Ok);
    }
    if !global.quiet {
        writeln!(
            out,
            "Compacted {}: {} row records and {} attempts of runs started before {} removed; {:.1} MB → {:.1} MB; row records kept from {}",
            path.display(),
            done.rows_removed,
            done.attempts_removed,
            done.older_than,
            done.bytes_before as f64 / 1e6,
            done.bytes_after as f64 / 1e6,
            done.oldest_kept_run
                .map_or_else(|| "no run".to_string(), |r| format!("run {r}"))
        )?;
    }
    Ok(Exit::Ok)
}
