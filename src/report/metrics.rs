//! `--metrics-file`: a run's figures in the Prometheus text format, for node_exporter's
//! textfile collector. Written to a temporary file in the same folder, then renamed over
//! the target, so a scrape never reads half a file. Knows nothing of the ledger or HTTP.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use super::{Figures, folder_of};
use crate::domain::RowStatus;

/// The metrics text of one command's figures.
pub fn render(f: &Figures) -> String {
    let command = label_value(&f.command);
    let mut out = String::new();
    let mut family = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let one = |v: f64| vec![(format!("command=\"{command}\""), v)];
    let rows: Vec<(String, f64)> = RowStatus::ALL
        .iter()
        .map(|s| {
            let n = f.statuses.get(s.as_str()).copied().unwrap_or(0);
            (
                format!("command=\"{command}\",status=\"{}\"", s.as_str()),
                n as f64,
            )
        })
        .collect();
    family(
        "bbinvite_rows",
        "Input rows of the last run, per outcome.",
        &rows,
    );
    family(
        "bbinvite_sent",
        "Invitations and actions the last run carried out.",
        &one(f.sent as f64),
    );
    family(
        "bbinvite_already_done",
        "Rows of the last run whose invitation was done before it.",
        &one(f.already_done as f64),
    );
    family(
        "bbinvite_last_run_timestamp_seconds",
        "When the last run ended, in seconds since the Unix epoch.",
        &one(f.finished_at.floor()),
    );
    family(
        "bbinvite_last_run_exit_code",
        "The exit code of the last run (0 all done, 1 problems, 2 usage, 3 aborted, 4 busy).",
        &one(f.exit_code as f64),
    );
    family(
        "bbinvite_run_duration_seconds",
        "How long the last run took, in seconds.",
        &one((f.duration_secs * 1000.0).round() / 1000.0),
    );
    out
}

/// Writes the metrics of `f` to `path` atomically: a temporary file beside it, renamed.
pub fn write(path: &Path, f: &Figures) -> Result<(), String> {
    let folder = folder_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".into());
    let tmp = folder.join(format!(".{name}.{}.tmp", std::process::id()));
    let fail = |e: std::io::Error| {
        let _ = std::fs::remove_file(&tmp);
        format!(
            "the metrics file {} was not written ({e}); check that its folder exists and is writable",
            path.display()
        )
    };
    let mut file = std::fs::File::create(&tmp).map_err(fail)?;
    file.write_all(render(f).as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(fail)
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let mut f = Figures::stopped_early("run", "completed", 0, Duration::from_millis(1500));
        f.statuses.insert("invited".into(), 5);
        f.sent = 5;
        let text = render(&f);
        assert!(text.contains("bbinvite_rows{command=\"run\",status=\"invited\"} 5\n"));
        assert!(text.contains("bbinvite_rows{command=\"run\",status=\"failed\"} 0\n"));
        assert!(text.contains("bbinvite_run_duration_seconds{command=\"run\"} 1.5\n"));
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split('{').next().unwrap();
                assert!(typed.iter().any(|t| t == name), "{name} before its TYPE");
            }
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
