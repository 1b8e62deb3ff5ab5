//! Everything the service says to Stripe.
//!
//! Connect OAuth (`/oauth/token`, `/oauth/deauthorize`) is plain HTTP because async-stripe
//! always prefixes `/v1`; the REST API goes through async-stripe.

pub mod oauth;

pub use oauth::{ConnectOAuth, OAuthError, TokenGrant};
