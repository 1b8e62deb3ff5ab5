//! Builds the service from configuration and runs it until asked to stop.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use ledger_projections::apps::AppsProjection;
use ledger_projections::audit::AuditProjection;
use ledger_projections::refunds::RefundsProjection;
use ledger_projections::{Projection, ProjectionRunner};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::embedded::EmbeddedPostgres;
use crate::http::state::Services;
use crate::ledger::Ledger;
use crate::refunds::RefundService;
use crate::stripe::{ConnectOAuth, StripeApi};
use crate::webhooks::WebhookProcessor;
use crate::{db, http};

/// The projections this build maintains.
pub fn projections() -> Vec<Arc<dyn Projection>> {
    projections_with(Arc::new(RefundsProjection::live()))
}

/// [`projections`], with the given `refunds` projection (the service also answers from it).
fn projections_with(refunds: Arc<RefundsProjection>) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(AppsProjection::live()),
        refunds,
        Arc::new(AuditProjection::live()),
    ]
}

/// The database the service uses: the configured one, or a private embedded cluster.
pub struct Database {
    pub pool: PgPool,
    /// Kept alive for as long as the service runs; stops the cluster when dropped.
    pub embedded: Option<EmbeddedPostgres>,
}

impl Database {
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let (url, embedded) = match &config.database_url {
            Some(url) => (url.expose_secret().to_owned(), None),
            None => {
                let embedded = EmbeddedPostgres::start(&config.data_dir)
                    .await
                    .context("starting the embedded PostgreSQL")?;
                (embedded.url().to_owned(), Some(embedded))
            }
        };
        let pool = db::connect(&url)
            .await
            .context("connecting to PostgreSQL")?;
        db::migrate(&pool).await.context("applying migrations")?;
        Ok(Self { pool, embedded })
    }

    /// Closes the pool and stops the embedded cluster, if any.
    pub async fn close(self) {
        self.pool.close().await;
        if let Some(embedded) = self.embedded {
            if let Err(error) = embedded.stop().await {
                tracing::warn!(%error, "stopping the embedded PostgreSQL");
            }
        }
    }
}

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    runner: Arc<ProjectionRunner>,
    refunds: Arc<RefundService>,
    webhooks: Arc<WebhookProcessor>,
    database: Database,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let database = Database::open(&config).await?;
        let pool = database.pool.clone();
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let bound = listener.local_addr()?;
        let refund_rows = Arc::new(RefundsProjection::live());
        let runner =
            ProjectionRunner::new(pool.clone(), projections_with(Arc::clone(&refund_rows)));
        runner.register().await?;
        let oauth = match (&config.stripe.secret_key, &config.stripe.connect_client_id) {
            (Some(key), Some(client_id)) => Some(ConnectOAuth::new(
                config.stripe.connect_base.clone(),
                key.clone(),
                client_id.clone(),
            )),
            _ => None,
        };
        let stripe = config.stripe.secret_key.as_ref().map(|key| {
            StripeApi::new(
                config.stripe.api_base.clone(),
                key.clone(),
                config.stripe.retry,
            )
        });
        let ledger = Arc::new(Ledger::new(&pool, Arc::clone(&runner)));
        let refunds = RefundService::new(pool.clone(), Arc::clone(&ledger), stripe.clone());
        let webhooks = WebhookProcessor::new(
            pool.clone(),
            Arc::clone(&ledger),
            stripe.clone(),
            config.stripe.retry,
        );
        let services = Arc::new(Services {
            pool: pool.clone(),
            ledger,
            refunds: Arc::clone(&refunds),
            refund_rows,
            oauth,
            public_base: config.public_base(bound),
            stripe,
            webhook_secrets: config.stripe.webhook_secrets.clone(),
            webhooks: Arc::clone(&webhooks),
            inbox: crate::webhooks::inbox_writer::InboxWriter::start(pool.clone()),
        });
        crate::metrics::handle();
        let tokens = http::auth::Authenticator::new(config.tokens.clone(), pool.clone());
        let router = http::router(services, Arc::new(tokens));
        Ok(Self {
            listener,
            router,
            runner,
            refunds,
            webhooks,
            database,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let projections = tokio::spawn(Arc::clone(&self.runner).run({
            let mut stop = stop_rx.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        }));
        let worker = tokio::spawn(Arc::clone(&self.refunds).run_worker(stop_rx.clone()));
        let inbox = tokio::spawn(Arc::clone(&self.webhooks).run(stop_rx.clone()));
        tracing::info!("listening on {}", self.listener.local_addr()?);
        // Small JSON answers must not wait for Nagle's algorithm.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, self.router).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
        });
        let result = serve.await;
        let _ = stop_tx.send(true);
        let _ = projections.await;
        let _ = worker.await;
        let _ = inbox.await;
        self.database.close().await;
        result.context("serving HTTP")
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
