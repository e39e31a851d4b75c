//! Checkpoints during a run: the WAL copied into the `.db` from a connection and thread
//! of their own, so the writer seldom stops to copy pages and fsync, and so the WAL
//! stays bounded and the `.db` alone holds what was committed a second ago.
//!
//! A busy writer never leaves a moment when the WAL is wholly copied, so copies that
//! never wait (PASSIVE) keep the `.db` fresh but never let the WAL start over: it would
//! grow until the disk is full. Past [`WAL_RESTART_BYTES`], a TRUNCATE checkpoint holds
//! the writer back until every frame is copied, then empties the WAL file, so the next
//! commit starts it afresh and its size on disk is what it holds. Only SQL on its own
//! connection: this module knows nothing of runs or rows.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{CHECKPOINT_PAGES, Ledger};

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
    }
}

/// The thread's loop. The last checkpoint is SQLite's own, when the ledger is closed.
fn checkpoint_until_stopped(conn: &Connection, wal: &std::path::Path, stopped: &Receiver<()>) {
    let mut copied = Instant::now();
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(LOOK_EVERY) {
        let size = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        if size >= WAL_RESTART_BYTES {
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
