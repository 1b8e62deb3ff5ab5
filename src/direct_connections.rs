//! Connections kept outside the pool for the hottest statement, the event store's append
//! (docs/decisions/0036).
//!
//! sqlx tests every pooled connection on its way back to the pool with a round trip (a `Sync`
//! and its `ReadyForQuery`, in a task spawned for it), whatever the pool's options say: one
//! extra round trip per statement run on the pool, as many as the appends themselves. A
//! connection here goes back to its stash only after its statement was answered in full, or
//! refused by the server, which leaves it ready for the next; one that failed otherwise, or
//! whose statement was cancelled half way, is dropped. Like the pool (`db::connect`), one that
//! sat idle for a while is pinged before use, and a dead one replaced.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgSeverity};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How many connections the appends may hold open at once.
const MAX_CONNECTIONS: usize = 16;
/// How long an append waits for a connection before it gives up (as the pool does).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle connection older than this is pinged before use (as the pool's are).
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(5);

pub struct DirectConnections {
    options: PgConnectOptions,
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Semaphore,
}

impl DirectConnections {
    /// A stash that opens its connections with `pool`'s options.
    pub fn for_pool(pool: &sqlx::PgPool) -> Self {
        Self::new(pool.connect_options().as_ref().clone())
    }

    pub fn new(options: PgConnectOptions) -> Self {
        Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_CONNECTIONS),
        }
    }

    /// A connection for one statement: the most recently used idle one, or a new one.
    pub async fn checkout(&self) -> Result<Lease<'_>, sqlx::Error> {
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some((mut conn, since)) = idle else {
                let conn = self.options.connect().await?;
                return Ok(Lease::new(self, conn, permit));
            };
            if since.elapsed() < PING_WHEN_IDLE_FOR || conn.ping().await.is_ok() {
                return Ok(Lease::new(self, conn, permit));
            }
            // Dead (the server restarted, say): drop it and try the next.
        }
    }
}

/// One connection, for one statement. [`Lease::finish`] says how the statement went; a lease
/// dropped without it (a cancelled request) drops its connection.
pub struct Lease<'a> {
    owner: &'a DirectConnections,
    conn: Option<PgConnection>,
    _permit: SemaphorePermit<'a>,
}

impl<'a> Lease<'a> {
    fn new(owner: &'a DirectConnections, conn: PgConnection, permit: SemaphorePermit<'a>) -> Self {
        Self {
            owner,
            conn: Some(conn),
            _permit: permit,
        }
    }

    /// Returns the connection to the stash when the server answered the statement (its rows,
    /// or an error that leaves the session open); drops it otherwise. Passes the outcome through.
    pub fn finish<T>(mut self, outcome: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        let answered = match &outcome {
            Ok(_) | Err(sqlx::Error::RowNotFound) => true,
            // A FATAL error (terminated by an administrator, say) ends the session with it.
            Err(sqlx::Error::Database(error)) => error
                .try_downcast_ref::<PgDatabaseError>()
                .is_some_and(|error| {
                    !matches!(error.severity(), PgSeverity::Fatal | PgSeverity::Panic)
                }),
            Err(_) => false,
        };
        if answered {
            if let Some(conn) = self.conn.take() {
                self.owner
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((conn, Instant::now()));
            }
        }
        outcome
    }
}

impl Deref for Lease<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        // Present from construction until `finish` consumes the lease.
        self.conn.as_ref().expect("a lease holds its connection")
    }
}

impl DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("a lease holds its connection")
    }
}
