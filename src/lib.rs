//! bbinvite invites users to Billing Booth One customer portals in bulk.
//!
//! The pipeline, one module a stage:
//!
//! 1. [`input`] reads CSV, JSONL or XLSX rows into [`input::Record`]s, validating each.
//! 2. [`resolve`] turns a row's customer (name, id or reference) into a customer id.
//! 3. [`send`] invites through one shared rate limiter and one attempt runner with
//!    retries, producing a [`domain::Outcome`] per invitation; the engine in [`app`]
//!    runs it with bounded concurrency.
//! 4. [`ledger`] records every row, invitation and attempt in SQLite, and answers what
//!    a rerun still has to do.
//!
//! Around it: [`api`] speaks to Billing Booth One and knows nothing of the pipeline;
//! [`sandbox`] simulates the API for tests, benchmarks and first runs; [`app`] runs each
//! command; [`cli`] parses what was typed and checks it once; [`settings`] turns it and
//! the environment into what the commands use; [`sync`] plans how portal
//! access comes to match a sheet (`app`'s `sync` command carries the plan out).
//!
//! At the bottom, [`domain`] holds the words every stage shares (states, jobs,
//! outcomes, actions, the key rule); it imports none of the stages, and no stage imports
//! one that imports it back.

pub mod api;
pub mod app;
pub mod cli;
pub mod domain;
pub mod input;
pub mod ledger;
pub mod progress;
pub mod resolve;
pub mod sandbox;
pub mod send;
pub mod settings;
pub mod sync;
