use serde::Serialize;

/// A charge's money, in minor units. The one place the refundable amount is computed: the
/// aggregate decides with it and the charge ledger projection shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// The captured amount.
    pub amount: i64,
    /// Refunds that succeeded (ours and those made outside the platform).
    pub refunded: i64,
    /// Refunds still in flight: accepted by us and not yet answered, pending, requires_action.
    pub pending: i64,
    /// Ours accepted but not yet answered by Stripe (part of `pending`).
    pub unanswered: i64,
    /// Stripe's own `amount_refunded` when we last looked at the charge.
    pub stripe_refunded: i64,
}

impl Balance {
    /// What may still be refunded. Stripe's `amount_refunded` covers every refund Stripe knows,
    /// including ones made in the Dashboard that we have not heard of, but not ours that have
    /// not reached it yet; our own records cover ours. Taking the larger of the two views errs on
    /// the side of refunding too little, never too much.
    pub fn refundable(&self) -> i64 {
        let committed = (self.refunded + self.pending).max(self.stripe_refunded + self.unanswered);
        (self.amount - committed).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refundable_takes_the_more_cautious_view() {
        let b = Balance {
            amount: 1000,
            refunded: 300,
            pending: 200,
            unanswered: 100,
            stripe_refunded: 400,
        };
        // Ours: 500 committed. Stripe: 400 known + 100 not yet sent = 500.
        assert_eq!(b.refundable(), 500);
        let dashboard = Balance {
            stripe_refunded: 900,
            ..b
        };
        assert_eq!(dashboard.refundable(), 0);
        let over = Balance {
            amount: 100,
            refunded: 500,
            ..Balance::default()
        };
        assert_eq!(over.refundable(), 0);
    }
}
