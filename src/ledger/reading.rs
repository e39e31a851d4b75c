//! How far a run read its input: the command that continues a run stopped before its
//! last row, kept from the run's start until it has read every row, and where its
//! reading stopped. `retry` asks for the latest such run so it never calls a partly
//! read file done.

use rusqlite::{OptionalExtension, params};

use super::{Ledger, Result, RunId};

/// A `run` that did not read its input to the end, and no later run read those files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadInput {
    pub run: RunId,
    /// The command that reads the rest of it (rows done are skipped).
    pub continue_with: String,
    /// Where its reading stopped, when the run lived to say so.
    pub stopped_reading: Option<String>,
}

impl Ledger {
    /// Notes, as run `run` begins, the command that continues it until it has read all
    /// of its input ([`Ledger::input_read`]).
    pub fn expect_input(&mut self, run: RunId, continue_with: &str) -> Result<()> {
        self.write(|c| {
            c.execute(
                "UPDATE runs SET continue_with = ?2 WHERE id = ?1",
                params![run, continue_with],
            )
            .map(|_| ())
        })
    }

    /// Notes how run `run`'s reading ended: `None` when it read every row, or else where
    /// it stopped.
    pub fn input_read(&mut self, run: RunId, stopped: Option<&str>) -> Result<()> {
        self.write(|c| {
            let sql = match stopped {
                None => {
                    "UPDATE runs SET continue_with = NULL, stopped_reading = NULL WHERE id = ?1"
                }
                Some(_) => "UPDATE runs SET stopped_reading = ?2 WHERE id = ?1",
            };
            let mut stmt = c.prepare(sql)?;
            match stopped {
                None => stmt.execute([run]),
                Some(at) => stmt.execute(params![run, at]),
            }
            .map(|_| ())
        })
    }

    /// The latest `run` that stopped before the end of its input, unless a later run of
    /// the same files read them to the end.
    pub fn unread_input(&mut self) -> Result<Option<UnreadInput>> {
        self.sql(|c| {
            c.query_row(
                "SELECT r.id, r.continue_with, r.stopped_reading FROM runs r
                 WHERE r.command = 'run' AND r.continue_with IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM runs l
                                   WHERE l.command = 'run' AND l.id > r.id AND l.files = r.files
                                     AND l.finished_at IS NOT NULL AND l.continue_with IS NULL)
                 ORDER BY r.id DESC LIMIT 1",
                [],
                |r| {
                    Ok(UnreadInput {
                        run: r.get(0)?,
                        continue_with: r.get(1)?,
                        stopped_reading: r.get(2)?,
                    })
                },
            )
            .optional()
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn begin(ledger: &mut Ledger, files: &[&str]) -> RunId {
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        ledger
            .begin_run("run", "http://127.0.0.1:1", &files, false)
            .unwrap()
    }

    #[test]
    fn a_run_stopped_early_stays_unread_until_a_later_run_reads_its_files() {
        let mut ledger = Ledger::open_in_memory().unwrap();
        assert_eq!(ledger.unread_input().unwrap(), None);
        let first = begin(&mut ledger, &["big.csv"]);
        ledger.expect_input(first, "bbinvite run big.csv").unwrap();
        ledger.input_read(first, Some("read 10 rows")).unwrap();
        ledger.finish_run(first, "aborted: interrupted", 3).unwrap();
        let unread = ledger.unread_input().unwrap().unwrap();
        assert_eq!(unread.run, first);
        assert_eq!(unread.continue_with, "bbinvite run big.csv");
        assert_eq!(unread.stopped_reading.as_deref(), Some("read 10 rows"));

        // Another file read whole leaves big.csv unread.
        let other = begin(&mut ledger, &["other.csv"]);
        ledger
            .expect_input(other, "bbinvite run other.csv")
            .unwrap();
        ledger.input_read(other, None).unwrap();
        ledger.finish_run(other, "completed", 0).unwrap();
        assert_eq!(ledger.unread_input().unwrap().map(|u| u.run), Some(first));

        let again = begin(&mut ledger, &["big.csv"]);
        ledger.expect_input(again, "bbinvite run big.csv").unwrap();
        ledger.input_read(again, None).unwrap();
        ledger.finish_run(again, "completed", 0).unwrap();
        assert_eq!(ledger.unread_input().unwrap(), None);
    }
}
