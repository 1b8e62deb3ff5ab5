use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::{
    Balance, ChargeFacts, ChargeLedgerCommand, ChargeLedgerError, ChargeLedgerEvent, NewRefund,
    RefundReason, RefundStatus, StripeRefundAnswer, StripeRefundFacts,
};

/// Stripe's failure code for a charge that has nothing left to refund.
pub const CHARGE_ALREADY_REFUNDED: &str = "charge_already_refunded";

/// One refund of the charge, as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub refund_id: String,
    pub idempotency_key: String,
    pub purchase_id: String,
    pub approval_id: String,
    pub requested_amount: Option<i64>,
    pub amount: i64,
    pub currency: String,
    pub reason: RefundReason,
    pub requested_by: String,
    pub status: RefundStatus,
    pub stripe_refund_id: Option<String>,
    pub failure_reason: Option<String>,
    pub attempts: u32,
}

/// A refund of the charge made outside the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalRefund {
    pub stripe_refund_id: String,
    pub amount: i64,
    pub status: RefundStatus,
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChargeLedger {
    charge: Option<ChargeFacts>,
    refunds: Vec<RefundRecord>,
    external: Vec<ExternalRefund>,
}

impl ChargeLedger {
    pub fn charge(&self) -> Option<&ChargeFacts> {
        self.charge.as_ref()
    }

    pub fn refunds(&self) -> &[RefundRecord] {
        &self.refunds
    }

    pub fn external_refunds(&self) -> &[ExternalRefund] {
        &self.external
    }

    pub fn refund(&self, refund_id: &str) -> Option<&RefundRecord> {
        self.refunds.iter().find(|r| r.refund_id == refund_id)
    }

    pub fn refund_by_key(&self, key: &str) -> Option<&RefundRecord> {
        self.refunds.iter().find(|r| r.idempotency_key == key)
    }

    pub fn balance(&self) -> Balance {
        let mut balance = Balance {
            amount: self.charge.as_ref().map_or(0, |c| c.amount),
            stripe_refunded: self.charge.as_ref().map_or(0, |c| c.amount_refunded),
            ..Balance::default()
        };
        for refund in &self.refunds {
            match refund.status {
                RefundStatus::Succeeded => balance.refunded += refund.amount,
                s if s.in_flight() => balance.pending += refund.amount,
                _ => {}
            }
            if refund.status == RefundStatus::Requested {
                balance.unanswered += refund.amount;
            }
        }
        for refund in &self.external {
            match refund.status {
                RefundStatus::Succeeded => balance.refunded += refund.amount,
                s if s.in_flight() => balance.pending += refund.amount,
                _ => {}
            }
        }
        balance
    }

    fn fully_refunded(&self) -> bool {
        let balance = self.balance();
        balance.refundable() == 0
            && (balance.stripe_refunded >= balance.amount || balance.refunded >= balance.amount)
    }

    fn refund_mut(&mut self, refund_id: &str) -> Option<&mut RefundRecord> {
        self.refunds.iter_mut().find(|r| r.refund_id == refund_id)
    }

    fn require_refund(&self, refund_id: &str) -> Result<&RefundRecord, ChargeLedgerError> {
        self.refund(refund_id)
            .ok_or(ChargeLedgerError::UnknownRefund)
    }

    /// `ChargeObserved` when the facts are new or changed.
    fn observation(
        &self,
        charge: &ChargeFacts,
    ) -> Result<Option<ChargeLedgerEvent>, ChargeLedgerError> {
        if let Some(known) = &self.charge {
            if known.app != charge.app || known.stripe_account_id != charge.stripe_account_id {
                return Err(ChargeLedgerError::ChargeBelongsToAnotherApp);
            }
            if known == charge {
                return Ok(None);
            }
        }
        Ok(Some(ChargeLedgerEvent::ChargeObserved {
            charge: charge.clone(),
        }))
    }

