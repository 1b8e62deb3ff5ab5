//! The connection pool and the migrations embedded in the binary.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pooled connection idle for longer than this is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(5);

/// The service's pool. sqlx pings every connection before handing it out, one extra round trip
/// per checkout (8 per refund); a connection that was in use moments ago is known to be alive,
/// so only one idle for a while (across which the server may have restarted) is pinged. A dead
/// one is closed and another taken, as sqlx's own test does (docs/decisions/0023).
pub async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(16)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect(url)
        .await
}

/// Whether an error means the database could not be reached (down, restarting, out of
/// connections) rather than that it refused a statement: worth retrying, answered 503.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => true,
        // 08: connection exception; 57P01-03: shutting down, crashed, starting up;
        // 53300: too many connections.
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

/// [`is_unavailable`] for an error a layer above boxed (the event store's), looking through its
/// sources for the database's own error.
pub fn is_unavailable_source(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(sqlx) = error.downcast_ref::<sqlx::Error>() {
            return is_unavailable(sqlx);
        }
        current = error.source();
    }
    false
}

/// Applies pending migrations; running it twice is harmless.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_is_told_from_refused() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(sqlx::Error::PoolClosed);
        assert!(is_unavailable_source(boxed.as_ref()));
        let other: Box<dyn std::error::Error + Send + Sync> = "no".into();
        assert!(!is_unavailable_source(other.as_ref()));
    }
}
