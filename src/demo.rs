//! `connect-ledger demo`: the whole system in one command. It starts the service (embedded
//! database unless `DATABASE_URL` is set; its data apart from the real one) against the built-in
//! fake Stripe, then, over HTTP like any client: registers and connects a sample app through the
//! OAuth flow, refunds in full and in part, repeats a request, asks for too much, sends Stripe
//! webhooks (a refund made in the Stripe Dashboard, an event the ledger ignores), verifies the
//! audit chain, and prints where to look. The service stays up until Ctrl-C (`--once`: it stops).

use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::SecretString;
use serde_json::{json, Value};
use url::Url;

use crate::config::Config;
use crate::fake_stripe::{FakeStripe, FAKE_CLIENT_ID, FAKE_SECRET_KEY};
use crate::http::auth::TokenRegistry;
use crate::startup::{shutdown_signal, Application};
use crate::webhooks::signature::sign;

const APP: &str = "total-typescript";
const ACCOUNT: &str = "acct_1DemoTotalTypeScript";
const WEBHOOK_SECRET: &str = "whsec_demo_only";

fn random_token(role: &str) -> String {
    format!("demo_{role}_{}", hex::encode(rand::random::<[u8; 12]>()))
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn deliver(&self, event: &Value) -> anyhow::Result<u16> {
        let body = serde_json::to_vec(event)?;
        let signature = sign(&body, WEBHOOK_SECRET, chrono::Utc::now().timestamp());
        let response = self
            .http
            .post(format!("{}/api/stripe/webhooks", self.base))
            .header("Stripe-Signature", signature)
            .body(body)
            .send()
            .await?;
        Ok(response.status().as_u16())
    }
}

/// Runs the demo; with `once`, stops the service when the scenario is done.
pub async fn run(mut config: Config, once: bool) -> anyhow::Result<()> {
    let stripe = FakeStripe::start()
        .await
        .context("starting the fake Stripe")?;
    let (operator, auditor) = (random_token("operator"), random_token("auditor"));
    let stripe_base = Url::parse(&stripe.base_url())?;
    config.stripe.api_base = stripe_base.clone();
    config.stripe.connect_base = stripe_base;
    config.stripe.secret_key = Some(SecretString::from(FAKE_SECRET_KEY));
    config.stripe.connect_client_id = Some(FAKE_CLIENT_ID.to_owned());
    config.stripe.webhook_secrets = vec![SecretString::from(WEBHOOK_SECRET)];
    config.tokens = TokenRegistry::parse(&format!("operator:{operator},auditor:{auditor}"))
        .map_err(anyhow::Error::msg)?;
    if config.database_url.is_none() {
        // Apart from the real embedded database.
        config.data_dir = config.data_dir.join("demo");
    }
    let app = Application::build(config).await?;
    let address = app.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let client = Client {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?,
        base: format!("http://{address}"),
        token: operator,
    };
    let outcome = scenario(&client, &stripe).await;
    match &outcome {
        Ok(lines) => {
            println!();
            println!("connect-ledger demo: the service runs at {}", client.base);
            for line in lines {
                println!("  {line}");
            }
            println!();
            println!("Where to look:");
            println!(
                "  dashboard      {}/dashboard  (sign in with the auditor token: {auditor})",
                client.base
            );
            println!(
                "  audit log      curl -H 'Authorization: Bearer {auditor}' {}/v1/audit",
                client.base
            );
            println!(
                "  verify chain   curl -H 'Authorization: Bearer {auditor}' {}/v1/audit/verify",
                client.base
            );
            println!("  metrics        {}/metrics", client.base);
            println!("  operator token {}  (these demo tokens and the fake Stripe live only as long as this run)", client.token);
        }
        Err(error) => eprintln!("the demo failed: {error:#}"),
    }
    if outcome.is_ok() && !once {
        println!();
        println!("Press Ctrl-C to stop.");
        shutdown_signal().await;
    }
    let _ = stop.send(());
    server.await??;
    outcome.map(drop)
}

