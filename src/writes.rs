//! The events a request appended, so that its read-your-writes wait targets them directly.
//!
//! Without this record the wait first asked the event store for the aggregate's latest event
//! (one more statement on every command's path). The event store's append reports the place of
//! its last event here when it runs inside [`recording`], which the HTTP layer wraps around
//! every request; outside a recording (workers, tests) nothing is kept and the wait falls back
//! to asking the store.

use std::cell::RefCell;
use std::future::Future;

use chrono::{DateTime, Utc};
use ledger_projections::Checkpoint;

/// One aggregate's furthest event appended by this request, and when its append was recorded.
struct Written {
    aggregate_type: String,
    aggregate_id: String,
    at: Checkpoint,
    recorded_at: DateTime<Utc>,
}

tokio::task_local! {
    static WRITTEN: RefCell<Vec<Written>>;
}

/// Runs `work` with a record of what it appends.
pub async fn recording<F: Future>(work: F) -> F::Output {
    WRITTEN.scope(RefCell::new(Vec::new()), work).await
}

/// Notes an append (by the event store) recorded at `recorded_at`, if a recording is running.
pub fn record(
    aggregate_type: &str,
    aggregate_id: &str,
    at: Checkpoint,
    recorded_at: DateTime<Utc>,
) {
    let _ = WRITTEN.try_with(|written| {
        let mut written = written.borrow_mut();
        match written
            .iter_mut()
            .find(|w| w.aggregate_type == aggregate_type && w.aggregate_id == aggregate_id)
        {
            Some(known) => {
                if at > known.at {
                    known.at = at;
                    known.recorded_at = recorded_at;
                }
            }
            None => written.push(Written {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                at,
                recorded_at,
            }),
        }
    });
}

fn latest<T>(aggregate_type: &str, aggregate_id: &str, pick: impl Fn(&Written) -> T) -> Option<T> {
    WRITTEN
        .try_with(|written| {
            written
                .borrow()
                .iter()
                .find(|w| w.aggregate_type == aggregate_type && w.aggregate_id == aggregate_id)
                .map(&pick)
        })
        .ok()
        .flatten()
}

/// The furthest event of the aggregate appended in this recording. `None` outside a
/// recording, or when it appended nothing to the aggregate.
pub fn appended(aggregate_type: &str, aggregate_id: &str) -> Option<Checkpoint> {
    latest(aggregate_type, aggregate_id, |w| w.at)
}

/// When this recording's latest append to the aggregate was recorded (the events'
/// `recorded_at`, which the read models copy). `None` as for [`appended`].
pub fn recorded_at(aggregate_type: &str, aggregate_id: &str) -> Option<DateTime<Utc>> {
    latest(aggregate_type, aggregate_id, |w| w.recorded_at)
}
