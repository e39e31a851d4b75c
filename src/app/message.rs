//! A failure as the one line a person reads: the error, then each cause it does not
//! already say.
//!
//! Two habits meet in the chain of an error: a crate's error that writes its cause into
//! its own message and also returns it as `source()` (ours, thiserror's `{source}`;
//! rusqlite's), and a context that says what was being done and leaves the cause to the
//! chain (anyhow's `with_context`). Printing the chain whole says the first kind's
//! cause twice, or three times; this prints each cause only when it adds something.

/// The error and its causes on one line, each said once.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if line.contains(text) {
            // Already said by the message it caused; so, then, were its own causes.
            break;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    one_line(&line)
}

/// Line breaks (a CSV or server message may carry some) become "; ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{file}: cannot read the file: {source}")]
    struct Embeds {
        file: String,
        source: std::io::Error,
    }

    fn not_found() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory")
    }

    #[test]
    fn a_cause_written_into_its_message_is_said_once() {
        let e = anyhow::Error::new(Embeds {
            file: "a.csv".into(),
            source: not_found(),
        });
        assert_eq!(
            error_line(&e),
            "a.csv: cannot read the file: No such file or directory"
        );
    }

    #[test]
    fn a_context_still_shows_its_cause() {
        let e = anyhow::Error::new(not_found()).context("cannot read a.csv");
        assert_eq!(
            error_line(&e),
            "cannot read a.csv: No such file or directory"
        );
        let e = anyhow::anyhow!("two\nlines");
        assert_eq!(error_line(&e), "two; lines");
    }
}
