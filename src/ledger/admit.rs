//! Admitting input rows: for each row of a batch, what the ledger knows of its key
//! decides whether it is sent, already done, a duplicate, or a problem, and whether it
//! is recorded at all.
//!
//! Writes follow what changed: a row whose invitation is done and whose cells hash to
//! what the ledger last recorded for its key is counted in `run_counts`, not copied
//! into `rows` (and handed to the results spool when one is open). Every other row is
//! recorded with its cells. SQL only; this module decides nothing about HTTP.

use std::collections::BTreeMap;
use std::hash::Hasher;

use rusqlite::{CachedStatement, Connection, OptionalExtension, params};

use super::done_keys::{DoneKeys, IdSet, key_hash};
use super::query::HAS_ROWS;
use super::spool::Counted;
use super::{EXISTING_COLUMNS, Ledger, NewRow, Result, now_text, write_in};
use crate::api::types::{AccessStatus, NewAccessUser};
use crate::domain::{
    Admission, AdmitOptions, Decision, Existing, Job, RowStatus, RunId, Verdict, decide, email_key,
};

/// The why of a row that names a key already named earlier in the same input.
const DUPLICATE: &str = "the same customer and e-mail appear earlier in this input";

/// A stable 64-bit hash of a row's cells (FNV-1a of their JSON array), stored as the
/// signed integer SQLite keeps.
pub fn cells_hash(cells: &str) -> i64 {
    let mut h = fnv::FnvHasher::default();
    h.write(cells.as_bytes());
    h.finish() as i64
}

/// The statements of one admitted batch, prepared once.
struct Stmts<'c> {
    insert_row: CachedStatement<'c>,
    find: CachedStatement<'c>,
    insert_inv: CachedStatement<'c>,
    refresh: CachedStatement<'c>,
    rehash: CachedStatement<'c>,
}

