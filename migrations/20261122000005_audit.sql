-- The audit log: one entry per event in the ledger's global order, written by the `audit`
-- projection, chained by hash so that any changed, deleted, inserted or reordered event is found
-- by `verify`. `position` is gap-free: 1, 2, 3, … in the order entries were sealed.
CREATE TABLE IF NOT EXISTS audit_entries (
    position        bigint      PRIMARY KEY,
    global_position bigint      NOT NULL UNIQUE,
    recorded_at     timestamptz NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL,
    event_type      text        NOT NULL,
    source          text        NOT NULL,
    actor           text        NOT NULL,
    correlation_id  text,
    stripe_event_id text,
    app             text,
    purchase_id     text,
    charge_id       text,
    refund_id       text,
    hash            text        NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_entries_app ON audit_entries (app, position);
CREATE INDEX IF NOT EXISTS audit_entries_charge ON audit_entries (charge_id, position);
CREATE INDEX IF NOT EXISTS audit_entries_refund ON audit_entries (refund_id, position);
CREATE INDEX IF NOT EXISTS audit_entries_purchase ON audit_entries (purchase_id, position);
CREATE INDEX IF NOT EXISTS audit_entries_recorded ON audit_entries (recorded_at);

-- Reconciliation reports: the ledger against Stripe's own list of refunds, per app.
CREATE TABLE IF NOT EXISTS reconciliation_reports (
    id          bigserial   PRIMARY KEY,
    app         text        NOT NULL,
    since       timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    checked     integer     NOT NULL,
    differences jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS reconciliation_reports_app ON reconciliation_reports (app, id);