    async fn request(
        &mut self,
        charge: ChargeFacts,
        refund: NewRefund,
        sink: &EventSink<Self>,
    ) -> Result<(), ChargeLedgerError> {
        if let Some(existing) = self.refund_by_key(&refund.idempotency_key) {
            let same = existing.requested_amount == refund.amount
                && self.charge.as_ref().is_some_and(|c| c.app == charge.app);
            return Err(if same {
                ChargeLedgerError::AlreadyRequested {
                    refund_id: existing.refund_id.clone(),
                }
            } else {
                ChargeLedgerError::IdempotencyKeyReused
            });
        }
        if matches!(refund.amount, Some(a) if a <= 0) {
            return Err(ChargeLedgerError::InvalidAmount);
        }
        if let Some(observed) = self.observation(&charge)? {
            sink.write(observed, self).await;
        }
        if charge.disputed {
            return Err(ChargeLedgerError::ChargeDisputed);
        }
        let refundable = self.balance().refundable();
        let asks_for_everything = refund.amount.is_none_or(|a| a == charge.amount);
        if refundable == 0 && asks_for_everything && self.fully_refunded() {
            // Nothing is left and everything was asked for: the customer already has it all back.
            // Idempotent, not an error: record the request as void.
            let amount = refund.amount.unwrap_or(0);
            let refund_id = refund.refund_id.clone();
            sink.write(requested(refund, amount, &charge.currency), self)
                .await;
            sink.write(
                ChargeLedgerEvent::RefundStatusChanged {
                    refund_id,
                    stripe_refund_id: None,
                    status: RefundStatus::Canceled,
                    failure_reason: Some(CHARGE_ALREADY_REFUNDED.into()),
                },
                self,
            )
            .await;
            return Ok(());
        }
        let amount = refund.amount.unwrap_or(refundable);
        if amount == 0 || amount > refundable {
            return Err(ChargeLedgerError::ExceedsRefundable { refundable });
        }
        sink.write(requested(refund, amount, &charge.currency), self)
            .await;
        Ok(())
    }

    fn answer(
        &self,
        refund_id: &str,
        answer: StripeRefundAnswer,
    ) -> Result<Option<ChargeLedgerEvent>, ChargeLedgerError> {
        let refund = self.require_refund(refund_id)?;
        let changes = refund.status.may_become(answer.status);
        let learns_id = refund.stripe_refund_id.is_none() && refund.status == answer.status;
        if !(changes || learns_id) {
            return Ok(None);
        }
        Ok(Some(ChargeLedgerEvent::RefundStatusChanged {
            refund_id: refund_id.to_owned(),
            stripe_refund_id: Some(answer.stripe_refund_id),
            status: if changes {
                answer.status
            } else {
                refund.status
            },
            failure_reason: answer.failure_reason,
        }))
    }
}

impl ChargeLedger {
    /// Webhook news about the charge: never lowers what Stripe said was refunded.
    fn webhook_observation(
        &self,
        mut charge: ChargeFacts,
    ) -> Result<Option<ChargeLedgerEvent>, ChargeLedgerError> {
        if let Some(known) = &self.charge {
            charge.amount_refunded = charge.amount_refunded.max(known.amount_refunded);
        }
        self.observation(&charge)
    }

    fn reconcile(
        &self,
        facts: StripeRefundFacts,
    ) -> Result<Option<ChargeLedgerEvent>, ChargeLedgerError> {
        if self.charge.is_none() {
            return Err(ChargeLedgerError::UnknownCharge);
        }
        let ours = facts
            .ledger_refund_id
            .as_deref()
            .and_then(|id| self.refund(id))
            .or_else(|| {
                self.refunds.iter().find(|r| {
                    r.stripe_refund_id.as_deref() == Some(facts.stripe_refund_id.as_str())
                })
            });
        if let Some(ours) = ours {
            let refund_id = ours.refund_id.clone();
            return self.answer(
                &refund_id,
                StripeRefundAnswer {
                    stripe_refund_id: facts.stripe_refund_id,
                    status: facts.status,
                    failure_reason: facts.failure_reason,
                },
            );
        }
        let known = self
            .external
            .iter()
            .find(|r| r.stripe_refund_id == facts.stripe_refund_id);
        if known.is_some_and(|k| !k.status.may_become(facts.status)) {
            return Ok(None);
        }
        Ok(Some(ChargeLedgerEvent::ExternalRefundObserved {
            stripe_refund_id: facts.stripe_refund_id,
            amount: facts.amount,
            status: facts.status,
            failure_reason: facts.failure_reason,
        }))
    }
}

