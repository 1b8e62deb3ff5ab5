//! Group commit for webhook deliveries: concurrent deliveries are stored together, in one
//! statement and one transaction, and each is answered only after that transaction committed.
//! Under load this turns many small commits (each waiting for its own WAL flush) into few larger
//! ones; a lone delivery is stored at once.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::inbox::{store_all, Arrival};

/// Deliveries stored by one statement, at most.
const MAX_BATCH: usize = 256;
/// Batches being written at once; while they are, the next deliveries gather.
const MAX_IN_FLIGHT: usize = 4;
/// Deliveries waiting to be written before senders wait too.
const QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("could not store the event: {0}")]
    Database(Arc<sqlx::Error>),
    #[error("the inbox writer has stopped")]
    Stopped,
}

struct Pending {
    arrival: Arrival,
    reply: oneshot::Sender<Result<bool, WriteError>>,
}

/// The handle deliveries are stored through.
#[derive(Clone)]
pub struct InboxWriter {
    queue: mpsc::Sender<Pending>,
}

impl InboxWriter {
    /// Starts the writer task (it ends when every handle is dropped).
    pub fn start(pool: PgPool) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(pool, receiver));
        Self { queue }
    }

    /// Stores one event; true when it was new. Returns once it is committed.
    pub async fn store(&self, arrival: Arrival) -> Result<bool, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { arrival, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

async fn write_batches(pool: PgPool, mut receiver: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = receiver.recv().await {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let (arrivals, replies): (Vec<Arrival>, Vec<_>) =
                batch.into_iter().map(|p| (p.arrival, p.reply)).unzip();
            metrics::histogram!("webhook_inbox_batch_size").record(arrivals.len() as f64);
            match store_all(&pool, &arrivals).await {
                Ok(new) => {
                    for (reply, new) in replies.into_iter().zip(new) {
                        let _ = reply.send(Ok(new));
                    }
                }
                Err(error) => {
                    let error = Arc::new(error);
                    for reply in replies {
                        let _ = reply.send(Err(WriteError::Database(Arc::clone(&error))));
                    }
                }
            }
            drop(permit);
        });
    }
}
