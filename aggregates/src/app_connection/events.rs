use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DisconnectInitiator;

/// What happened to an app connection. Stored as JSON in the event store; the variant name is
/// the event type. Changing a shape means a new `event_version` and an upcaster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AppConnectionEvent {
    AppRegistered {
        app_id: Uuid,
        slug: String,
        name: String,
    },
    ConnectStarted {
        state_fingerprint: String,
        expires_at: DateTime<Utc>,
    },
    ConnectStateConsumed {
        state_fingerprint: String,
    },
    AppConnected {
        stripe_account_id: String,
        livemode: bool,
        scope: String,
        connected_at: DateTime<Utc>,
    },
    ConnectFailed {
        error: String,
        description: Option<String>,
    },
    AppDisconnected {
        stripe_account_id: String,
        initiated_by: DisconnectInitiator,
    },
    AppFlaggedForAttention {
        reason: String,
    },
}

impl AppConnectionEvent {
    pub const VERSION: &'static str = "1.0";

    pub fn name(&self) -> &'static str {
        match self {
            Self::AppRegistered { .. } => "AppRegistered",
            Self::ConnectStarted { .. } => "ConnectStarted",
            Self::ConnectStateConsumed { .. } => "ConnectStateConsumed",
            Self::AppConnected { .. } => "AppConnected",
            Self::ConnectFailed { .. } => "ConnectFailed",
            Self::AppDisconnected { .. } => "AppDisconnected",
            Self::AppFlaggedForAttention { .. } => "AppFlaggedForAttention",
        }
    }
}

impl DomainEvent for AppConnectionEvent {
    fn event_type(&self) -> String {
        self.name().to_owned()
    }

    fn event_version(&self) -> String {
        Self::VERSION.to_owned()
    }
}