impl<'c> Stmts<'c> {
    fn prepare(c: &'c Connection) -> rusqlite::Result<Stmts<'c>> {
        Ok(Stmts {
            insert_row: c.prepare_cached(
                "INSERT INTO rows (run_id, source_id, line, cells, email, customer_id, invitation_id, status, error, updated_at, seen_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?,
            find: c.prepare_cached(&format!(
                "SELECT id, cells_hash, {EXISTING_COLUMNS} FROM invitations WHERE customer_id = ?1 AND email_key = ?2"
            ))?,
            insert_inv: c.prepare_cached(
                "INSERT INTO invitations (customer_id, email_key, email, name, user_id, access_status, state, created_at, updated_at, cells_hash)
                 VALUES (?1, ?8, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?7)
                 ON CONFLICT (customer_id, email_key) DO NOTHING",
            )?,
            refresh: c.prepare_cached(
                "UPDATE invitations SET email = ?2, name = ?3, user_id = ?4, access_status = ?5,
                        state = CASE WHEN state = 'rejected' THEN 'pending' ELSE state END,
                        updated_at = ?6, cells_hash = ?7
                 WHERE id = ?1",
            )?,
            rehash: c.prepare_cached("UPDATE invitations SET cells_hash = ?2 WHERE id = ?1")?,
        })
    }
}

/// What became of one row, before it is (or is not) recorded.
struct Placed {
    status: RowStatus,
    error: Option<String>,
    customer_id: Option<i64>,
    invitation: Option<i64>,
    job: Option<Job>,
    /// Done before, cells unchanged: counted, not recorded.
    counted_only: bool,
}

impl Placed {
    fn settled(status: RowStatus, error: Option<String>, customer_id: Option<i64>) -> Placed {
        Placed {
            status,
            error,
            customer_id,
            invitation: None,
            job: None,
            counted_only: false,
        }
    }
}

/// What one batch needs besides the connection.
struct Batch<'a> {
    conn: &'a Connection,
    run: RunId,
    /// The run before this one with rows: a problem row it recorded and this run sees
    /// again gives up its record.
    previous: Option<RunId>,
    opts: AdmitOptions,
    now: &'a str,
    seen: &'a mut IdSet,
    /// The keys done when the run started, to skip SQL for rows done and unchanged.
    done: &'a DoneKeys,
}

impl Ledger {
    /// Records a batch of input rows in one transaction and decides, for each that
    /// carries an invitation, whether it is sent, already done, or a duplicate of an
    /// earlier row of this run. Rows come back in the order given. A row already done
    /// whose cells did not change is counted, not recorded: its admission's `row_id`
    /// is 0.
    pub fn admit(
        &mut self,
        run: RunId,
        rows: &[NewRow],
        opts: AdmitOptions,
    ) -> Result<Vec<Admission>> {
        let now = now_text();
        if self.seen.0 != run {
            self.seen = (run, IdSet::default());
        }
        let mut seen = std::mem::take(&mut self.seen.1);
        if self.done.0 != run {
            let done = self.sql(|c| DoneKeys::load(c))?;
            self.done = (run, done);
        }
        let done = &self.done.1;
        let mut counted = Vec::new();
        let result = write_in(&mut self.conn, &self.path, |c| {
            let previous = c.query_row(
                &format!("SELECT max(id) FROM runs WHERE id < ?1 AND {HAS_ROWS}"),
                [run],
                |r| r.get(0),
            )?;
            let mut batch = Batch {
                conn: c,
                run,
                previous,
                opts,
                now: &now,
                seen: &mut seen,
                done,
            };
            admit_batch(c, &mut batch, rows, &mut counted)
        });
        self.seen.1 = seen;
        let admitted = result?;
        self.spool_counted(run, rows, &counted)?;
        Ok(admitted)
    }
}

/// Admits every row of a batch; `counted` gets the rows counted and not recorded.
fn admit_batch(
    c: &Connection,
    b: &mut Batch<'_>,
    rows: &[NewRow],
    counted: &mut Vec<Counted>,
) -> rusqlite::Result<Vec<Admission>> {
    let mut st = Stmts::prepare(c)?;
    let mut tally: BTreeMap<RowStatus, i64> = BTreeMap::new();
    let mut left: BTreeMap<RowStatus, i64> = BTreeMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let hash = cells_hash(&row.cells);
        let placed = place(&mut st, b, row, hash)?;
        if placed.counted_only {
            *tally.entry(placed.status).or_default() += 1;
            counted.push(Counted {
                index: i,
                status: placed.status,
                customer_id: placed.customer_id,
                invitation_id: placed.invitation,
            });
            out.push(Admission::Settled {
                row_id: 0,
                status: placed.status,
            });
            continue;
        }
        let seen = match placed.job {
            None if placed.status.is_problem() || placed.status == RowStatus::Duplicate => {
                let h = problem_hash(c, row, &placed)?;
                Some((h, supersede(c, b.previous, h, &mut left)?))
            }
            _ => None,
        };
        st.insert_row.execute(params![
            b.run,
            row.source,
            row.line as i64,
            row.cells,
            row.email,
            placed.customer_id,
            placed.invitation,
            placed.status.as_str(),
            placed.error,
            b.now,
            seen.map(|(h, _)| h)
        ])?;
        let row_id = c.last_insert_rowid();
        if let Some((_, Some(first))) = seen {
            c.prepare_cached("UPDATE rows SET first_seen_run = ?2 WHERE id = ?1")?
                .execute(params![row_id, first])?;
        }
        out.push(match placed.job {
            Some(job) => Admission::Send(Job { row_id, ..job }),
            None => Admission::Settled {
                row_id,
                status: placed.status,
            },
        });
    }
    add_counts(c, b.run, &tally)?;
    if let Some(previous) = b.previous {
        add_counts(c, previous, &left)?;
    }
    Ok(out)
}

