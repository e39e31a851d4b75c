//! The results spool: rows of the current run that were counted and not recorded
//! (already done, cells unchanged) kept in an unnamed temporary file, never in the
//! ledger, so that `--results` can still give back every row of the input with its
//! outcome. It exists only when asked for ([`Ledger::keep_counted_rows`]), lives as
//! long as the open ledger, and is read once, in input order, by the export of its run.
//! It knows nothing of SQL.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};

use super::{Error, Ledger, NewRow, Result};
use crate::domain::{RowStatus, RunId};

/// A row counted, not recorded: where it is in its batch, and what it became.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counted {
    pub index: usize,
    pub status: RowStatus,
    pub customer_id: Option<i64>,
    pub invitation_id: Option<i64>,
}

/// The spool of one run, being written.
pub(crate) struct Spool {
    run: RunId,
    out: csv::Writer<BufWriter<File>>,
}

/// One spooled row, read back.
#[derive(Debug, Clone)]
pub(crate) struct Spooled {
    pub source: i64,
    pub line: u64,
    pub status: String,
    pub customer_id: Option<i64>,
    pub invitation_id: Option<i64>,
    /// JSON array of the row's cells, as `rows.cells` holds them.
    pub cells: String,
}

/// The spool of a run, read back in the order it was written.
pub(crate) struct SpoolReader {
    records: csv::StringRecordsIntoIter<BufReader<File>>,
}

impl Iterator for SpoolReader {
    type Item = Result<Spooled>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = match self.records.next()? {
            Ok(r) => r,
            Err(e) => return Some(Err(Error::Spool(std::io::Error::other(e)))),
        };
        let field = |i: usize| record.get(i).unwrap_or_default();
        let number = |i: usize| field(i).parse::<i64>().ok();
        Some(Ok(Spooled {
            source: number(0).unwrap_or_default(),
            line: number(1).unwrap_or_default() as u64,
            status: field(2).to_string(),
            customer_id: number(3),
            invitation_id: number(4),
            cells: field(5).to_string(),
        }))
    }
}

impl Ledger {
    /// From now on, rows of `run` that are counted and not recorded are kept in a
    /// temporary file until the export of `run` reads them (the results sheet).
    pub fn keep_counted_rows(&mut self, run: RunId) -> Result<()> {
        let file = tempfile::tempfile().map_err(Error::Spool)?;
        let out = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(BufWriter::new(file));
        self.spool = Some(Spool { run, out });
        Ok(())
    }

    /// Writes the counted rows of a batch to the spool, when one is kept for `run`.
    pub(super) fn spool_counted(
        &mut self,
        run: RunId,
        rows: &[NewRow],
        counted: &[Counted],
    ) -> Result<()> {
        let Some(spool) = self.spool.as_mut().filter(|s| s.run == run) else {
            return Ok(());
        };
        for c in counted {
            let Some(row) = rows.get(c.index) else {
                continue;
            };
            let number = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
            spool
                .out
                .write_record([
                    row.source.to_string().as_str(),
                    row.line.to_string().as_str(),
                    c.status.as_str(),
                    number(c.customer_id).as_str(),
                    number(c.invitation_id).as_str(),
                    row.cells.as_str(),
                ])
                .map_err(|e| Error::Spool(std::io::Error::other(e)))?;
        }
        Ok(())
    }

    /// Takes the spool of `run` to read it back; `None` when none was kept for it.
    pub(super) fn take_spool(&mut self, run: RunId) -> Result<Option<SpoolReader>> {
        let Some(spool) = self.spool.take_if(|s| s.run == run) else {
            return Ok(None);
        };
        let mut out = spool
            .out
            .into_inner()
            .map_err(|e| Error::Spool(std::io::Error::other(e.to_string())))?;
        out.flush().map_err(Error::Spool)?;
        let mut file = out.into_inner().map_err(|e| Error::Spool(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(Error::Spool)?;
        let records = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(BufReader::new(file))
            .into_records();
        Ok(Some(SpoolReader { records }))
    }
}
