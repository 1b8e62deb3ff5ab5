//! The command line: `serve` (default) and `migrate`.

use clap::{Parser, Subcommand};

use crate::config::Settings;

#[derive(Debug, Parser)]
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
}
