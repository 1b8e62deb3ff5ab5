use clap::Parser;
use connect_ledger::cli::{
    AuditCommand, Cli, Command, ProjectionsCommand, TokenCommand, WebhooksCommand,
};
use connect_ledger::config::Config;
use connect_ledger::http::auth::create_stored_token;
use connect_ledger::startup::{projections, shutdown_signal, Application, Database};
use connect_ledger::stripe::StripeApi;
use connect_ledger::webhooks::{backfill, inbox};
use connect_ledger::{reconcile, telemetry};
use std::sync::Arc;

use ledger_projections::{audit, rebuild};

/// mimalloc instead of glibc's malloc: projections and commands allocate many short-lived
/// JSON values, where glibc's free lists cost a third of the CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    if let Command::Demo { once } = command {
        connect_ledger::demo::run(config, once).await?;
        return Ok(true);
    }
    if let Command::Serve = command {
        let app = Application::build(config).await?;
        app.run_until_stopped(shutdown_signal()).await?;
        return Ok(true);
    }
    if let Command::Token(TokenCommand::Create {
        role,
        no_store: true,
        ..
    }) = &command
    {
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
        Command::Serve | Command::Demo { .. } => unreachable!("handled by run"),
        Command::Token(command) => return tokens(pool, command).await,
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
            // Progress on stderr; the report, JSON, on stdout.
            let report = reconcile::run(pool, &stripe(config)?, &app, since, &|step| {
                eprintln!("{step}");
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(report.differences.is_empty());
        }
    }
    Ok(true)
}

/// `token create` (stored), `token list`, `token revoke`.
async fn tokens(pool: &sqlx::PgPool, command: TokenCommand) -> anyhow::Result<bool> {
    match command {
        TokenCommand::Create { role, label, .. } => {
            let (token, hash) = create_stored_token(pool, &role, &label).await?;
            println!("token (shown once; give it to its holder): {token}");
            println!("stored in the database as {role} token {}", &hash[..12]);
            println!("LEDGER_TOKENS entry (holds only its SHA-256): {role}:sha256:{hash}");
        }
        TokenCommand::List => {
            let rows: Vec<StoredToken> = sqlx::query_as(
                "SELECT fingerprint, role, label, created_at, revoked_at FROM api_tokens ORDER BY created_at",
            )
            .fetch_all(pool)
            .await?;
            for row in rows {
                let state = row.revoked_at.map_or("active".to_owned(), |at| {
                    format!("revoked {}", at.to_rfc3339())
                });
                println!(
                    "{}  {:<8}  created {}  {state}  {}",
                    &row.fingerprint[..12],
                    row.role,
                    row.created_at.to_rfc3339(),
                    row.label
                );
            }
        }
        TokenCommand::Revoke { fingerprint } => {
            let prefix = fingerprint.trim().to_ascii_lowercase();
            if prefix.len() < 8 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("give the fingerprint, or at least its first 8 hex digits");
            }
            let matching: Vec<String> = sqlx::query_scalar(
                "SELECT fingerprint FROM api_tokens WHERE starts_with(fingerprint, $1) AND revoked_at IS NULL",
            )
            .bind(&prefix)
            .fetch_all(pool)
            .await?;
            match matching.as_slice() {
                [one] => {
                    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE fingerprint = $1")
                        .bind(one)
                        .execute(pool)
                        .await?;
                    println!("revoked {}", &one[..12]);
                }
                [] => {
                    println!("no active stored token has that fingerprint");
                    return Ok(false);
                }
                _ => anyhow::bail!(
                    "{} active tokens start with {prefix}: give more digits",
                    matching.len()
                ),
            }
        }
    }
    Ok(true)
}

#[derive(sqlx::FromRow)]
struct StoredToken {
    fingerprint: String,
    role: String,
    label: String,
    created_at: chrono::DateTime<chrono::Utc>,
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}
