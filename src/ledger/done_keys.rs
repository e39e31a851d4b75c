//! The keys already done, in memory for one run: a rerun of a sheet the ledger has seen
//! asks SQL nothing for a row whose invitation is done and whose cells did not change.
//!
//! Loaded once, at a run's first admitted batch, in one pass over `invitations`: per
//! done key, a 64-bit hash of (customer id, e-mail key), the invitation's id and state,
//! and the hash of the cells last recorded for it: 24 bytes a key, plus a 4-byte bucket
//! start per four keys (about 25 MB for a million keys). A probe is a bucket lookup.
//!
//! A row is taken as done only when both its key's hash and its cells' hash match an
//! entry: a row of another key would need two independent 64-bit hashes to collide at
//! once. Two keys of the ledger whose key hashes collide are left out, so their rows
//! are looked up in SQL, as is every row that misses here.

use std::hash::{DefaultHasher, Hash, Hasher};

use rusqlite::Connection;

use crate::domain::State;

/// One done key, in 24 bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: u64,
    /// The invitation's id; negated when its state is `exists` rather than `invited`.
    signed_id: i64,
    cells: i64,
}

/// What the ledger held, at the run's start, for the keys that were done.
#[derive(Debug, Default)]
pub(super) struct DoneKeys {
    /// Sorted by `key`; no two share a key.
    entries: Vec<Entry>,
    /// `entries[starts[b]..starts[b + 1]]` hold the keys whose top `bits` bits are `b`.
    starts: Vec<u32>,
    bits: u32,
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
        entries.sort_unstable_by_key(|e| e.key);
        // Keys whose hashes collide are dropped, all of them: SQL tells them apart.
        // In place, so the keys are held once.
        let (mut i, mut kept) = (0, 0);
        while i < entries.len() {
            let mut j = i + 1;
            while j < entries.len() && entries[j].key == entries[i].key {
                j += 1;
            }
            if j == i + 1 {
                entries[kept] = entries[i];
                kept += 1;
            }
            i = j;
        }
        entries.truncate(kept);
        let kept = entries;
        // About four keys a bucket: the starts cost a byte a key, a probe reads one line.
        let bits = (kept.len().max(8).next_power_of_two().trailing_zeros() - 2).clamp(1, 22);
        let buckets = 1usize << bits;
        let mut starts = vec![0u32; buckets + 1];
        for e in &kept {
            starts[bucket(e.key, bits) + 1] += 1;
        }
        for b in 0..buckets {
            starts[b + 1] += starts[b];
        }
        DoneKeys {
            entries: kept,
            starts,
            bits,
        }
    }

    /// The done key with this key hash and cells hash, if there is exactly one.
    pub(super) fn find(&self, key: u64, cells: i64) -> Option<Hit> {
        if self.entries.is_empty() {
            return None;
        }
        let b = bucket(key, self.bits);
        let (from, to) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        self.entries[from..to]
            .iter()
            .find(|e| e.key == key && e.cells == cells)
            .map(|e| Hit {
                id: e.signed_id.abs(),
                state: if e.signed_id < 0 {
                    State::Exists
                } else {
                    State::Invited
                },
            })
    }

    /// Done keys held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

fn bucket(key: u64, bits: u32) -> usize {
    (key >> (64 - bits)) as usize
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

    #[test]
    fn an_empty_ledger_finds_nothing() {
        let done = DoneKeys::from_entries(Vec::new());
        assert_eq!(done.find(0, 0), None);
        assert_eq!(done.find(u64::MAX, 0), None);
    }
}
