//! Stripe Connect OAuth for standard accounts: code exchange and deauthorization.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// What a successful code exchange tells us. The access and refresh tokens in the same answer
/// are deliberately not read: we act with `Stripe-Account` and the platform key.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenGrant {
    pub stripe_user_id: String,
    #[serde(default)]
    pub livemode: bool,
    #[serde(default)]
    pub scope: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    /// Stripe answered and said no (`invalid_grant`, `invalid_client`, …).
    #[error("Stripe refused: {error}")]
    Refused {
        error: String,
        description: Option<String>,
    },
    /// We could not get an answer we understand (network, timeout, 5xx, not JSON).
    #[error("Stripe Connect unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    error_description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DeauthorizeBody {
    #[allow(dead_code)]
    stripe_user_id: String,
}

/// The Connect OAuth client.
#[derive(Clone)]
pub struct ConnectOAuth {
    http: reqwest::Client,
    base: Url,
    secret_key: SecretString,
    client_id: String,
}

impl std::fmt::Debug for ConnectOAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOAuth")
            .field("base", &self.base.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ConnectOAuth {
    pub fn new(base: Url, secret_key: SecretString, client_id: String) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_default();
        Self {
            http,
            base,
            secret_key,
            client_id,
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The URL that sends the app owner to Stripe's consent page.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str) -> Url {
        let mut url = self.endpoint("oauth/authorize");
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("scope", "read_write")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state);
        url
    }

    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}/{}", url.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }

    /// Exchanges an authorization code, exactly once: codes are single-use, so this never retries.
    pub async fn exchange_code(&self, code: &str) -> Result<TokenGrant, OAuthError> {
        self.post(
            "oauth/token",
            &[("grant_type", "authorization_code"), ("code", code)],
        )
        .await
    }

    /// Revokes our access to a connected account.
    pub async fn deauthorize(&self, stripe_account_id: &str) -> Result<(), OAuthError> {
        self.post::<DeauthorizeBody>(
            "oauth/deauthorize",
            &[
                ("client_id", self.client_id.as_str()),
                ("stripe_user_id", stripe_account_id),
            ],
        )
        .await
        .map(|_| ())
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<T, OAuthError> {
        let started = std::time::Instant::now();
        let response = self
            .http
            .post(self.endpoint(path))
            .bearer_auth(self.secret_key.expose_secret())
            .form(form)
            .send()
            .await
            .map_err(|e| OAuthError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| OAuthError::Unavailable(e.without_url().to_string()))?;
        tracing::info!(
            endpoint = path,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stripe connect call"
        );
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| OAuthError::Unavailable(format!("unexpected answer: {e}")));
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) if status.is_client_error() => Err(OAuthError::Refused {
                error: err.error,
                description: err.error_description,
            }),
            _ => Err(OAuthError::Unavailable(format!("HTTP {status}"))),
        }
    }
}
