//! Checkpoints during a run: the WAL copied into the `.db` from a connection and thread
//! of their own, so the writer seldom stops to copy pages and fsync, and so the WAL
//! stays bounded and the `.db` alone holds what was committed a second ago.
//!
//! A busy writer never leaves a moment when the WAL is wholly copied, so copies that
//! never wait (PASSIVE) keep the `.db` fresh but never let the WAL start over: it would
//! grow until the disk is full. Past [`WAL_RESTART_BYTES`], a PASSIVE copy of what is
//! there is followed by a TRUNCATE checkpoint, which holds the writer back only until
//! the frames committed since are copied, then empties the WAL file, so the next commit
//! starts it afresh and its size on disk is what it holds. The writer, held back, tries
//! again every [`BUSY_POLL`] rather than on SQLite's own widening steps. Only SQL on its
//! own connection: this module knows nothing of runs or rows.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{BUSY_TIMEOUT, CHECKPOINT_PAGES, Ledger};

/// What a run committed is in the `.db` file within about this long (a PASSIVE copy,
/// which never waits on the writer).
const COPY_EVERY: Duration = Duration::from_secs(1);
/// How often the WAL's size is looked at: one `stat`.
const LOOK_EVERY: Duration = Duration::from_millis(20);
/// A WAL this big is copied in full and emptied, holding the writer back meanwhile.
const WAL_RESTART_BYTES: u64 = 16 * 1024 * 1024;
/// How long a checkpoint waits for the writer's transaction, or for a reader, before it
/// gives up until the next look; short, since the writer waits on it in turn.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(500);

/// How often a writer held back by a checkpoint tries again.
const BUSY_POLL: Duration = Duration::from_micros(250);

/// The checkpointing thread of a run. Dropping it stops the thread.
pub struct Checkpointer {
    /// Dropping it wakes the thread at once and tells it to end.
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Ledger {
    /// Moves checkpointing off this connection for the length of a run. `None` (and
    /// checkpoints as usual) for an in-memory ledger or when a second connection fails.
    pub fn background_checkpoints(&mut self) -> Option<Checkpointer> {
        if self.path.as_os_str() == ":memory:" {
            return None;
        }
        let other = Connection::open(&self.path).ok()?;
        other.busy_timeout(CHECKPOINT_WAIT).ok()?;
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .ok()?;
        // Held back by a checkpoint, the writer looks again every quarter millisecond,
        // not after SQLite's 1, 2, 5, 10, 15, 20 ms: it goes on as soon as the copy ends.
        self.conn.busy_handler(Some(wait_briefly)).ok()?;
        let (stop, stopped) = channel::<()>();
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let handle = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || checkpoint_until_stopped(&other, &wal, &stopped))
            .ok();
        if handle.is_none() {
            self.foreground_checkpoints();
            return None;
        }
        Some(Checkpointer {
            stop: Some(stop),
            handle,
        })
    }

    /// Checkpoints on this connection again, after a run.
    pub fn foreground_checkpoints(&mut self) {
        let _ = self
            .conn
            .pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES);
        let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
    }
}

/// The writer's busy handler during a run: waits [`BUSY_POLL`] and tries again, for
/// [`BUSY_TIMEOUT`] in all, as `busy_timeout` would, in finer steps.
fn wait_briefly(attempts: i32) -> bool {
    let waited = BUSY_POLL * u32::try_from(attempts).unwrap_or(u32::MAX);
    if waited >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(BUSY_POLL);
    true
}

/// The thread's loop. The last checkpoint is SQLite's own, when the ledger is closed.
fn checkpoint_until_stopped(conn: &Connection, wal: &std::path::Path, stopped: &Receiver<()>) {
    let mut copied = Instant::now();
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(LOOK_EVERY) {
        let size = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        if size >= WAL_RESTART_BYTES {
            // Most of the WAL is copied first without holding the writer back; the
            // writer then waits only for the frames committed since.
            checkpoint(conn, "PASSIVE");
            checkpoint(conn, "TRUNCATE");
            copied = Instant::now();
        } else if size > 0 && copied.elapsed() >= COPY_EVERY {
            checkpoint(conn, "PASSIVE");
            copied = Instant::now();
        }
    }
}

/// One checkpoint; a busy or failed one is simply tried again at the next look.
fn checkpoint(conn: &Connection, mode: &str) {
    let _ = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_held_back_gives_up_only_after_the_busy_timeout() {
        assert!(wait_briefly(0));
        assert!(wait_briefly(100));
        let attempts = i32::try_from(BUSY_TIMEOUT.as_micros() / BUSY_POLL.as_micros()).unwrap();
        assert!(!wait_briefly(attempts));
        assert!(!wait_briefly(i32::MAX));
    }

    #[test]
    fn a_writer_held_back_by_another_connection_writes_once_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let mut ledger = Ledger::open(&path).unwrap();
        let checkpoints = ledger.background_checkpoints();
        assert!(checkpoints.is_some());
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (held, release) = channel::<()>();
        let holder = std::thread::spawn(move || {
            held.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            other.execute_batch("COMMIT").unwrap();
        });
        release.recv().unwrap();
        let run = ledger.begin_run("run", "http://x", &[], false);
        holder.join().unwrap();
        assert!(
            run.is_ok(),
            "the writer failed on a lock held 100 ms: {run:?}"
        );
        drop(checkpoints);
        ledger.foreground_checkpoints();
    }
}
