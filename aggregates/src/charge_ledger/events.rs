use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::{ChargeFacts, RefundReason, RefundStatus};

/// What happened to a charge and its refunds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChargeLedgerEvent {
    /// Stripe's view of the charge when we looked (first sight, or something changed).
    ChargeObserved { charge: ChargeFacts },
    /// A refund was accepted; Stripe has not been called yet.
    RefundRequested {
        refund_id: String,
        idempotency_key: String,
        purchase_id: String,
        approval_id: String,
        /// What was asked: `None` meant "all that is refundable".
        requested_amount: Option<i64>,
        amount: i64,
        currency: String,
        reason: RefundReason,
        requested_by: String,
    },
    /// The refund is being sent to Stripe (attempt counts from 1).
    RefundSubmitted { refund_id: String, attempt: u32 },
    /// Stripe's word on the refund: its answer to the create call or a later confirmation.
    RefundStatusChanged {
        refund_id: String,
        stripe_refund_id: Option<String>,
        status: RefundStatus,
        failure_reason: Option<String>,
    },
    /// Stripe refused to create the refund (e.g. `amount_too_large`); no money moved.
    RefundRejected {
        refund_id: String,
        code: String,
        message: String,
    },
    /// A refund made outside the platform (Dashboard, another tool), or news of its status.
    ExternalRefundObserved {
        stripe_refund_id: String,
        amount: i64,
        status: RefundStatus,
        failure_reason: Option<String>,
    },
}

impl ChargeLedgerEvent {
    pub const VERSION: &'static str = "1.0";

    pub fn name(&self) -> &'static str {
        match self {
            Self::ChargeObserved { .. } => "ChargeObserved",
            Self::RefundRequested { .. } => "RefundRequested",
            Self::RefundSubmitted { .. } => "RefundSubmitted",
            Self::RefundStatusChanged { .. } => "RefundStatusChanged",
            Self::RefundRejected { .. } => "RefundRejected",
            Self::ExternalRefundObserved { .. } => "ExternalRefundObserved",
        }
    }

    /// The refund an event is about, if any.
    pub fn refund_id(&self) -> Option<&str> {
        match self {
            Self::ChargeObserved { .. } | Self::ExternalRefundObserved { .. } => None,
            Self::RefundRequested { refund_id, .. }
            | Self::RefundSubmitted { refund_id, .. }
            | Self::RefundStatusChanged { refund_id, .. }
            | Self::RefundRejected { refund_id, .. } => Some(refund_id),
        }
    }
}

impl DomainEvent for ChargeLedgerEvent {
    fn event_type(&self) -> String {
        self.name().to_owned()
    }

    fn event_version(&self) -> String {
        Self::VERSION.to_owned()
    }
}
