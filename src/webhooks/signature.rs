//! `Stripe-Signature` verification over the raw body, before anything is parsed or stored.
//!
//! Header: `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]`. The signature is HMAC-SHA256 of
//! `"{t}.{raw body}"` with the endpoint secret. Only `v1` counts. During a secret roll Stripe sends
//! one `v1` per active secret and we may hold several secrets: any match of any pair is enough.
//! MACs are compared in constant time.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Stripe's libraries reject signatures older than this.
pub const TOLERANCE_SECONDS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header has no valid timestamp")]
    NoTimestamp,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoSignature,
    #[error("the signature timestamp is outside the {TOLERANCE_SECONDS} s tolerance")]
    Stale,
    #[error("no signature matches the payload with any configured secret")]
    Mismatch,
    #[error("no webhook secret is configured")]
    NoSecret,
}

/// The parts of a `Stripe-Signature` header that count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    pub v1: Vec<Vec<u8>>,
}

/// Parses the header; unknown schemes and undecodable signatures are skipped.
pub fn parse_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::NoTimestamp);
                }
                let parsed = value
                    .parse::<i64>()
                    .map_err(|_| SignatureError::NoTimestamp)?;
                timestamp = Some(parsed);
            }
            "v1" => {
                if let Ok(bytes) = hex::decode(value) {
                    if bytes.len() == 32 {
                        v1.push(bytes);
                    }
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if v1.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// Verifies `payload` against the header with any of `secrets` at time `now` (unix seconds).
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secrets: &[SecretString],
    now: i64,
) -> Result<i64, SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let header = parse_header(header.ok_or(SignatureError::Missing)?)?;
    if (now - header.timestamp).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    let signed_prefix = format!("{}.", header.timestamp);
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()) else {
            continue;
        };
        mac.update(signed_prefix.as_bytes());
        mac.update(payload);
        for candidate in &header.v1 {
            if mac.clone().verify_slice(candidate).is_ok() {
                return Ok(header.timestamp);
            }
        }
    }
    Err(SignatureError::Mismatch)
}

/// A valid header for `payload` (tests, the demo and the benchmarks sign with it).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(payload);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter()
            .map(|s| SecretString::from((*s).to_owned()))
            .collect()
    }

    #[test]
    fn a_signature_verifies_with_its_secret_only() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(body, "whsec_a", 1000);
        assert_eq!(
            verify(Some(&header), body, &secrets(&["whsec_a"]), 1100),
            Ok(1000)
        );
        assert_eq!(
            verify(Some(&header), body, &secrets(&["whsec_b"]), 1100),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                Some(&header),
                br#"{"id":"evt_2"}"#,
                &secrets(&["whsec_a"]),
                1100
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn secret_rolls_accept_any_pair() {
        let body = b"{}";
        let old = sign(body, "whsec_old", 50);
        let new = sign(body, "whsec_new", 50);
        let both = format!("{},{}", old, new.split(',').nth(1).expect("v1"));
        for header in [&old, &new, &both] {
            assert!(verify(
                Some(header),
                body,
                &secrets(&["whsec_new", "whsec_old"]),
                60
            )
            .is_ok());
        }
        assert!(verify(Some(&both), body, &secrets(&["whsec_new"]), 60).is_ok());
    }

    proptest::proptest! {
        /// Any header and body: an answer, never a panic; a forged header never verifies.
        #[test]
        fn arbitrary_headers_never_panic_or_pass(header in ".{0,200}", body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let s = secrets(&["whsec_fuzz"]);
            let _ = parse_header(&header);
            proptest::prop_assert!(verify(Some(&header), &body, &s, 1_000).is_err());
        }

        /// Whatever the payload and secret, our own signature verifies and a changed byte does not.
        #[test]
        fn signatures_round_trip(body in proptest::collection::vec(proptest::num::u8::ANY, 1..512), secret in "[a-zA-Z0-9_]{1,40}", t in 0i64..4_000_000_000) {
            let header = sign(&body, &secret, t);
            let s = secrets(&[secret.as_str()]);
            proptest::prop_assert_eq!(verify(Some(&header), &body, &s, t), Ok(t));
            let mut changed = body.clone();
            changed[0] ^= 1;
            proptest::prop_assert_eq!(verify(Some(&header), &changed, &s, t), Err(SignatureError::Mismatch));
        }
    }

    #[test]
    fn stale_missing_and_garbage_headers_are_refused() {
        let body = b"{}";
        let header = sign(body, "k", 1000);
        let s = secrets(&["k"]);
        assert_eq!(
            verify(Some(&header), body, &s, 1301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(Some(&header), body, &s, 699),
            Err(SignatureError::Stale)
        );
        assert_eq!(verify(None, body, &s, 1000), Err(SignatureError::Missing));
        for garbage in [
            "",
            "garbage",
            "t=abc,v1=00",
            "v1=deadbeef",
            "t=1000",
            "t=1000,v1=zz",
            "t=1,t=2,v1=00",
        ] {
            assert!(verify(Some(garbage), body, &s, 1000).is_err(), "{garbage}");
        }
        let v0_only = header.replace("v1=", "v0=");
        assert_eq!(
            verify(Some(&v0_only), body, &s, 1000),
            Err(SignatureError::NoSignature)
        );
        assert_eq!(
            verify(Some(&header), body, &[], 1000),
            Err(SignatureError::NoSecret)
        );
    }
}
