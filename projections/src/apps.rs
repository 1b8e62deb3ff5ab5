//! The `apps` table: one row per registered app and its current Stripe connection.

use async_trait::async_trait;
use ledger_aggregates::app_connection::{AppConnectionEvent, APP_CONNECTION};
use sqlx::PgConnection;

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
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        use AppConnectionEvent as E;
        let table = &self.table;
        let slug = &event.aggregate_id;
        let at = event.recorded_at;
        match event.decode::<AppConnectionEvent>()? {
            E::AppRegistered { app_id, slug, name } => {
                sqlx::query(&format!(
                    "INSERT INTO {table} (id, slug, name, status, created_at, updated_at) \
                     VALUES ($1, $2, $3, 'disconnected', $4, $4)"
                ))
                .bind(app_id)
                .bind(slug)
                .bind(name)
                .bind(at)
                .execute(conn)
                .await?;
            }
            E::AppConnected {
                stripe_account_id,
                livemode,
                connected_at,
                ..
            } => {
                sqlx::query(&format!(
                    "UPDATE {table} SET status = 'connected', stripe_account_id = $2, livemode = $3, \
                     connected_at = $4, last_connect_error = NULL, attention_reason = NULL, \
                     last_stripe_account_id = $2, updated_at = $5 WHERE slug = $1"
                ))
                .bind(slug)
                .bind(stripe_account_id)
                .bind(livemode)
                .bind(connected_at)
                .bind(at)
                .execute(conn)
                .await?;
            }
            E::ConnectFailed { error, .. } => {
                sqlx::query(&format!(
                    "UPDATE {table} SET last_connect_error = $2, updated_at = $3 WHERE slug = $1"
                ))
                .bind(slug)
                .bind(error)
                .bind(at)
                .execute(conn)
                .await?;
            }
            E::AppDisconnected { .. } => {
                sqlx::query(&format!(
                    "UPDATE {table} SET status = 'disconnected', stripe_account_id = NULL, \
                     livemode = NULL, connected_at = NULL, updated_at = $2 WHERE slug = $1"
                ))
                .bind(slug)
                .bind(at)
                .execute(conn)
                .await?;
            }
            E::AppFlaggedForAttention { reason } => {
                sqlx::query(&format!(
                    "UPDATE {table} SET attention_reason = $2, updated_at = $3 WHERE slug = $1"
                ))
                .bind(slug)
                .bind(reason)
                .bind(at)
                .execute(conn)
                .await?;
            }
            E::ConnectStarted { .. } | E::ConnectStateConsumed { .. } => {}
        }
        Ok(())
    }
}

/// An app as the API shows it, read from the `apps` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
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
