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
    /// The checkpoint moved under a runner holding the projection's lock: some writer ignored
    /// the lock. The batch is rolled back.
    #[error("projection {0}'s checkpoint moved while its lock was held")]
    CheckpointMoved(String),
    #[error("rebuild task failed: {0}")]
    Rebuild(String),
}
