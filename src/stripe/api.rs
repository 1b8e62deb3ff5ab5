//! The Stripe REST API: requests built by async-stripe's typed builders (paths, form encoding,
//! API version), sent with our own pooled HTTP client so that status codes, `Stripe-Should-Retry`
//! and non-JSON bodies are never lost, and answers read leniently (fakes and accounts pinned to
//! older API versions send older shapes).

use std::collections::HashMap;

use ledger_aggregates::charge_ledger::RefundStatus;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use stripe_client_core::{RequestBuilder, StripeMethod, StripeRequest};
use stripe_core::charge::RetrieveCharge;
use stripe_core::event::ListEvent;
use stripe_core::refund::{CreateRefund, CreateRefundReason, ListRefund};
use stripe_types::{RangeBoundsTs, RangeQueryTs};
use url::Url;

use super::circuit::Circuits;
use super::retry::RetryPolicy;

/// A charge, as much of it as the ledger reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_captured: Option<i64>,
    #[serde(default)]
    pub amount_refunded: i64,
    pub currency: String,
    #[serde(default)]
    pub disputed: bool,
}

impl Charge {
    /// What can be refunded at most: the captured amount.
    pub fn captured(&self) -> i64 {
        self.amount_captured
            .filter(|a| *a > 0)
            .unwrap_or(self.amount)
    }
}

/// A refund, as much of it as the ledger reads (see [`Refund::ledger_status`]).
#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub charge: Option<serde_json::Value>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}

impl Refund {
    /// Stripe's status in the ledger's terms; an unknown one counts as still in flight, so it keeps
    /// holding its money.
    pub fn ledger_status(&self) -> RefundStatus {
        self.status
            .as_deref()
            .and_then(RefundStatus::parse)
            .unwrap_or(RefundStatus::Pending)
    }
}

#[derive(Debug, Deserialize)]
struct ListPage<T> {
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

/// Stripe's error object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApiErrorBody {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ApiErrorBody,
}

/// Why a Stripe call did not give us what we asked for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StripeCallError {
    /// Stripe answered with an error.
    #[error("Stripe answered {status}: {}", .error.code.as_deref().or(.error.kind.as_deref()).unwrap_or("error"))]
    Api {
        status: u16,
        error: ApiErrorBody,
        should_retry: Option<bool>,
    },
    /// No answer: connection refused or reset, timeout.
    #[error("Stripe unreachable: {0}")]
    Transport(String),
    /// An answer we cannot read (an HTML 502 from a proxy, a truncated body).
    #[error("unreadable answer from Stripe (HTTP {status})")]
    Unreadable { status: u16 },
    /// Not sent: Stripe kept failing and the circuit is open for this long still.
    #[error("Stripe keeps failing; not calling it for another {} ms", .retry_in.as_millis())]
    CircuitOpen { retry_in: std::time::Duration },
}

impl StripeCallError {
    /// Whether asking again (with the same Idempotency-Key) may give another answer.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) | Self::CircuitOpen { .. } => true,
            Self::Unreadable { status } => *status >= 500 || (200..300).contains(status),
            Self::Api {
                status,
                should_retry,
                ..
            } => should_retry.unwrap_or(*status == 409 || *status == 429 || *status >= 500),
        }
    }

    /// Stripe's error code, if it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { error, .. } => error.code.as_deref(),
            _ => None,
        }
    }

    /// We are not (or no longer) allowed to act on the connected account.
    pub fn is_permission_error(&self) -> bool {
        match self {
            Self::Api { status, error, .. } => {
                matches!(status, 401 | 403)
                    || error.kind.as_deref() == Some("permission_error")
                    || matches!(
                        error.code.as_deref(),
                        Some("account_invalid" | "platform_api_key_expired")
                    )
            }
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { status: 404, .. }) || self.code() == Some("resource_missing")
    }
}

