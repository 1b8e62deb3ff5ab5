//! Old event shapes, upcast to the current one when read.
//!
//! Every stored event carries `event_version`. When an event's shape changes, its version goes
//! up and a function here turns the older stored JSON into the new shape; the event store
//! (through cqrs-es upcasters) and the projections (through [`upcast`]) both read through it, so
//! nothing ever rewrites stored events.
//!
//! History:
//! - `RefundRequested` 0.9 → 1.0: 0.9 had no `requested_amount` (every request named its amount),
//!   so the upcast sets it to `amount`.

use serde_json::Value;

/// One step: events of `event_type` older than `to_version` are rewritten by `apply`.
pub struct Upcast {
    pub event_type: &'static str,
    pub to_version: &'static str,
    pub apply: fn(Value) -> Value,
}

/// Every upcast, oldest first.
pub const UPCASTS: &[Upcast] = &[Upcast {
    event_type: "RefundRequested",
    to_version: "1.0",
    apply: refund_requested_0_9_to_1_0,
}];

fn refund_requested_0_9_to_1_0(mut payload: Value) -> Value {
    if let Some(inner) = payload
        .get_mut("RefundRequested")
        .and_then(Value::as_object_mut)
    {
        if !inner.contains_key("requested_amount") {
            let amount = inner.get("amount").cloned().unwrap_or(Value::Null);
            inner.insert("requested_amount".into(), amount);
        }
    }
    payload
}

/// `major.minor[.patch]` as comparable numbers; unreadable versions count as oldest.
fn version(raw: &str) -> (u32, u32, u32) {
    let mut parts = raw.split('.').map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// Whether a stored `event_version` is older than `to_version`.
pub fn is_older(stored: &str, to_version: &str) -> bool {
    version(stored) < version(to_version)
}

/// Brings a stored payload to the current shape of its event type.
/// Whether an event stored at `event_version` needs upcasting before it is read.
pub fn needs_upcast(event_type: &str, event_version: &str) -> bool {
    UPCASTS
        .iter()
        .any(|step| step.event_type == event_type && is_older(event_version, step.to_version))
}

pub fn upcast(event_type: &str, event_version: &str, mut payload: Value) -> Value {
    for step in UPCASTS {
        if step.event_type == event_type && is_older(event_version, step.to_version) {
            payload = (step.apply)(payload);
        }
    }
    payload
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::charge_ledger::ChargeLedgerEvent;

    #[test]
    fn a_0_9_refund_request_reads_as_1_0() {
        let old = json!({"RefundRequested": {
            "refund_id": "rf_1", "idempotency_key": "refund:p:a", "purchase_id": "p", "approval_id": "a",
            "amount": 500, "currency": "usd", "reason": "duplicate", "requested_by": "agent"}});
        // Read as 1.0, the missing field would silently mean "refund all that is refundable".
        match serde_json::from_value::<ChargeLedgerEvent>(old.clone()) {
            Ok(ChargeLedgerEvent::RefundRequested {
                requested_amount, ..
            }) => {
                assert_eq!(requested_amount, None)
            }
            other => panic!("unexpected {other:?}"),
        }
        let event: ChargeLedgerEvent =
            serde_json::from_value(upcast("RefundRequested", "0.9", old)).expect("upcast parses");
        match event {
            ChargeLedgerEvent::RefundRequested {
                requested_amount,
                amount,
                ..
            } => {
                assert_eq!((requested_amount, amount), (Some(500), 500));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn current_events_pass_through_untouched() {
        let current = json!({"RefundRequested": {"requested_amount": null, "amount": 1}});
        assert_eq!(upcast("RefundRequested", "1.0", current.clone()), current);
        assert!(is_older("0.9", "1.0") && !is_older("1.0", "1.0") && !is_older("1.1", "1.0"));
    }
}
