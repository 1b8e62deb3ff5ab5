use clap::Parser;
use connect_ledger::cli::{Cli, Command, WebhooksCommand};
use connect_ledger::config::Config;
use connect_ledger::startup::{shutdown_signal, Application, Database};
use connect_ledger::stripe::StripeApi;
use connect_ledger::telemetry;
use connect_ledger::webhooks::{backfill, inbox};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("connect-ledger: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.settings.validate()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(config).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate => {
            Database::open(&config).await?.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Webhooks(command) => webhooks(&config, command).await,
    }
}

async fn webhooks(config: &Config, command: WebhooksCommand) -> anyhow::Result<()> {
    let database = Database::open(config).await?;
    let result = match command {
        WebhooksCommand::Retry { event } => inbox::retry(&database.pool, event.as_deref())
            .await
            .map(|count| {
                println!("{count} event(s) queued again; a running service processes them")
            })
            .map_err(anyhow::Error::from),
        WebhooksCommand::Backfill {
            since,
            until,
            account,
        } => {
            let until = until.unwrap_or_else(|| chrono::Utc::now().timestamp());
            let key =
                config.stripe.secret_key.clone().ok_or_else(|| {
                    anyhow::anyhow!("STRIPE_SECRET_KEY is required to list events")
                })?;
            let stripe = StripeApi::new(config.stripe.api_base.clone(), key, config.stripe.retry);
            let accounts = backfill::accounts(&database.pool, account.as_deref()).await?;
            println!(
                "backfilling {} account(s) from {since} to {until}",
                accounts.len()
            );
            backfill::run(&database.pool, &stripe, &accounts, since, until, |r| {
                println!(
                    "  accounts {} · listed {} · new {}",
                    r.accounts, r.listed, r.stored
                );
            })
            .await
            .map(|r| {
                println!(
                    "done: {} listed, {} new event(s) queued",
                    r.listed, r.stored
                )
            })
            .map_err(anyhow::Error::from)
        }
    };
    database.close().await;
    result
}