/// The story, told through the API; returns what happened, one line each.
async fn scenario(client: &Client, stripe: &FakeStripe) -> anyhow::Result<Vec<String>> {
    let mut told = Vec::new();
    let (status, _) = client
        .post("/v1/apps", json!({"slug": APP, "name": "Total TypeScript"}))
        .await?;
    if !matches!(status, 201 | 409) {
        bail!("registering the app answered {status}");
    }
    let (_, app) = client.get(&format!("/v1/apps/{APP}")).await?;
    if app["status"] != "connected" {
        let (status, started) = client
            .post(&format!("/v1/apps/{APP}/connect"), json!({}))
            .await?;
        if status != 200 {
            bail!("starting the OAuth flow answered {status}: {started}");
        }
        // What the app owner's browser does at Stripe: authorize, then come back with a code.
        let code = stripe.issue_code(ACCOUNT);
        let callback = client
            .http
            .get(format!("{}/api/stripe/connect/callback", client.base))
            .query(&[
                ("code", code.as_str()),
                ("state", started["state"].as_str().unwrap_or_default()),
            ])
            .send()
            .await?;
        let location = callback
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !location.contains("success=connected") {
            bail!("the OAuth callback went to {location:?}");
        }
    }
    told.push(format!(
        "app {APP} registered and connected to {ACCOUNT} through Connect OAuth"
    ));

    // Purchases of this run (refund keys are per purchase and approval: a second run on the same
    // database makes new ones).
    let run = hex::encode(rand::random::<[u8; 3]>());
    let (course_purchase, workshop_purchase) =
        (format!("pur_course_{run}"), format!("pur_workshop_{run}"));
    let course = stripe.create_charge(ACCOUNT, 24_900, "usd");
    let workshop = stripe.create_charge(ACCOUNT, 9_900, "usd");
    let refund = |charge: &str, purchase: &str, approval: &str, amount: Option<i64>| {
        let mut body = json!({"app": APP, "purchase_id": purchase, "charge_id": charge,
            "approval_id": approval, "requested_by": "support@demo.example", "reason": "requested_by_customer"});
        if let Some(amount) = amount {
            body["amount"] = json!(amount);
        }
        body
    };
    let (status, full) = client
        .post(
            "/v1/refunds",
            refund(&course, &course_purchase, "appr_1", None),
        )
        .await?;
    told.push(format!(
        "full refund of {course}: {status}, {} {}",
        full["amount"], full["status"]
    ));
    let (status, partial) = client
        .post(
            "/v1/refunds",
            refund(&workshop, &workshop_purchase, "appr_2", Some(2_500)),
        )
        .await?;
    told.push(format!(
        "partial refund of {workshop}: {status}, {} {}",
        partial["amount"], partial["status"]
    ));
    let (status, again) = client
        .post(
            "/v1/refunds",
            refund(&workshop, &workshop_purchase, "appr_2", Some(2_500)),
        )
        .await?;
    told.push(format!(
        "the same approval sent again: {status}, the same refund {} (never twice)",
        again["id"].as_str().unwrap_or("?")
    ));
    let (status, too_much) = client
        .post(
            "/v1/refunds",
            refund(&workshop, &workshop_purchase, "appr_3", Some(9_000)),
        )
        .await?;
    told.push(format!(
        "9000 more on {workshop}: {status} {}",
        too_much["error"]["code"].as_str().unwrap_or("?")
    ));

    // A refund made in the Stripe Dashboard, and news the ledger does not act on: Stripe's
    // webhooks, signed.
    stripe
        .refund_in_dashboard(&workshop, 1_000)
        .context("refunding in the fake Stripe Dashboard")?;
    let dashboard_refund = stripe.events().last().cloned().unwrap_or(Value::Null);
    let status = client.deliver(&dashboard_refund).await?;
    told.push(format!(
        "webhook refund.created (a 1000 refund made in the Stripe Dashboard): {status}"
    ));
    let ignored = json!({"id": format!("evt_demo_{}", uuid::Uuid::new_v4().simple()), "object": "event",
        "type": "customer.created", "account": ACCOUNT, "created": chrono::Utc::now().timestamp(),
        "livemode": false, "data": {"object": {"id": "cus_demo", "object": "customer"}}});
    let status = client.deliver(&ignored).await?;
    told.push(format!(
        "webhook customer.created (kept, not acted on): {status}"
    ));

    // Let the webhook worker and the projections catch up, then read the charge's ledger.
    let mut ledger = Value::Null;
    for _ in 0..50 {
        let (_, charge) = client.get(&format!("/v1/charges/{workshop}")).await?;
        if charge["refunded"] == json!(3_500) {
            ledger = charge;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    told.push(format!(
        "ledger of {workshop}: amount {}, refunded {}, refundable {}",
        ledger["amount"], ledger["refunded"], ledger["refundable"]
    ));
    let (_, verified) = client.get("/v1/audit/verify").await?;
    told.push(format!(
        "audit chain: ok {}, {} entries checked",
        verified["ok"], verified["checked"]
    ));
    if ledger.is_null() || verified["ok"] != true {
        bail!("the ledger did not settle as expected: {ledger} {verified}");
    }
    Ok(told)
}
