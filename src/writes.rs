//! The events a request appended, so that its read-your-writes wait targets them directly.
//!
//! Without this record the wait first asked the event store for the aggregate's latest event
//! (one more statement on every command's path). The event store's append reports the place of
//! its last event here when it runs inside [`recording`], which the HTTP layer wraps around
//! every request; outside a recording (workers, tests) nothing is kept and the wait falls back
//! to asking the store.

use std::cell::RefCell;
use std::future::Future;

use ledger_projections::Checkpoint;

/// One aggregate's furthest event appended by this request.
struct Written {
    aggregate_type: String,
    aggregate_id: String,
    at: Checkpoint,
}

tokio::task_local! {
    static WRITTEN: RefCell<Vec<Written>>;
}

/// Runs `work` with a record of what it appends.
pub async fn recording<F: Future>(work: F) -> F::Output {
    WRITTEN.scope(RefCell::new(Vec::new()), work).await
}

/// Notes an append (by the event store), if a recording is running.
pub fn record(aggregate_type: &str, aggregate_id: &str, at: Checkpoint) {
    let _ = WRITTEN.try_with(|written| {
        let mut written = written.borrow_mut();
        match written
            .iter_mut()
            .find(|w| w.aggregate_type == aggregate_type && w.aggregate_id == aggregate_id)
        {
            Some(known) => known.at = known.at.max(at),
            None => written.push(Written {
                aggregate_type: aggregate_type.to_owned(),
                aggregate_id: aggregate_id.to_owned(),
                at,
            }),
        }
    });
}

/// The furthest event of the aggregate appended in this recording. `None` outside a
/// recording, or when it appended nothing to the aggregate.
pub fn appended(aggregate_type: &str, aggregate_id: &str) -> Option<Checkpoint> {
    WRITTEN
        .try_with(|written| {
            written
                .borrow()
                .iter()
                .find(|w| w.aggregate_type == aggregate_type && w.aggregate_id == aggregate_id)
                .map(|w| w.at)
        })
        .ok()
        .flatten()
}
