//! The `apps` table equals what a replay of every stored event produces.

use std::sync::Arc;

use ledger_projections::apps::AppsProjection;
use ledger_projections::runner::LIVE_BATCH_SIZE;
use serde_json::json;
use sqlx::Row;

use crate::helpers::{replay, spawn_app};

async fn table_rows(pool: &sqlx::PgPool, table: &str) -> Vec<String> {
    sqlx::query(&format!(
        "SELECT (to_jsonb(t) - 'projected_at')::text AS row FROM (SELECT * FROM {table} ORDER BY slug) t"
    ))
    .fetch_all(pool)
    .await
    .expect("rows")
    .into_iter()
    .map(|r| r.get::<String, _>("row"))
    .collect()
}

#[tokio::test]
async fn the_apps_table_equals_a_replay_of_all_events() {
    let app = spawn_app().await;
    app.connected_app("alpha", "acct_alpha").await;
    app.connected_app("beta", "acct_beta").await;
    app.create_app("gamma").await;
    let state = app.start_connect("gamma").await;
    app.callback(&[("error", "access_denied"), ("state", &state)])
        .await;
    assert_eq!(
        app.post("/v1/apps/beta/disconnect", json!({}))
            .await
            .status(),
        200
    );
    let state = app.start_connect("beta").await;
    let code = app.stripe.issue_code("acct_beta_2");
    app.callback(&[("code", &code), ("state", &state)]).await;

    sqlx::query("CREATE TABLE apps_replay (LIKE apps INCLUDING ALL)")
        .execute(&app.pool)
        .await
        .expect("create replay table");
    replay(
        &app.pool,
        Arc::new(AppsProjection::into_table("apps_replay", "apps_replay")),
        LIVE_BATCH_SIZE,
    )
    .await;

    let live = table_rows(&app.pool, "apps").await;
    assert_eq!(live.len(), 3);
    assert_eq!(live, table_rows(&app.pool, "apps_replay").await);
}
