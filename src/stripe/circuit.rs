//! A circuit breaker in front of Stripe: after a run of failures (no answer, 5xx, 429) the client
//! stops calling for a cooldown and fails fast instead, so a Stripe outage is not met with every
//! request's and every worker's retries at once. After the cooldown one call probes: an answer
//! closes the circuit, another failure opens it for twice as long (up to a minute).
//!
//! Failing fast is safe for money: the refund's intent is already recorded and it stays
//! `requested`; the worker drives it again when the circuit lets calls through.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures that open the circuit.
const TRIP_AFTER: u32 = 5;
const MAX_COOLDOWN: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// A call is probing a circuit whose cooldown ended.
    probing: bool,
    cooldown: Duration,
}

#[derive(Debug)]
pub struct Circuit {
    endpoint: &'static str,
    first_cooldown: Duration,
    state: Mutex<State>,
}

impl Circuit {
    pub fn new(endpoint: &'static str, first_cooldown: Duration) -> Self {
        Self {
            endpoint,
            first_cooldown,
            state: Mutex::new(State {
                consecutive_failures: 0,
                open_until: None,
                probing: false,
                cooldown: first_cooldown,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go out now; otherwise how long the circuit stays open.
    pub fn admit(&self) -> Result<(), Duration> {
        let mut state = self.state();
        let Some(until) = state.open_until else {
            return Ok(());
        };
        let now = Instant::now();
        if now < until {
            return Err(until - now);
        }
        if state.probing {
            // One probe at a time; the others wait for its verdict.
            return Err(Duration::from_millis(50).min(state.cooldown));
        }
        state.probing = true;
        Ok(())
    }

    /// Records whether a call that went out failed (no answer, 5xx, 429).
    pub fn record(&self, failed: bool) {
        let mut state = self.state();
        if !failed {
            if state.open_until.is_some() {
                tracing::info!(
                    endpoint = self.endpoint,
                    "Stripe answers again: circuit closed"
                );
            }
            state.consecutive_failures = 0;
            state.open_until = None;
            state.probing = false;
            state.cooldown = self.first_cooldown;
            metrics::gauge!("stripe_circuit_open", "endpoint" => self.endpoint).set(0.0);
            return;
        }
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        let reopen = state.probing;
        if reopen || (state.open_until.is_none() && state.consecutive_failures >= TRIP_AFTER) {
            if reopen {
                state.cooldown = (state.cooldown * 2).min(MAX_COOLDOWN);
            }
            state.open_until = Some(Instant::now() + state.cooldown);
            state.probing = false;
            tracing::warn!(
                endpoint = self.endpoint,
                failures = state.consecutive_failures,
                cooldown_ms = state.cooldown.as_millis() as u64,
                "Stripe keeps failing: circuit open, calls fail fast until the cooldown ends"
            );
            metrics::gauge!("stripe_circuit_open", "endpoint" => self.endpoint).set(1.0);
            metrics::counter!("stripe_circuit_trips_total", "endpoint" => self.endpoint)
                .increment(1);
        }
    }
}

/// The circuits of a client, one per endpoint.
#[derive(Debug)]
pub struct Circuits {
    first_cooldown: Duration,
    by_endpoint: Mutex<std::collections::HashMap<&'static str, std::sync::Arc<Circuit>>>,
}

impl Circuits {
    pub fn new(first_cooldown: Duration) -> Self {
        Self {
            first_cooldown,
            by_endpoint: Mutex::default(),
        }
    }

    pub fn of(&self, endpoint: &'static str) -> std::sync::Arc<Circuit> {
        let mut circuits = self.by_endpoint.lock().unwrap_or_else(|p| p.into_inner());
        std::sync::Arc::clone(
            circuits.entry(endpoint).or_insert_with(|| {
                std::sync::Arc::new(Circuit::new(endpoint, self.first_cooldown))
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_a_run_of_failures_probes_once_and_closes_on_an_answer() {
        let circuit = Circuit::new("test", Duration::from_millis(20));
        for _ in 0..TRIP_AFTER {
            assert!(circuit.admit().is_ok());
            circuit.record(true);
        }
        assert!(circuit.admit().is_err(), "open");
        std::thread::sleep(Duration::from_millis(25));
        assert!(circuit.admit().is_ok(), "one probe");
        assert!(circuit.admit().is_err(), "only one");
        circuit.record(true);
        assert!(circuit.admit().is_err(), "reopened for longer");
        std::thread::sleep(Duration::from_millis(45));
        assert!(circuit.admit().is_ok());
        circuit.record(false);
        assert!(circuit.admit().is_ok(), "closed");
        assert!(circuit.admit().is_ok());
    }

    #[test]
    fn answers_between_failures_keep_it_closed() {
        let circuit = Circuit::new("test", Duration::from_millis(20));
        for _ in 0..20 {
            circuit.record(true);
            circuit.record(true);
            circuit.record(false);
        }
        assert!(circuit.admit().is_ok());
    }
}
