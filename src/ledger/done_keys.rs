//! The keys already done, in memory for one run: a rerun of a sheet the ledger has seen
//! asks SQL nothing for a row whose invitation is done and whose cells did not change.
//!
//! Loaded once, at a run's first admitted batch, in one pass over `invitations` (for a
//! big ledger, two at once, each over half the ids, on two connections): per done key, a 64-bit hash of (customer id, e-mail key), the invitation's id and state,
//! and the hash of the cells last recorded for it: 24 bytes a key, in the order of the
//! invitations' ids, plus an open-addressed index of 4-byte positions by key hash (about
//! 32 MB for a million keys). A sheet read again in the order it was first read finds
//! each key right after the one before, so a probe reads memory in order; any other key
//! is found through the index.
//!
//! A row is taken as done only when both its key's hash and its cells' hash match an
//! entry: a row of another key would need two independent 64-bit hashes to collide at
//! once. Two keys of the ledger whose key hashes collide are left out, so their rows
//! are looked up in SQL, as is every row that misses here.

use std::cell::Cell;
use std::collections::HashSet;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::domain::State;

/// One done key, in 24 bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: u64,
    /// The invitation's id; negated when its state is `exists` rather than `invited`;
    /// [`DROPPED`] when another entry's key hash is the same (left to SQL).
    signed_id: i64,
    cells: i64,
}

/// The `signed_id` of an entry whose key hash another entry shares: no id is negated
/// to it.
const DROPPED: i64 = i64::MIN;

/// What the ledger held, at the run's start, for the keys that were done.
#[derive(Debug, Default)]
pub(super) struct DoneKeys {
    /// In the order of the invitations' ids.
    entries: Vec<Entry>,
    /// Open addressing by the key hash's top `bits` bits: 1 + a position in `entries`,
    /// 0 for an empty slot. At most three quarters full.
    slots: Vec<u32>,
    bits: u32,
    /// The position after the last key found: where the next row's key usually is.
    next: Cell<usize>,
}

/// A done key found in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hit {
    pub id: i64,
    pub state: State,
}

/// The hash of a key: its customer and its lower-cased, trimmed e-mail, eight bytes at
/// a time, each word mixed in full (the finaliser of MurmurHash3). Not the FNV of the
/// cells, so the two hashes a hit needs are independent. Only ever compared within one
/// process: it is never stored.
pub(super) fn key_hash(customer_id: i64, email_key: &str) -> u64 {
    let mut h = mix(customer_id as u64 ^ 0x9E37_79B9_7F4A_7C15);
    let bytes = email_key.as_bytes();
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    // The length tells apart keys that differ only by trailing zero bytes.
    mix(mix(h ^ u64::from_le_bytes(tail)) ^ bytes.len() as u64)
}

/// Every bit of the result depends on every bit of `x`.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

/// Below this many invitations the keys are read on one connection alone.
const SPLIT_LOAD: i64 = 100_000;

