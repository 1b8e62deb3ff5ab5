//! The pure domain of connect-ledger.
//!
//! Aggregates decide: a command plus the aggregate's past events yields new events or a refusal.
//! Nothing here performs I/O; side effects (Stripe, the database) belong to the service, which
//! feeds their results back in as commands.

pub mod app_connection;
pub mod charge_ledger;
pub mod metadata;
pub mod secret_token;
pub mod slug;
pub mod upcasting;

pub use metadata::{EventMetadata, Source};
pub use slug::Slug;
