//! One run per ledger: an exclusive OS lock on `<ledger>.lock`, held for the run.
//!
//! The lock is the operating system's (`flock`), so a process that dies releases it
//! and a stale file never blocks. The holder's pid and start time are written into the
//! file only to tell the next process who is busy; they never decide anything.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::Error;

/// Held while a command writes to the ledger; dropping it releases the lock.
#[derive(Debug)]
pub struct LedgerLock {
    file: File,
    path: PathBuf,
}

impl LedgerLock {
    /// Takes the lock for `ledger`, or fails at once with [`Error::Busy`].
    pub fn acquire(ledger: &Path) -> Result<LedgerLock, Error> {
        let path = lock_path(ledger);
        let open_err = |source| Error::Open {
            path: path.clone(),
            source,
        };
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&path).map_err(open_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "pid unknown".to_string()
                } else {
                    holder.to_string()
                };
                return Err(Error::Busy {
                    path: ledger.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(open_err(e)),
        }
        let stamp = format!(
            "pid {} since {}",
            std::process::id(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
        file.set_len(0).map_err(open_err)?;
        file.seek(SeekFrom::Start(0)).map_err(open_err)?;
        file.write_all(stamp.as_bytes()).map_err(open_err)?;
        file.flush().map_err(open_err)?;
        Ok(LedgerLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LedgerLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn lock_path(ledger: &Path) -> PathBuf {
    let mut name = ledger.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("l.db");
        let first = LedgerLock::acquire(&db).unwrap();
        match LedgerLock::acquire(&db) {
            Err(Error::Busy { holder, .. }) => {
                assert!(holder.contains(&std::process::id().to_string()))
            }
            other => panic!("expected busy, got {other:?}"),
        }
        drop(first);
        LedgerLock::acquire(&db).unwrap();
    }
}