/// The hash that finds the same problem row on another night: its file and columns,
/// line, cells, status and reason.
fn problem_hash(c: &Connection, row: &NewRow, placed: &Placed) -> rusqlite::Result<i64> {
    let (file, columns): (String, String) = c
        .prepare_cached("SELECT file, columns FROM sources WHERE id = ?1")?
        .query_row([row.source], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_default();
    let mut h = fnv::FnvHasher::default();
    let error = placed.error.as_deref().unwrap_or_default();
    for part in [
        file.as_str(),
        &columns,
        &row.line.to_string(),
        &row.cells,
        placed.status.as_str(),
        error,
    ] {
        h.write(part.as_bytes());
        h.write_u8(0);
    }
    Ok(h.finish() as i64)
}

/// Removes the record of the same problem row in the previous run, if it has one that
/// no action points at; its status is counted in `left` for that run. Returns the first
/// run of the series that record stood for, which the new record carries on
/// (`rows.first_seen_run`, so `export --run N` of every night of it still lists it).
fn supersede(
    c: &Connection,
    previous: Option<RunId>,
    hash: i64,
    left: &mut BTreeMap<RowStatus, i64>,
) -> rusqlite::Result<Option<RunId>> {
    let Some(previous) = previous else {
        return Ok(None);
    };
    let found: Option<(i64, String, RunId)> = c
        .prepare_cached(
            "SELECT id, status, COALESCE(first_seen_run, run_id) FROM rows
             WHERE seen_hash = ?1 AND run_id = ?2
             AND NOT EXISTS (SELECT 1 FROM actions WHERE actions.row_id = rows.id) LIMIT 1",
        )?
        .query_row(params![hash, previous], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((id, status, first)) = found else {
        return Ok(None);
    };
    c.prepare_cached("DELETE FROM rows WHERE id = ?1")?
        .execute([id])?;
    if let Some(status) = RowStatus::parse(&status) {
        *left.entry(status).or_default() += 1;
    }
    Ok(Some(first))
}

/// Adds rows counted and not recorded to the run's counts.
pub(super) fn add_counts(
    c: &Connection,
    run: RunId,
    tally: &BTreeMap<RowStatus, i64>,
) -> rusqlite::Result<()> {
    let mut add = c.prepare_cached(
        "INSERT INTO run_counts (run_id, status, n) VALUES (?1, ?2, ?3)
         ON CONFLICT (run_id, status) DO UPDATE SET n = n + excluded.n",
    )?;
    for (status, n) in tally {
        add.execute(params![run, status.as_str(), n])?;
    }
    Ok(())
}

/// Decides one row: its status, and the invitation to send if there is one.
fn place(
    st: &mut Stmts<'_>,
    b: &mut Batch<'_>,
    row: &NewRow,
    hash: i64,
) -> rusqlite::Result<Placed> {
    let (customer_id, user) = match &row.verdict {
        Verdict::Invalid(reason) => {
            return Ok(Placed::settled(
                RowStatus::Invalid,
                Some(reason.clone()),
                None,
            ));
        }
        Verdict::Unresolved {
            customer_id,
            reason,
        } => {
            return Ok(Placed::settled(
                RowStatus::Unresolved,
                Some(reason.clone()),
                *customer_id,
            ));
        }
        Verdict::Invite { customer_id, user } => (*customer_id, user),
    };
    let key = email_key(&user.email);
    if let Some(hit) = b.done.find(key_hash(customer_id, &key), hash)
        && b.seen.insert(hit.id)
    {
        let mut placed = Placed::settled(RowStatus::from_state(hit.state), None, Some(customer_id));
        placed.invitation = Some(hit.id);
        placed.counted_only = true;
        return Ok(placed);
    }
    // A new key (every key of a first run) is inserted without being looked up first;
    // a key the ledger holds already leaves the insert without effect, and is read.
    let inserted = with_user(
        &mut st.insert_inv,
        customer_id,
        user,
        (b.now, hash),
        Some(&key),
    )?;
    if inserted == 1 {
        let id = b.conn.last_insert_rowid();
        b.seen.insert(id);
        return Ok(to_send(customer_id, id, user, false));
    }
    let (id, known_hash, existing) = st.find.query_row(params![customer_id, key], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<i64>>(1)?,
            existing_for_admit(r, 2)?,
        ))
    })?;
    let known = Known {
        id,
        hash: known_hash,
        existing,
    };
    place_known(st, b, customer_id, user, known, hash)
}

