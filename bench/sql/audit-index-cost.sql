-- What the audit log's indexes cost per entry written (docs/decisions/0035). Run with
--   psql -h 127.0.0.1 -U postgres -f bench/sql/audit-index-cost.sql
-- It makes the scratch database `cl_audit_index_cost`, writes the same 200,000 entries (four per
-- refund, random charge, refund and purchase ids) into three tables alternately, twice, prints
-- each INSERT's time, and drops the database. Compare within one run: this machine's speed moves.
--   bare:  primary key and global_position only
--   btree: the indexes of migration 20261122000005 (four btrees over text, one over recorded_at)
--   hash:  migration 20261207000001 (charge, refund and purchase as hash indexes)
\set ON_ERROR_STOP on
DROP DATABASE IF EXISTS cl_audit_index_cost;
CREATE DATABASE cl_audit_index_cost;
\c cl_audit_index_cost
CREATE TABLE entries AS
SELECT g AS position, g AS global_position, now() + g * interval '1 ms' AS recorded_at,
       'ChargeLedger'::text AS aggregate_type, 'ch_' || substr(md5((g / 4)::text), 1, 24) AS aggregate_id,
       (g % 4)::bigint AS sequence, 'RefundRequested'::text AS event_type, 'http'::text AS source,
       'operator:3f1c2a9b7d4e'::text AS actor, 'req-' || md5(g::text) AS correlation_id,
       NULL::text AS stripe_event_id, 'total-typescript-' || (g % 3) AS app,
       'pur_' || substr(md5('p' || (g / 4)), 1, 20) AS purchase_id,
       'ch_' || substr(md5((g / 4)::text), 1, 24) AS charge_id,
       CASE WHEN g % 4 = 0 THEN NULL ELSE 'rf_' || substr(md5('r' || (g / 4)), 1, 24) END AS refund_id,
       md5(g::text) || md5((g + 1)::text) AS hash
FROM generate_series(1, 200000) g;
CREATE TABLE bare (position bigint PRIMARY KEY, global_position bigint NOT NULL UNIQUE,
  recorded_at timestamptz NOT NULL, aggregate_type text NOT NULL, aggregate_id text NOT NULL,
  sequence bigint NOT NULL, event_type text NOT NULL, source text NOT NULL, actor text NOT NULL,
  correlation_id text, stripe_event_id text, app text, purchase_id text, charge_id text,
  refund_id text, hash text NOT NULL);
CREATE TABLE btree (LIKE bare INCLUDING ALL);
CREATE INDEX ON btree (app, position);
CREATE INDEX ON btree (charge_id, position);
CREATE INDEX ON btree (refund_id, position);
CREATE INDEX ON btree (purchase_id, position);
CREATE INDEX ON btree (recorded_at);
CREATE TABLE hash (LIKE bare INCLUDING ALL);
CREATE INDEX ON hash (app, position);
CREATE INDEX ON hash USING hash (charge_id);
CREATE INDEX ON hash USING hash (refund_id);
CREATE INDEX ON hash USING hash (purchase_id);
CREATE INDEX ON hash (recorded_at);
CHECKPOINT;
\timing on
\echo bare
INSERT INTO bare SELECT * FROM entries;
\echo btree
INSERT INTO btree SELECT * FROM entries;
\echo hash
INSERT INTO hash SELECT * FROM entries;
\timing off
TRUNCATE bare, btree, hash;
CHECKPOINT;
\timing on
\echo hash
INSERT INTO hash SELECT * FROM entries;
\echo btree
INSERT INTO btree SELECT * FROM entries;
\echo bare
INSERT INTO bare SELECT * FROM entries;
\timing off
\c postgres
DROP DATABASE cl_audit_index_cost;
