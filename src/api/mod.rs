//! The Billing Booth One API: wire types, client, errors.
pub mod types;
