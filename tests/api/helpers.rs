//! `spawn_app()`: the service on port 0 against a fresh database and a fake Stripe.

use connect_ledger::config::Settings;
use connect_ledger::fake_stripe::{FakeStripe, FAKE_CLIENT_ID, FAKE_SECRET_KEY};
use connect_ledger::ledger::Ledger;
use connect_ledger::startup::{projections, Application};
use ledger_projections::{Projection, ProjectionRunner};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection, PgPool};

/// Replays the whole event log into `projection` (which writes its own tables), `batch_size`
/// events per transaction.
pub async fn replay(pool: &PgPool, projection: std::sync::Arc<dyn Projection>, batch_size: i64) {
    let runner = ProjectionRunner::with_batch_size(pool.clone(), vec![projection], batch_size);
    runner.register().await.expect("register");
    let projection = std::sync::Arc::clone(&runner.projections()[0]);
    runner.catch_up(projection.as_ref()).await.expect("replay");
}

pub const OPERATOR_TOKEN: &str = "op-test-token-1";
pub const AUDITOR_TOKEN: &str = "au-test-token-1";

/// The server that hosts each test's database (trust auth).
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_SERVER")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> String {
    let name = format!("cl_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{}/postgres", server_url()))
        .await
        .expect("connect to the test PostgreSQL server (see README)");
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .expect("create test database");
    format!("{}/{name}", server_url())
}

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub stripe: FakeStripe,
    pub database_url: String,
}

pub fn settings(database_url: &str, stripe: &FakeStripe) -> Settings {
    Settings {
        database_url: Some(database_url.to_owned()),
        data_dir: "./.ledger-unused".into(),
        listen: "127.0.0.1:0".into(),
        public_url: Some("https://ledger.example.test".into()),
        stripe_secret_key: Some(FAKE_SECRET_KEY.into()),
        stripe_connect_client_id: Some(FAKE_CLIENT_ID.into()),
        stripe_webhook_secret: Some("whsec_test_secret".into()),
        stripe_api_base: stripe.base_url(),
        stripe_connect_base: stripe.base_url(),
        ledger_tokens: Some(format!("operator:{OPERATOR_TOKEN},auditor:{AUDITOR_TOKEN}")),
        stripe_retry_base_ms: Some(10),
        stripe_timeout_ms: Some(1000),
        ledger_env: "development".into(),
    }
}

pub async fn spawn_app() -> TestApp {
    let stripe = FakeStripe::start().await.expect("start fake Stripe");
    let database_url = fresh_database().await;
    spawn_app_with(settings(&database_url, &stripe), stripe).await
}

pub async fn spawn_app_with(settings: Settings, stripe: FakeStripe) -> TestApp {
    let database_url = settings
        .database_url
        .clone()
        .expect("tests use a database URL");
    let config = settings.validate().expect("valid test configuration");
    let app = Application::build(config)
        .await
        .expect("build the application");
    let address = format!("http://{}", app.local_addr().expect("bound"));
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let pool = PgPool::connect(&database_url)
        .await
        .expect("connect test pool");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    TestApp {
        address,
        http,
        pool,
        stripe,
        database_url,
    }
}

