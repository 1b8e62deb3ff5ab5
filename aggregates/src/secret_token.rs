//! One-way fingerprints of secrets (OAuth `state`, API tokens): events and tables keep the
//! fingerprint, never the secret, so the audit log cannot be replayed against the service.

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of a secret token.
pub fn fingerprint(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprint_is_stable_and_distinct() {
        assert_eq!(super::fingerprint("a"), super::fingerprint("a"));
        assert_ne!(super::fingerprint("a"), super::fingerprint("b"));
        assert_eq!(super::fingerprint("a").len(), 64);
    }
}
