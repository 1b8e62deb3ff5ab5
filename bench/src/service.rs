//! The service under test: the release binary as a child process, with a fake Stripe in this one.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use connect_ledger::fake_stripe::{FakeStripe, FAKE_CLIENT_ID, FAKE_SECRET_KEY};
use sqlx::{Connection, Executor, PgConnection};

pub const TOKEN: &str = "bench-operator-token";
pub const WEBHOOK_SECRET: &str = "whsec_bench";
pub const ACCOUNT: &str = "acct_bench";

/// The databases this run created.
static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub async fn fresh_database(server: &str) -> anyhow::Result<String> {
    let name = format!("cl_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await?;
    CREATED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(name.clone());
    Ok(format!("{server}/{name}"))
}

/// Drops the databases this run created, once it is done with them.
pub async fn drop_databases(server: &str) -> anyhow::Result<()> {
    let names = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|p| p.into_inner()));
    let mut admin = PgConnection::connect(&format!("{server}/postgres")).await?;
    for name in names {
        admin
            .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
            .await?;
    }
    Ok(())
}

pub struct Service {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
    pub stripe: FakeStripe,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Service {
    pub async fn start(database_url: &str) -> anyhow::Result<Self> {
        let stripe = FakeStripe::start().await?;
        let port = free_port()?;
        let binary = std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("connect-ledger"))
            .ok_or_else(|| anyhow::anyhow!("no binary directory"))?;
        let child = Command::new(&binary)
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .env("STRIPE_SECRET_KEY", FAKE_SECRET_KEY)
            .env("STRIPE_CONNECT_CLIENT_ID", FAKE_CLIENT_ID)
            .env("STRIPE_API_BASE", stripe.base_url())
            .env("STRIPE_CONNECT_BASE", stripe.base_url())
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("LEDGER_TOKENS", format!("operator:{TOKEN}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "start {}: {e} (build it with scripts/bench)",
                    binary.display()
                )
            })?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(128)
            .build()?;
        let service = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http,
            stripe,
        };
        for _ in 0..300 {
            if let Ok(r) = service
                .http
                .get(format!("{}/healthz", service.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    service.connect_app().await?;
                    return Ok(service);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the service did not start")
    }

    async fn connect_app(&self) -> anyhow::Result<()> {
        let created = self
            .http
            .post(format!("{}/v1/apps", self.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"slug": "bench", "name": "Bench"}))
            .send()
            .await?;
        anyhow::ensure!(created.status() == 201, "create app: {}", created.status());
        let started: serde_json::Value = self
            .http
            .post(format!("{}/v1/apps/bench/connect", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let code = self.stripe.issue_code(ACCOUNT);
        let state = started["state"].as_str().unwrap_or_default();
        let callback = self
            .http
            .get(format!("{}/api/stripe/connect/callback", self.base))
            .query(&[("code", code.as_str()), ("state", state)])
            .send()
            .await?;
        anyhow::ensure!(callback.status() == 303, "callback: {}", callback.status());
        Ok(())
    }

    fn status_field(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_field("VmRSS:")
    }

    /// Peak resident memory so far, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_field("VmHWM:")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