/// What a refund is created with.
#[derive(Debug, Clone)]
pub struct RefundParams<'a> {
    pub charge: &'a str,
    pub amount: i64,
    /// `requested_by_customer`, `duplicate` or `fraudulent`.
    pub reason: &'a str,
    pub metadata: HashMap<String, String>,
}

/// The platform's client for the Stripe REST API.
#[derive(Clone)]
pub struct StripeApi {
    http: reqwest::Client,
    base: Url,
    secret_key: SecretString,
    policy: RetryPolicy,
    /// One circuit per endpoint: Stripe's outages are often partial.
    circuits: std::sync::Arc<Circuits>,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeApi")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl StripeApi {
    pub fn new(base: Url, secret_key: SecretString, policy: RetryPolicy) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(policy.request_timeout)
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        Self {
            http,
            base,
            secret_key,
            circuits: std::sync::Arc::new(Circuits::new(policy.base.saturating_mul(10))),
            policy,
        }
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// `GET /v1/charges/{id}` on a connected account (safe to retry).
    pub async fn retrieve_charge(
        &self,
        account: &str,
        charge: &str,
    ) -> Result<Charge, StripeCallError> {
        let request = RetrieveCharge::new(charge).build();
        self.with_retries("charges.retrieve", Some(account), None, || {
            request_clone(&request)
        })
        .await
    }

    /// `POST /v1/refunds` on a connected account, retried under one Idempotency-Key.
    pub async fn create_refund(
        &self,
        account: &str,
        params: &RefundParams<'_>,
        idempotency_key: &str,
    ) -> Result<Refund, StripeCallError> {
        let reason = match params.reason {
            "duplicate" => CreateRefundReason::Duplicate,
            "fraudulent" => CreateRefundReason::Fraudulent,
            _ => CreateRefundReason::RequestedByCustomer,
        };
        let request = CreateRefund::new()
            .charge(params.charge)
            .amount(params.amount)
            .reason(reason)
            .metadata(params.metadata.clone())
            .build();
        self.with_retries(
            "refunds.create",
            Some(account),
            Some(idempotency_key),
            || request_clone(&request),
        )
        .await
    }

    /// `GET /v1/refunds?charge=…` on a connected account, every page.
    pub async fn list_refunds(
        &self,
        account: &str,
        charge: &str,
    ) -> Result<Vec<Refund>, StripeCallError> {
        self.all_refunds(account, |list| list.charge(charge), &|_| {})
            .await
    }

