//! The auditors' side: the audit log, its hash chain, rebuilds, reconciliation, upcasting.

use std::sync::Arc;

use connect_ledger::startup::projections;
use ledger_aggregates::charge_ledger::ChargeLedgerCommand;
use ledger_aggregates::{EventMetadata, Source};
use ledger_projections::audit::AuditProjection;
use ledger_projections::rebuild::{rebuild, rebuild_all};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{replay, spawn_app, TestApp, AUDITOR_TOKEN, OPERATOR_TOKEN};

const ACCOUNT: &str = "acct_1Audit";

/// Some history: two apps, refunds, a webhook.
async fn history(app: &TestApp) -> String {
    app.connected_app("alpha", ACCOUNT).await;
    app.create_app("beta").await;
    let charge = app.stripe.create_charge(ACCOUNT, 4000, "usd");
    assert_eq!(
        app.refund("alpha", &charge, "r1", Some(1000))
            .await
            .status(),
        201
    );
    assert_eq!(
        app.refund("alpha", &charge, "r2", Some(500)).await.status(),
        201
    );
    app.projections_settled().await;
    charge
}

async fn verify(app: &TestApp) -> Value {
    app.request(Method::GET, "/v1/audit/verify", Some(AUDITOR_TOKEN), None)
        .await
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn the_audit_log_tells_who_what_when_and_from_where() {
    let app = spawn_app().await;
    let charge = history(&app).await;
    let all: Value = app
        .request(
            Method::GET,
            "/v1/audit?limit=1000",
            Some(AUDITOR_TOKEN),
            None,
        )
        .await
        .json()
        .await
        .expect("json");
    let entries = all["entries"].as_array().expect("entries");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(
        entries.len() as i64,
        total,
        "every event is in the audit log"
    );
    let positions: Vec<i64> = entries
        .iter()
        .filter_map(|e| e["position"].as_i64())
        .collect();
    assert_eq!(
        positions,
        (1..=total).collect::<Vec<_>>(),
        "gap-free, oldest first"
    );
    assert_eq!(all["next"], Value::Null);
    let requested = entries
        .iter()
        .find(|e| e["event_type"] == "RefundRequested")
        .expect("a refund request");
    assert_eq!(requested["app"], "alpha");
    assert_eq!(requested["charge_id"], charge);
    assert_eq!(requested["purchase_id"], "pur_1");
    assert_eq!(requested["source"], "api");
    assert!(requested["actor"]
        .as_str()
        .is_some_and(|a| a.starts_with("operator:")));
    assert!(requested["data"]["amount"].is_i64());
    assert!(requested["recorded_at"].is_string());
    let refund_id = requested["refund_id"].as_str().expect("refund id");
    let answered = entries
        .iter()
        .find(|e| e["event_type"] == "RefundStatusChanged" && e["refund_id"] == refund_id)
        .expect("the answer");
    assert_eq!(
        answered["purchase_id"], "pur_1",
        "later events of a refund carry its purchase"
    );

    for (query, expect) in [
        ("app=beta", 1usize),
        (&format!("refund_id={refund_id}")[..], 3),
        ("source=stripe_webhook", 0),
    ] {
        let page: Value = app
            .get(&format!("/v1/audit?{query}"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(
            page["entries"].as_array().map(Vec::len),
            Some(expect),
            "{query}"
        );
    }
    // Cursor pagination walks the same entries.
    let mut walked = Vec::new();
    let mut after = 0;
    loop {
        let page: Value = app
            .get(&format!("/v1/audit?limit=3&after={after}"))
            .await
            .json()
            .await
            .expect("json");
        walked.extend(
            page["entries"]
                .as_array()
                .expect("entries")
                .iter()
                .filter_map(|e| e["position"].as_i64()),
        );
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(walked, positions);

    let csv = app
        .http
        .get(format!("{}/v1/audit?charge_id={charge}", app.address))
        .bearer_auth(AUDITOR_TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("csv");
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/csv"));
    let text = csv.text().await.expect("text");
    let mut lines = text.lines();
    assert!(lines
        .next()
        .unwrap_or_default()
        .starts_with("position,recorded_at,aggregate_type"));
    assert!(lines.count() >= 5);
    let bad = app.get("/v1/audit?source=carrier_pigeon").await;
    assert_eq!(bad.status(), 422);
}

#[tokio::test]
async fn tampering_with_events_is_found_at_the_first_bad_position() {
    let app = spawn_app().await;
    history(&app).await;
    let intact = verify(&app).await;
    assert_eq!(intact["ok"], true);
    let checked = intact["checked"].as_i64().expect("checked");
    assert!(checked >= 8);
    assert!(intact["head"].is_string());
    let pool = app.pool.clone();
    let position_of = |n: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT global_position FROM audit_entries WHERE position = $1",
            )
            .bind(n)
            .fetch_one(&pool)
            .await
            .expect("entry")
        }
    };

    // UPDATE: change what an event says, then put it back.
    let target = position_of(5).await;
    let original: String =
        sqlx::query_scalar("SELECT payload::text FROM events WHERE global_position = $1")
            .bind(target)
            .fetch_one(&app.pool)
            .await
            .expect("row");
    let mut forged: Value = serde_json::from_str(&original).expect("json");
    if let Some(inner) = forged
        .as_object_mut()
        .and_then(|o| o.values_mut().next())
        .and_then(Value::as_object_mut)
    {
        inner.insert("forged".into(), json!(true));
    }
    let forged = forged.to_string();
    sqlx::query("UPDATE events SET payload = $2::json WHERE global_position = $1")
        .bind(target)
        .bind(&forged)
        .execute(&app.pool)
        .await
        .expect("tamper");
    assert_eq!(
        verify(&app).await,
        json!({"ok": false, "checked": 4, "first_bad_position": 5, "head": null})
    );
    sqlx::query("UPDATE events SET payload = $2::json WHERE global_position = $1")
        .bind(target)
        .bind(&original)
        .execute(&app.pool)
        .await
        .expect("restore");
    assert_eq!(
        verify(&app).await["ok"],
        true,
        "restored, the chain holds again"
    );
    // Swap two events' contents.
    let (a, b) = (position_of(6).await, position_of(7).await);
    sqlx::query(
        "UPDATE events e SET payload = o.payload, event_type = o.event_type FROM \
         (SELECT global_position, payload, event_type FROM events WHERE global_position IN ($1, $2)) o \
         WHERE e.global_position IN ($1, $2) AND o.global_position <> e.global_position",
    )
    .bind(a)
    .bind(b)
    .execute(&app.pool)
    .await
    .expect("swap");
    assert_eq!(verify(&app).await["first_bad_position"], 6);

    // DELETE an earlier one.
    let c = position_of(3).await;
    sqlx::query("DELETE FROM events WHERE global_position = $1")
        .bind(c)
        .execute(&app.pool)
        .await
        .expect("delete");
    let deleted = verify(&app).await;
    assert_eq!(
        (deleted["ok"].clone(), deleted["first_bad_position"].clone()),
        (json!(false), json!(3))
    );

    // The CLI says the same, and fails.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_connect-ledger"))
        .args(["audit", "verify"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .await
        .expect("cli");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("\"first_bad_position\":3"));
}

#[tokio::test]
async fn an_event_slipped_in_behind_the_chain_is_found() {
    let app = spawn_app().await;
    history(&app).await;
    // A forged row with an old transaction id lands behind the audit checkpoint.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, transaction_id) \
         VALUES ('AppConnection', 'beta', 99, 'AppDisconnected', '1.0', '{}', '{}', '3')",
    )
    .execute(&app.pool)
    .await
    .expect("forge");
    let result = verify(&app).await;
    assert_eq!(result["ok"], false);
    assert_eq!(result["first_bad_position"], 1);
}

async fn snapshot(app: &TestApp, table: &str, order: &str) -> Vec<String> {
    sqlx::query_scalar(&format!(
        "SELECT (to_jsonb(t) - 'projected_at')::text FROM (SELECT * FROM {table} ORDER BY {order}) t"
    ))
    .fetch_all(&app.pool)
    .await
    .expect("rows")
}

async fn all_tables(app: &TestApp) -> Vec<Vec<String>> {
    vec![
        snapshot(app, "apps", "slug").await,
        snapshot(app, "refunds", "id").await,
        snapshot(app, "charges", "charge_id").await,
        snapshot(app, "external_refunds", "stripe_refund_id").await,
        snapshot(app, "audit_entries", "position").await,
    ]
}

#[tokio::test]
async fn a_rebuild_equals_the_live_tables_even_while_events_keep_coming() {
    let app = spawn_app().await;
    let charge = history(&app).await;
    let before = all_tables(&app).await;
    for projection in projections() {
        rebuild(&app.pool, projection, |_| {})
            .await
            .expect("rebuild");
    }
    assert_eq!(
        all_tables(&app).await,
        before,
        "a quiet rebuild reproduces every table"
    );

    // Now rebuild while refunds keep arriving.
    let writers = async {
        for i in 0..15 {
            let status = app
                .refund("alpha", &charge, &format!("live{i}"), Some(10))
                .await
                .status();
            assert_eq!(status, 201);
        }
    };
    // All at once, as the CLI does: one reading of the log feeds every projection.
    let rebuilding = async {
        rebuild_all(&app.pool, projections(), Arc::new(|_: &str, _| {}))
            .await
            .expect("rebuild all");
    };
    tokio::join!(writers, rebuilding);
    app.projections_settled().await;
    let live = all_tables(&app).await;
    for projection in projections() {
        rebuild(&app.pool, projection, |_| {})
            .await
            .expect("rebuild");
    }
    assert_eq!(
        all_tables(&app).await,
        live,
        "what raced equals a fresh rebuild"
    );
    assert_eq!(verify(&app).await["ok"], true);
    let refunds: i64 = sqlx::query_scalar("SELECT count(*) FROM refunds")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(refunds, 17);
}

/// Replayed one event per batch, every entry must find its app and purchase in the earlier
/// events of its charge (the links are looked up, not carried within a batch).
#[tokio::test]
async fn the_audit_log_replayed_one_event_per_batch_equals_the_live_one() {
    let app = spawn_app().await;
    history(&app).await;
    sqlx::query("CREATE TABLE audit_replay (LIKE audit_entries INCLUDING ALL)")
        .execute(&app.pool)
        .await
        .expect("create replay table");
    replay(
        &app.pool,
        Arc::new(AuditProjection::into_table("audit-replay", "audit_replay")),
        1,
    )
    .await;

    let live = snapshot(&app, "audit_entries", "position").await;
    assert!(live.len() > 8, "some history: {}", live.len());
    assert_eq!(live, snapshot(&app, "audit_replay", "position").await);
    let unlinked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_replay WHERE aggregate_type = 'ChargeLedger' \
           AND (app IS NULL OR (refund_id IS NOT NULL AND purchase_id IS NULL))",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(unlinked, 0, "every charge entry names its app and purchase");
}

#[tokio::test]
async fn reconciliation_finds_each_planted_difference_and_nothing_else() {
    let app = spawn_app().await;
    let charge = history(&app).await;
    let clean = app.post("/v1/reconciliation/alpha", json!({})).await;
    assert_eq!(clean.status(), 200);
    let clean: Value = clean.json().await.expect("json");
    assert_eq!(clean["differences"], json!([]), "{clean}");
    assert_eq!(clean["checked"], 2);

    let refunds = app.stripe.refunds_of(&charge);
    let dashboard = app
        .stripe
        .refund_in_dashboard(&charge, 42)
        .expect("dashboard");
    app.stripe.tamper_refund(&refunds[0].id, Some(999), None);
    app.stripe
        .tamper_refund(&refunds[1].id, None, Some("failed"));
    let other = app.stripe.create_charge(ACCOUNT, 800, "usd");
    let gone: Value = app
        .refund("alpha", &other, "r3", Some(100))
        .await
        .json()
        .await
        .expect("json");
    app.stripe
        .delete_refund(gone["stripe_refund_id"].as_str().expect("re"));

    let report: Value = app
        .post("/v1/reconciliation/alpha", json!({}))
        .await
        .json()
        .await
        .expect("json");
    let mut found: Vec<(String, String)> = report["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default().to_owned(),
                d["stripe_refund_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    found.sort();
    let mut expected = vec![
        ("missing_in_ledger".to_owned(), dashboard.id.clone()),
        ("amount_differs".to_owned(), refunds[0].id.clone()),
        ("status_differs".to_owned(), refunds[1].id.clone()),
        (
            "missing_in_stripe".to_owned(),
            gone["stripe_refund_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(found, expected);
    let latest: Value = app
        .request(
            Method::GET,
            "/v1/reconciliation/alpha",
            Some(AUDITOR_TOKEN),
            None,
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(latest["id"], report["id"]);
    assert_eq!(latest["differences"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn auditors_can_read_everything_and_change_nothing() {
    let app = spawn_app().await;
    let charge = history(&app).await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    for path in [
        "/v1/apps".to_owned(),
        "/v1/apps/alpha/connect".to_owned(),
        "/v1/apps/alpha/disconnect".to_owned(),
        "/v1/refunds".to_owned(),
        "/v1/webhooks/retry-dead".to_owned(),
        "/v1/webhooks/events/evt_1/retry".to_owned(),
        "/v1/webhooks/backfill".to_owned(),
        "/v1/reconciliation/alpha".to_owned(),
    ] {
        let response = app
            .request(Method::POST, &path, Some(AUDITOR_TOKEN), Some(json!({})))
            .await;
        assert_eq!(response.status(), 403, "{path}");
    }
    for path in [
        "/v1/apps".to_owned(),
        "/v1/apps/alpha".to_owned(),
        "/v1/refunds".to_owned(),
        format!("/v1/charges/{charge}"),
        "/v1/audit".to_owned(),
        "/v1/audit/verify".to_owned(),
        "/v1/webhooks/events".to_owned(),
    ] {
        let response = app
            .request(Method::GET, &path, Some(AUDITOR_TOKEN), None)
            .await;
        assert_eq!(response.status(), 200, "{path}");
    }
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(before, after);
    let _ = OPERATOR_TOKEN;
}

#[tokio::test]
async fn an_old_event_shape_is_upcast_when_read() {
    let app = spawn_app().await;
    app.connected_app("alpha", ACCOUNT).await;
    // A charge whose refund request was stored by an older release (version 0.9: no requested_amount).
    let charge = "ch_legacy";
    for (sequence, event_type, version, payload) in [
        (
            1,
            "ChargeObserved",
            "1.0",
            json!({"ChargeObserved": {"charge": {"app": "alpha", "stripe_account_id": ACCOUNT,
            "amount": 700, "currency": "usd", "amount_refunded": 0, "disputed": false}}}),
        ),
        (
            2,
            "RefundRequested",
            "0.9",
            json!({"RefundRequested": {"refund_id": "rf_legacy", "idempotency_key": "refund:p:a",
            "purchase_id": "p", "approval_id": "a", "amount": 300, "currency": "usd", "reason": "duplicate",
            "requested_by": "old-agent"}}),
        ),
    ] {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             VALUES ('ChargeLedger', $1, $2, $3, $4, $5, '{\"source\":\"system\",\"actor\":\"migration\"}')",
        )
        .bind(charge)
        .bind(sequence)
        .bind(event_type)
        .bind(version)
        .bind(payload)
        .execute(&app.pool)
        .await
        .expect("legacy event");
    }
    // The event store reads it (the aggregate loads and decides on it)…
    app.ledger()
        .charges
        .execute(
            charge,
            ChargeLedgerCommand::MarkSubmitted {
                refund_id: "rf_legacy".into(),
            },
            &EventMetadata::new("test", Source::System, "t"),
        )
        .await
        .expect("the aggregate loads a 0.9 event");
    // …and so do the projections.
    app.projections_settled().await;
    let refund: Value = app
        .get("/v1/refunds/rf_legacy")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (refund["amount"].as_i64(), refund["reason"].as_str()),
        (Some(300), Some("duplicate"))
    );
    let ledger: Value = app
        .get(&format!("/v1/charges/{charge}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (ledger["pending"].as_i64(), ledger["refundable"].as_i64()),
        (Some(300), Some(400))
    );
}
