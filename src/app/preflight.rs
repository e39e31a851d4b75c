//! What a command checks before its first request: where the results go, the ledger's
//! folder, the base URL and the credentials (the inputs are opened by `setup`). All
//! that can be found wrong without the network is found here, so such a mistake stops
//! the command with exit 2 before anything is sent and before a ledger is created.
//!
//! Nothing here opens the ledger or talks to the API; the only file it creates is a
//! results file that did not exist, and it removes it again at once.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::bail;

use crate::settings::{Endpoint, Settings};

/// Everything a sending command (`run`, `retry`, `sync`, `undo`) checks before it opens
/// the ledger: the ledger's folder, `--results`, `--metrics-file`, then the endpoint.
pub(crate) fn before_sending(
    global: &Settings,
    results: Option<&Path>,
    metrics: Option<&Path>,
) -> anyhow::Result<Endpoint> {
    ledger_folder(&global.ledger)?;
    if let Some(path) = results {
        results_file(path)?;
    }
    if let Some(path) = metrics {
        metrics_folder(path)?;
    }
    global.endpoint()
}

/// The folder a path's file lives in, `.` for a bare name.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Why a file's folder is not one, if it is not.
fn missing_folder(path: &Path) -> Option<String> {
    let folder = folder_of(path);
    if folder.is_dir() {
        None
    } else if folder.exists() {
        Some(format!("{} is a file, not a folder", folder.display()))
    } else {
        Some(format!("the folder {} does not exist", folder.display()))
    }
}

/// The ledger's folder exists (the ledger itself is created when missing).
pub(crate) fn ledger_folder(path: &Path) -> anyhow::Result<()> {
    if let Some(why) = missing_folder(path) {
        bail!(
            "--ledger {}: {why}; create the folder, or name another --ledger",
            path.display()
        );
    }
    if path.is_dir() {
        bail!(
            "--ledger {} is a folder; name a file, e.g. {}",
            path.display(),
            path.join(crate::cli::DEFAULT_LEDGER).display()
        );
    }
    Ok(())
}

/// The metrics file's folder exists: the file itself is written at the end of the run,
/// when it is too late to say so before anything was sent.
pub(crate) fn metrics_folder(path: &Path) -> anyhow::Result<()> {
    if let Some(why) = missing_folder(path) {
        bail!(
            "--metrics-file {}: {why}; create the folder, or name a file in another one",
            path.display()
        );
    }
    if path.is_dir() {
        bail!(
            "--metrics-file {} is a folder; name a file, e.g. {}",
            path.display(),
            path.join("bbinvite.prom").display()
        );
    }
    Ok(())
}

/// The results file can be written: its folder exists and the file can be created (or,
/// when it exists, opened for writing). A file that did not exist is removed again.
pub(crate) fn results_file(path: &Path) -> anyhow::Result<()> {
    if let Some(why) = missing_folder(path) {
        bail!(
            "--results {}: {why}; create the folder, or name a file in another one",
            path.display()
        );
    }
    if path.is_dir() {
        bail!("--results {} is a folder; name a CSV file", path.display());
    }
    let existed = path.exists();
    let opened = if existed {
        OpenOptions::new().append(true).open(path)
    } else {
        OpenOptions::new().write(true).create_new(true).open(path)
    };
    match opened {
        Ok(file) => {
            drop(file);
            if !existed {
                // Only a file made just now is removed, so nothing is left if the run stops.
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Err(e) => bail!(
            "--results {}: cannot create the file: {e}; name a file in a folder you can write to",
            path.display()
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_results_file_is_tried_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("out.csv");
        results_file(&fresh).unwrap();
        assert!(!fresh.exists(), "the trial file is removed");
        std::fs::write(&fresh, "kept").unwrap();
        results_file(&fresh).unwrap();
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "kept");
        let missing = dir.path().join("no/such/out.csv");
        let e = results_file(&missing).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = results_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a folder"), "{e}");
    }

    #[test]
    fn a_metrics_file_needs_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        metrics_folder(&dir.path().join("m.prom")).unwrap();
        let e = metrics_folder(&dir.path().join("no/m.prom"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        let e = metrics_folder(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a folder"), "{e}");
    }

    #[test]
    fn a_ledger_needs_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        ledger_folder(&dir.path().join("l.db")).unwrap();
        ledger_folder(Path::new("l.db")).unwrap();
        let e = ledger_folder(&dir.path().join("no/l.db"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
