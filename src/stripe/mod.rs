//! Everything the service says to Stripe.
//!
//! Connect OAuth (`/oauth/token`, `/oauth/deauthorize`) is plain HTTP because async-stripe
//! always prefixes `/v1`; the REST API requests are built by async-stripe (see [`api`]).

pub mod api;
pub mod circuit;
pub mod oauth;
pub mod retry;

pub use api::{StripeApi, StripeCallError};
pub use oauth::{ConnectOAuth, OAuthError, TokenGrant};
pub use retry::RetryPolicy;
