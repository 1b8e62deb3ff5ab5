use serde::{Deserialize, Serialize};

use super::{RefundReason, RefundStatus};

/// What Stripe says about a charge (`GET /v1/charges/{id}` on the connected account), plus the
/// app it was looked up for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeFacts {
    pub app: String,
    pub stripe_account_id: String,
    pub amount: i64,
    pub currency: String,
    pub amount_refunded: i64,
    pub disputed: bool,
}

/// A refund as asked for by support staff or an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    pub refund_id: String,
    pub idempotency_key: String,
    pub purchase_id: String,
    pub approval_id: String,
    /// `None`: the whole amount still refundable.
    pub amount: Option<i64>,
    pub reason: RefundReason,
    pub requested_by: String,
}

/// Stripe's answer about one refund (`re_…`), from the create call or a later confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeRefundAnswer {
    pub stripe_refund_id: String,
    pub status: RefundStatus,
    pub failure_reason: Option<String>,
}

/// What Stripe says about one refund of the charge (from a webhook or a list): ours when it
/// carries our refund id in its metadata or its `re_…` is one we recorded, otherwise one made
/// outside the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeRefundFacts {
    pub stripe_refund_id: String,
    pub amount: i64,
    pub status: RefundStatus,
    pub failure_reason: Option<String>,
    pub ledger_refund_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeLedgerCommand {
    /// Accept a refund (the intent is recorded before Stripe is called).
    RequestRefund {
        charge: ChargeFacts,
        refund: NewRefund,
    },
    /// Record what Stripe said about the charge in a webhook. Webhooks arrive out of order, so
    /// `amount_refunded` only ever grows here; a live read at refund time sets it exactly.
    ObserveCharge { charge: ChargeFacts },
    /// Reconcile Stripe's word on one refund of this charge.
    ReconcileStripeRefund { refund: StripeRefundFacts },
    /// We are about to send the refund to Stripe (again).
    MarkSubmitted { refund_id: String },
    /// Stripe created (or reports on) the refund.
    RecordStripeAnswer {
        refund_id: String,
        answer: StripeRefundAnswer,
    },
    /// Stripe refused to create the refund; nothing was refunded.
    RecordRejection {
        refund_id: String,
        code: String,
        message: String,
    },
    /// Stripe says the charge is already fully refunded: our refund is void, the charge is not.
    RecordAlreadyRefunded { refund_id: String },
}
