use serde::{Deserialize, Serialize};

/// Where a refund stands. `Requested` covers both "accepted, not yet sent" and "sent, no answer
/// yet"; the others are Stripe's own statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Requested,
    Pending,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Pending => "pending",
            Self::RequiresAction => "requires_action",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "requested" => Self::Requested,
            "pending" => Self::Pending,
            "requires_action" => Self::RequiresAction,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            _ => return None,
        })
    }

    /// Money that has left, or may still leave, the account.
    pub fn holds_money(self) -> bool {
        matches!(
            self,
            Self::Requested | Self::Pending | Self::RequiresAction | Self::Succeeded
        )
    }

    pub fn in_flight(self) -> bool {
        matches!(self, Self::Requested | Self::Pending | Self::RequiresAction)
    }

    /// Stripe has given its last word on this refund (a succeeded card refund can still fail
    /// later, which Stripe reports and we accept, see [`RefundStatus::may_become`]).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }

    /// Whether news of `next` may replace this status. Stripe delivers out of order: a late
    /// `pending` never overwrites a final status, but `succeeded → failed` is a real transition.
    pub fn may_become(self, next: RefundStatus) -> bool {
        if self == next {
            return false;
        }
        match self {
            Self::Requested => true,
            Self::Pending | Self::RequiresAction => next != Self::Requested,
            Self::Succeeded => next == Self::Failed,
            Self::Failed | Self::Canceled => false,
        }
    }
}

/// Why a refund is made (Stripe's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    #[default]
    RequestedByCustomer,
    Duplicate,
    Fraudulent,
}

impl RefundReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestedByCustomer => "requested_by_customer",
            Self::Duplicate => "duplicate",
            Self::Fraudulent => "fraudulent",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "requested_by_customer" => Self::RequestedByCustomer,
            "duplicate" => Self::Duplicate,
            "fraudulent" => Self::Fraudulent,
            _ => return None,
        })
    }
}
