//! Bearer tokens with roles. Tokens are kept only as SHA-256 fingerprints: those of
//! `LEDGER_TOKENS`, compared in constant time, and those `connect-ledger token create` stored in
//! the `api_tokens` table, looked up by fingerprint. The principal is attached to the request
//! for the event metadata.

use axum::extract::Request;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ledger_aggregates::secret_token::fingerprint;
use subtle::ConstantTimeEq;

use super::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May do everything.
    Operator,
    /// May only read.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub role: Role,
    /// `role:` plus the first 12 hex digits of the token's fingerprint: stable, not secret.
    pub actor: String,
}

#[derive(Debug, Clone)]
struct TokenEntry {
    role: Role,
    fingerprint: [u8; 64],
}

/// The configured tokens, by fingerprint.
#[derive(Debug, Clone, Default)]
pub struct TokenRegistry {
    entries: Vec<TokenEntry>,
}

fn fingerprint_bytes(token: &str) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(fingerprint(token).as_bytes());
    out
}

impl TokenRegistry {
    /// Parses `role:token,role:sha256:<hex>,…`: a token itself, or (so that configuration need
    /// not hold it) the lowercase hex SHA-256 of it, as `connect-ledger token create` prints.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (role, token) = pair
                .split_once(':')
                .ok_or_else(|| "each entry must be role:token".to_owned())?;
            let role = match role.trim() {
                "operator" => Role::Operator,
                "auditor" => Role::Auditor,
                other => return Err(format!("unknown role {other:?} (operator or auditor)")),
            };
            let token = token.trim();
            let fingerprint = match token.strip_prefix("sha256:") {
                Some(hash) => {
                    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err("a sha256: entry is 64 hex digits".to_owned());
                    }
                    let mut out = [0u8; 64];
                    out.copy_from_slice(hash.to_ascii_lowercase().as_bytes());
                    out
                }
                None if token.len() < 8 => {
                    return Err("tokens must be at least 8 characters".to_owned());
                }
                None => fingerprint_bytes(token),
            };
            entries.push(TokenEntry { role, fingerprint });
        }
        Ok(Self { entries })
    }

    /// Finds the role of a presented token, comparing against every entry in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let presented = fingerprint_bytes(token);
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.fingerprint.ct_eq(&presented)) && found.is_none() {
                found = Some(entry.role);
            }
        }
        found.map(|role| principal_of(role, &String::from_utf8_lossy(&presented)))
    }
}

fn principal_of(role: Role, fingerprint: &str) -> Principal {
    Principal {
        role,
        actor: format!("{}:{}", role.as_str(), &fingerprint[..12]),
    }
}

/// The configured tokens, then those stored in the database.
#[derive(Debug, Clone)]
pub struct Authenticator {
    configured: TokenRegistry,
    pool: sqlx::PgPool,
}

impl Authenticator {
    pub fn new(configured: TokenRegistry, pool: sqlx::PgPool) -> Self {
        Self { configured, pool }
    }

    /// The principal a presented token names, if any. A revoked stored token names none.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, sqlx::Error> {
        if let Some(principal) = self.configured.authenticate(token) {
            return Ok(Some(principal));
        }
        let fingerprint = fingerprint(token);
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM api_tokens WHERE fingerprint = $1 AND revoked_at IS NULL",
        )
        .bind(&fingerprint)
        .fetch_optional(&self.pool)
        .await?;
        Ok(role.and_then(|role| {
            let role = match role.as_str() {
                "operator" => Role::Operator,
                "auditor" => Role::Auditor,
                _ => return None,
            };
            Some(principal_of(role, &fingerprint))
        }))
    }
}

/// Stores a new token's fingerprint; returns the token (to be shown once) and its fingerprint.
pub async fn create_stored_token(
    pool: &sqlx::PgPool,
    role: &str,
    label: &str,
) -> Result<(String, String), sqlx::Error> {
    let token = format!("cl_{}", hex::encode(rand::random::<[u8; 32]>()));
    let hash = fingerprint(&token);
    sqlx::query("INSERT INTO api_tokens (fingerprint, role, label) VALUES ($1, $2, $3)")
        .bind(&hash)
        .bind(role)
        .bind(label)
        .execute(pool)
        .await?;
    Ok((token, hash))
}

/// Middleware for `/v1`: 401 without a known token, 403 when an auditor tries to write.
pub async fn require_token(
    axum::extract::State(authenticator): axum::extract::State<std::sync::Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let found = match token {
        Some(token) => authenticator.authenticate(token).await,
        None => Ok(None),
    };
    let principal = match found {
        Ok(Some(principal)) => principal,
        Ok(None) => return ApiError::unauthorized().into_response(),
        Err(error) => return ApiError::from(error).into_response(),
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads && principal.role != Role::Operator {
        return ApiError::forbidden().into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_to_their_role_only() {
        let registry =
            TokenRegistry::parse("operator:op-secret-1, auditor:au-secret-1").expect("parses");
        assert_eq!(
            registry.authenticate("op-secret-1").map(|p| p.role),
            Some(Role::Operator)
        );
        assert_eq!(
            registry.authenticate("au-secret-1").map(|p| p.role),
            Some(Role::Auditor)
        );
        assert!(registry.authenticate("op-secret-2").is_none());
        assert!(registry.authenticate("").is_none());
        let actor = registry.authenticate("op-secret-1").expect("known").actor;
        assert!(actor.starts_with("operator:") && !actor.contains("op-secret"));
    }

    #[test]
    fn hashed_entries_authenticate_the_token_they_hash() {
        let hash = fingerprint("a-long-operator-token");
        let registry = TokenRegistry::parse(&format!("operator:sha256:{}", hash.to_uppercase()))
            .expect("parse");
        assert_eq!(
            registry
                .authenticate("a-long-operator-token")
                .map(|p| p.role),
            Some(Role::Operator)
        );
        assert!(registry.authenticate(&format!("sha256:{hash}")).is_none());
        assert!(TokenRegistry::parse("operator:sha256:abc").is_err());
    }

    #[test]
    fn malformed_token_lists_are_refused() {
        for bad in ["operator", "root:abcdefgh", "auditor:short"] {
            assert!(TokenRegistry::parse(bad).is_err(), "{bad}");
        }
    }
}
