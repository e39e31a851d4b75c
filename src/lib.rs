//! bbinvite invites users to Billing Booth One customer portals in bulk.
//!
//! The pipeline, one module a stage:
//!
//! 1. [`input`] reads CSV, JSONL or XLSX rows into [`input::Record`]s, validating each.
//! 2. [`resolve`] turns a row's customer (name, id or reference) into a customer id.
//! 3. [`send`] invites through one shared rate limiter with bounded concurrency and
//!    retries, producing an [`send::Outcome`] per invitation.
//! 4. [`ledger`] records every row, invitation and attempt in SQLite, and answers what
//!    a rerun still has to do.
//!
//! Around it: [`api`] speaks to Billing Booth One and knows nothing of the pipeline;
//! [`sandbox`] simulates the API for tests, benchmarks and first runs; [`app`] runs each
//! command; [`rate`] is a request rate as written; [`cli`] parses what was typed and checks it once; [`sync`] makes portal access
//! match a sheet, reusing every stage above.

pub mod api;
pub mod app;
pub mod cli;
pub mod input;
pub mod ledger;
pub mod progress;
pub mod rate;
pub mod resolve;
pub mod sandbox;
pub mod send;
pub mod sync;
