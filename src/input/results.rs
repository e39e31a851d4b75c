//! The results sheet (`--results`, `export`) as bbinvite writes it and reads it back:
//! the names of its outcome columns, the formula escaping of its cells, and how a sheet
//! of ours is recognised when it comes back as an input.
//!
//! Escaping and unescaping are each other's inverse on every cell, so a row that goes
//! out in a results sheet comes back with the fields the user typed.

/// The outcome columns bbinvite appends to the input's own in `--results` and `export`.
pub const RESULTS_COLUMNS: [&str; 6] = [
    "bbinvite_status",
    "bbinvite_error",
    "bbinvite_customer_id",
    "bbinvite_access_user_id",
    "bbinvite_attempts",
    "bbinvite_updated_at",
];

/// The names the outcome columns had before they were prefixed; such sheets are still
/// recognised.
const OLD_RESULTS_COLUMNS: [&str; 6] = [
    "status",
    "error",
    "customer_id",
    "access_user_id",
    "attempts",
    "updated_at",
];

/// How many trailing columns of `names` are bbinvite's outcome block (0: none), with
/// or without its last column.
pub(crate) fn outcome_block(names: &[String]) -> usize {
    for block in [&RESULTS_COLUMNS, &OLD_RESULTS_COLUMNS] {
        for len in [block.len(), block.len() - 1] {
            if names.len() > len
                && names[names.len() - len..]
                    .iter()
                    .zip(block)
                    .all(|(n, r)| n == r)
            {
                return len;
            }
        }
    }
    0
}

/// The characters that make a spreadsheet run a cell as a formula.
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Escapes a cell that a spreadsheet would run as a formula with a leading `'`; a
/// cell that already starts with `'` gets one more, so that `unescape` is exact.
pub fn escape(cell: &str) -> String {
    match cell.chars().next() {
        Some(c) if c == '\'' || FORMULA_START.contains(&c) => format!("'{cell}"),
        _ => cell.to_string(),
    }
}

/// Undoes [`escape`]; only for cells of a sheet bbinvite wrote.
pub(crate) fn unescape(cell: &mut String) {
    let mut chars = cell.chars();
    if chars.next() == Some('\'')
        && chars
            .next()
            .is_some_and(|c| c == '\'' || FORMULA_START.contains(&c))
    {
        cell.remove(0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::input::testutil::names;
    use proptest::prelude::{any, prop_assert_eq, proptest};

    #[test]
    fn both_generations_of_the_outcome_block_are_recognised() {
        let mut new = names(&["email", "name", "status"]);
        new.extend(names(&RESULTS_COLUMNS));
        assert_eq!(outcome_block(&new), 6);
        let mut old = names(&["email", "name"]);
        old.extend(names(&OLD_RESULTS_COLUMNS[..5]));
        assert_eq!(outcome_block(&old), 5);
        assert_eq!(outcome_block(&names(&["email", "name", "status"])), 0);
        assert_eq!(outcome_block(&names(&RESULTS_COLUMNS)), 0);
    }

    #[test]
    fn escapes_formulas_and_apostrophes() {
        assert_eq!(escape("=1+1"), "'=1+1");
        assert_eq!(escape("'=1+1"), "''=1+1");
        assert_eq!(escape("'plain"), "''plain");
        assert_eq!(escape("plain"), "plain");
        let mut cell = "'plain".to_string();
        unescape(&mut cell);
        assert_eq!(cell, "'plain", "a lone apostrophe of the user's stays");
    }

    proptest! {
        #[test]
        fn unescape_inverts_escape(cell in any::<String>()) {
            let mut back = escape(&cell);
            unescape(&mut back);
            prop_assert_eq!(back, cell);
        }
    }
}
