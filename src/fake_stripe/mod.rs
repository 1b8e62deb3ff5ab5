//! An in-process fake of the parts of Stripe the service calls, speaking Stripe's HTTP shapes,
//! with scripted faults. Used by the tests, the benchmarks and the demo; never by production
//! code paths.

mod connect;

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
        let state = Arc::new(Mutex::new(FakeState::default()));
        let router = Router::new()
            .merge(connect::router())
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
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
