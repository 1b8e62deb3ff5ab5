//! connect-ledger: the service around the pure domain in `ledger-aggregates` and the read
//! models in `ledger-projections`: HTTP, the Stripe client, configuration, the embedded
//! database and the command line.

pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod direct_connections;
pub mod embedded;
pub mod event_store;
pub mod fake_stripe;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod reconcile;
pub mod refunds;
pub mod startup;
pub mod stripe;
pub mod telemetry;
pub mod webhooks;
pub mod writes;
