//! The few fields of a Stripe event the ledger reads, parsed leniently (events keep the shape of
//! the API version they were created with).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct EventEnvelope {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The connected account, on Connect events.
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub livemode: bool,
    #[serde(default)]
    pub created: Option<i64>,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Stripe event: {0}")]
pub struct MalformedEvent(pub String);

impl EventEnvelope {
    pub fn parse(body: &[u8]) -> Result<Self, MalformedEvent> {
        let event: Self =
            serde_json::from_slice(body).map_err(|e| MalformedEvent(e.to_string()))?;
        if !event.id.starts_with("evt_") || event.id.len() > 255 {
            return Err(MalformedEvent("the id is not an evt_ id".into()));
        }
        if event.kind.is_empty() || event.kind.len() > 255 {
            return Err(MalformedEvent("the type is missing".into()));
        }
        if !event.data.object.is_object() {
            return Err(MalformedEvent("data.object is not an object".into()));
        }
        Ok(event)
    }
}

/// Reads `field` of a Stripe object that may be an id or an expanded object.
pub fn id_of(value: &serde_json::Value, field: &str) -> Option<String> {
    match value.get(field)? {
        serde_json::Value::String(id) => Some(id.clone()),
        serde_json::Value::Object(object) => object.get("id")?.as_str().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Arbitrary bytes are refused or parsed, never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = EventEnvelope::parse(&body);
        }
    }

    #[test]
    fn events_parse_leniently_and_garbage_does_not() {
        let event = EventEnvelope::parse(
            br#"{"id":"evt_1","type":"refund.updated","account":"acct_1","data":{"object":{"id":"re_1","charge":{"id":"ch_1"}}},"extra":1}"#,
        )
        .expect("parses");
        assert_eq!(event.account.as_deref(), Some("acct_1"));
        assert_eq!(id_of(&event.data.object, "charge").as_deref(), Some("ch_1"));
        for bad in [
            &b"not json"[..],
            br#"{"id":"x","type":"t","data":{"object":{}}}"#,
            br#"{"id":"evt_1","type":"t","data":{"object":1}}"#,
            br#"[]"#,
        ] {
            assert!(EventEnvelope::parse(bad).is_err());
        }
    }
}
