//! Configuration from the environment (flags mirror every variable), validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::http::auth::TokenRegistry;
use crate::stripe::RetryPolicy;

/// Raw settings as clap reads them from flags and environment variables. Deliberately not
/// `Debug`: it holds secrets in clear until validated into [`Config`].
#[derive(Clone, clap::Args)]
pub struct Settings {
    /// PostgreSQL URL; unset runs an embedded PostgreSQL under LEDGER_DATA_DIR.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where the embedded database lives.
    #[arg(
        long,
        env = "LEDGER_DATA_DIR",
        default_value = "./.ledger",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Address to bind (`127.0.0.1:0` picks a free port).
    #[arg(
        long,
        env = "LEDGER_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: String,
    /// External base URL, used for the OAuth redirect_uri.
    #[arg(long, env = "PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Platform secret key (sk_test_…, sk_live_… or rk_…).
    #[arg(long, env = "STRIPE_SECRET_KEY", global = true, hide_env_values = true)]
    pub stripe_secret_key: Option<String>,
    /// Connect client id (ca_…).
    #[arg(long, env = "STRIPE_CONNECT_CLIENT_ID", global = true)]
    pub stripe_connect_client_id: Option<String>,
    /// Webhook signing secret(s), comma-separated during a secret roll.
    #[arg(
        long,
        env = "STRIPE_WEBHOOK_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub stripe_webhook_secret: Option<String>,
    /// Stripe API base URL.
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com",
        global = true
    )]
    pub stripe_api_base: String,
    /// Stripe Connect OAuth base URL.
    #[arg(
        long,
        env = "STRIPE_CONNECT_BASE",
        default_value = "https://connect.stripe.com",
        global = true
    )]
    pub stripe_connect_base: String,
    /// Bootstrap API tokens: comma-separated `role:token` pairs (roles operator, auditor).
    #[arg(long, env = "LEDGER_TOKENS", global = true, hide_env_values = true)]
    pub ledger_tokens: Option<String>,
    /// Base of the backoff between Stripe retries, in milliseconds.
    #[arg(long, env = "STRIPE_RETRY_BASE_MS", global = true)]
    pub stripe_retry_base_ms: Option<u64>,
    /// Per-attempt timeout of Stripe calls, in milliseconds.
    #[arg(long, env = "STRIPE_TIMEOUT_MS", global = true)]
    pub stripe_timeout_ms: Option<u64>,
    /// `production` refuses sk_test_ keys.
    #[arg(long, env = "LEDGER_ENV", default_value = "development", global = true)]
    pub ledger_env: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// Stripe credentials and endpoints.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: Option<SecretString>,
    pub connect_client_id: Option<String>,
    pub webhook_secrets: Vec<SecretString>,
    pub api_base: Url,
    pub connect_base: Url,
    pub retry: RetryPolicy,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: Option<SecretString>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub public_url: Option<Url>,
    pub stripe: StripeConfig,
    pub tokens: TokenRegistry,
    pub environment: Environment,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(
        "LEDGER_ENV=production refuses a test-mode STRIPE_SECRET_KEY (sk_test_…): use a live key (sk_live_… or rk_live_…) or set LEDGER_ENV=development"
    )]
    TestKeyInProduction,
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

fn parse_base_url(name: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| invalid(name, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(name, "must be an http(s) URL"));
    }
    Ok(url)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl Settings {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let environment = match self.ledger_env.as_str() {
            "production" => Environment::Production,
            "development" | "test" | "" => Environment::Development,
            other => {
                return Err(invalid(
                    "LEDGER_ENV",
                    format!("unknown environment {other:?}"),
                ))
            }
        };
        let secret_key = non_empty(self.stripe_secret_key);
        if let Some(key) = &secret_key {
            let known = ["sk_test_", "sk_live_", "rk_test_", "rk_live_"];
            if !known.iter().any(|p| key.starts_with(p)) {
                return Err(invalid(
                    "STRIPE_SECRET_KEY",
                    "expected a key starting with sk_test_, sk_live_, rk_test_ or rk_live_",
                ));
            }
            if environment == Environment::Production && key.contains("_test_") {
                return Err(ConfigError::TestKeyInProduction);
            }
        }
        let listen = self
            .listen
            .parse()
            .map_err(|_| invalid("LEDGER_LISTEN", "expected ip:port, e.g. 127.0.0.1:8080"))?;
        let public_url = non_empty(self.public_url)
            .map(|raw| parse_base_url("PUBLIC_URL", &raw))
            .transpose()?;
        let webhook_secrets = non_empty(self.stripe_webhook_secret)
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| SecretString::from(s.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let tokens = match non_empty(self.ledger_tokens) {
            None => TokenRegistry::default(),
            Some(raw) => {
                TokenRegistry::parse(&raw).map_err(|reason| invalid("LEDGER_TOKENS", reason))?
            }
        };
        Ok(Config {
            database_url: non_empty(self.database_url).map(SecretString::from),
            data_dir: self.data_dir,
            listen,
            public_url,
            stripe: StripeConfig {
                secret_key: secret_key.map(SecretString::from),
                connect_client_id: non_empty(self.stripe_connect_client_id),
                webhook_secrets,
                api_base: parse_base_url("STRIPE_API_BASE", &self.stripe_api_base)?,
                connect_base: parse_base_url("STRIPE_CONNECT_BASE", &self.stripe_connect_base)?,
                retry: retry_policy(self.stripe_retry_base_ms, self.stripe_timeout_ms),
            },
            tokens,
            environment,
        })
    }
}

fn retry_policy(base_ms: Option<u64>, timeout_ms: Option<u64>) -> RetryPolicy {
    let mut policy = RetryPolicy::default();
    if let Some(ms) = base_ms {
        policy.base = Duration::from_millis(ms);
        policy.cap = policy.cap.min(Duration::from_millis(ms.saturating_mul(10)));
    }
    if let Some(ms) = timeout_ms {
        policy.request_timeout = Duration::from_millis(ms.max(1));
    }
    policy
}

impl Config {
    /// The base URL Stripe redirects to: PUBLIC_URL, or the bound address.
    pub fn public_base(&self, bound: SocketAddr) -> Url {
        self.public_url.clone().unwrap_or_else(|| {
            Url::parse(&format!("http://{bound}")).expect("a socket address forms a valid URL")
        })
    }
}
