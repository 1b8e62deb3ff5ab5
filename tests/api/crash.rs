//! A real `kill -9` of the spawned service at the two dangerous instants of a refund: after the
//! intent is recorded but before Stripe is called, and after Stripe answered but before the
//! answer is recorded. After a restart every refund is final, once in Stripe and once in the
//! ledger.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use connect_ledger::fake_stripe::{FakeStripe, FAKE_CLIENT_ID, FAKE_SECRET_KEY};
use serde_json::{json, Value};

use crate::helpers::{fresh_database, OPERATOR_TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_connect-ledger");

pub struct Service {
    child: Child,
    pub address: String,
    lines: Receiver<String>,
}

impl Service {
    pub fn spawn(database_url: &str, stripe: &FakeStripe, pause_at: Option<&str>) -> Self {
        Self::spawn_with(database_url, stripe, pause_at, &[])
    }

    /// Like [`Self::spawn`], with environment overrides; stdout and stderr are both read.
    pub fn spawn_with(
        database_url: &str,
        stripe: &FakeStripe,
        pause_at: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("LEDGER_LISTEN", "127.0.0.1:0")
            .env("STRIPE_SECRET_KEY", FAKE_SECRET_KEY)
            .env("STRIPE_CONNECT_CLIENT_ID", FAKE_CLIENT_ID)
            .env("STRIPE_API_BASE", stripe.base_url())
            .env("STRIPE_CONNECT_BASE", stripe.base_url())
            .env("STRIPE_RETRY_BASE_MS", "10")
            .env("LEDGER_TOKENS", format!("operator:{OPERATOR_TOKEN}"))
            .env("RUST_LOG", "info")
            .env_remove("LEDGER_TEST_PAUSE_AT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(point) = pause_at {
            command.env("LEDGER_TEST_PAUSE_AT", point);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn the service");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        let err_tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut service = Self {
            child,
            address: String::new(),
            lines,
        };
        let line = service.wait_for_line("listening on", Duration::from_secs(30));
        // Plain or JSON logs: the address is what follows, up to the first character that
        // cannot be part of it.
        let rest = line.split("listening on ").nth(1).expect("address");
        let address: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
            .collect();
        service.address = format!("http://{address}");
        service
    }

    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the service never logged {needle:?}");
    }

    /// Stops the service and returns every line it wrote that was not consumed yet.
    pub fn stop_and_collect(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut collected = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            collected.push(line);
        }
        collected
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn connect_app(
    http: &reqwest::Client,
    service: &Service,
    stripe: &FakeStripe,
    account: &str,
) {
    connect_app_as(http, &service.address, stripe, account, OPERATOR_TOKEN).await;
}

/// Registers the app `shop` and connects it to `account` through the OAuth flow; returns the
/// bodies of the service's answers.
pub async fn connect_app_as(
    http: &reqwest::Client,
    base: &str,
    stripe: &FakeStripe,
    account: &str,
    token: &str,
) -> Vec<String> {
    let created = http
        .post(format!("{base}/v1/apps"))
        .bearer_auth(token)
        .json(&json!({"slug": "shop", "name": "Shop"}))
        .send()
        .await
        .expect("create app");
    assert_eq!(created.status(), 201);
    let created = created.text().await.expect("body");
    let started: Value = http
        .post(format!("{base}/v1/apps/shop/connect"))
        .bearer_auth(token)
        .send()
        .await
        .expect("connect")
        .json()
        .await
        .expect("json");
    let code = stripe.issue_code(account);
    let callback = http
        .get(format!("{base}/api/stripe/connect/callback"))
        .query(&[
            ("code", code.as_str()),
            ("state", started["state"].as_str().expect("state")),
        ])
        .send()
        .await
        .expect("callback");
    assert_eq!(callback.status(), 303);
    vec![created, started.to_string()]
}

async fn crash_at(point: &'static str, refunds_in_stripe_at_crash: usize) {
    let stripe = FakeStripe::start().await.expect("fake");
    let database_url = fresh_database().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut first = Service::spawn(&database_url, &stripe, Some(point));
    connect_app(&http, &first, &stripe, "acct_crash").await;
    let charge = stripe.create_charge("acct_crash", 2500, "eur");

    let request = http
        .post(format!("{}/v1/refunds", first.address))
        .bearer_auth(OPERATOR_TOKEN)
        .json(
            &json!({"app": "shop", "purchase_id": "pur_9", "charge_id": charge,
                      "approval_id": "appr_9", "requested_by": "agent"}),
        )
        .send();
    let pending = tokio::spawn(request);
    let line = tokio::task::spawn_blocking(move || {
        let line = first.wait_for_line(&format!("test pause at {point}"), Duration::from_secs(20));
        first.kill9();
        line
    })
    .await
    .expect("join");
    assert!(line.contains(point));
    assert!(
        pending.await.expect("join").is_err(),
        "the caller saw the connection die"
    );
    assert_eq!(stripe.refunds_of(&charge).len(), refunds_in_stripe_at_crash);

    let second = Service::spawn(&database_url, &stripe, None);
    let mut refunds = Value::Null;
    for _ in 0..200 {
        refunds = http
            .get(format!("{}/v1/refunds?charge_id={charge}", second.address))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        if refunds["refunds"][0]["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = refunds["refunds"].as_array().expect("refunds");
    assert_eq!(list.len(), 1, "once in the ledger: {refunds}");
    assert_eq!(
        list[0]["status"], "succeeded",
        "final after restart: {refunds}"
    );
    let in_stripe = stripe.refunds_of(&charge);
    assert_eq!(in_stripe.len(), 1, "once in Stripe");
    assert_eq!(list[0]["stripe_refund_id"], in_stripe[0].id);
    assert_eq!(
        stripe.charge(&charge).map(|c| c.amount_refunded),
        Some(2500)
    );
    let ledger: Value = http
        .get(format!("{}/v1/charges/{charge}", second.address))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .expect("charge")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (ledger["refunded"].as_i64(), ledger["refundable"].as_i64()),
        (Some(2500), Some(0))
    );
}

#[tokio::test]
async fn killed_between_the_intent_and_the_stripe_call() {
    crash_at("after_intent", 0).await;
}

#[tokio::test]
async fn killed_between_stripes_answer_and_recording_it() {
    crash_at("after_stripe_answer", 1).await;
}
