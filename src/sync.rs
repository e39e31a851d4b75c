//! `sync`'s decisions: the sheet as the desired state of portal access, compared with
//! what each customer's access list holds, becomes a [`plan::Plan`]; and `undo`'s: what
//! a run changed, against what later runs did, becomes an [`undo::UndoPlan`].
//!
//! Pure: it reads no file, makes no request, touches no SQL and prints nothing. The
//! command that reads the sheet and the lists and carries the plan out is
//! `app::sync`; the engine that sends is [`crate::send`].

pub mod plan;
pub mod undo;
