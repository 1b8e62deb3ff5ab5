//! Bad input changes nothing: every request of a battery of bad ones is refused with a 4xx (or,
//! for the OAuth callback, a redirect naming the error) and the whole store, every table, row
//! for row, is the same afterwards.

use std::collections::BTreeMap;

use connect_ledger::webhooks::signature::sign;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, AUDITOR_TOKEN, OPERATOR_TOKEN};

const SECRET: &str = "whsec_test_secret";

/// Every table of the database: its row count and a digest of its rows in a fixed order.
async fn store_fingerprint(app: &TestApp) -> BTreeMap<String, String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(&app.pool)
    .await
    .expect("tables");
    let mut fingerprint = BTreeMap::new();
    for table in tables {
        let digest: String = sqlx::query_scalar(&format!(
            "SELECT count(*)::text || ' ' || COALESCE(md5(string_agg(t::text, '|' ORDER BY t::text)), '') \
             FROM {table} t"
        ))
        .fetch_one(&app.pool)
        .await
        .expect("digest");
        fingerprint.insert(table, digest);
    }
    fingerprint
}

struct Bad {
    what: &'static str,
    method: Method,
    path: String,
    token: Option<&'static str>,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Bad {
    fn new(what: &'static str, method: Method, path: impl Into<String>) -> Self {
        Self {
            what,
            method,
            path: path.into(),
            token: Some(OPERATOR_TOKEN),
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn json(mut self, body: Value) -> Self {
        self.content_type = Some("application/json");
        self.body = serde_json::to_vec(&body).expect("json");
        self
    }

    fn raw(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = Some(content_type);
        self.body = body.into();
        self
    }

    fn token(mut self, token: Option<&'static str>) -> Self {
        self.token = token;
        self
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

fn webhook(what: &'static str, body: Vec<u8>, signature: Option<String>) -> Bad {
    let bad = Bad::new(what, Method::POST, "/api/stripe/webhooks")
        .token(None)
        .raw("application/json", body);
    match signature {
        Some(signature) => bad.header("Stripe-Signature", signature),
        None => bad,
    }
}

fn battery(charge: &str) -> Vec<Bad> {
    let now = chrono::Utc::now().timestamp();
    let event = serde_json::to_vec(&json!({"id": "evt_bad_1", "object": "event",
        "type": "charge.refunded", "created": now, "livemode": false,
        "data": {"object": {"id": charge, "object": "charge"}}}))
    .expect("json");
    let refund = |amount: Value, approval: &str| {
        json!({"app": "shop", "purchase_id": "pur_1", "charge_id": charge,
               "approval_id": approval, "amount": amount, "requested_by": "agent"})
    };
    vec![
        Bad::new("app: wrong content type", Method::POST, "/v1/apps")
            .raw("text/plain", r#"{"slug":"x","name":"X"}"#),
        Bad::new("app: broken JSON", Method::POST, "/v1/apps").raw("application/json", "{not"),
        Bad::new("app: unknown field", Method::POST, "/v1/apps")
            .json(json!({"slug": "x", "name": "X", "admin": true})),
        Bad::new("app: oversized", Method::POST, "/v1/apps")
            .json(json!({"slug": "x", "name": "x".repeat(300 * 1024)})),
        Bad::new("app: no token", Method::POST, "/v1/apps")
            .json(json!({"slug": "x", "name": "X"}))
            .token(None),
        Bad::new("app: auditor writes", Method::POST, "/v1/apps")
            .json(json!({"slug": "x", "name": "X"}))
            .token(Some(AUDITOR_TOKEN)),
        Bad::new("app: bad slug", Method::POST, "/v1/apps")
            .json(json!({"slug": "Not A Slug!", "name": "X"})),
        Bad::new("app: taken slug", Method::POST, "/v1/apps")
            .json(json!({"slug": "shop", "name": "Again"})),
        Bad::new("app: NUL in the name", Method::POST, "/v1/apps")
            .json(json!({"slug": "x", "name": "a\u{0}b"})),
        Bad::new("connect: already connected", Method::POST, "/v1/apps/shop/connect").json(json!({})),
        Bad::new("connect: unknown app", Method::POST, "/v1/apps/nope/connect").json(json!({})),
        Bad::new("disconnect: unknown app", Method::POST, "/v1/apps/nope/disconnect").json(json!({})),
        Bad::new("disconnect: auditor", Method::POST, "/v1/apps/shop/disconnect")
            .json(json!({}))
            .token(Some(AUDITOR_TOKEN)),
        Bad::new("refund: more than the charge", Method::POST, "/v1/refunds")
            .json(refund(json!(1_000_000), "a2")),
        Bad::new("refund: zero", Method::POST, "/v1/refunds").json(refund(json!(0), "a3")),
        Bad::new("refund: negative", Method::POST, "/v1/refunds").json(refund(json!(-5), "a4")),
        Bad::new("refund: not an integer", Method::POST, "/v1/refunds").json(refund(json!(1.5), "a5")),
        Bad::new("refund: key reused for another amount", Method::POST, "/v1/refunds")
            .json(refund(json!(200), "a1")),
        Bad::new("refund: unknown app", Method::POST, "/v1/refunds").json(
            json!({"app": "nope", "purchase_id": "p", "charge_id": charge, "approval_id": "a",
                   "requested_by": "agent"}),
        ),
        Bad::new("refund: charge Stripe does not know", Method::POST, "/v1/refunds").json(
            json!({"app": "shop", "purchase_id": "p9", "charge_id": "ch_missing", "approval_id": "a",
                   "requested_by": "agent"}),
        ),
        Bad::new("refund: missing fields", Method::POST, "/v1/refunds")
            .json(json!({"app": "shop"})),
        Bad::new("refund: unknown reason", Method::POST, "/v1/refunds").json(
            json!({"app": "shop", "purchase_id": "p8", "charge_id": charge, "approval_id": "a",
                   "reason": "because", "requested_by": "agent"}),
        ),
        Bad::new("refund: auditor", Method::POST, "/v1/refunds")
            .json(refund(json!(100), "a6"))
            .token(Some(AUDITOR_TOKEN)),
        webhook("webhook: no signature", event.clone(), None),
        webhook(
            "webhook: wrong secret",
            event.clone(),
            Some(sign(&event, "whsec_wrong", now)),
        ),
        webhook(
            "webhook: stale timestamp",
            event.clone(),
            Some(sign(&event, SECRET, now - 3600)),
        ),
        webhook(
            "webhook: garbage header",
            event.clone(),
            Some("t=abc,v1=zz".to_owned()),
        ),
        webhook(
            "webhook: signed, not an event",
            b"[1,2,3]".to_vec(),
            Some(sign(b"[1,2,3]", SECRET, now)),
        ),
        webhook(
            "webhook: signed, not JSON",
            b"{nope".to_vec(),
            Some(sign(b"{nope", SECRET, now)),
        ),
        webhook(
            "webhook: oversized",
            vec![b' '; 2 * 1024 * 1024],
            Some("t=1,v1=00".to_owned()),
        ),
        Bad::new("backfill: malformed account", Method::POST, "/v1/webhooks/backfill")
            .json(json!({"account": "not-an-account"})),
        Bad::new("backfill: negative since", Method::POST, "/v1/webhooks/backfill")
            .json(json!({"since": -1})),
        Bad::new("retry: unknown event", Method::POST, "/v1/webhooks/events/evt_nope/retry")
            .json(json!({})),
        Bad::new("audit: bad limit", Method::GET, "/v1/audit?limit=abc"),
        Bad::new("refunds: NUL in a filter", Method::GET, "/v1/refunds?purchase_id=a%00b"),
    ]
}

#[tokio::test]
async fn every_rejection_is_4xx_and_leaves_the_store_unchanged() {
    let app = spawn_app().await;
    app.connected_app("shop", "acct_shop").await;
    let charge = app.stripe.create_charge("acct_shop", 1_000, "usd");
    let refund = app.refund("shop", &charge, "a1", Some(100)).await;
    assert_eq!(refund.status(), 201);
    app.create_app("shop-two").await;
    let state = app.start_connect("shop-two").await;
    app.projections_at_head().await;
    let before = store_fingerprint(&app).await;

    let mut wrong = Vec::new();
    for bad in battery(&charge) {
        let mut request = app
            .http
            .request(bad.method.clone(), format!("{}{}", app.address, bad.path))
            .body(bad.body);
        if let Some(token) = bad.token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = bad.content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in bad.headers {
            request = request.header(name, value);
        }
        let status = request.send().await.expect("send").status();
        if !status.is_client_error() {
            wrong.push(format!("{}: {status}", bad.what));
        }
    }
    // The OAuth callback answers redirects; a forged state, another flow's state with an
    // error, and a missing code must record nothing.
    for query in [
        vec![("code", "ac_forged"), ("state", "st_forged")],
        vec![("state", state.as_str())],
        vec![("code", "ac_x")],
    ] {
        let location = app.callback(&query).await;
        if !location.contains("error=") {
            wrong.push(format!("callback {query:?}: {location}"));
        }
    }
    app.projections_at_head().await;
    let after = store_fingerprint(&app).await;
    assert!(wrong.is_empty(), "not refused: {wrong:#?}");
    let changed: Vec<&String> = before
        .keys()
        .filter(|table| before.get(*table) != after.get(*table))
        .collect();
    assert!(
        changed.is_empty(),
        "changed by rejected requests: {changed:?}"
    );
}
