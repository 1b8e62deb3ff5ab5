-- The event store used by postgres-es (its own columns first), plus the envelope columns the
-- ledger needs: a global position, the writing transaction's id and the database's commit-time
-- clock. postgres-es only names its own columns, so the extra ones fill in by default.
CREATE TABLE IF NOT EXISTS events (
    aggregate_type  text                          NOT NULL,
    aggregate_id    text                          NOT NULL,
    sequence        bigint CHECK (sequence >= 0)  NOT NULL,
    event_type      text                          NOT NULL,
    event_version   text                          NOT NULL,
    payload         json                          NOT NULL,
    metadata        json                          NOT NULL,
    global_position bigserial                     NOT NULL UNIQUE,
    transaction_id  xid8                          NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz                   NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- Catch-up readers walk the log in (transaction_id, global_position) order.
CREATE INDEX IF NOT EXISTS events_catch_up_order ON events (transaction_id, global_position);

-- Where each projection has got to in that order.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name                text        PRIMARY KEY,
    last_transaction_id xid8        NOT NULL DEFAULT '0',
    last_position       bigint      NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
