//! End to end against Stripe fakes written by others, started on 127.0.0.1 by the test:
//! stripe-stateful-mock (npm; honours Stripe-Account and Idempotency-Key) and localstripe (PyPI).
//! `scripts/test` installs both (`tests/fakes/`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use connect_ledger::fake_stripe::{FakeStripe, FAKE_SECRET_KEY};
use serde_json::{json, Value};

use crate::helpers::{error_code, fresh_database, settings, spawn_app_with, TestApp};

/// A third-party fake running as a child process.
struct ExternalFake {
    child: Child,
    base: String,
}

impl ExternalFake {
    fn start(program: &str, script: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fakes");
        let mut child = Command::new(program)
            .arg(dir.join(script))
            .arg("0")
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script} with {program}: {e} (run scripts/test, which installs the fakes)"));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let address = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(address) = line.strip_prefix("listening on ") {
                        break address.trim().to_owned();
                    }
                }
                _ => panic!("{script} did not start (run scripts/test, which installs the fakes)"),
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            base: format!("http://{address}"),
        }
    }

    async fn post(&self, path: &str, account: Option<&str>, form: &[(&str, &str)]) -> Value {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .bearer_auth(FAKE_SECRET_KEY)
            .form(form);
        if let Some(account) = account {
            request = request.header("Stripe-Account", account);
        }
        request
            .send()
            .await
            .expect("fake answers")
            .json()
            .await
            .expect("json")
    }

    async fn get(&self, path: &str, account: Option<&str>) -> Value {
        let mut request = reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(FAKE_SECRET_KEY);
        if let Some(account) = account {
            request = request.header("Stripe-Account", account);
        }
        request
            .send()
            .await
            .expect("fake answers")
            .json()
            .await
            .expect("json")
    }

    async fn delete(&self, path: &str) {
        reqwest::Client::new()
            .delete(format!("{}{path}", self.base))
            .bearer_auth(FAKE_SECRET_KEY)
            .send()
            .await
            .expect("fake answers");
    }
}

impl Drop for ExternalFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A card payment through a PaymentIntent on localstripe; returns the succeeded intent.
async fn pay_with_card(fake: &ExternalFake, amount: &str) -> Value {
    let method = fake
        .post(
            "/v1/payment_methods",
            None,
            &[
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2030"),
                ("card[cvc]", "123"),
            ],
        )
        .await;
    let intent = fake
        .post(
            "/v1/payment_intents",
            None,
            &[
                ("amount", amount),
                ("currency", "usd"),
                ("payment_method", method["id"].as_str().expect("pm")),
                ("confirm", "true"),
                ("payment_method_types[]", "card"),
            ],
        )
        .await;
    assert_eq!(intent["status"], "succeeded", "{intent}");
    intent
}

/// The service with its REST calls going to `api` and Connect OAuth to our own fake.
async fn service_against(api: &ExternalFake) -> TestApp {
    let oauth = FakeStripe::start().await.expect("connect fake");
    let database_url = fresh_database().await;
    let mut settings = settings(&database_url, &oauth);
    settings.stripe_api_base = api.base.clone();
    spawn_app_with(settings, oauth).await
}

async fn refund(
    app: &TestApp,
    slug: &str,
    charge: &str,
    approval: &str,
    amount: Option<i64>,
) -> reqwest::Response {
    let mut body = json!({"app": slug, "purchase_id": "pur_tp", "charge_id": charge,
                          "approval_id": approval, "requested_by": "agent"});
    if let Some(amount) = amount {
        body["amount"] = json!(amount);
    }
    app.post("/v1/refunds", body).await
}

