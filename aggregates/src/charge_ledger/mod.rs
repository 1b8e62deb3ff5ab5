//! The `ChargeLedger` aggregate: one per Stripe charge, holding every refund of that charge.
//!
//! One aggregate per charge makes the money invariant local: for each charge, succeeded plus
//! in-flight refunds never exceed the captured amount. Two requests racing for the last euro load
//! the same version; the event store's primary key lets one commit and the other is re-decided on
//! fresh state, across any number of service instances.

mod balance;
mod commands;
mod errors;
mod events;
mod refund_status;
mod state;

pub use balance::Balance;
pub use commands::{
    ChargeFacts, ChargeLedgerCommand, NewRefund, StripeRefundAnswer, StripeRefundFacts,
};
pub use errors::ChargeLedgerError;
pub use events::ChargeLedgerEvent;
pub use refund_status::{RefundReason, RefundStatus};
pub use state::{ChargeLedger, ExternalRefund, RefundRecord, CHARGE_ALREADY_REFUNDED};

/// The aggregate type under which charge ledger events are stored.
pub const CHARGE_LEDGER: &str = "ChargeLedger";

/// `refund:<purchase_id>:<approval_id>`, the Idempotency-Key of every Stripe POST for a refund.
pub fn idempotency_key(purchase_id: &str, approval_id: &str) -> String {
    format!("refund:{purchase_id}:{approval_id}")
}

#[cfg(test)]
mod tests;
