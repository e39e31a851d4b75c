//! End-to-end tests: the `bbinvite` binary against the sandbox on loopback.
//!
//! Each test gets a temp dir, a sandbox in the test process (so it can read the
//! sandbox's ground truth directly) and runs the real binary. Tests assert counts and
//! statuses, never wall time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_answers;
mod faults;
mod input_truth;
mod json_schema;
mod ledger_fixture;
mod ledger_growth;
mod ledger_safety;
mod operator;
mod pipeline;
mod preflight;
mod progress;
mod report;
mod spreadsheets;
mod summary;
mod sync;
mod undo;
mod util;
