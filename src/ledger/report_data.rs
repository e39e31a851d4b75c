//! Read-only questions for what people read after a run: the figures a webhook and a
//! metrics file carry, and the raw material of the HTML report (outcomes per customer,
//! every attempt's time, latency and class, the top errors, the rows needing
//! attention). Nothing here writes, and nothing here draws: bucketing and charts belong
//! to `report`.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::query::seen_rows;
use super::{Error, Ledger, PROBLEM_ROW, ROW_STATUS, Result, RunId};

/// The page cache of a read-only ledger, in KiB.
const READ_CACHE_KIB: i64 = 64 * 1024;
/// How much of a read-only ledger is memory-mapped.
const READ_MMAP_BYTES: i64 = 1 << 30;

/// The statuses of a row whose invitation ended done.
const DONE_SQL: &str = "('invited', 'exists')";

/// The invitations run `?1` asked for, in order (repeated for each of their attempts).
const ASKED: &str = "SELECT invitation_id FROM attempts WHERE run_id = ?1 ORDER BY invitation_id";

/// What a run did beyond its row counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTallies {
    /// Rows that ended invited or exists after a request of this run (created or
    /// confirmed), plus the sync actions it carried out.
    pub sent: u64,
    /// Rows that ended invited or exists with no request of this run: done before.
    pub already_done: u64,
}

/// What a run did ([`Ledger::run_account`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunAccount {
    pub tallies: RunTallies,
    /// Its rows that ended invited or exists after a request of this run, per status,
    /// and the sync actions it carried out, per kind.
    pub sent_outcomes: BTreeMap<String, u64>,
}

/// One customer's rows in a run, per status.
#[derive(Debug, Clone, Default)]
pub struct CustomerRows {
    /// `None` for rows that never found a customer.
    pub id: Option<i64>,
    /// The name in the ledger's copy of the directory, when known.
    pub name: Option<String>,
    pub statuses: BTreeMap<String, u64>,
    pub total: u64,
}

/// Called per row with its customer, status and invitation.
pub type RowVisitor<'a> = dyn FnMut(Option<i64>, &str, Option<i64>) + 'a;

/// One request of a run, as the attempt log holds it.
#[derive(Debug, Clone)]
pub struct AttemptPoint<'a> {
    /// The invitation or action the request was for; `action` tells which table.
    pub key: i64,
    pub action: bool,
    /// RFC 3339 UTC text with milliseconds.
    pub at: &'a str,
    pub latency_ms: i64,
    /// ok | 4xx | 5xx | 429 | timeout | transport | auth | decode
    pub class: &'a str,
}

/// A row that ended needing a person: where it is and what was wrong.
#[derive(Debug, Clone)]
pub struct AttentionRow {
    pub file: String,
    pub line: u64,
    pub status: String,
    pub email: Option<String>,
    pub error: Option<String>,
}

