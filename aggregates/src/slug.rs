//! App slugs: the stable, human-readable key of an app (`[a-z0-9-]{1,64}`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated app slug. Also the aggregate id of the app's [`crate::app_connection::AppConnection`],
/// so uniqueness is enforced by the event store's optimistic concurrency.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a slug is 1 to 64 characters of lowercase letters, digits and '-'")]
pub struct InvalidSlug;

impl Slug {
    pub fn parse(raw: &str) -> Result<Self, InvalidSlug> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidSlug)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Slug {
    type Error = InvalidSlug;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Slug> for String {
    fn from(value: Slug) -> Self {
        value.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract_alphabet_and_refuses_the_rest() {
        for ok in ["a", "total-typescript", "app-1", &"x".repeat(64)] {
            assert!(Slug::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Total", "a b", "a_b", "é", "a/b", &"x".repeat(65)] {
            assert_eq!(Slug::parse(bad), Err(InvalidSlug), "{bad}");
        }
    }
}