/// Calls `take` with each done key whose invitation id is in `from..=to`, in the order
/// of their ids, until it returns false; false if it did.
fn each_done(
    c: &Connection,
    (from, to): (i64, i64),
    mut take: impl FnMut(Entry) -> bool,
) -> rusqlite::Result<bool> {
    // The table itself, in id order: nearly every invitation of a ledger run again is
    // done, and the state index would cost a look-up in the table for each.
    let mut stmt = c.prepare(
        "SELECT customer_id, email_key, id, cells_hash, state = 'exists'
         FROM invitations NOT INDEXED
         WHERE id BETWEEN ?1 AND ?2 AND state IN ('invited', 'exists') AND cells_hash IS NOT NULL",
    )?;
    let mut rows = stmt.query([from, to])?;
    while let Some(r) = rows.next()? {
        let email_key = match r.get_ref(1)? {
            rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t).unwrap_or_default(),
            _ => continue,
        };
        let id: i64 = r.get(2)?;
        let entry = Entry {
            key: key_hash(r.get(0)?, email_key),
            signed_id: if r.get(4)? { -id } else { id },
            cells: r.get(3)?,
        };
        if !take(entry) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// At least as many as the done keys with ids in `from..=to`: the span of the ids there,
/// from the two ends of the table's own index (no index counts invitations by state).
fn count_done(c: &Connection, (from, to): (i64, i64)) -> rusqlite::Result<usize> {
    c.query_row(
        "SELECT min(id), max(id) FROM invitations WHERE id BETWEEN ?1 AND ?2",
        [from, to],
        |r| {
            let (low, high): (Option<i64>, Option<i64>) = (r.get(0)?, r.get(1)?);
            Ok(match (low, high) {
                (Some(low), Some(high)) => high.saturating_sub(low).saturating_add(1),
                _ => 0,
            })
        },
    )
    .map(|n| n.max(0) as usize)
}

/// Fills `out` from the front with the done keys of `ids`; how many, or `None` when
/// there were more than it holds.
fn fill(c: &Connection, ids: (i64, i64), out: &mut [Entry]) -> rusqlite::Result<Option<usize>> {
    let mut n = 0;
    let all = each_done(c, ids, |e| match out.get_mut(n) {
        Some(slot) => {
            *slot = e;
            n += 1;
            true
        }
        None => false,
    })?;
    Ok(all.then_some(n))
}

/// Every done key of `ids` read on one connection.
fn load_ids(c: &Connection, ids: (i64, i64)) -> rusqlite::Result<Vec<Entry>> {
    let mut entries = Vec::with_capacity(count_done(c, ids)?);
    each_done(c, ids, |e| {
        entries.push(e);
        true
    })?;
    Ok(entries)
}

/// A second, read-only connection to the ledger `c` is open on, for loading half the
/// keys; `None` for a ledger in memory or when it cannot be opened.
fn second_connection(c: &Connection) -> Option<Connection> {
    let path = c.path().filter(|p| !p.is_empty())?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let other = Connection::open_with_flags(path, flags).ok()?;
    other.busy_timeout(Duration::from_secs(5)).ok()?;
    Some(other)
}

/// Every done key, the lower half of the ids read on `c` and the upper half at once on
/// `other` (each first counted, then read into its part of one array, so they take no
/// more memory than read on one); `None` when the halves do not add up (the thread
/// failed, or the counts and the rows disagree), to be read on one connection.
fn load_halves(
    c: &Connection,
    other: Connection,
    half: i64,
) -> rusqlite::Result<Option<Vec<Entry>>> {
    let (low, high) = ((i64::MIN, half), (half + 1, i64::MAX));
    let (low_n, counted) = std::thread::scope(|s| {
        let other = s.spawn(move || count_done(&other, high).map(|n| (other, n)));
        (count_done(c, low), other.join())
    });
    let Ok(counted) = counted else {
        return Ok(None);
    };
    let (other, high_n) = counted?;
    let low_n = low_n?;
    let mut entries = vec![
        Entry {
            key: 0,
            signed_id: DROPPED,
            cells: 0,
        };
        low_n + high_n
    ];
    let (lower, upper) = entries.split_at_mut(low_n);
    let (got_low, got_high) = std::thread::scope(|s| {
        let upper = s.spawn(move || fill(&other, high, upper));
        (fill(c, low, lower), upper.join())
    });
    let (Some(got_low), Ok(Ok(Some(got_high)))) = (got_low?, got_high) else {
        return Ok(None);
    };
    entries.copy_within(low_n..low_n + got_high, got_low);
    entries.truncate(got_low + got_high);
    Ok(Some(entries))
}

impl DoneKeys {
    /// Reads every done key whose cells hash is known. A key with no cells hash (kept
    /// before there was one) is left to SQL, which records its row once and sets it.
    ///
    /// Nothing else happens while they load (the first batch waits on them), so a big
    /// ledger is read in two halves by id at once, the upper one on a second, read-only
    /// connection of its own thread.
    pub(super) fn load(c: &Connection) -> rusqlite::Result<DoneKeys> {
        DoneKeys::load_split(c, SPLIT_LOAD)
    }

    /// [`DoneKeys::load`], in two halves from `split` invitations up.
    fn load_split(c: &Connection, split: i64) -> rusqlite::Result<DoneKeys> {
        let top: i64 = c.query_row("SELECT coalesce(max(id), 0) FROM invitations", [], |r| {
            r.get(0)
        })?;
        let halves = match (top >= split).then(|| second_connection(c)).flatten() {
            Some(other) => load_halves(c, other, top / 2)?,
            None => None,
        };
        let entries = match halves {
            Some(entries) => entries,
            None => load_ids(c, (i64::MIN, i64::MAX))?,
        };
        Ok(DoneKeys::from_entries(entries))
    }

    fn from_entries(mut entries: Vec<Entry>) -> DoneKeys {
        // Read from the table in id order, they come sorted already: this costs little.
        entries.sort_unstable_by_key(|e| e.signed_id.unsigned_abs());
        let bits = (entries.len() + entries.len() / 3 + 1)
            .max(8)
            .next_power_of_two()
            .trailing_zeros();
        let mut slots = vec![0u32; 1 << bits];
        for at in 0..entries.len() {
            let key = entries[at].key;
            let mut s = slot(key, bits);
            loop {
                match slots[s] {
                    0 => {
                        slots[s] = at as u32 + 1;
                        break;
                    }
                    p if entries[p as usize - 1].key == key => {
                        // Keys whose hashes collide are dropped, all of them: SQL tells
                        // them apart.
                        entries[p as usize - 1].signed_id = DROPPED;
                        entries[at].signed_id = DROPPED;
                        break;
                    }
                    _ => s = (s + 1) & (slots.len() - 1),
                }
            }
        }
        DoneKeys {
            entries,
            slots,
            bits,
            next: Cell::new(0),
        }
    }

    /// The done key with this key hash and cells hash, if there is exactly one.
    pub(super) fn find(&self, key: u64, cells: i64) -> Option<Hit> {
        let guess = self.next.get();
        let at = match self.entries.get(guess) {
            Some(e) if e.key == key => guess,
            _ => self.position(key)?,
        };
        self.next.set(at + 1);
        let e = self.entries[at];
        if e.signed_id == DROPPED || e.cells != cells {
            return None;
        }
        Some(Hit {
            id: e.signed_id.abs(),
            state: if e.signed_id < 0 {
                State::Exists
            } else {
                State::Invited
            },
        })
    }

    /// Where the index puts the entry of this key hash.
    fn position(&self, key: u64) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let mut s = slot(key, self.bits);
        loop {
            let at = (*self.slots.get(s)?).checked_sub(1)? as usize;
            if self.entries[at].key == key {
                return Some(at);
            }
            s = (s + 1) & (self.slots.len() - 1);
        }
    }

    /// Done keys held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.signed_id != DROPPED)
            .count()
    }
}