impl Ledger {
    /// Opens an existing ledger as [`Ledger::open_read_only`] does (no lock, no write, so
    /// a report can be made beside a run), tuned for reading most of it once.
    pub fn open_for_report(path: &Path) -> Result<Ledger> {
        let ledger = Ledger::open_read_only(path)?;
        // A report reads most of a big ledger once: a large cache, sorts in memory, and
        // the file mapped rather than read page by page.
        ledger
            .conn
            .execute_batch(&format!(
                "PRAGMA cache_size = -{READ_CACHE_KIB}; PRAGMA temp_store = MEMORY; PRAGMA mmap_size = {READ_MMAP_BYTES};"
            ))
            .map_err(|source| Error::Sql {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(ledger)
    }

    /// What run `run` did: what it sent and how many of its rows were done before it
    /// began (as `compact` kept them, for a compacted run), and what its requests did
    /// per outcome. One pass over the run's done rows gives both.
    pub fn run_account(&mut self, run: RunId) -> Result<RunAccount> {
        let kept = self.compacted_tallies(run)?;
        let (rows, counted, by_kind) = self.sql(|c| {
            let counted: i64 = c.query_row(
                &format!(
                    "SELECT coalesce(sum(n), 0) FROM run_counts WHERE run_id = ?1 AND status IN {DONE_SQL}"
                ),
                [run],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare_cached(
                "SELECT kind, count(*) FROM actions WHERE run_id = ?1 AND state = 'done' GROUP BY kind",
            )?;
            let by_kind = stmt
                .query_map([run], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((done_rows(c, run)?, counted, by_kind))
        })?;
        let actions: u64 = by_kind.iter().map(|(_, n)| (*n).max(0) as u64).sum();
        let tallies = kept.unwrap_or_else(|| RunTallies {
            sent: rows.values().map(|d| d.sent).sum::<u64>() + actions,
            already_done: rows.values().map(|d| d.before).sum::<u64>() + counted.max(0) as u64,
        });
        let mut sent_outcomes: BTreeMap<String, u64> = rows
            .into_iter()
            .filter(|(_, d)| d.sent > 0)
            .map(|(status, d)| (status, d.sent))
            .collect();
        for (kind, n) in by_kind {
            *sent_outcomes.entry(kind).or_insert(0) += n.max(0) as u64;
        }
        Ok(RunAccount {
            tallies,
            sent_outcomes,
        })
    }

    /// The tallies `compact` kept for run `run` when it removed the records they are
    /// counted from; `None` for a run not compacted.
    pub fn compacted_tallies(&mut self, run: RunId) -> Result<Option<RunTallies>> {
        let frozen: Option<(Option<i64>, Option<i64>)> = self.sql(|c| {
            c.query_row(
                "SELECT sent, already_done FROM runs WHERE id = ?1",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?;
        let Some((Some(sent), Some(done))) = frozen else {
            return Ok(None);
        };
        Ok(Some(RunTallies {
            sent: sent.max(0) as u64 + self.actions_done(run)?,
            already_done: done.max(0) as u64,
        }))
    }

    /// The sync actions run `run` carried out.
    pub fn actions_done(&mut self, run: RunId) -> Result<u64> {
        self.sql(|c| {
            c.query_row(
                "SELECT count(*) FROM actions WHERE run_id = ?1 AND state = 'done'",
                [run],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n.max(0) as u64)
    }

    /// Calls `each` with the customer, status and invitation of every row of a run, in
    /// one pass (a report tallies a million rows this way faster than SQL groups them).
    pub fn each_row(&mut self, run: RunId, each: &mut RowVisitor<'_>) -> Result<()> {
        self.sql(|c| {
            let mut stmt =
                c.prepare(&format!(
                    "SELECT r.customer_id, {ROW_STATUS}, r.invitation_id FROM rows r WHERE r.run_id = ?1"
                ))?;
            let mut q = stmt.query([run])?;
            while let Some(r) = q.next()? {
                each(
                    r.get(0)?,
                    r.get_ref(1)?.as_str().unwrap_or_default(),
                    r.get(2)?,
                );
            }
            Ok(())
        })
    }

    /// A customer's name in the copy of the directory a run used, when known.
    pub fn customer_name(&mut self, run: RunId, id: i64) -> Result<Option<String>> {
        self.sql(|c| {
            c.query_row(
                "SELECT c.name FROM customers c JOIN runs ON runs.base_url = c.base_url
                 WHERE runs.id = ?1 AND c.id = ?2",
                params![run, id],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Calls `each` for every request of a run (invitations' and sync actions'), in the
    /// order they were recorded.
    pub fn each_attempt(
        &mut self,
        run: RunId,
        each: &mut dyn FnMut(AttemptPoint<'_>),
    ) -> Result<()> {
        self.sql(|c| {
            for (table, key, action) in [
                ("attempts", "invitation_id", false),
                ("action_attempts", "action_id", true),
            ] {
                let mut stmt = c.prepare(&format!(
                    "SELECT {key}, at, latency_ms, class FROM {table} WHERE run_id = ?1 ORDER BY id"
                ))?;
                let mut q = stmt.query([run])?;
                while let Some(r) = q.next()? {
                    each(AttemptPoint {
                        key: r.get(0)?,
                        action,
                        at: r.get_ref(1)?.as_str().unwrap_or_default(),
                        latency_ms: r.get(2)?,
                        class: r.get_ref(3)?.as_str().unwrap_or_default(),
                    });
                }
            }
            Ok(())
        })
    }

    /// The `limit` most common errors of a run's problem rows, with their counts.
    pub fn run_errors(&mut self, run: RunId, limit: usize) -> Result<Vec<(String, String, u64)>> {
        self.sql(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT status, error, count(*) AS n FROM {}
                 WHERE {PROBLEM_ROW} AND error IS NOT NULL
                 GROUP BY status, error ORDER BY n DESC, error LIMIT ?2",
                seen_rows()
            ))?;
            stmt.query_map(params![run, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
            })?
            .collect()
        })
    }

    /// The first `limit` problem rows of a run, in input order, and how many there are.
    pub fn attention_rows(&mut self, run: RunId, limit: usize) -> Result<(Vec<AttentionRow>, u64)> {
        self.sql(|c| {
            let seen = seen_rows();
            let total: i64 = c.query_row(
                &format!("SELECT count(*) FROM {seen} WHERE {PROBLEM_ROW}"),
                [run],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare(&format!(
                "SELECT file, line, status, email, error FROM {seen}
                 WHERE {PROBLEM_ROW} ORDER BY src, line LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![run, limit as i64], |r| {
                    Ok(AttentionRow {
                        file: r.get(0)?,
                        line: r.get::<_, i64>(1)?.max(0) as u64,
                        status: r.get(2)?,
                        email: r.get(3)?,
                        error: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, total.max(0) as u64))
        })
    }
}

/// A run's recorded rows that ended done with one status: how many a request of the
/// run made so, and how many were done before it.
#[derive(Debug, Clone, Copy, Default)]
struct DoneRows {
    sent: u64,
    before: u64,
}

/// Run `run`'s recorded rows that ended done, per status: those whose invitation a
/// request of the run asked for (it has an attempt of the run), and the rest. One
/// range of `attempts_run` gives the invitations the run asked for, in order, without
/// reading a single attempt; one pass over the run's done rows looks each one up there.
fn done_rows(c: &Connection, run: RunId) -> rusqlite::Result<BTreeMap<String, DoneRows>> {
    let mut asked: Vec<i64> = c
        .prepare_cached(ASKED)?
        .query_map([run], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    asked.dedup();
    let mut stmt = c.prepare_cached(&format!(
        "SELECT status, invitation_id FROM rows WHERE run_id = ?1 AND status IN {DONE_SQL}"
    ))?;
    let mut q = stmt.query([run])?;
    let mut out: BTreeMap<String, DoneRows> = BTreeMap::new();
    while let Some(r) = q.next()? {
        let status = r.get_ref(0)?.as_str().unwrap_or_default();
        let sent = r
            .get::<_, Option<i64>>(1)?
            .is_some_and(|id| asked.binary_search(&id).is_ok());
        // Looked up by the borrowed name: a status is copied once, not once a row.
        if !out.contains_key(status) {
            out.insert(status.to_string(), DoneRows::default());
        }
        if let Some(tally) = out.get_mut(status) {
            if sent {
                tally.sent += 1;
            } else {
                tally.before += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::{AdmitOptions, Outcome, State, Verdict};
    use crate::ledger::NewRow;
    use crate::ledger::tests::{answered, ids, invite_row, jobs};

    /// Runs `rows` (e-mails, and whether the row's cells changed since the last night)
    /// and records each sent job's outcome as `answer` says.
    fn night(
        l: &mut Ledger,
        rows: &[(&str, bool)],
        answer: impl Fn(&str) -> (State, Option<&'static str>),
    ) -> RunId {
        let run = l.begin_run("run", "http://x", &[], false).unwrap();
        let src = l.add_source(run, "a.csv", &["email".into()]).unwrap();
        let mut batch: Vec<NewRow> = rows
            .iter()
            .zip(2..)
            .map(|((email, changed), line)| {
                let mut row = invite_row(src, line, 1, email);
                if *changed {
                    row.cells = format!("[\"{email}\",\"changed\"]");
                }
                row
            })
            .collect();
        batch.push(NewRow {
            source: src,
            line: 99,
            cells: "[\"nope\"]".into(),
            email: None,
            verdict: Verdict::Invalid("no @".into()),
        });
        let js = jobs(&l.admit(run, &batch, AdmitOptions::default()).unwrap());
        l.mark_sending(&ids(&js)).unwrap();
        let outcomes: Vec<Outcome> = js
            .iter()
            .map(|j| {
                let (state, action) = answer(&j.user.email);
                answered(j, state, action)
            })
            .collect();
        l.record(run, &outcomes).unwrap();
        run
    }

    #[test]
    fn a_run_counts_as_sent_only_the_done_rows_a_request_of_its_own_made_so() {
        let mut l = Ledger::open_in_memory().unwrap();
        let rows = [
            ("a@x.io", false),
            ("b@x.io", false),
            ("c@x.io", false),
            ("d@x.io", false),
        ];
        let run1 = night(&mut l, &rows, |email| match email {
            "a@x.io" => (State::Invited, Some("invite")),
            "b@x.io" => (State::Exists, Some("confirm")),
            "c@x.io" => (State::Failed, Some("invite")),
            // Recorded done with no request of the run: not sent by it.
            _ => (State::Invited, None),
        });
        // a: done and unchanged, counted only; b: done, its cells changed, recorded
        // with no request of this run (its attempt is run 1's); c: sent again; e: new.
        let rows = [
            ("a@x.io", false),
            ("b@x.io", true),
            ("c@x.io", false),
            ("e@x.io", false),
        ];
        let run2 = night(&mut l, &rows, |_| (State::Invited, Some("invite")));

        let a1 = l.run_account(run1).unwrap();
        assert_eq!((a1.tallies.sent, a1.tallies.already_done), (2, 1));
        assert_eq!(
            a1.sent_outcomes,
            BTreeMap::from([("exists".into(), 1), ("invited".into(), 1)])
        );
        let a2 = l.run_account(run2).unwrap();
        assert_eq!((a2.tallies.sent, a2.tallies.already_done), (2, 2));
        assert_eq!(a2.sent_outcomes, BTreeMap::from([("invited".into(), 2)]));
    }

    #[test]
    fn the_invitations_a_run_asked_for_are_read_from_the_index_alone() {
        let l = Ledger::open_in_memory().unwrap();
        let plan: Vec<String> = l
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {ASKED}"))
            .unwrap()
            .query_map([1], |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            plan,
            ["SEARCH attempts USING COVERING INDEX attempts_run (run_id=?)"]
        );
    }

    #[test]
    fn an_empty_run_has_no_tallies_and_no_rows() {
        let mut ledger = Ledger::open_in_memory().unwrap();
        let run = ledger
            .begin_run("run", "http://127.0.0.1:1", &[], false)
            .unwrap();
        assert_eq!(ledger.run_account(run).unwrap(), RunAccount::default());
        let mut rows = 0;
        ledger.each_row(run, &mut |_, _, _| rows += 1).unwrap();
        assert_eq!(rows, 0);
        assert_eq!(ledger.attention_rows(run, 10).unwrap().1, 0);
        let mut n = 0;
        ledger.each_attempt(run, &mut |_| n += 1).unwrap();
        assert_eq!(n, 0);
    }
}
