//! The Billing Booth One API: wire types, the client, and its errors.
//!
//! This module knows the API and nothing of the pipeline: no rows, no ledger.

pub mod client;
pub mod error;
pub(crate) mod http;
pub mod redact;
pub mod types;

pub use client::{Client, ClientConfig, Credentials, Gate, Listing, Secret, attempt, log_requests};
pub use error::{Error, ErrorClass};
