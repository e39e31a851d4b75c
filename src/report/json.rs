//! Shapes that every command's `--json` output shares (docs/json.md): a list of errors
//! is a list of `{"error": ..., "count": N}` objects, never of pairs.
//!
//! Plain data for serde; nothing here prints, reads the ledger or decides anything.

use serde::Serialize;

/// One error message and how many rows (or invitations) share it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    pub error: String,
    pub count: u64,
}

/// Ranked `(message, count)` pairs, as the ledger answers them, as JSON objects.
///
/// ```
/// use bbinvite::report::json::{ErrorCount, error_counts};
/// let listed = error_counts(&[("timeout".to_string(), 3)]);
/// assert_eq!(listed, [ErrorCount { error: "timeout".into(), count: 3 }]);
/// ```
pub fn error_counts(ranked: &[(String, u64)]) -> Vec<ErrorCount> {
    ranked
        .iter()
        .map(|(error, count)| ErrorCount {
            error: error.clone(),
            count: *count,
        })
        .collect()
}
