use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AppConnectionCommand, AppConnectionError, AppConnectionEvent, DisconnectInitiator};

/// How long an OAuth `state` stays usable.
pub const STATE_TTL_MINUTES: i64 = 10;
const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Connected,
    Disconnected,
}

impl ConnectionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }
}

/// The app as readers see it; the `apps` projection holds the same facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSnapshot {
    pub app_id: Uuid,
    pub slug: String,
    pub name: String,
    pub status: ConnectionStatus,
    pub stripe_account_id: Option<String>,
    pub livemode: Option<bool>,
    pub connected_at: Option<DateTime<Utc>>,
    pub attention: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PendingState {
    fingerprint: String,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Connection {
    stripe_account_id: String,
    livemode: bool,
    connected_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppConnection {
    registered: Option<(Uuid, String, String)>,
    connection: Option<Connection>,
    /// States issued and not yet used; several tabs may each hold one.
    pending_states: Vec<PendingState>,
    /// A state was consumed and its code is being exchanged.
    exchange_in_progress: bool,
    /// Why the app needs someone's attention, until it is connected again.
    attention: Option<String>,
}

impl AppConnection {
    pub fn snapshot(&self) -> Option<AppSnapshot> {
        let (app_id, slug, name) = self.registered.clone()?;
        let connection = self.connection.as_ref();
        Some(AppSnapshot {
            app_id,
            slug,
            name,
            status: if connection.is_some() {
                ConnectionStatus::Connected
            } else {
                ConnectionStatus::Disconnected
            },
            stripe_account_id: connection.map(|c| c.stripe_account_id.clone()),
            livemode: connection.map(|c| c.livemode),
            connected_at: connection.map(|c| c.connected_at),
            attention: self.attention.clone(),
        })
    }

    fn require_registered(&self) -> Result<(), AppConnectionError> {
        match self.registered {
            Some(_) => Ok(()),
            None => Err(AppConnectionError::AppNotFound),
        }
    }

    /// A state is valid when it was issued for this app, is unused and has not expired.
    fn require_valid_state(
        &self,
        fingerprint: &str,
        now: DateTime<Utc>,
    ) -> Result<(), AppConnectionError> {
        self.require_registered()?;
        let pending = self
            .pending_states
            .iter()
            .find(|p| p.fingerprint == fingerprint)
            .ok_or(AppConnectionError::InvalidState)?;
        if now >= pending.expires_at {
            return Err(AppConnectionError::InvalidState);
        }
        Ok(())
    }
}

impl Aggregate for AppConnection {
    const TYPE: &'static str = super::APP_CONNECTION;
    type Command = AppConnectionCommand;
    type Event = AppConnectionEvent;
    type Error = AppConnectionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use AppConnectionCommand as C;
        use AppConnectionEvent as E;
        let event = match command {
            C::Register { app_id, slug, name } => {
                if self.registered.is_some() {
                    return Err(AppConnectionError::SlugTaken);
                }
                let name = name.trim().to_owned();
                if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
                    return Err(AppConnectionError::InvalidName);
                }
                E::AppRegistered {
                    app_id,
                    slug: slug.to_string(),
                    name,
                }
            }
            C::StartConnect {
                state_fingerprint,
                now,
            } => {
                self.require_registered()?;
                if self.connection.is_some() {
                    return Err(AppConnectionError::AlreadyConnected);
                }
                E::ConnectStarted {
                    state_fingerprint,
                    expires_at: now + Duration::minutes(STATE_TTL_MINUTES),
                }
            }
            C::ConsumeConnectState {
                state_fingerprint,
                now,
            } => {
                self.require_valid_state(&state_fingerprint, now)?;
                E::ConnectStateConsumed { state_fingerprint }
            }
            C::DeclineConnect {
                state_fingerprint,
                now,
                error,
                description,
            } => {
                self.require_valid_state(&state_fingerprint, now)?;
                sink.write(E::ConnectStateConsumed { state_fingerprint }, self)
                    .await;
                E::ConnectFailed { error, description }
            }
            C::CompleteConnect {
                stripe_account_id,
                livemode,
                scope,
                now,
            } => {
                self.require_registered()?;
                if !self.exchange_in_progress {
                    return Err(AppConnectionError::NoExchangeInProgress);
                }
                E::AppConnected {
                    stripe_account_id,
                    livemode,
                    scope,
                    connected_at: now,
                }
            }
            C::FailConnect { error, description } => {
                self.require_registered()?;
                if !self.exchange_in_progress {
                    return Err(AppConnectionError::NoExchangeInProgress);
                }
                E::ConnectFailed { error, description }
            }
            C::Disconnect {
                stripe_account_id,
                initiated_by,
            } => {
                self.require_registered()?;
                let Some(current) = &self.connection else {
                    // Stripe may tell us again what we already know: that is not an error.
                    return match initiated_by {
                        DisconnectInitiator::StripeAccount => Ok(()),
                        DisconnectInitiator::Platform => Err(AppConnectionError::NotConnected),
                    };
                };
                if let Some(expected) = &stripe_account_id {
                    if expected != &current.stripe_account_id {
                        // About an account this app has since left: nothing to do.
                        return Ok(());
                    }
                }
                E::AppDisconnected {
                    stripe_account_id: current.stripe_account_id.clone(),
                    initiated_by,
                }
            }
            C::FlagForAttention { reason } => {
                self.require_registered()?;
                if self.attention.as_deref() == Some(reason.as_str()) {
                    return Ok(());
                }
                E::AppFlaggedForAttention { reason }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use AppConnectionEvent as E;
        match event {
            E::AppRegistered { app_id, slug, name } => {
                self.registered = Some((app_id, slug, name));
            }
            E::ConnectStarted {
                state_fingerprint,
                expires_at,
            } => self.pending_states.push(PendingState {
                fingerprint: state_fingerprint,
                expires_at,
            }),
            E::ConnectStateConsumed { state_fingerprint } => {
                self.pending_states
                    .retain(|p| p.fingerprint != state_fingerprint);
                self.exchange_in_progress = true;
            }
            E::AppConnected {
                stripe_account_id,
                livemode,
                connected_at,
                ..
            } => {
                self.connection = Some(Connection {
                    stripe_account_id,
                    livemode,
                    connected_at,
                });
                // Connected: every other outstanding state is void.
                self.pending_states.clear();
                self.exchange_in_progress = false;
                self.attention = None;
            }
            E::ConnectFailed { .. } => self.exchange_in_progress = false,
            E::AppDisconnected { .. } => self.connection = None,
            E::AppFlaggedForAttention { reason } => self.attention = Some(reason),
        }
    }
}
