//! Driving one refund to Stripe: submit (recorded), call, record the answer.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ledger_aggregates::app_connection::AppConnectionCommand;
use ledger_aggregates::charge_ledger::{
    ChargeFacts, ChargeLedger, ChargeLedgerCommand, RefundRecord, RefundStatus, StripeRefundAnswer,
    CHARGE_LEDGER,
};
use ledger_aggregates::{EventMetadata, Source};

use super::pause::{pause_point, AFTER_INTENT, AFTER_STRIPE_ANSWER};
use super::{DrivingClaim, RefundError, RefundService};
use crate::ledger::Versioned;
use crate::stripe::api::{Refund, RefundParams};
use crate::stripe::StripeCallError;

/// The metadata key that ties a Stripe refund to ours.
pub const METADATA_REFUND_ID: &str = "ledger_refund_id";
/// Our failure code when Stripe refuses us access to the connected account.
pub const APP_NOT_AUTHORIZED: &str = "app_not_authorized";

/// What a submission left: the refund as it then stands and, when it appended Stripe's answer
/// (an event about this refund, so its last), the time that append was recorded.
pub(super) struct Submitted {
    pub refund: Option<RefundRecord>,
    pub answered_at: Option<DateTime<Utc>>,
}

impl From<Option<RefundRecord>> for Submitted {
    /// A refund as read from the store, or as a command decided on a fresh load left it.
    fn from(refund: Option<RefundRecord>) -> Self {
        Self {
            refund,
            answered_at: None,
        }
    }
}

fn answer_of(refund: &Refund) -> StripeRefundAnswer {
    StripeRefundAnswer {
        stripe_refund_id: refund.id.clone(),
        status: refund.ledger_status(),
        failure_reason: refund.failure_reason.clone(),
    }
}

fn stripe_metadata(refund: &RefundRecord) -> HashMap<String, String> {
    HashMap::from([
        (METADATA_REFUND_ID.to_owned(), refund.refund_id.clone()),
        ("purchase_id".to_owned(), refund.purchase_id.clone()),
        ("approval_id".to_owned(), refund.approval_id.clone()),
        ("idempotency_key".to_owned(), refund.idempotency_key.clone()),
    ])
}

/// Stripe's refusal as a stable failure code: its `code`, else the parameter it objected to.
fn rejection_code(error: &StripeCallError) -> String {
    match error {
        StripeCallError::Api { error, .. } => error
            .code
            .clone()
            .or_else(|| match error.param.as_deref() {
                Some("amount") => Some("amount_too_large".to_owned()),
                _ => None,
            })
            .or_else(|| error.kind.clone())
            .unwrap_or_else(|| "stripe_error".to_owned()),
        _ => "stripe_error".to_owned(),
    }
}

fn rejection_message(error: &StripeCallError) -> String {
    match error {
        StripeCallError::Api { error, .. } => error.message.clone().unwrap_or_default(),
        other => other.to_string(),
    }
}

impl RefundService {
    /// Drives one refund until Stripe has answered, or until this round's retries are spent
    /// (the worker tries again later). Returns the refund as it then stands.
    pub async fn drive(
        &self,
        charge_id: &str,
        refund_id: &str,
        meta: &EventMetadata,
    ) -> Result<Option<RefundRecord>, RefundError> {
        let Some(_claim) = DrivingClaim::take(&self.driving, refund_id) else {
            return self.load(charge_id, refund_id).await;
        };
        let ledger = self.ledger.charges.load(charge_id).await?;
        let (Some(refund), Some(charge)) =
            (ledger.refund(refund_id).cloned(), ledger.charge().cloned())
        else {
            return Ok(None);
        };
        if refund.status != RefundStatus::Requested {
            return Ok(Some(refund));
        }
        self.stripe()?;
        let submit = ChargeLedgerCommand::MarkSubmitted {
            refund_id: refund_id.to_owned(),
        };
        let ledger = self
            .ledger
            .charges
            .execute_versioned(charge_id, None, submit, |_| None, meta)
            .await?;
        let Some(submitted) = ledger.state.refund(refund_id).cloned() else {
            return Ok(None);
        };
        pause_point(AFTER_INTENT).await;
        // An attempt before this one may have reached Stripe.
        self.submit(
            charge_id,
            &charge,
            &submitted,
            refund.attempts > 0,
            Some(ledger),
            meta,
        )
        .await
        .map(|done| done.refund)
    }

