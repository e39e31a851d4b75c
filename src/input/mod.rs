//! Input: turns an operator's file (CSV, JSONL, XLSX/ODS, or stdin) into validated
//! records, one at a time.
//!
//! So far: which column holds which field, and what makes a row valid. This module
//! knows nothing of customers, the API or the ledger.

mod columns;
mod validate;

use std::fmt;

pub use columns::{Columns, Field, UnknownField, normalize_header};

use crate::api::types::AccessStatus;

/// A row that passed validation: what an invitation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Invitee {
    /// Trimmed, as typed (case kept); the ledger key is computed elsewhere.
    pub email: String,
    /// Trimmed, inner whitespace folded; first + " " + last when from two columns.
    pub name: String,
    /// Trimmed; `None` when empty.
    pub customer: Option<String>,
    pub customer_id: Option<i64>,
    /// Trimmed; `None` when empty.
    pub customer_reference: Option<String>,
    pub status: Option<AccessStatus>,
    /// The access user id to ask for.
    pub user_id: Option<i64>,
}

/// Why a row cannot be sent, worded for the person who fixes the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The header name of the offending column; `None` when it is the whole row.
    pub column: Option<String>,
    /// The offending value, trimmed (empty when the trouble is that it is missing).
    pub value: String,
    /// What is wrong and what to do; reads on its own.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(f, "{column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}