    /// `GET /v1/refunds` on a connected account: every refund, optionally created since `since`.
    /// Every refund on a connected account (since a time); `on_page` hears the running count.
    pub async fn list_account_refunds(
        &self,
        account: &str,
        since: Option<i64>,
        on_page: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Refund>, StripeCallError> {
        self.all_refunds(
            account,
            |list| match since {
                Some(since) => list.created(RangeQueryTs::Bounds(RangeBoundsTs {
                    gte: Some(since),
                    ..RangeBoundsTs::default()
                })),
                None => list,
            },
            on_page,
        )
        .await
    }

    /// Every page of a refund list narrowed by `filter`.
    async fn all_refunds(
        &self,
        account: &str,
        filter: impl Fn(ListRefund) -> ListRefund,
        on_page: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Refund>, StripeCallError> {
        let mut all: Vec<Refund> = Vec::new();
        loop {
            let mut list = filter(ListRefund::new().limit(100));
            if let Some(last) = all.last() {
                list = list.starting_after(last.id.clone());
            }
            let request = list.build();
            let page: ListPage<Refund> = self
                .with_retries("refunds.list", Some(account), None, || {
                    request_clone(&request)
                })
                .await?;
            let more = page.has_more && !page.data.is_empty();
            all.extend(page.data);
            on_page(all.len());
            if !more {
                return Ok(all);
            }
        }
    }

    /// One page of `GET /v1/events` created in `[since, until]`, on a connected account or (with
    /// `None`) on the platform. Events are returned raw: they are stored as Stripe sent them.
    pub async fn list_events(
        &self,
        account: Option<&str>,
        since: i64,
        until: i64,
        starting_after: Option<&str>,
    ) -> Result<(Vec<serde_json::Value>, bool), StripeCallError> {
        let mut list = ListEvent::new()
            .limit(100)
            .created(RangeQueryTs::Bounds(RangeBoundsTs {
                gte: Some(since),
                lte: Some(until),
                ..RangeBoundsTs::default()
            }));
        if let Some(after) = starting_after {
            list = list.starting_after(after.to_owned());
        }
        let request = list.build();
        let page: ListPage<serde_json::Value> = self
            .with_retries("events.list", account, None, || request_clone(&request))
            .await?;
        Ok((page.data, page.has_more))
    }

    async fn with_retries<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        account: Option<&str>,
        idempotency_key: Option<&str>,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<T, StripeCallError> {
        let mut attempt = 1;
        loop {
            match self
                .send(endpoint, request(), account, idempotency_key)
                .await
            {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retryable() && attempt < self.policy.max_attempts => {
                    let wait = self.policy.backoff(attempt);
                    tracing::info!(endpoint, attempt, %error, wait_ms = wait.as_millis() as u64, "retrying Stripe call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        request: RequestBuilder,
        account: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeCallError> {
        let mut url = self.base.clone();
        let path = format!("{}/v1{}", url.path().trim_end_matches('/'), request.path);
        url.set_path(&path);
        url.set_query(request.query.as_deref());
        let method = match request.method {
            StripeMethod::Get => reqwest::Method::GET,
            StripeMethod::Post => reqwest::Method::POST,
            StripeMethod::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self
            .http
            .request(method, url)
            .bearer_auth(self.secret_key.expose_secret())
            .header("Stripe-Version", stripe_client_core::VERSION.as_str());
        if let Some(account) = account {
            builder = builder.header("Stripe-Account", account);
        }
        if let Some(key) = idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        if let Some(body) = request.body {
            builder = builder
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let circuit = self.circuits.of(endpoint);
        if let Err(retry_in) = circuit.admit() {
            metrics::counter!("stripe_requests_total", "endpoint" => endpoint, "status" => "circuit_open").increment(1);
            return Err(StripeCallError::CircuitOpen { retry_in });
        }
        let started = std::time::Instant::now();
        let response = builder.send().await;
        circuit.record(match &response {
            Ok(answer) => answer.status().is_server_error() || answer.status().as_u16() == 429,
            Err(_) => true,
        });
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                let error = error.without_url().to_string();
                tracing::warn!(endpoint, elapsed_ms, %error, "Stripe call failed");
                metrics::counter!("stripe_requests_total", "endpoint" => endpoint, "status" => "transport_error").increment(1);
                return Err(StripeCallError::Transport(error));
            }
        };
        let status = response.status().as_u16();
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response
            .bytes()
            .await
            .map_err(|e| StripeCallError::Transport(e.without_url().to_string()))?;
        tracing::info!(endpoint, status, elapsed_ms, "Stripe call");
        metrics::counter!("stripe_requests_total", "endpoint" => endpoint, "status" => status.to_string()).increment(1);
        metrics::histogram!("stripe_request_duration_seconds", "endpoint" => endpoint)
            .record(elapsed_ms as f64 / 1000.0);
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body)
                .map_err(|_| StripeCallError::Unreadable { status });
        }
        match serde_json::from_slice::<ErrorEnvelope>(&body) {
            Ok(envelope) => Err(StripeCallError::Api {
                status,
                error: envelope.error,
                should_retry,
            }),
            Err(_) => Err(StripeCallError::Unreadable { status }),
        }
    }
}

fn request_clone(request: &RequestBuilder) -> RequestBuilder {
    RequestBuilder {
        query: request.query.clone(),
        body: request.body.clone(),
        path: request.path.clone(),
        method: request.method,
    }
}
