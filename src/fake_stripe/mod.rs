//! An in-process fake of the parts of Stripe the service calls, speaking Stripe's HTTP shapes,
//! with scripted faults. Used by the tests, the benchmarks and the demo; never by production
//! code paths.

mod api;
mod connect;

pub use api::{FakeCharge, FakeRefund};

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

/// The platform secret key the fake accepts.
pub const FAKE_SECRET_KEY: &str = "sk_test_fake_platform_key";
/// The Connect client id the fake accepts.
pub const FAKE_CLIENT_ID: &str = "ca_fake_client";

/// A fault to inject into the next call of one endpoint.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and a Stripe-shaped `api_error` body.
    Status(u16),
    /// Wait this long before answering normally (a client timeout shorter than this fails).
    Delay(Duration),
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Answer with this status and `Stripe-Should-Retry`.
    ShouldRetry(u16, bool),
    /// `POST /v1/refunds` only: create the refund (and save the answer under its key), then lose
    /// the response and answer this status instead, like a connection cut after Stripe acted.
    ExecuteThenFail(u16),
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub stripe_account: Option<String>,
    pub idempotency_key: Option<String>,
    pub form: Vec<(String, String)>,
}

impl Recorded {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
pub(crate) struct FakeState {
    pub requests: Vec<Recorded>,
    pub faults: HashMap<&'static str, VecDeque<Fault>>,
    /// OAuth codes not yet used: code → (account, livemode).
    pub codes: HashMap<String, (String, bool)>,
    /// Accounts that have authorized the platform.
    pub authorized: HashMap<String, bool>,
    pub charges: HashMap<String, FakeCharge>,
    pub refunds: Vec<FakeRefund>,
    /// Saved answers by (account, Idempotency-Key).
    pub idempotency: HashMap<(String, String), api::SavedAnswer>,
    /// Accounts whose owners revoked the platform (`account_invalid`).
    pub revoked_accounts: std::collections::HashSet<String>,
    /// The status new refunds get (`succeeded` unless a test says otherwise).
    pub refund_status: String,
    /// Events, oldest first, for `GET /v1/events`.
    pub events: Vec<serde_json::Value>,
    /// The fake's clock for `created` (unix seconds), starting now.
    pub clock: i64,
}

/// A running fake; clone it freely.
#[derive(Clone)]
pub struct FakeStripe {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl FakeStripe {
    /// Starts the fake on 127.0.0.1 and a free port.
    pub async fn start() -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(FakeState {
            refund_status: "succeeded".into(),
            clock: chrono::Utc::now().timestamp(),
            ..FakeState::default()
        }));
        let router = Router::new()
            .merge(connect::router())
            .merge(api::router())
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { addr, state })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the owner of `account` would bring back from Stripe's consent page.
    pub fn issue_code(&self, account: &str) -> String {
        let code = format!("ac_{}", uuid::Uuid::new_v4().simple());
        self.lock()
            .codes
            .insert(code.clone(), (account.to_owned(), false));
        code
    }

