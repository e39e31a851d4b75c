//! The keys already done, in memory for one run: a rerun of a sheet the ledger has seen
//! asks SQL nothing for a row whose invitation is done and whose cells did not change.
//!
//! Loaded once, at a run's first admitted batch, in one pass over `invitations`: per
//! done key, a 64-bit hash of (customer id, e-mail key), the invitation's id and state,
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
use std::hash::{DefaultHasher, Hash, Hasher};

use rusqlite::Connection;

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

/// The hash of a key: its customer and its lower-cased, trimmed e-mail. Not the FNV of
/// the cells, so the two hashes a hit needs are independent.
pub(super) fn key_hash(customer_id: i64, email_key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    customer_id.hash(&mut h);
    email_key.hash(&mut h);
    h.finish()
}

impl DoneKeys {
    /// Reads every done key whose cells hash is known. A key with no cells hash (kept
    /// before there was one) is left to SQL, which records its row once and sets it.
    pub(super) fn load(c: &Connection) -> rusqlite::Result<DoneKeys> {
        let mut stmt = c.prepare(
            "SELECT customer_id, email_key, id, cells_hash, state = 'exists' FROM invitations
             WHERE state IN ('invited', 'exists') AND cells_hash IS NOT NULL",
        )?;
        let mut rows = stmt.query([])?;
        let done: i64 = c.query_row(
            "SELECT count(*) FROM invitations WHERE state IN ('invited', 'exists')",
            [],
            |r| r.get(0),
        )?;
        let mut entries = Vec::with_capacity(done.max(0) as usize);
        while let Some(r) = rows.next()? {
            let email_key = match r.get_ref(1)? {
                rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t).unwrap_or_default(),
                _ => continue,
            };
            let id: i64 = r.get(2)?;
            entries.push(Entry {
                key: key_hash(r.get(0)?, email_key),
                signed_id: if r.get(4)? { -id } else { id },
                cells: r.get(3)?,
            });
        }
        Ok(DoneKeys::from_entries(entries))
    }

    fn from_entries(mut entries: Vec<Entry>) -> DoneKeys {
        // Read from the state index, they come nearly in id order already.
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

    #[test]
    fn an_empty_ledger_finds_nothing() {
        let done = DoneKeys::from_entries(Vec::new());
        assert_eq!(done.find(0, 0), None);
        assert_eq!(done.find(u64::MAX, 0), None);
    }
}