    /// Sends a refund already marked submitted to Stripe and records the answer. When an earlier
    /// attempt may have reached Stripe, looks for it first. `known` is the charge's ledger as the
    /// submission left it: the answer is decided on it without a reload (see `Versioned`).
    pub(super) async fn submit(
        &self,
        charge_id: &str,
        charge: &ChargeFacts,
        refund: &RefundRecord,
        earlier_attempt: bool,
        known: Option<Versioned<ChargeLedger>>,
        meta: &EventMetadata,
    ) -> Result<Submitted, RefundError> {
        let stripe = self.stripe()?;
        let account = charge.stripe_account_id.as_str();
        let refund_id = refund.refund_id.as_str();
        if earlier_attempt {
            // An earlier submission may have reached Stripe, whose memory of the key lasts only
            // 24 hours: look for it before anything is created again.
            match stripe.list_refunds(account, charge_id).await {
                Ok(found) => {
                    let ours = found.iter().find(|r| {
                        r.metadata.get(METADATA_REFUND_ID).map(String::as_str) == Some(refund_id)
                    });
                    if let Some(existing) = ours {
                        tracing::info!(refund_id, stripe_refund_id = %existing.id, "found the refund at Stripe");
                        let command = ChargeLedgerCommand::RecordStripeAnswer {
                            refund_id: refund_id.to_owned(),
                            answer: answer_of(existing),
                        };
                        let ledger = self
                            .ledger
                            .charges
                            .execute(charge_id, command, meta)
                            .await?;
                        return Ok(ledger.refund(refund_id).cloned().into());
                    }
                }
                Err(error) if error.is_permission_error() => {
                    return self
                        .record_not_authorized(&charge.app, charge_id, refund_id, &error, meta)
                        .await
                        .map(Submitted::from);
                }
                Err(error) => {
                    tracing::warn!(refund_id, %error, "could not list the charge's refunds; will retry");
                    return self.load(charge_id, refund_id).await.map(Submitted::from);
                }
            }
        }

        let params = RefundParams {
            charge: charge_id,
            amount: refund.amount,
            reason: refund.reason.as_str(),
            metadata: stripe_metadata(refund),
        };
        let result = stripe
            .create_refund(account, &params, &refund.idempotency_key)
            .await;
        pause_point(AFTER_STRIPE_ANSWER).await;
        let command = match result {
            Ok(created) => ChargeLedgerCommand::RecordStripeAnswer {
                refund_id: refund_id.to_owned(),
                answer: answer_of(&created),
            },
            Err(error) if error.code() == Some("charge_already_refunded") => {
                ChargeLedgerCommand::RecordAlreadyRefunded {
                    refund_id: refund_id.to_owned(),
                }
            }
            Err(error) if error.is_permission_error() => {
                return self
                    .record_not_authorized(&charge.app, charge_id, refund_id, &error, meta)
                    .await
                    .map(Submitted::from);
            }
            Err(error) if error.is_retryable() => {
                tracing::warn!(refund_id, %error, "Stripe did not answer; the worker will retry with the same key");
                return self.load(charge_id, refund_id).await.map(Submitted::from);
            }
            Err(error) => {
                tracing::info!(refund_id, %error, "Stripe refused the refund");
                ChargeLedgerCommand::RecordRejection {
                    refund_id: refund_id.to_owned(),
                    code: rejection_code(&error),
                    message: rejection_message(&error),
                }
            }
        };
        let ledger = self
            .ledger
            .charges
            .execute_versioned(charge_id, known, command, |_| None, meta)
            .await?;
        self.charges.keep(charge_id, &ledger);
        // The answer's event is the refund's last, and the state is the charge's as of it
        // (decided on `known` only when nothing came in since, else on a fresh load).
        Ok(Submitted {
            refund: ledger.state.refund(refund_id).cloned(),
            answered_at: (ledger.appended > 0)
                .then(|| crate::writes::recorded_at(CHARGE_LEDGER, charge_id))
                .flatten(),
        })
    }

    /// Stripe refused us the account: the refund fails and the app is flagged.
    async fn record_not_authorized(
        &self,
        app: &str,
        charge_id: &str,
        refund_id: &str,
        error: &StripeCallError,
        meta: &EventMetadata,
    ) -> Result<Option<RefundRecord>, RefundError> {
        self.flag_app(app, meta).await;
        let command = ChargeLedgerCommand::RecordRejection {
            refund_id: refund_id.to_owned(),
            code: APP_NOT_AUTHORIZED.to_owned(),
            message: rejection_message(error),
        };
        let ledger = self
            .ledger
            .charges
            .execute(charge_id, command, meta)
            .await?;
        Ok(ledger.refund(refund_id).cloned())
    }

    /// Marks the app for attention after Stripe refused us its account.
    pub(super) async fn flag_app(&self, app: &str, meta: &EventMetadata) {
        let command = AppConnectionCommand::FlagForAttention {
            reason: APP_NOT_AUTHORIZED.to_owned(),
        };
        let meta = EventMetadata {
            source: Source::System,
            ..meta.clone()
        };
        if let Err(error) = self.ledger.apps.execute(app, command, &meta).await {
            tracing::warn!(app, %error, "could not flag the app for attention");
        }
    }
}
