use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Slug;

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectInitiator {
    /// We deauthorized at Stripe (`POST /oauth/deauthorize`).
    Platform,
    /// The account owner revoked us (`account.application.deauthorized`).
    StripeAccount,
}

/// Commands on an app connection. Times are passed in so the aggregate stays deterministic.
#[derive(Debug, Clone, PartialEq)]
pub enum AppConnectionCommand {
    Register {
        app_id: Uuid,
        slug: Slug,
        name: String,
    },
    /// Begin the OAuth flow with a fresh random `state` (only its fingerprint is given here).
    StartConnect {
        state_fingerprint: String,
        now: DateTime<Utc>,
    },
    /// Stripe redirected back with a code: use up the `state` before the code is exchanged, so
    /// that one state can lead to at most one exchange.
    ConsumeConnectState {
        state_fingerprint: String,
        now: DateTime<Utc>,
    },
    /// Stripe redirected back with an error (e.g. the user denied access): use up the state and
    /// record the refusal in one step.
    DeclineConnect {
        state_fingerprint: String,
        now: DateTime<Utc>,
        error: String,
        description: Option<String>,
    },
    /// The code exchange after a consumed state succeeded.
    CompleteConnect {
        stripe_account_id: String,
        livemode: bool,
        scope: String,
        now: DateTime<Utc>,
    },
    /// The code exchange after a consumed state failed.
    FailConnect {
        error: String,
        description: Option<String>,
    },
    /// End the connection. `stripe_account_id` names the account the caller believes is
    /// connected: a stale request about an earlier account changes nothing.
    Disconnect {
        stripe_account_id: Option<String>,
        initiated_by: DisconnectInitiator,
    },
    /// Stripe refused us on the connected account (e.g. the owner revoked access): someone must
    /// look at this app.
    FlagForAttention { reason: String },
}
