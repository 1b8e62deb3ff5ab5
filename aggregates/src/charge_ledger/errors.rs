/// Why a command on a charge ledger was refused. Each maps to one stable API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeLedgerError {
    #[error("this charge is recorded under another app")]
    ChargeBelongsToAnotherApp,
    #[error("this purchase_id and approval_id were already used for a different refund (another amount, charge or app)")]
    IdempotencyKeyReused,
    #[error("this refund was already requested")]
    AlreadyRequested { refund_id: String },
    #[error("the charge is disputed; refunds wait until the dispute is resolved")]
    ChargeDisputed,
    #[error("the amount must be a positive integer in the currency's minor unit")]
    InvalidAmount,
    #[error("the amount exceeds what is still refundable on this charge ({refundable})")]
    ExceedsRefundable { refundable: i64 },
    #[error("no such refund on this charge")]
    UnknownRefund,
    #[error("the charge has never been seen by the ledger")]
    UnknownCharge,
}

impl ChargeLedgerError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::ChargeBelongsToAnotherApp => "charge_belongs_to_another_app",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::AlreadyRequested { .. } => "already_requested",
            Self::ChargeDisputed => "charge_disputed",
            Self::InvalidAmount => "invalid_amount",
            Self::ExceedsRefundable { .. } => "amount_exceeds_refundable",
            Self::UnknownRefund => "refund_not_found",
            Self::UnknownCharge => "charge_not_found",
        }
    }
}