impl TestApp {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.http.request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request reaches the service")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, Some(OPERATOR_TOKEN), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(OPERATOR_TOKEN), Some(body))
            .await
    }

    pub async fn create_app(&self, slug: &str) -> Value {
        let response = self
            .post(
                "/v1/apps",
                json!({"slug": slug, "name": format!("App {slug}")}),
            )
            .await;
        assert_eq!(response.status(), 201, "create app {slug}");
        response.json().await.expect("app json")
    }

    /// Starts the OAuth flow and returns the state.
    pub async fn start_connect(&self, slug: &str) -> String {
        let response = self
            .post(&format!("/v1/apps/{slug}/connect"), json!({}))
            .await;
        assert_eq!(response.status(), 200, "start connect");
        let body: Value = response.json().await.expect("json");
        body["state"].as_str().expect("state").to_owned()
    }

    /// Follows the callback the way Stripe's redirect would; returns the Location header.
    pub async fn callback(&self, query: &[(&str, &str)]) -> String {
        let response = self
            .http
            .get(format!("{}/api/stripe/connect/callback", self.address))
            .query(query)
            .send()
            .await
            .expect("callback reaches the service");
        assert_eq!(response.status(), 303, "callback redirects");
        response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("location")
            .to_owned()
    }

    /// Registers and connects an app to `account`.
    pub async fn connected_app(&self, slug: &str, account: &str) -> Value {
        self.create_app(slug).await;
        let state = self.start_connect(slug).await;
        let code = self.stripe.issue_code(account);
        let location = self.callback(&[("code", &code), ("state", &state)]).await;
        assert!(location.ends_with("success=connected"), "{location}");
        self.get(&format!("/v1/apps/{slug}"))
            .await
            .json()
            .await
            .expect("json")
    }

    /// A ledger over the same database, to reach the domain directly (e.g. to plant the past).
    pub fn ledger(&self) -> Ledger {
        Ledger::new(
            &self.pool,
            ProjectionRunner::new(self.pool.clone(), projections()),
        )
    }

    /// `POST /v1/refunds` with the usual fields.
    pub async fn refund(
        &self,
        app: &str,
        charge: &str,
        approval: &str,
        amount: Option<i64>,
    ) -> Response {
        let mut body = json!({
            "app": app,
            "purchase_id": "pur_1",
            "charge_id": charge,
            "approval_id": approval,
            "requested_by": "agent@support.example",
        });
        if let Some(amount) = amount {
            body["amount"] = json!(amount);
        }
        self.post("/v1/refunds", body).await
    }

    /// Polls a refund until `done` holds for it (bounded: 10 s).
    pub async fn wait_for_refund(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let refund: Value = self
                .get(&format!("/v1/refunds/{id}"))
                .await
                .json()
                .await
                .expect("json");
            if done(&refund) {
                return refund;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("refund {id} did not reach the expected state");
    }

    /// Waits until every projection has applied the latest event of the types it reads.
    pub async fn projections_settled(&self) {
        self.until_none_behind(
            "SELECT count(*) FROM projection_checkpoints c \
             JOIN LATERAL (SELECT transaction_id, global_position FROM events \
               WHERE aggregate_type = CASE c.name WHEN 'apps' THEN 'AppConnection' ELSE 'ChargeLedger' END \
               ORDER BY transaction_id DESC, global_position DESC LIMIT 1) e ON true \
             WHERE (c.last_transaction_id, c.last_position) < (e.transaction_id, e.global_position)",
            "projections did not catch up",
        )
        .await;
    }

    /// Waits until every projection's checkpoint stands at the log's last event: idle
    /// projections move past the other types' events too, so the checkpoints stop moving.
    pub async fn projections_at_head(&self) {
        self.until_none_behind(
            "SELECT count(*) FROM projection_checkpoints c, \
               (SELECT transaction_id, global_position FROM events \
                ORDER BY transaction_id DESC, global_position DESC LIMIT 1) e \
             WHERE (c.last_transaction_id, c.last_position) < (e.transaction_id, e.global_position)",
            "projections did not reach the head of the log",
        )
        .await;
    }

    /// Polls a count of lagging projections until it is zero (5 s at most).
    async fn until_none_behind(&self, count_behind: &str, failure: &str) {
        for _ in 0..500 {
            let behind: i64 = sqlx::query_scalar(count_behind)
                .fetch_one(&self.pool)
                .await
                .expect("checkpoints");
            if behind == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{failure}");
    }

    pub async fn event_types(&self, slug: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY sequence",
        )
        .bind(slug)
        .fetch_all(&self.pool)
        .await
        .expect("events")
    }
}

/// The error code of a uniform error body.
pub async fn error_code(response: Response) -> String {
    let body: Value = response.json().await.expect("error body is JSON");
    body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned()
}

/// A refund of `amount` asked on a charge of 1,000 (app `shop`, account `acct_1`), for tests
/// that drive the charge ledger's command bus directly.
pub fn request_refund(
    refund: &str,
    amount: i64,
) -> ledger_aggregates::charge_ledger::ChargeLedgerCommand {
    use ledger_aggregates::charge_ledger::{
        ChargeFacts, ChargeLedgerCommand, NewRefund, RefundReason,
    };
    ChargeLedgerCommand::RequestRefund {
        charge: ChargeFacts {
            app: "shop".into(),
            stripe_account_id: "acct_1".into(),
            amount: 1000,
            currency: "usd".into(),
            amount_refunded: 0,
            disputed: false,
        },
        refund: NewRefund {
            refund_id: refund.into(),
            idempotency_key: format!("refund:p:{refund}"),
            purchase_id: "p".into(),
            approval_id: refund.into(),
            amount: Some(amount),
            reason: RefundReason::default(),
            requested_by: "test".into(),
        },
    }
}
