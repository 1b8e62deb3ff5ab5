//! Accepting a refund: the key names the refund once, the intent is recorded, then it is driven.

use chrono::{DateTime, Utc};
use ledger_aggregates::app_connection::{AppConnectionError, APP_CONNECTION};
use ledger_aggregates::charge_ledger::{
    idempotency_key, ChargeFacts, ChargeLedger, ChargeLedgerCommand, ChargeLedgerError, NewRefund,
    RefundReason, RefundRecord, RefundStatus, CHARGE_LEDGER,
};
use ledger_aggregates::EventMetadata;

use super::pause::{pause_point, AFTER_INTENT};
use super::{DrivingClaim, RefundError, RefundService};
use crate::event_store::KeyClaim;
use crate::ledger::{LedgerError, Versioned};
use crate::stripe::api::Charge;

/// A validated refund request.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub app: String,
    pub purchase_id: String,
    pub charge_id: String,
    pub approval_id: String,
    pub amount: Option<i64>,
    pub reason: RefundReason,
    pub requested_by: String,
}

/// What the key claim found: the refund the key names, whether an earlier request named it,
/// and the sequences of the app's and the charge's last events (`None`: none yet).
struct Claim {
    refund_id: String,
    claimed_before: bool,
    app_sequence: Option<i64>,
    charge_sequence: Option<i64>,
}

/// A refund the ledger holds after a request: new, or the one this key already named.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub refund: RefundRecord,
    pub created: bool,
    /// When the refund was requested and last changed, known when this request both created
    /// it and recorded Stripe's answer: its answer then needs no read model
    /// (docs/decisions/0031).
    pub recorded: Option<Recorded>,
}

