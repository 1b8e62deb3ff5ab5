//! The `AppConnection` aggregate: an app registered on the platform and its link to a Stripe
//! account through Connect OAuth (standard accounts).
//!
//! Aggregate id: the app's slug. Registering a slug twice therefore collides in the event store
//! itself, across every service instance.

mod commands;
mod errors;
mod events;
mod state;

pub use commands::{AppConnectionCommand, DisconnectInitiator};
pub use errors::AppConnectionError;
pub use events::AppConnectionEvent;
pub use state::{AppConnection, AppSnapshot, ConnectionStatus, STATE_TTL_MINUTES};

/// The aggregate type under which app connection events are stored.
pub const APP_CONNECTION: &str = "AppConnection";

#[cfg(test)]
mod tests;
