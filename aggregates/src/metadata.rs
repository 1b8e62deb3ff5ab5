//! Who, from where and when: the metadata every event carries.
//!
//! cqrs-es stores metadata as a string map next to each event; this type is its typed face.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

/// Where a command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An HTTP command from an operator (or an agent holding an operator token).
    Api,
    /// A verified Stripe webhook event, reconciled as a command.
    StripeWebhook,
    /// The service itself: workers, recovery, the OAuth callback driven by Stripe's redirect.
    System,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::StripeWebhook => "stripe_webhook",
            Source::System => "system",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "api" => Some(Source::Api),
            "stripe_webhook" => Some(Source::StripeWebhook),
            "system" => Some(Source::System),
            _ => None,
        }
    }
}

/// The envelope facts recorded with every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    /// The person, agent or component that caused the event (e.g. `token:ops-1`, `stripe`).
    pub actor: String,
    pub source: Source,
    /// The HTTP request id, or the worker run id, that correlates the events of one cause.
    pub correlation_id: String,
    /// Stripe's `evt_…` id when the cause was a webhook.
    pub stripe_event_id: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

const ACTOR: &str = "actor";
const SOURCE: &str = "source";
const CORRELATION_ID: &str = "correlation_id";
const STRIPE_EVENT_ID: &str = "stripe_event_id";
const RECORDED_AT: &str = "recorded_at";

impl EventMetadata {
    pub fn new(
        actor: impl Into<String>,
        source: Source,
        correlation_id: impl Into<String>,
    ) -> Self {
        Self {
            actor: actor.into(),
            source,
            correlation_id: correlation_id.into(),
            stripe_event_id: None,
            // Stored with microsecond precision, like PostgreSQL's timestamptz.
            recorded_at: Utc::now().trunc_subsecs(6),
        }
    }

    pub fn with_stripe_event(mut self, event_id: impl Into<String>) -> Self {
        self.stripe_event_id = Some(event_id.into());
        self
    }

    pub fn into_map(self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            (ACTOR.to_owned(), self.actor),
            (SOURCE.to_owned(), self.source.as_str().to_owned()),
            (CORRELATION_ID.to_owned(), self.correlation_id),
            (
                RECORDED_AT.to_owned(),
                self.recorded_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
        ]);
        if let Some(id) = self.stripe_event_id {
            map.insert(STRIPE_EVENT_ID.to_owned(), id);
        }
        map
    }

    /// Reads metadata back; missing or odd fields degrade to `system`/empty rather than failing,
    /// so an old event never blocks a projection.
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        Self {
            actor: map.get(ACTOR).cloned().unwrap_or_default(),
            source: map
                .get(SOURCE)
                .and_then(|s| Source::parse(s))
                .unwrap_or(Source::System),
            correlation_id: map.get(CORRELATION_ID).cloned().unwrap_or_default(),
            stripe_event_id: map.get(STRIPE_EVENT_ID).cloned(),
            recorded_at: map
                .get(RECORDED_AT)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_the_string_map() {
        let meta = EventMetadata::new("token:ops", Source::StripeWebhook, "req-1")
            .with_stripe_event("evt_123");
        let back = EventMetadata::from_map(&meta.clone().into_map());
        assert_eq!(back, meta);
    }
}