/// When a refund was requested and last changed: the `recorded_at` of the appends that did
/// it, which the `refunds` projection copies into `created_at` and `updated_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RefundService {
    pub async fn accept(
        &self,
        request: RefundRequest,
        meta: &EventMetadata,
    ) -> Result<Accepted, RefundError> {
        let key = idempotency_key(&request.purchase_id, &request.approval_id);
        if let Some(accepted) = self.accept_at_once(&request, &key, meta).await? {
            return Ok(accepted);
        }
        let Claim {
            mut refund_id,
            claimed_before,
            app_sequence,
            charge_sequence,
        } = self.claim_key(&key, &request).await?;
        if claimed_before {
            if let Some(existing) = self.load(&request.charge_id, &refund_id).await? {
                return self.replay(&request.charge_id, existing, meta).await;
            }
        }
        let mut created = true;
        // This request drives its new refund itself (the worker leaves it alone meanwhile).
        let claim = DrivingClaim::take(&self.driving, &refund_id);
        match self
            .record_intent(
                &request,
                (app_sequence, charge_sequence),
                &key,
                &refund_id,
                claim.is_some(),
                meta,
            )
            .await
        {
            Ok(ledger) => {
                if let Some(_claim) = claim {
                    if let Some(accepted) = self
                        .answer_new(&request.charge_id, &ledger, &refund_id, meta)
                        .await?
                    {
                        return Ok(accepted);
                    }
                }
            }
            Err(RefundError::Charge(LedgerError::Domain(
                ChargeLedgerError::AlreadyRequested {
                    refund_id: existing,
                },
            ))) => {
                refund_id = existing;
                created = false;
            }
            Err(error) => {
                self.release_key(&key, &refund_id).await;
                return Err(error);
            }
        }
        let refund = match self.drive(&request.charge_id, &refund_id, meta).await? {
            Some(refund) => refund,
            None => {
                return Err(RefundError::Charge(LedgerError::Domain(
                    ChargeLedgerError::UnknownRefund,
                )))
            }
        };
        Ok(Accepted {
            refund,
            created,
            recorded: None,
        })
    }

    /// The short way (docs/decisions/0034), when this process holds a connected copy of the
    /// app: read the charge at Stripe on that app's account, decide the intent on the charge's
    /// ledger as this process last left it (or empty), and append it only together with the key
    /// claim, in one statement that also checks that the app has no event since that copy.
    /// `None`, with nothing written, when any of that fails or does not hold: the caller then
    /// takes the long way, which claims the key first and decides on checked state only.
    async fn accept_at_once(
        &self,
        request: &RefundRequest,
        key: &str,
        meta: &EventMetadata,
    ) -> Result<Option<Accepted>, RefundError> {
        let Some(app) = self.apps.last_seen(&request.app) else {
            return Ok(None);
        };
        let Some(account) = app.state.snapshot().and_then(|a| a.stripe_account_id) else {
            return Ok(None);
        };
        let Some(stripe) = self.stripe.as_ref() else {
            return Ok(None);
        };
        // Any failure is met again, and answered, on the long way.
        let Ok(charge) = stripe.retrieve_charge(&account, &request.charge_id).await else {
            return Ok(None);
        };
        let refund_id = fresh_refund_id();
        let Some(_driving) = DrivingClaim::take(&self.driving, &refund_id) else {
            return Ok(None);
        };
        let known = self
            .charges
            .last_seen(&request.charge_id)
            .unwrap_or_else(|| Versioned::loaded(ChargeLedger::default(), 0));
        let claim = KeyClaim {
            key,
            app: &request.app,
            charge_id: &request.charge_id,
            requested_amount: request.amount,
            refund_id: &refund_id,
            app_type: APP_CONNECTION,
            app_sequence: app.sequence as i64,
        };
        let Some(ledger) = self
            .ledger
            .charges
            .execute_claiming(
                &request.charge_id,
                known,
                request_refund(request, account, &charge, &refund_id, key),
                submit_now(&refund_id, true),
                meta,
                &claim,
            )
            .await?
        else {
            return Ok(None);
        };
        self.charges.keep(&request.charge_id, &ledger);
        self.answer_new(&request.charge_id, &ledger, &refund_id, meta)
            .await
    }

    /// Drives a refund this request just recorded (with its first submission) to Stripe and
    /// answers it: as the request's two appends recorded it, when it did both. `None` when the
    /// ledger does not hold it as recorded.
    async fn answer_new(
        &self,
        charge_id: &str,
        ledger: &Versioned<ChargeLedger>,
        refund_id: &str,
        meta: &EventMetadata,
    ) -> Result<Option<Accepted>, RefundError> {
        let (Some(charge), Some(refund)) = (ledger.state.charge(), ledger.state.refund(refund_id))
        else {
            return Ok(None);
        };
        if refund.status != RefundStatus::Requested {
            return Ok(Some(Accepted {
                refund: refund.clone(),
                created: true,
                recorded: None,
            }));
        }
        // The intent's append created the refund: its time is the refund's `created_at`.
        let requested_at = (ledger.appended > 0)
            .then(|| crate::writes::recorded_at(CHARGE_LEDGER, charge_id))
            .flatten();
        pause_point(AFTER_INTENT).await;
        let submitted = self
            .submit(charge_id, charge, refund, false, Some(ledger.clone()), meta)
            .await?;
        let recorded = match (&submitted.refund, requested_at, submitted.answered_at) {
            (Some(_), Some(created_at), Some(updated_at)) => Some(Recorded {
                created_at,
                updated_at,
            }),
            _ => None,
        };
        Ok(Some(Accepted {
            refund: submitted.refund.unwrap_or_else(|| refund.clone()),
            created: true,
            recorded,
        }))
    }

    async fn replay(
        &self,
        charge_id: &str,
        existing: RefundRecord,
        meta: &EventMetadata,
    ) -> Result<Accepted, RefundError> {
        let refund = if existing.status == RefundStatus::Requested {
            self.drive(charge_id, &existing.refund_id, meta)
                .await?
                .unwrap_or(existing)
        } else {
            existing
        };
        Ok(Accepted {
            refund,
            created: false,
            recorded: None,
        })
    }

    /// The first request with a key names the refund; later ones must ask for the same thing.
    ///
    /// The claim commits asynchronously (docs/decisions/0025): nothing outside the database acts
    /// on it alone. Stripe is called only after the intent's commit, which is synchronous and
    /// flushes the log up to itself, the claim included; a crash that loses a claim loses it
    /// before anything was recorded or sent on its account.
    ///
    /// The same statement reads the sequences of the app's and the charge's last events, so
    /// that an app this process already holds at that sequence is not read again, and a charge
    /// with no events yet is not read at all (docs/decisions/0027).
    async fn claim_key(&self, key: &str, request: &RefundRequest) -> Result<Claim, RefundError> {
        let fresh = fresh_refund_id();
        let (inserted, app_sequence, charge_sequence): (bool, Option<i64>, Option<i64>) = sqlx::query_as(
            "WITH claimed AS ( \
               INSERT INTO refund_keys (idempotency_key, app, charge_id, requested_amount, refund_id) \
               SELECT $1, $2, $3, $4, $5 FROM (SELECT set_config('synchronous_commit', 'off', true)) asynchronous \
               ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1) \
             SELECT EXISTS (SELECT 1 FROM claimed), \
               (SELECT max(sequence) FROM events WHERE aggregate_type = $6 AND aggregate_id = $2), \
               (SELECT max(sequence) FROM events WHERE aggregate_type = $7 AND aggregate_id = $3)",
        )
        .bind(key)
        .bind(&request.app)
        .bind(&request.charge_id)
        .bind(request.amount)
        .bind(&fresh)
        .bind(APP_CONNECTION)
        .bind(CHARGE_LEDGER)
        .fetch_one(&self.pool)
        .await?;
        if inserted {
            return Ok(Claim {
                refund_id: fresh,
                claimed_before: false,
                app_sequence,
                charge_sequence,
            });
        }
        let (app, charge_id, amount, refund_id): (String, String, Option<i64>, String) = sqlx::query_as(
            "SELECT app, charge_id, requested_amount, refund_id FROM refund_keys WHERE idempotency_key = $1",
        )
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        if app != request.app || charge_id != request.charge_id || amount != request.amount {
            return Err(RefundError::KeyReused);
        }
        Ok(Claim {
            refund_id,
            claimed_before: true,
            app_sequence,
            charge_sequence,
        })
    }

    /// Frees a key whose request recorded nothing, so a corrected request may use it.
    async fn release_key(&self, key: &str, refund_id: &str) {
        let result =
            sqlx::query("DELETE FROM refund_keys WHERE idempotency_key = $1 AND refund_id = $2")
                .bind(key)
                .bind(refund_id)
                .execute(&self.pool)
                .await;
        if let Err(error) = result {
            tracing::warn!(%error, "could not release an unused refund key");
        }
    }

    /// Reads the charge at Stripe and records the refund intent against it; with `submit`, also
    /// its first submission, in the same commit, so that the request can go to Stripe at once.
    async fn record_intent(
        &self,
        request: &RefundRequest,
        (app_sequence, charge_sequence): (Option<i64>, Option<i64>),
        key: &str,
        refund_id: &str,
        submit: bool,
        meta: &EventMetadata,
    ) -> Result<Versioned<ChargeLedger>, RefundError> {
        let app = self
            .app_at(&request.app, app_sequence)
            .await?
            .snapshot()
            .ok_or(LedgerError::Domain(AppConnectionError::AppNotFound))?;
        let account = app.stripe_account_id.ok_or(RefundError::AppNotConnected)?;
        let charge = match self
            .stripe()?
            .retrieve_charge(&account, &request.charge_id)
            .await
        {
            Ok(charge) => charge,
            Err(error) if error.is_permission_error() => {
                self.flag_app(&request.app, meta).await;
                return Err(RefundError::AppNotAuthorized);
            }
            Err(error) if error.is_not_found() => return Err(RefundError::ChargeNotFound),
            Err(error) => return Err(RefundError::StripeUnavailable(error.to_string())),
        };
        let command = request_refund(request, account, &charge, refund_id, key);
        // A charge with no events when the key was claimed is decided from the empty ledger
        // without reading it, and one this process's refunds last left at the sequence the
        // claim read, from that state; should another request's events have come in since,
        // the append collides with them and the command is decided again on a fresh load.
        let known = match charge_sequence {
            None => Some(Versioned::loaded(ChargeLedger::default(), 0)),
            Some(_) => self.charges.at(&request.charge_id, charge_sequence),
        };
        let ledger = self
            .ledger
            .charges
            .execute_versioned(
                &request.charge_id,
                known,
                command,
                submit_now(refund_id, submit),
                meta,
            )
            .await?;
        self.charges.keep(&request.charge_id, &ledger);
        Ok(ledger)
    }
}

