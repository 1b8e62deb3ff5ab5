//! Crash points for the kill -9 tests: with `LEDGER_TEST_PAUSE_AT=<point>` the process logs
//! `test pause at <point>` and stops there, so a test can SIGKILL it at that exact instant.
//! Inert unless the variable is set.

use std::sync::OnceLock;
use std::time::Duration;

pub const AFTER_INTENT: &str = "after_intent";
pub const AFTER_STRIPE_ANSWER: &str = "after_stripe_answer";

pub async fn pause_point(point: &'static str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("LEDGER_TEST_PAUSE_AT").ok());
    if at.as_deref() == Some(point) {
        tracing::warn!("test pause at {point}");
        tokio::time::sleep(Duration::from_secs(600)).await;
    }
}
