-- The webhook inbox: every verified Stripe event, once, keyed by Stripe's event id, with its raw
-- signed body. Workers process it into commands; failures retry with backoff, then park as dead.
CREATE TABLE IF NOT EXISTS webhook_events (
    event_id        text        PRIMARY KEY,
    event_type      text        NOT NULL,
    account         text,
    livemode        boolean     NOT NULL,
    stripe_created  timestamptz,
    payload         text        NOT NULL,
    received_via    text        NOT NULL DEFAULT 'webhook' CHECK (received_via IN ('webhook', 'backfill')),
    received_at     timestamptz NOT NULL DEFAULT now(),
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'handled', 'ignored', 'unmatched', 'failed', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    processed_at    timestamptz,
    outcome         text,
    last_error      text
);
CREATE INDEX IF NOT EXISTS webhook_events_due ON webhook_events (next_attempt_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS webhook_events_stuck ON webhook_events (locked_until)
    WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS webhook_events_status ON webhook_events (status, received_at);

-- Refunds made outside the platform (Dashboard, other tools), learnt from Stripe.
CREATE TABLE IF NOT EXISTS external_refunds (
    stripe_refund_id text        PRIMARY KEY,
    charge_id        text        NOT NULL,
    amount           bigint      NOT NULL,
    status           text        NOT NULL,
    failure_reason   text,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS external_refunds_charge ON external_refunds (charge_id);

-- The account an app was last connected to, kept after a disconnect so that Stripe's late news
-- about it still finds the app.
ALTER TABLE apps ADD COLUMN IF NOT EXISTS last_stripe_account_id text;
CREATE INDEX IF NOT EXISTS apps_last_stripe_account_id ON apps (last_stripe_account_id);
