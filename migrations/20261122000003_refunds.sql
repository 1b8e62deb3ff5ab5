-- Write side: one row per Idempotency-Key, so a key can never name two refunds (on different
-- charges or apps). Refunds themselves live in ChargeLedger events.
CREATE TABLE IF NOT EXISTS refund_keys (
    idempotency_key  text        PRIMARY KEY,
    app              text        NOT NULL,
    charge_id        text        NOT NULL,
    requested_amount bigint,
    refund_id        text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Read models maintained by the `refunds` projection from ChargeLedger events.
CREATE TABLE IF NOT EXISTS refunds (
    id                text        PRIMARY KEY,
    app               text        NOT NULL,
    purchase_id       text        NOT NULL,
    charge_id         text        NOT NULL,
    approval_id       text        NOT NULL,
    amount            bigint      NOT NULL CHECK (amount >= 0),
    currency          text        NOT NULL,
    reason            text        NOT NULL,
    status            text        NOT NULL CHECK (status IN ('requested', 'pending', 'requires_action', 'succeeded', 'failed', 'canceled')),
    stripe_refund_id  text,
    failure_reason    text,
    failure_message   text,
    idempotency_key   text        NOT NULL UNIQUE,
    requested_by      text        NOT NULL,
    attempts          integer     NOT NULL DEFAULT 0,
    last_submitted_at timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS refunds_charge ON refunds (charge_id);
CREATE INDEX IF NOT EXISTS refunds_app_created ON refunds (app, created_at);
CREATE INDEX IF NOT EXISTS refunds_purchase ON refunds (purchase_id);
CREATE INDEX IF NOT EXISTS refunds_requested ON refunds (updated_at) WHERE status = 'requested';

-- The per-charge ledger. `refundable` is Balance::refundable (aggregates/src/charge_ledger/balance.rs).
CREATE TABLE IF NOT EXISTS charges (
    charge_id         text        PRIMARY KEY,
    app               text        NOT NULL,
    stripe_account_id text        NOT NULL,
    amount            bigint      NOT NULL,
    currency          text        NOT NULL,
    refunded          bigint      NOT NULL DEFAULT 0,
    pending           bigint      NOT NULL DEFAULT 0,
    unanswered        bigint      NOT NULL DEFAULT 0,
    stripe_refunded   bigint      NOT NULL DEFAULT 0,
    disputed          boolean     NOT NULL DEFAULT false,
    refundable        bigint GENERATED ALWAYS AS
        (GREATEST(amount - GREATEST(refunded + pending, stripe_refunded + unanswered), 0)) STORED,
    updated_at        timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_app ON charges (app);

ALTER TABLE apps ADD COLUMN IF NOT EXISTS attention_reason text;