fn slot(key: u64, bits: u32) -> usize {
    (key >> (64 - bits)) as usize
}

/// Highest invitation id held as a bit: 16 MiB of bits at most.
const DENSE_IDS: i64 = 1 << 27;

/// The invitation ids one run's input has named so far: a bit per id up to the highest
/// named (a million ids in 128 KiB), and any id beyond [`DENSE_IDS`] in a hash set.
#[derive(Debug, Default)]
pub(super) struct IdSet {
    bits: Vec<u64>,
    sparse: HashSet<i64>,
}

impl IdSet {
    /// Adds `id`; true when it was not there yet.
    pub(super) fn insert(&mut self, id: i64) -> bool {
        if !(0..DENSE_IDS).contains(&id) {
            return self.sparse.insert(id);
        }
        let (word, bit) = ((id >> 6) as usize, 1u64 << (id & 63));
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let new = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        new
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(key: u64, id: i64, cells: i64) -> Entry {
        Entry {
            key,
            signed_id: id,
            cells,
        }
    }

    #[test]
    fn a_key_is_found_only_with_its_own_cells() {
        let keys: Vec<Entry> = (0..1000i64)
            .map(|i| entry(key_hash(i % 7, &format!("u{i}@x.io")), i, i * 31))
            .collect();
        let done = DoneKeys::from_entries(keys);
        assert_eq!(done.len(), 1000);
        for i in 0..1000i64 {
            let key = key_hash(i % 7, &format!("u{i}@x.io"));
            assert_eq!(done.find(key, i * 31).map(|h| h.id), Some(i));
            assert_eq!(done.find(key, i * 31 + 1), None, "changed cells");
        }
        assert_eq!(
            done.find(key_hash(8, "u1@x.io"), 31),
            None,
            "another customer"
        );
    }

    #[test]
    fn keys_whose_hashes_collide_are_left_to_sql() {
        let done = DoneKeys::from_entries(vec![entry(5, 1, 10), entry(5, 2, 10), entry(9, 3, 1)]);
        assert_eq!(done.find(5, 10), None);
        assert_eq!(done.find(9, 1).map(|h| h.id), Some(3));
        let exists = DoneKeys::from_entries(vec![entry(7, -4, 2)]);
        assert_eq!(
            exists.find(7, 2),
            Some(Hit {
                id: 4,
                state: State::Exists
            })
        );
        assert_eq!(done.len(), 1);
    }

    /// What `find` must answer: the one entry of that key, if no other shares its key,
    /// and only with its own cells.
    fn expected(entries: &[Entry], key: u64, cells: i64) -> Option<i64> {
        let same: Vec<&Entry> = entries.iter().filter(|e| e.key == key).collect();
        match same.as_slice() {
            [e] if e.cells == cells => Some(e.signed_id.abs()),
            _ => None,
        }
    }

    #[test]
    fn keys_are_found_alike_in_the_first_order_in_any_other_and_after_a_miss() {
        // Keys 0..300 in id order, three of them sharing a key hash, one `exists`.
        let mut entries: Vec<Entry> = (1..=300i64)
            .map(|i| entry(key_hash(i % 5, &format!("u{i}@x.io")), i, i * 7))
            .collect();
        entries[40].key = entries[41].key;
        entries[42].key = entries[41].key;
        entries[99].signed_id = -100;
        let mut reversed = entries.clone();
        reversed.reverse();
        let done = DoneKeys::from_entries(reversed);
        let forward: Vec<usize> = (0..300).collect();
        let backward: Vec<usize> = (0..300).rev().collect();
        let scattered: Vec<usize> = (0..300).map(|i| (i * 97) % 300).collect();
        for order in [forward, backward, scattered] {
            for at in order {
                let e = entries[at];
                assert_eq!(
                    done.find(e.key, e.cells).map(|h| h.id),
                    expected(&entries, e.key, e.cells),
                    "entry {at}"
                );
                assert_eq!(done.find(e.key, e.cells + 1), None, "changed cells");
                assert_eq!(done.find(e.key ^ 1, e.cells), None, "another key");
            }
        }
        assert_eq!(
            done.find(entries[99].key, 700).map(|h| h.state),
            Some(State::Exists)
        );
        assert_eq!(done.len(), 297);
    }

    #[test]
    fn an_id_set_tells_each_id_new_once_near_and_far() {
        let mut seen = IdSet::default();
        for id in [1, 64, 63, 0, 1_000_000, DENSE_IDS, i64::MAX, -5] {
            assert!(seen.insert(id), "{id} is new");
            assert!(!seen.insert(id), "{id} was seen");
        }
        assert!(seen.insert(2));
        assert!(seen.bits.len() <= 1_000_000 / 64 + 1);
    }

    /// Read in two halves on two connections, the keys are the ones read on one, in the
    /// same order: none lost or doubled at the seam, states and hashes kept.
    #[test]
    fn keys_read_in_two_halves_are_the_keys_read_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE invitations (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
                 email_key TEXT NOT NULL, state TEXT NOT NULL, cells_hash INTEGER);",
        )
        .unwrap();
        let states = ["invited", "exists", "pending", "failed", "invited"];
        for id in 1..=1001i64 {
            let hash = (id % 7 != 0).then_some(id * 1_000_003);
            c.execute(
                "INSERT INTO invitations VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    id,
                    id % 13,
                    format!("u{id}@x.io"),
                    states[id as usize % 5],
                    hash
                ],
            )
            .unwrap();
        }
        let whole = DoneKeys::load_split(&c, i64::MAX).unwrap();
        let halves = DoneKeys::load_split(&c, 10).unwrap();
        let view = |d: &DoneKeys| -> Vec<(u64, i64, i64)> {
            d.entries
                .iter()
                .map(|e| (e.key, e.signed_id, e.cells))
                .collect()
        };
        assert_eq!(view(&halves), view(&whole));
        let expected = (1..=1001i64)
            .filter(|id| id % 7 != 0 && matches!(id % 5, 0 | 1 | 4))
            .count();
        assert_eq!(whole.len(), expected);
        assert_eq!(
            halves.find(key_hash(996 % 13, "u996@x.io"), 996 * 1_000_003),
            Some(Hit {
                id: 996,
                state: State::Exists
            })
        );
    }

    #[test]
    fn key_hashes_tell_customers_and_addresses_apart() {
        let mut seen = HashSet::new();
        for customer in 0..50i64 {
            for i in 0..2000 {
                assert!(seen.insert(key_hash(customer, &format!("user{i}@bench.example"))));
            }
        }
        for (a, b) in [
            ("a", "a\0"),
            ("", "\0"),
            ("abcdefgh", "abcdefgh\0"),
            ("x", "y"),
        ] {
            assert_ne!(key_hash(1, a), key_hash(1, b), "{a:?} {b:?}");
        }
        assert_ne!(key_hash(1, "a@x.io"), key_hash(2, "a@x.io"));
    }

    #[test]
    fn an_empty_ledger_finds_nothing() {
        let done = DoneKeys::from_entries(Vec::new());
        assert_eq!(done.find(0, 0), None);
        assert_eq!(done.find(u64::MAX, 0), None);
    }
}
