//! One run per ledger: an exclusive OS lock (`flock`) on the ledger file itself, held
//! for the run, and the check that the file a run writes is still the one at its path.
//!
//! The lock belongs to the file, not to a name: a symlink, a hard link or another
//! spelling of the path reaches the same inode and so the same lock, and there is no
//! lock file to delete. SQLite locks with POSIX `fcntl` locks, which on Linux are
//! independent of `flock`, so this lock does not disturb it. A process that dies
//! releases it. The holder's pid goes into `<real path>.lock` only to tell the next
//! process who is busy; that file never decides anything and goes when the run ends.
//! This module opens no SQLite connection.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::Error;

/// Held while a command writes to the ledger; dropping it releases the lock.
///
/// It must outlive every SQLite connection of this process to the file: closing a
/// descriptor of a file drops the process's POSIX locks on it, so the [`super::Ledger`]
/// that owns it closes its connection first.
#[derive(Debug)]
pub struct LedgerLock {
    file: File,
    /// The file that names the holder, removed on drop.
    pid_file: Option<PathBuf>,
    id: FileId,
}

/// What a file is, whatever its name: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId(meta.dev(), meta.ino())
    }

    #[cfg(not(unix))]
    fn of(_meta: &std::fs::Metadata) -> FileId {
        FileId(0, 0)
    }
}

impl LedgerLock {
    /// Creates the ledger file (mode 0600) if it is missing and takes its lock, or fails
    /// at once with [`Error::Busy`].
    pub fn acquire(ledger: &Path) -> Result<LedgerLock, Error> {
        let file = open_private(ledger)?;
        let open_err = |source| Error::Open {
            path: ledger.to_path_buf(),
            source,
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Busy {
                    path: ledger.to_path_buf(),
                    holder: holder(ledger),
                });
            }
            Err(TryLockError::Error(e)) => return Err(open_err(e)),
        }
        let id = FileId::of(&file.metadata().map_err(open_err)?);
        Ok(LedgerLock {
            file,
            pid_file: write_pid_file(ledger),
            id,
        })
    }

    /// Fails with [`Error::Gone`] when `ledger` no longer names the file this lock
    /// holds: deleted, or replaced by another file. One `stat`, cheap enough per commit.
    pub fn check_still_at(&self, ledger: &Path) -> Result<(), Error> {
        match std::fs::metadata(ledger) {
            Ok(meta) if FileId::of(&meta) == self.id => Ok(()),
            _ => Err(Error::Gone {
                path: ledger.to_path_buf(),
            }),
        }
    }
}

impl Drop for LedgerLock {
    fn drop(&mut self) {
        // The pid file goes first, while the lock still keeps the next run out.
        if let Some(pid_file) = &self.pid_file {
            let _ = std::fs::remove_file(pid_file);
        }
        let _ = self.file.unlock();
    }
}

/// Opens the ledger, creating it readable by its owner only: it holds names and e-mails.
fn open_private(ledger: &Path) -> Result<File, Error> {
    let mut opts = OpenOptions::new();
    opts.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(ledger).map_err(|source| match source.kind() {
        ErrorKind::NotFound => Error::NoFolder {
            path: ledger.to_path_buf(),
        },
        _ => Error::Open {
            path: ledger.to_path_buf(),
            source,
        },
    })
}

/// `<real path of the ledger>.lock`: one name for every way of reaching the file.
fn pid_path(ledger: &Path) -> Option<PathBuf> {
    let mut name = std::fs::canonicalize(ledger).ok()?.into_os_string();
    name.push(".lock");
    Some(PathBuf::from(name))
}

/// Writes who holds the lock; information only, so a failure is ignored.
fn write_pid_file(ledger: &Path) -> Option<PathBuf> {
    let path = pid_path(ledger)?;
    let stamp = format!(
        "pid {} since {}",
        std::process::id(),
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(&path).ok()?;
    file.write_all(stamp.as_bytes()).ok()?;
    Some(path)
}

/// Who holds the lock, as its pid file says.
fn holder(ledger: &Path) -> String {
    pid_path(ledger)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "pid unknown".to_string())
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
        assert!(!dir.path().join("l.db.lock").exists(), "pid file removed");
        LedgerLock::acquire(&db).unwrap();
    }

    #[test]
    fn the_lock_is_the_files_whatever_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("l.db");
        let _first = LedgerLock::acquire(&db).unwrap();
        let hard = dir.path().join("hard.db");
        std::fs::hard_link(&db, &hard).unwrap();
        assert!(matches!(
            LedgerLock::acquire(&hard),
            Err(Error::Busy { .. })
        ));
        std::fs::remove_file(dir.path().join("l.db.lock")).unwrap();
        assert!(matches!(LedgerLock::acquire(&db), Err(Error::Busy { .. })));
    }

    #[test]
    fn a_deleted_or_replaced_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("l.db");
        let lock = LedgerLock::acquire(&db).unwrap();
        lock.check_still_at(&db).unwrap();
        std::fs::write(dir.path().join("other"), "").unwrap();
        std::fs::rename(dir.path().join("other"), &db).unwrap();
        assert!(matches!(lock.check_still_at(&db), Err(Error::Gone { .. })));
        std::fs::remove_file(&db).unwrap();
        assert!(matches!(lock.check_still_at(&db), Err(Error::Gone { .. })));
    }
}