    /// Queues a fault for the next call of `endpoint` (e.g. `"oauth/token"`).
    pub fn inject(&self, endpoint: &'static str, fault: Fault) {
        self.lock()
            .faults
            .entry(endpoint)
            .or_default()
            .push_back(fault);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Creates a captured charge on a connected account; returns its `ch_…` id.
    pub fn create_charge(&self, account: &str, amount: i64, currency: &str) -> String {
        let id = format!("ch_{}", uuid::Uuid::new_v4().simple());
        self.lock().charges.insert(
            id.clone(),
            FakeCharge {
                account: account.to_owned(),
                amount,
                currency: currency.to_owned(),
                amount_refunded: 0,
                disputed: false,
            },
        );
        id
    }

    pub fn charge(&self, id: &str) -> Option<FakeCharge> {
        self.lock().charges.get(id).cloned()
    }

    pub fn set_disputed(&self, charge: &str) {
        if let Some(c) = self.lock().charges.get_mut(charge) {
            c.disputed = true;
        }
    }

    /// A refund made outside the platform (the Stripe Dashboard).
    pub fn refund_in_dashboard(&self, charge: &str, amount: i64) -> Option<FakeRefund> {
        let mut state = self.lock();
        let c = state.charges.get_mut(charge)?;
        c.amount_refunded += amount;
        let refund = FakeRefund {
            id: format!("re_{}", uuid::Uuid::new_v4().simple()),
            account: c.account.clone(),
            charge: charge.to_owned(),
            amount,
            status: "succeeded".into(),
            reason: None,
            metadata: Default::default(),
            idempotency_key: None,
        };
        state.refunds.push(refund.clone());
        let object = api::refund_json(&refund);
        let account = refund.account.clone();
        api::push_event(&mut state, "refund.created", Some(&account), object);
        Some(refund)
    }

    /// Changes a refund behind the ledger's back (for reconciliation tests).
    pub fn tamper_refund(&self, id: &str, amount: Option<i64>, status: Option<&str>) {
        if let Some(refund) = self.lock().refunds.iter_mut().find(|r| r.id == id) {
            if let Some(amount) = amount {
                refund.amount = amount;
            }
            if let Some(status) = status {
                refund.status = status.to_owned();
            }
        }
    }

    /// Makes a refund vanish from Stripe's lists.
    pub fn delete_refund(&self, id: &str) {
        self.lock().refunds.retain(|r| r.id != id);
    }

    /// Drops every fault still queued.
    pub fn forget_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every charge, by id.
    pub fn charges(&self) -> Vec<(String, FakeCharge)> {
        let mut all: Vec<_> = self
            .lock()
            .charges
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Holds a charge under a given id (to replay one fake's world in another).
    pub fn adopt_charge(&self, id: &str, charge: FakeCharge) {
        self.lock().charges.insert(id.to_owned(), charge);
    }

    /// Every event the fake has produced, oldest first.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.lock().events.clone()
    }

    /// Records an event of the fake's own making (e.g. `account.application.deauthorized`).
    pub fn push_event(
        &self,
        kind: &str,
        account: Option<&str>,
        object: serde_json::Value,
    ) -> serde_json::Value {
        api::push_event(&mut self.lock(), kind, account, object)
    }

    /// A charge object as Stripe would show it.
    pub fn charge_object(&self, id: &str) -> Option<serde_json::Value> {
        self.lock().charges.get(id).map(|c| api::charge_json(id, c))
    }

    /// The refunds the fake created for a charge.
    pub fn refunds_of(&self, charge: &str) -> Vec<FakeRefund> {
        self.lock()
            .refunds
            .iter()
            .filter(|r| r.charge == charge)
            .cloned()
            .collect()
    }

    /// The owner of `account` revoked the platform.
    pub fn revoke(&self, account: &str) {
        self.lock().revoked_accounts.insert(account.to_owned());
    }

    /// Stripe forgets idempotency keys after 24 hours.
    pub fn forget_idempotency_keys(&self) {
        self.lock().idempotency.clear();
    }

    /// The status the next refunds are created with (`succeeded`, `pending`, …).
    pub fn set_refund_status(&self, status: &str) {
        self.lock().refund_status = status.to_owned();
    }

    pub fn is_authorized(&self, account: &str) -> bool {
        self.lock()
            .authorized
            .get(account)
            .copied()
            .unwrap_or(false)
    }
}

/// Records a request and returns the fault scripted for it, if any.
pub(crate) fn record(
    state: &Mutex<FakeState>,
    endpoint: &'static str,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    form: Vec<(String, String)>,
) -> Option<Fault> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut state = state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    state.requests.push(Recorded {
        method: method.to_owned(),
        path: path.to_owned(),
        authorization: header("authorization"),
        stripe_account: header("stripe-account"),
        idempotency_key: header("idempotency-key"),
        form,
    });
    state.faults.get_mut(endpoint).and_then(VecDeque::pop_front)
}

/// Applies a fault: `Some(response)` to answer with instead of the normal one.
pub(crate) async fn apply_fault(fault: Option<Fault>) -> Option<Response> {
    match fault? {
        Fault::Status(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(
                (
                    status,
                    Json(json!({"error": {"type": "api_error", "message": "Injected fault."}})),
                )
                    .into_response(),
            )
        }
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            None
        }
        Fault::Garbage => Some((StatusCode::OK, "<html>not json</html>").into_response()),
        Fault::ShouldRetry(status, retry) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (
                status,
                Json(json!({"error": {"type": "api_error", "message": "Injected fault."}})),
            )
                .into_response();
            let value = if retry { "true" } else { "false" };
            response.headers_mut().insert(
                "stripe-should-retry",
                axum::http::HeaderValue::from_static(value),
            );
            Some(response)
        }
        Fault::ExecuteThenFail(_) => None,
    }
}

/// Records a request, applies the fault scripted for it and checks the platform key: `Err` holds
/// the response to send instead of the normal one.
pub(crate) async fn admit(
    state: &Mutex<FakeState>,
    endpoint: &'static str,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    form: Vec<(String, String)>,
) -> Result<(), Response> {
    let fault = record(state, endpoint, method, path, headers, form);
    if let Some(response) = apply_fault(fault).await {
        return Err(response);
    }
    match check_key(headers) {
        Some(response) => Err(response),
        None => Ok(()),
    }
}

/// Checks the platform key; `Some(401)` when it is wrong.
pub(crate) fn check_key(headers: &HeaderMap) -> Option<Response> {
    let expected = format!("Bearer {FAKE_SECRET_KEY}");
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    (!ok).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided."}})),
        )
            .into_response()
    })
}