fn requested(refund: NewRefund, amount: i64, currency: &str) -> ChargeLedgerEvent {
    ChargeLedgerEvent::RefundRequested {
        refund_id: refund.refund_id,
        idempotency_key: refund.idempotency_key,
        purchase_id: refund.purchase_id,
        approval_id: refund.approval_id,
        requested_amount: refund.amount,
        amount,
        currency: currency.to_owned(),
        reason: refund.reason,
        requested_by: refund.requested_by,
    }
}

impl Aggregate for ChargeLedger {
    const TYPE: &'static str = super::CHARGE_LEDGER;
    type Command = ChargeLedgerCommand;
    type Event = ChargeLedgerEvent;
    type Error = ChargeLedgerError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use ChargeLedgerCommand as C;
        use ChargeLedgerEvent as E;
        let event = match command {
            C::RequestRefund { charge, refund } => return self.request(charge, refund, sink).await,
            C::ObserveCharge { charge } => self.webhook_observation(charge)?,
            C::ReconcileStripeRefund { refund } => self.reconcile(refund)?,
            C::MarkSubmitted { refund_id } => {
                let refund = self.require_refund(&refund_id)?;
                (refund.status == RefundStatus::Requested).then(|| E::RefundSubmitted {
                    attempt: refund.attempts + 1,
                    refund_id,
                })
            }
            C::RecordStripeAnswer { refund_id, answer } => self.answer(&refund_id, answer)?,
            C::RecordRejection {
                refund_id,
                code,
                message,
            } => {
                let refund = self.require_refund(&refund_id)?;
                (refund.status == RefundStatus::Requested).then_some(E::RefundRejected {
                    refund_id,
                    code,
                    message,
                })
            }
            C::RecordAlreadyRefunded { refund_id } => {
                let refund = self.require_refund(&refund_id)?;
                if refund.status != RefundStatus::Requested {
                    return Ok(());
                }
                let mut charge = self
                    .charge
                    .clone()
                    .ok_or(ChargeLedgerError::UnknownCharge)?;
                if charge.amount_refunded < charge.amount {
                    charge.amount_refunded = charge.amount;
                    sink.write(E::ChargeObserved { charge }, self).await;
                }
                Some(E::RefundStatusChanged {
                    refund_id,
                    stripe_refund_id: None,
                    status: RefundStatus::Canceled,
                    failure_reason: Some(CHARGE_ALREADY_REFUNDED.into()),
                })
            }
        };
        if let Some(event) = event {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use ChargeLedgerEvent as E;
        match event {
            E::ChargeObserved { charge } => self.charge = Some(charge),
            E::RefundRequested {
                refund_id,
                idempotency_key,
                purchase_id,
                approval_id,
                requested_amount,
                amount,
                currency,
                reason,
                requested_by,
            } => self.refunds.push(RefundRecord {
                refund_id,
                idempotency_key,
                purchase_id,
                approval_id,
                requested_amount,
                amount,
                currency,
                reason,
                requested_by,
                status: RefundStatus::Requested,
                stripe_refund_id: None,
                failure_reason: None,
                attempts: 0,
            }),
            E::RefundSubmitted { refund_id, attempt } => {
                if let Some(refund) = self.refund_mut(&refund_id) {
                    refund.attempts = attempt;
                }
            }
            E::RefundStatusChanged {
                refund_id,
                stripe_refund_id,
                status,
                failure_reason,
            } => {
                if let Some(refund) = self.refund_mut(&refund_id) {
                    refund.status = status;
                    if stripe_refund_id.is_some() {
                        refund.stripe_refund_id = stripe_refund_id;
                    }
                    refund.failure_reason = failure_reason;
                }
            }
            E::RefundRejected {
                refund_id, code, ..
            } => {
                if let Some(refund) = self.refund_mut(&refund_id) {
                    refund.status = RefundStatus::Failed;
                    refund.failure_reason = Some(code);
                }
            }
            E::ExternalRefundObserved {
                stripe_refund_id,
                amount,
                status,
                failure_reason,
            } => {
                let update = ExternalRefund {
                    stripe_refund_id,
                    amount,
                    status,
                    failure_reason,
                };
                match self
                    .external
                    .iter_mut()
                    .find(|r| r.stripe_refund_id == update.stripe_refund_id)
                {
                    Some(known) => *known = update,
                    None => self.external.push(update),
                }
            }
        }
    }
}
