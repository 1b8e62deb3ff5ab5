-- The `apps` read model, maintained by the `apps` projection from AppConnection events.
CREATE TABLE IF NOT EXISTS apps (
    id                 uuid        PRIMARY KEY,
    slug               text        NOT NULL UNIQUE,
    name               text        NOT NULL,
    stripe_account_id  text,
    status             text        NOT NULL CHECK (status IN ('connected', 'disconnected')),
    livemode           boolean,
    connected_at       timestamptz,
    last_connect_error text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS apps_stripe_account_id ON apps (stripe_account_id);
