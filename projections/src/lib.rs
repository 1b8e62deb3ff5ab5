//! Read models of connect-ledger and the machinery that keeps them in step with the event log.
//!
//! Every projection is a catch-up subscriber: it reads the `events` table in a global order that
//! never changes once observed, applies each event to its tables and moves its checkpoint in the
//! same transaction, so it never skips, repeats or half-applies an event. See [`runner`].

pub mod apps;
pub mod audit;
pub mod error;
pub mod rebuild;
pub mod refunds;
pub mod runner;
pub mod stored_event;
mod touched;

pub use error::ProjectionError;
pub use runner::{Checkpoint, Projection, ProjectionRunner};
pub use stored_event::StoredEvent;
