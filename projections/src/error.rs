/// Why a projection could not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event {position} ({event_type}) could not be decoded: {source}")]
    Decode {
        position: i64,
        event_type: String,
        source: serde_json::Error,
    },
    #[error("rebuild task failed: {0}")]
    Rebuild(String),
}
