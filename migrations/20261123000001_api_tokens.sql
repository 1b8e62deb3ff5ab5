-- API tokens created with `connect-ledger token create`, besides those of LEDGER_TOKENS. Only the
-- SHA-256 of a token is kept (lowercase hex); the token itself is shown once, to its creator.
CREATE TABLE IF NOT EXISTS api_tokens (
    fingerprint text        PRIMARY KEY CHECK (fingerprint ~ '^[0-9a-f]{64}$'),
    role        text        NOT NULL CHECK (role IN ('operator', 'auditor')),
    label       text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