/// Runs `stmt` (inserting or refreshing an invitation) with `first` (the customer, or
/// the invitation), the user's fields, the time and cells hash, and the key when given.
fn with_user(
    stmt: &mut CachedStatement<'_>,
    first: i64,
    user: &NewAccessUser,
    (now, hash): (&str, i64),
    key: Option<&str>,
) -> rusqlite::Result<usize> {
    let status = user.status.map(AccessStatus::as_str);
    let (email, name, id) = (&user.email, &user.name, user.id);
    match key {
        Some(key) => stmt.execute(params![first, email, name, id, status, now, hash, key]),
        None => stmt.execute(params![first, email, name, id, status, now, hash]),
    }
}

/// What the ledger holds of a row's key.
struct Known {
    id: i64,
    /// The hash of the cells last recorded for the key.
    hash: Option<i64>,
    existing: Existing,
}

/// Decides a row whose key the ledger knows: a duplicate within this input, done
/// (counted only when its cells did not change), still rejected, or to send again.
fn place_known(
    st: &mut Stmts<'_>,
    b: &mut Batch<'_>,
    customer_id: i64,
    user: &NewAccessUser,
    known: Known,
    hash: i64,
) -> rusqlite::Result<Placed> {
    let id = known.id;
    let mut placed = Placed::settled(RowStatus::Duplicate, None, Some(customer_id));
    placed.invitation = Some(id);
    if !b.seen.insert(id) {
        placed.error = Some(DUPLICATE.to_string());
        return Ok(placed);
    }
    match decide(Some(&known.existing), user, b.opts) {
        Decision::Done(state) => {
            placed.status = RowStatus::from_state(state);
            placed.counted_only = known.hash == Some(hash);
            if !placed.counted_only {
                st.rehash.execute(params![id, hash])?;
            }
        }
        Decision::StillRejected => {
            let why = known.existing.last_error.as_deref();
            placed.status = RowStatus::Rejected;
            placed.error = Some(format!(
                "{} (unchanged since; fix the row or use --retry-rejected)",
                why.unwrap_or("rejected earlier")
            ));
        }
        Decision::Send { check_first } => {
            with_user(&mut st.refresh, id, user, (b.now, hash), None)?;
            return Ok(to_send(customer_id, id, user, check_first));
        }
    }
    Ok(placed)
}

/// A row to send: pending, with its job.
fn to_send(
    customer_id: i64,
    invitation_id: i64,
    user: &NewAccessUser,
    check_first: bool,
) -> Placed {
    Placed {
        status: RowStatus::Pending,
        error: None,
        customer_id: Some(customer_id),
        invitation: Some(invitation_id),
        job: Some(Job {
            invitation_id,
            row_id: 0,
            customer_id,
            user: user.clone(),
            check_first,
            origin: String::new(),
        }),
        counted_only: false,
    }
}

/// [`Existing`] read from [`EXISTING_COLUMNS`] at `at`, for admitting: only a rejected
/// key's data is compared, so the rest of a rerun (most rows) reads no text at all.
fn existing_for_admit(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Existing> {
    let state = super::read_state(r, at)?;
    if state == super::State::Rejected {
        return Existing::read(r, at);
    }
    Ok(Existing {
        state,
        email: String::new(),
        name: String::new(),
        user_id: None,
        access_status: None,
        unsure: r.get(at + 5)?,
        last_error: None,
    })
}
