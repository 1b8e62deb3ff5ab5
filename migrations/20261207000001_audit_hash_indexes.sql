-- The audit log's lookups by charge, refund and purchase are equalities on keys that name a
-- handful of entries each. Hash indexes serve them (the few entries are sorted by position after
-- the lookup) and cost about half as much per entry written as btrees over the same text; the
-- secondary indexes were two thirds of what writing an entry cost (decision 35). The app's index
-- stays a btree: an app has millions of entries, read in position order a page at a time.
DROP INDEX IF EXISTS audit_entries_charge;
DROP INDEX IF EXISTS audit_entries_refund;
DROP INDEX IF EXISTS audit_entries_purchase;
CREATE INDEX IF NOT EXISTS audit_entries_charge ON audit_entries USING hash (charge_id);
CREATE INDEX IF NOT EXISTS audit_entries_refund ON audit_entries USING hash (refund_id);
CREATE INDEX IF NOT EXISTS audit_entries_purchase ON audit_entries USING hash (purchase_id);
