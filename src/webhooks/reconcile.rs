//! Each event type mapped to commands, with `source = stripe_webhook` and the event id.

use ledger_aggregates::app_connection::{AppConnectionCommand, DisconnectInitiator};
use ledger_aggregates::charge_ledger::{
    ChargeFacts, ChargeLedger, ChargeLedgerCommand, RefundStatus, StripeRefundFacts,
};
use ledger_aggregates::{EventMetadata, Source};
use ledger_projections::apps::app_for_account;
use serde_json::Value;

use super::envelope::{id_of, EventEnvelope};
use super::inbox::Outcome;
use super::WebhookProcessor;
use crate::refunds::METADATA_REFUND_ID;
use crate::stripe::api::Refund;

const ACTOR: &str = "stripe";

fn failed(error: impl std::fmt::Display) -> Outcome {
    Outcome::Failed(error.to_string())
}

fn refund_facts(object: &Value) -> Option<StripeRefundFacts> {
    Some(StripeRefundFacts {
        stripe_refund_id: object.get("id")?.as_str()?.to_owned(),
        amount: object.get("amount")?.as_i64()?,
        status: object
            .get("status")
            .and_then(Value::as_str)
            .and_then(RefundStatus::parse)
            .unwrap_or(RefundStatus::Pending),
        failure_reason: object
            .get("failure_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ledger_refund_id: object
            .get("metadata")
            .and_then(|m| m.get(METADATA_REFUND_ID))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

fn refund_facts_of(refund: &Refund) -> StripeRefundFacts {
    StripeRefundFacts {
        stripe_refund_id: refund.id.clone(),
        amount: refund.amount,
        status: refund.ledger_status(),
        failure_reason: refund.failure_reason.clone(),
        ledger_refund_id: refund.metadata.get(METADATA_REFUND_ID).cloned(),
    }
}

fn charge_facts(app: &str, account: &str, charge: &Value) -> Option<ChargeFacts> {
    let amount = charge.get("amount")?.as_i64()?;
    let captured = charge
        .get("amount_captured")
        .and_then(Value::as_i64)
        .filter(|a| *a > 0)
        .unwrap_or(amount);
    Some(ChargeFacts {
        app: app.to_owned(),
        stripe_account_id: account.to_owned(),
        amount: captured,
        currency: charge.get("currency")?.as_str()?.to_lowercase(),
        amount_refunded: charge
            .get("amount_refunded")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        disputed: charge
            .get("disputed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// Where a charge's events go: the app and account the ledger has for it, else the app that owns
/// the event's account.
enum ChargeOwner {
    Known(ChargeLedger),
    App {
        slug: String,
        account: String,
        livemode: Option<bool>,
    },
}

/// The event types the ledger turns into commands; every other type is stored as `ignored` the
/// moment it arrives, so the worker never touches it.
pub const LEDGER_EVENT_TYPES: [&str; 6] = [
    "account.application.deauthorized",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
];

/// Why an event of another type changes nothing.
pub fn not_acted_on(kind: &str) -> String {
    format!("{kind} is not an event the ledger acts on")
}

impl WebhookProcessor {
    pub(super) async fn reconcile(&self, event: &EventEnvelope) -> Outcome {
        let meta = EventMetadata::new(ACTOR, Source::StripeWebhook, event.id.clone())
            .with_stripe_event(event.id.clone());
        match event.kind.as_str() {
            "account.application.deauthorized" => self.deauthorized(event, &meta).await,
            "charge.refunded" => self.charge_refunded(event, &meta).await,
            "refund.created" | "refund.updated" | "refund.failed" | "charge.refund.updated" => {
                self.refund_news(event, &meta).await
            }
            other => Outcome::Ignored(not_acted_on(other)),
        }
    }

    async fn deauthorized(&self, event: &EventEnvelope, meta: &EventMetadata) -> Outcome {
        let Some(account) = &event.account else {
            return Outcome::Ignored("no connected account on the event".into());
        };
        let app = match app_for_account(&self.pool, account).await {
            Ok(Some(app)) => app,
            Ok(None) => return Outcome::Unmatched(format!("no app owns {account}")),
            Err(e) => return failed(e),
        };
        let command = AppConnectionCommand::Disconnect {
            stripe_account_id: Some(account.clone()),
            initiated_by: DisconnectInitiator::StripeAccount,
        };
        match self.ledger.apps.execute(&app.slug, command, meta).await {
            Ok(_) => {
                self.ledger.projections.nudge();
                Outcome::Handled(format!("{} disconnected from {account}", app.slug))
            }
            Err(e) => failed(e),
        }
    }

    async fn owner(&self, event: &EventEnvelope, charge_id: &str) -> Result<ChargeOwner, Outcome> {
        let ledger = self.ledger.charges.load(charge_id).await.map_err(failed)?;
        if ledger.charge().is_some() {
            return Ok(ChargeOwner::Known(ledger));
        }
        let Some(account) = &event.account else {
            return Err(Outcome::Unmatched(format!(
                "{charge_id} is on no connected account the ledger knows"
            )));
        };
        match app_for_account(&self.pool, account).await {
            Ok(Some(app)) => Ok(ChargeOwner::App {
                slug: app.slug,
                account: account.clone(),
                livemode: app.livemode,
            }),
            Ok(None) => Err(Outcome::Unmatched(format!("no app owns {account}"))),
            Err(e) => Err(failed(e)),
        }
    }

    /// Makes sure the ledger knows the charge, reading it from the event or from Stripe.
    async fn ensure_charge(
        &self,
        owner: &ChargeOwner,
        charge_id: &str,
        charge_object: Option<&Value>,
        event: &EventEnvelope,
        meta: &EventMetadata,
    ) -> Result<(), Outcome> {
        let ChargeOwner::App {
            slug,
            account,
            livemode,
        } = owner
        else {
            return Ok(());
        };
        if livemode.is_some_and(|live| live != event.livemode) {
            return Err(Outcome::Ignored(
                "livemode differs from the app's connection".into(),
            ));
        }
        let facts = match charge_object.and_then(|c| charge_facts(slug, account, c)) {
            Some(facts) => facts,
            None => {
                let stripe = self
                    .stripe
                    .as_ref()
                    .ok_or_else(|| failed("Stripe is not configured"))?;
                let charge = stripe
                    .retrieve_charge(account, charge_id)
                    .await
                    .map_err(failed)?;
                ChargeFacts {
                    app: slug.clone(),
                    stripe_account_id: account.clone(),
                    amount: charge.captured(),
                    currency: charge.currency.to_lowercase(),
                    amount_refunded: charge.amount_refunded,
                    disputed: charge.disputed,
                }
            }
        };
        self.ledger
            .charges
            .execute(
                charge_id,
                ChargeLedgerCommand::ObserveCharge { charge: facts },
                meta,
            )
            .await
            .map(drop)
            .map_err(failed)
    }

    async fn refund_news(&self, event: &EventEnvelope, meta: &EventMetadata) -> Outcome {
        let object = &event.data.object;
        let Some(facts) = refund_facts(object) else {
            return failed("the refund object has no id or amount");
        };
        let Some(charge_id) = id_of(object, "charge") else {
            return Outcome::Ignored("a refund without a charge".into());
        };
        let owner = match self.owner(event, &charge_id).await {
            Ok(owner) => owner,
            Err(outcome) => return outcome,
        };
        if let Err(outcome) = self
            .ensure_charge(&owner, &charge_id, None, event, meta)
            .await
        {
            return outcome;
        }
        let stripe_refund_id = facts.stripe_refund_id.clone();
        let command = ChargeLedgerCommand::ReconcileStripeRefund { refund: facts };
        match self.ledger.charges.execute(&charge_id, command, meta).await {
            Ok(_) => {
                self.ledger.projections.nudge();
                Outcome::Handled(format!("{stripe_refund_id} on {charge_id} reconciled"))
            }
            Err(e) => failed(e),
        }
    }

    async fn charge_refunded(&self, event: &EventEnvelope, meta: &EventMetadata) -> Outcome {
        let charge = &event.data.object;
        let Some(charge_id) = charge.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return failed("the charge object has no id");
        };
        let owner = match self.owner(event, &charge_id).await {
            Ok(owner) => owner,
            Err(outcome) => return outcome,
        };
        if let Err(outcome) = self
            .ensure_charge(&owner, &charge_id, Some(charge), event, meta)
            .await
        {
            return outcome;
        }
        let (app, account) = match &owner {
            ChargeOwner::Known(ledger) => match ledger.charge() {
                Some(c) => (c.app.clone(), c.stripe_account_id.clone()),
                None => return failed("the charge vanished"),
            },
            ChargeOwner::App { slug, account, .. } => (slug.clone(), account.clone()),
        };
        if let (ChargeOwner::Known(_), Some(facts)) = (&owner, charge_facts(&app, &account, charge))
        {
            let observe = ChargeLedgerCommand::ObserveCharge { charge: facts };
            if let Err(e) = self.ledger.charges.execute(&charge_id, observe, meta).await {
                return failed(e);
            }
        }
        // Since API 2022-11-15 the charge no longer embeds its refunds: ask for them.
        let embedded: Option<Vec<StripeRefundFacts>> = charge
            .get("refunds")
            .and_then(|r| r.get("data"))
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(refund_facts).collect());
        let refunds = match embedded {
            Some(list) if !list.is_empty() => list,
            _ => {
                let Some(stripe) = &self.stripe else {
                    return failed("Stripe is not configured");
                };
                match stripe.list_refunds(&account, &charge_id).await {
                    Ok(list) => list.iter().map(refund_facts_of).collect(),
                    Err(e) => return failed(e),
                }
            }
        };
        let count = refunds.len();
        for refund in refunds {
            let command = ChargeLedgerCommand::ReconcileStripeRefund { refund };
            if let Err(e) = self.ledger.charges.execute(&charge_id, command, meta).await {
                return failed(e);
            }
        }
        self.ledger.projections.nudge();
        Outcome::Handled(format!("{count} refunds of {charge_id} reconciled"))
    }
}
