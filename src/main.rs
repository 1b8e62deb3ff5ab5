use clap::Parser;
use connect_ledger::cli::{
    AuditCommand, Cli, Command, ProjectionsCommand, TokenCommand, WebhooksCommand,
};
use connect_ledger::config::Config;
use connect_ledger::startup::{projections, shutdown_signal, Application, Database};
use connect_ledger::stripe::StripeApi;
use connect_ledger::webhooks::{backfill, inbox};
use connect_ledger::{reconcile, telemetry};
use std::sync::Arc;

use ledger_projections::{audit, rebuild};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("connect-ledger: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the command; `Ok(false)` is a clean "no" (e.g. a broken audit chain).
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let config = cli.settings.validate()?;
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Serve = command {
        let app = Application::build(config).await?;
        app.run_until_stopped(shutdown_signal()).await?;
        return Ok(true);
    }
    if let Command::Token(TokenCommand::Create { role }) = &command {
        let token = format!("cl_{}", hex::encode(rand::random::<[u8; 32]>()));
        let hash = ledger_aggregates::secret_token::fingerprint(&token);
        println!("token (shown once; give it to its holder): {token}");
        println!("LEDGER_TOKENS entry (holds only its SHA-256): {role}:sha256:{hash}");
        return Ok(true);
    }
    let database = Database::open(&config).await?;
    let result = one_shot(&config, &database, command).await;
    database.close().await;
    result
}

fn stripe(config: &Config) -> anyhow::Result<StripeApi> {
    let key = config
        .stripe
        .secret_key
        .clone()
        .ok_or_else(|| anyhow::anyhow!("STRIPE_SECRET_KEY is required for this command"))?;
    Ok(StripeApi::new(
        config.stripe.api_base.clone(),
        key,
        config.stripe.retry,
    ))
}

async fn one_shot(config: &Config, database: &Database, command: Command) -> anyhow::Result<bool> {
    let pool = &database.pool;
    match command {
        Command::Serve | Command::Token(_) => unreachable!("handled by run"),
        Command::Migrate => println!("migrations applied"),
        Command::Webhooks(WebhooksCommand::Retry { event }) => {
            let count = inbox::retry(pool, event.as_deref()).await?;
            println!("{count} event(s) queued again; a running service processes them");
        }
        Command::Webhooks(WebhooksCommand::Backfill {
            since,
            until,
            account,
        }) => {
            let until = until.unwrap_or_else(|| chrono::Utc::now().timestamp());
            let stripe = stripe(config)?;
            let accounts = backfill::accounts(pool, account.as_deref()).await?;
            println!(
                "backfilling {} account(s) from {since} to {until}",
                accounts.len()
            );
            let report = backfill::run(pool, &stripe, &accounts, since, until, |r| {
                println!(
                    "  accounts {} · listed {} · new {}",
                    r.accounts, r.listed, r.stored
                );
            })
            .await?;
            println!(
                "done: {} listed, {} new event(s) queued",
                report.listed, report.stored
            );
        }
        Command::Projections(ProjectionsCommand::Rebuild { name }) => {
            let all = projections();
            let chosen: Vec<_> = all
                .into_iter()
                .filter(|p| name.as_deref().is_none_or(|n| n == p.name()))
                .collect();
            if chosen.is_empty() {
                anyhow::bail!(
                    "no projection named {:?} (apps, refunds, audit)",
                    name.unwrap_or_default()
                );
            }
            let started = std::time::Instant::now();
            // Heard after every few batches (about 50,000 events).
            let progress =
                Arc::new(|label: &str, n: u64| println!("  {label}: {n} events replayed"));
            // The projections are rebuilt side by side: each is its own transaction stream.
            for (label, report) in rebuild::rebuild_all(pool, chosen, progress).await? {
                println!("{label}: rebuilt from {} events, swapped in", report.events);
            }
            println!("done in {:.2} s", started.elapsed().as_secs_f64());
        }
        Command::Audit(AuditCommand::Verify) => {
            let verification = audit::verify(pool).await?;
            println!("{}", serde_json::to_string(&verification)?);
            return Ok(verification.ok);
        }
        Command::Reconcile { app, since } => {
            let report = reconcile::run(pool, &stripe(config)?, &app, since).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(report.differences.is_empty());
        }
    }
    Ok(true)
}
