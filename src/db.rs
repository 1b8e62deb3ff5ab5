//! The connection pool and the migrations embedded in the binary.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
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
        .connect_with(connect_options(url)?)
        .await
}

/// The URL's options. A server on this machine is reached without TLS unless the URL
/// (`sslmode`) or `PGSSLMODE` asks for a mode: on loopback TLS protects nothing and costs both
/// ends a cipher pass per message (measured: about 5 % of the CPU under refund load,
/// docs/decisions/0030). Any other host keeps the default, `prefer`.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let asked = std::env::var_os("PGSSLMODE").is_some()
        || url::Url::parse(url).is_ok_and(|url| {
            url.query_pairs()
                .any(|(key, _)| key == "sslmode" || key == "ssl-mode")
        });
    if asked || !is_loopback(&options) {
        return Ok(options);
    }
    Ok(options.ssl_mode(PgSslMode::Disable))
}

fn is_loopback(options: &PgConnectOptions) -> bool {
    let host = options.get_host();
    options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
    fn a_loopback_server_is_reached_without_tls_unless_the_url_asks() {
        let mode = |url: &str| format!("{:?}", connect_options(url).expect(url).get_ssl_mode());
        if std::env::var_os("PGSSLMODE").is_some() {
            return;
        }
        assert_eq!(mode("postgres://postgres@127.0.0.1:5432/ledger"), "Disable");
        assert_eq!(mode("postgres://postgres@localhost/ledger"), "Disable");
        assert_eq!(mode("postgres://postgres@[::1]:5432/ledger"), "Disable");
        assert_eq!(
            mode("postgres://postgres@127.0.0.1/ledger?sslmode=require"),
            "Require"
        );
        assert_eq!(mode("postgres://postgres@db.example.com/ledger"), "Prefer");
        assert_eq!(mode("postgres://postgres@10.0.0.7/ledger"), "Prefer");
    }

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