#[tokio::test]
async fn stripe_stateful_mock_refunds_on_a_connected_account() {
    let mock = ExternalFake::start("node", "stateful-mock.js");
    let app = service_against(&mock).await;
    let account = mock
        .post("/v1/accounts", None, &[("type", "standard")])
        .await;
    let account = account["id"].as_str().expect("acct").to_owned();
    let charge = mock
        .post(
            "/v1/charges",
            Some(&account),
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("source", "tok_visa"),
            ],
        )
        .await;
    let charge = charge["id"].as_str().expect("ch").to_owned();
    app.connected_app("course", &account).await;

    let partial = refund(&app, "course", &charge, "p1", Some(300)).await;
    assert_eq!(partial.status(), 201);
    let partial: Value = partial.json().await.expect("json");
    assert_eq!(partial["status"], "succeeded");
    // The same approval again: the service answers from its ledger; Stripe holds one refund.
    assert_eq!(
        refund(&app, "course", &charge, "p1", Some(300))
            .await
            .status(),
        200
    );

    let full: Value = refund(&app, "course", &charge, "p2", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (full["status"].as_str(), full["amount"].as_i64()),
        (Some("succeeded"), Some(700))
    );

    let again = refund(&app, "course", &charge, "p3", None).await;
    assert_eq!(
        again.status(),
        201,
        "already refunded in full: not an error"
    );
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["failure_reason"], "charge_already_refunded");

    let too_much = refund(&app, "course", &charge, "p4", Some(1)).await;
    assert_eq!(too_much.status(), 422);

    let at_stripe = mock
        .get(&format!("/v1/charges/{charge}"), Some(&account))
        .await;
    let ledger: Value = app
        .get(&format!("/v1/charges/{charge}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ledger["amount"], at_stripe["amount"]);
    assert_eq!(ledger["refunded"], at_stripe["amount_refunded"]);
    assert_eq!(ledger["refundable"], 0);
    let listed = mock
        .get(
            &format!("/v1/refunds?charge={charge}&limit=100"),
            Some(&account),
        )
        .await;
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(2));

    // An account that no longer exists (or revoked us) fails clearly.
    let gone = mock
        .post("/v1/accounts", None, &[("type", "standard")])
        .await;
    let gone = gone["id"].as_str().expect("acct").to_owned();
    let gone_charge = mock
        .post(
            "/v1/charges",
            Some(&gone),
            &[
                ("amount", "500"),
                ("currency", "usd"),
                ("source", "tok_visa"),
            ],
        )
        .await;
    app.connected_app("closed", &gone).await;
    mock.delete(&format!("/v1/accounts/{gone}")).await;
    let refused = refund(
        &app,
        "closed",
        gone_charge["id"].as_str().expect("ch"),
        "g1",
        None,
    )
    .await;
    assert_eq!(refused.status(), 409);
    assert_eq!(error_code(refused).await, "app_not_authorized");
}

#[tokio::test]
async fn localstripe_refunds_a_payment_intent_charge() {
    let fake = ExternalFake::start("python3", "localstripe_server.py");
    let app = service_against(&fake).await;
    let intent = pay_with_card(&fake, "2000").await;
    let charge = intent["charges"]["data"][0]["id"]
        .as_str()
        .expect("charge")
        .to_owned();
    // localstripe ignores Stripe-Account: any connected account id reaches the same charges.
    app.connected_app("intents", "acct_localstripe").await;

    let response = refund(&app, "intents", &charge, "l1", Some(1500)).await;
    assert_eq!(response.status(), 201);
    let refund_body: Value = response.json().await.expect("json");
    assert_eq!(refund_body["status"], "succeeded");
    let at_stripe = fake.get(&format!("/v1/charges/{charge}"), None).await;
    assert_eq!(at_stripe["amount_refunded"], 1500);
    let ledger: Value = app
        .get(&format!("/v1/charges/{charge}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (ledger["refunded"].as_i64(), ledger["refundable"].as_i64()),
        (Some(1500), Some(500))
    );
}

#[tokio::test]
async fn localstripe_signs_and_sends_events_that_are_stored_once() {
    let fake = ExternalFake::start("python3", "localstripe_server.py");
    let app = service_against(&fake).await;
    let registered = reqwest::Client::new()
        .post(format!("{}/_config/webhooks/ledger", fake.base))
        .form(&[
            ("url", format!("{}/api/stripe/webhooks", app.address)),
            ("secret", "whsec_test_secret".to_owned()),
        ])
        .send()
        .await
        .expect("register the webhook");
    assert!(registered.status().is_success(), "{}", registered.status());
    fake.post("/v1/customers", None, &[("email", "buyer@example.com")])
        .await;
    pay_with_card(&fake, "900").await;
    let mut rows: Vec<(String, String)> = Vec::new();
    for _ in 0..200 {
        rows = sqlx::query_as("SELECT event_type, status FROM webhook_events ORDER BY received_at")
            .fetch_all(&app.pool)
            .await
            .expect("inbox");
        let settled = rows.iter().all(|(_, s)| s == "handled" || s == "ignored");
        if rows.len() >= 2 && settled {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let types: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
    assert!(types.contains(&"customer.created"), "{types:?}");
    assert!(
        types.iter().any(|t| t.starts_with("payment_intent.")),
        "{types:?}"
    );
    assert!(
        rows.iter().all(|(_, s)| s == "handled" || s == "ignored"),
        "{rows:?}"
    );
}
