//! The `apps` table: one row per registered app and its current Stripe connection.

use async_trait::async_trait;
use ledger_aggregates::app_connection::{AppConnectionEvent, APP_CONNECTION};
use sqlx::PgConnection;

use crate::touched::Touched;
use crate::{Projection, ProjectionError, StoredEvent};

/// Writes the apps read model into `table` (`apps` live; another name when rebuilding aside).
pub struct AppsProjection {
    name: String,
    table: String,
}

impl AppsProjection {
    pub const NAME: &'static str = "apps";

    pub fn live() -> Self {
        Self::into_table(Self::NAME, "apps")
    }

    /// A copy that writes elsewhere: `table` must be a trusted identifier, never user input.
    pub fn into_table(name: &str, table: &str) -> Self {
        Self {
            name: name.to_owned(),
            table: table.to_owned(),
        }
    }
}

#[async_trait]
impl Projection for AppsProjection {
    fn name(&self) -> &str {
        &self.name
    }

    fn aggregate_types(&self) -> &[&'static str] {
        &[APP_CONNECTION]
    }

    fn tables(&self) -> Vec<String> {
        vec![self.table.clone()]
    }

    fn aside(&self) -> std::sync::Arc<dyn Projection> {
        std::sync::Arc::new(Self::into_table(
            &format!("{}{}", self.name, crate::rebuild::ASIDE_SUFFIX),
            &format!("{}{}", crate::rebuild::ASIDE_PREFIX, self.table),
        ))
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        use AppConnectionEvent as E;
        let table = &self.table;
        let slugs: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
        let existing: Vec<AppRecord> = sqlx::query_as(&format!(
            "SELECT {RECORD_COLUMNS} FROM {table} WHERE slug = ANY($1)"
        ))
        .bind(&slugs)
        .fetch_all(&mut *conn)
        .await?;
        let mut rows = Touched::new(existing.into_iter().map(|r| (r.slug.clone(), r)));
        for event in events {
            let at = event.recorded_at;
            let slug = event.aggregate_id.as_str();
            match event.decode::<AppConnectionEvent>()? {
                E::AppRegistered { app_id, slug, name } => {
                    rows.insert_absent(
                        slug.clone(),
                        AppRecord {
                            id: app_id,
                            slug,
                            name,
                            status: "disconnected".to_owned(),
                            stripe_account_id: None,
                            livemode: None,
                            connected_at: None,
                            last_connect_error: None,
                            attention_reason: None,
                            last_stripe_account_id: None,
                            created_at: at,
                            updated_at: at,
                        },
                    );
                }
                E::AppConnected {
                    stripe_account_id,
                    livemode,
                    connected_at,
                    ..
                } => rows.update(slug, |app| {
                    app.status = "connected".to_owned();
                    app.stripe_account_id = Some(stripe_account_id.clone());
                    app.last_stripe_account_id = Some(stripe_account_id);
                    app.livemode = Some(livemode);
                    app.connected_at = Some(connected_at);
                    app.last_connect_error = None;
                    app.attention_reason = None;
                    app.updated_at = at;
                }),
                E::ConnectFailed { error, .. } => rows.update(slug, |app| {
                    app.last_connect_error = Some(error);
                    app.updated_at = at;
                }),
                E::AppDisconnected { .. } => rows.update(slug, |app| {
                    app.status = "disconnected".to_owned();
                    app.stripe_account_id = None;
                    app.livemode = None;
                    app.connected_at = None;
                    app.updated_at = at;
                }),
                E::AppFlaggedForAttention { reason } => rows.update(slug, |app| {
                    app.attention_reason = Some(reason);
                    app.updated_at = at;
                }),
                E::ConnectStarted { .. } | E::ConnectStateConsumed { .. } => {}
            }
        }
        let changed = rows.changed();
        if changed.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&AppRecord) -> Option<String>| -> Vec<Option<String>> {
            changed.iter().map(|r| f(r)).collect()
        };
        sqlx::query(&format!(
            "INSERT INTO {table} (id, slug, name, status, stripe_account_id, livemode, connected_at, \
               last_connect_error, attention_reason, last_stripe_account_id, created_at, updated_at, projected_at) \
             SELECT u.*, clock_timestamp() FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
               $6::bool[], $7::timestamptz[], $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[]) u \
             ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name, status = EXCLUDED.status, \
               stripe_account_id = EXCLUDED.stripe_account_id, livemode = EXCLUDED.livemode, \
               connected_at = EXCLUDED.connected_at, last_connect_error = EXCLUDED.last_connect_error, \
               attention_reason = EXCLUDED.attention_reason, last_stripe_account_id = EXCLUDED.last_stripe_account_id, \
               updated_at = EXCLUDED.updated_at, projected_at = EXCLUDED.projected_at"
        ))
        .bind(changed.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(changed.iter().map(|r| r.slug.clone()).collect::<Vec<_>>())
        .bind(changed.iter().map(|r| r.name.clone()).collect::<Vec<_>>())
        .bind(changed.iter().map(|r| r.status.clone()).collect::<Vec<_>>())
        .bind(column(|r| r.stripe_account_id.clone()))
        .bind(changed.iter().map(|r| r.livemode).collect::<Vec<_>>())
        .bind(changed.iter().map(|r| r.connected_at).collect::<Vec<_>>())
        .bind(column(|r| r.last_connect_error.clone()))
        .bind(column(|r| r.attention_reason.clone()))
        .bind(column(|r| r.last_stripe_account_id.clone()))
        .bind(changed.iter().map(|r| r.created_at).collect::<Vec<_>>())
        .bind(changed.iter().map(|r| r.updated_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// A whole row of the apps table, folded in memory.
#[derive(Debug, Clone, sqlx::FromRow)]
struct AppRecord {
    id: uuid::Uuid,
    slug: String,
    name: String,
    status: String,
    stripe_account_id: Option<String>,
    livemode: Option<bool>,
    connected_at: Option<chrono::DateTime<chrono::Utc>>,
    last_connect_error: Option<String>,
    attention_reason: Option<String>,
    last_stripe_account_id: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
}

const RECORD_COLUMNS: &str = "id, slug, name, status, stripe_account_id, livemode, connected_at, \
     last_connect_error, attention_reason, last_stripe_account_id, created_at, updated_at";

/// An app as the API shows it, read from the `apps` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({"slug": "total-typescript", "name": "Total TypeScript", "status": "connected", "stripe_account_id": "acct_1Nv0FGQ9RKHgCVdK", "livemode": false, "connected_at": "2026-11-22T10:00:00Z"}))]
pub struct AppRow {
    pub slug: String,
    pub name: String,
    pub status: String,
    pub stripe_account_id: Option<String>,
    pub livemode: Option<bool>,
    pub connected_at: Option<chrono::DateTime<chrono::Utc>>,
}

const APP_COLUMNS: &str = "slug, name, status, stripe_account_id, livemode, connected_at";

pub async fn list_apps(pool: &sqlx::PgPool) -> Result<Vec<AppRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY slug"))
        .fetch_all(pool)
        .await
}

pub async fn find_app(pool: &sqlx::PgPool, slug: &str) -> Result<Option<AppRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {APP_COLUMNS} FROM apps WHERE slug = $1"))
        .bind(slug)
        .fetch_optional(pool)
        .await
}

/// The app that is, or was last, connected to a Stripe account.
pub async fn app_for_account(
    pool: &sqlx::PgPool,
    account: &str,
) -> Result<Option<AppRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {APP_COLUMNS} FROM apps WHERE stripe_account_id = $1 \
         UNION ALL SELECT {APP_COLUMNS} FROM apps WHERE stripe_account_id IS NULL AND last_stripe_account_id = $1 \
         LIMIT 1"
    ))
    .bind(account)
    .fetch_optional(pool)
    .await
}
