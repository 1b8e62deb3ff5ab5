use chrono::{DateTime, Utc};
use ledger_aggregates::upcasting::{needs_upcast, upcast};
use serde::de::DeserializeOwned;

use crate::ProjectionError;

/// One row of the event log as projections see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub global_position: i64,
    pub transaction_id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// The columns to select for a [`StoredEvent`] (xid8 read as bigint: ids fit in 63 bits).
pub const STORED_EVENT_COLUMNS: &str = "global_position, transaction_id::text::bigint AS transaction_id, \
     aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, recorded_at";

impl StoredEvent {
    /// Decodes the payload, upcast from its stored version, into the aggregate's event enum.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, ProjectionError> {
        let decoded = if needs_upcast(&self.event_type, &self.event_version) {
            let payload = upcast(&self.event_type, &self.event_version, self.payload.clone());
            E::deserialize(payload)
        } else {
            // Current events are read in place, without copying the payload.
            E::deserialize(&self.payload)
        };
        decoded.map_err(|source| ProjectionError::Decode {
            position: self.global_position,
            event_type: self.event_type.clone(),
            source,
        })
    }
}
