//! `bbinvite sync`: the sheet as the desired state of portal access.
//!
//! [`plan`] decides, from the sheet, each customer's access list and the ledger, what to
//! do to each user. This module holds no SQL and never deletes an access user.

pub mod plan;
