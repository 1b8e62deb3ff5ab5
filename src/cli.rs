//! The command line: `serve` (default), `migrate`, and the operators' `webhooks` commands.

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::config::Settings;

#[derive(Parser)]
#[command(
    name = "connect-ledger",
    version,
    about = "Event-sourced ledger for refunds on Stripe Connect accounts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service, its projections and workers (the default).
    Serve,
    /// Apply the SQL migrations and exit.
    Migrate,
    /// Show the whole system: start the service with the embedded database (apart from the real
    /// one; or DATABASE_URL) and a built-in fake Stripe, connect a sample app, refund, send
    /// webhooks, verify the audit chain, and print where to look. Runs until Ctrl-C.
    Demo {
        /// Stop when the scenario is done instead of serving on.
        #[arg(long)]
        once: bool,
    },
    /// Operate the Stripe webhook inbox.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Maintain the read models.
    #[command(subcommand)]
    Projections(ProjectionsCommand),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Compare an app's refunds in the ledger with Stripe's list of refunds on its account, report
    /// every difference, and store the report (GET /v1/reconciliation/{app}).
    Reconcile {
        /// The app's slug.
        #[arg(long)]
        app: String,
        /// Only refunds created since (unix seconds or RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Rebuild a projection (apps, refunds, audit) or all of them from the whole event log: built
    /// aside, then swapped in, while readers keep reading the old tables.
    Rebuild {
        /// The projection; all when omitted.
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Generate a random token for a role and store its SHA-256 in the database (the service
    /// admits it at once); prints the token (hand it to its holder: it is shown once) and the
    /// equivalent `LEDGER_TOKENS` entry, which also holds only the SHA-256.
    Create {
        /// operator (may do everything) or auditor (may only read).
        #[arg(long, value_parser = ["operator", "auditor"])]
        role: String,
        /// Who or what the token is for (shown by `token list`).
        #[arg(long, default_value = "")]
        label: String,
        /// Only print the token and its `LEDGER_TOKENS` entry; touch no database.
        #[arg(long)]
        no_store: bool,
    },
    /// List the tokens stored in the database (fingerprint prefix, role, label, dates).
    List,
    /// Revoke a stored token by its fingerprint (or a unique prefix of at least 8 hex digits);
    /// the service refuses it from the next request on.
    Revoke {
        /// The token's SHA-256 fingerprint, or a unique prefix of it.
        fingerprint: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit log's hash chain against the stored events; exit 1 if it is broken.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Put parked (dead) events back in the queue: one by id, or all of them.
    Retry {
        /// The Stripe event id (evt_…); without it, every dead event.
        #[arg(long)]
        event: Option<String>,
    },
    /// Fetch the events of a time window from Stripe (GET /v1/events, on the platform and on each
    /// connected account) and feed the missed ones through the inbox.
    Backfill {
        /// Start of the window: unix seconds or RFC 3339.
        #[arg(long, value_parser = parse_time)]
        since: i64,
        /// End of the window (default: now).
        #[arg(long, value_parser = parse_time)]
        until: Option<i64>,
        /// Only this connected account (acct_…).
        #[arg(long)]
        account: Option<String>,
    },
}

/// Unix seconds or an RFC 3339 time.
pub fn parse_time(raw: &str) -> Result<i64, String> {
    if let Ok(seconds) = raw.parse::<i64>() {
        return Ok(seconds);
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc).timestamp())
        .map_err(|_| format!("{raw:?} is neither unix seconds nor an RFC 3339 time"))
}