fn fresh_refund_id() -> String {
    format!("rf_{}", uuid::Uuid::new_v4().simple())
}

/// The intent: the refund as requested, against the charge as Stripe reports it.
fn request_refund(
    request: &RefundRequest,
    account: String,
    charge: &Charge,
    refund_id: &str,
    key: &str,
) -> ChargeLedgerCommand {
    ChargeLedgerCommand::RequestRefund {
        charge: ChargeFacts {
            app: request.app.clone(),
            stripe_account_id: account,
            amount: charge.captured(),
            currency: charge.currency.to_lowercase(),
            amount_refunded: charge.amount_refunded,
            disputed: charge.disputed,
        },
        refund: NewRefund {
            refund_id: refund_id.to_owned(),
            idempotency_key: key.to_owned(),
            purchase_id: request.purchase_id.clone(),
            approval_id: request.approval_id.clone(),
            amount: request.amount,
            reason: request.reason,
            requested_by: request.requested_by.clone(),
        },
    }
}

/// With `submit`, the refund's first submission, chained to the intent in the same commit so
/// that the request can go to Stripe at once.
fn submit_now(
    refund_id: &str,
    submit: bool,
) -> impl Fn(&ChargeLedger) -> Option<ChargeLedgerCommand> + '_ {
    move |ledger: &ChargeLedger| {
        ledger
            .refund(refund_id)
            .filter(|r| submit && r.status == RefundStatus::Requested && r.attempts == 0)
            .map(|_| ChargeLedgerCommand::MarkSubmitted {
                refund_id: refund_id.to_owned(),
            })
    }
}
