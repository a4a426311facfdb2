-- Schema for the write pattern (issue 12), as on PostgreSQL (see migrations/postgres/0008 for
-- why each index stays): no index on a column that changes after ingest, so a state change
-- rewrites the row and no index entry. SQLite has no HOT updates or fillfactor, but every index
-- entry dropped is one write fewer per state change. Nothing here rewrites rows.
-- The attestation-state filter is served by executions_account_id with a filter.
DROP INDEX executions_account_attestation;
-- Lease heartbeats change lease_expires_at; running jobs are few, found by state alone.
DROP INDEX jobs_running;
CREATE INDEX jobs_running ON jobs (id) WHERE state = 'running';
-- Lock releases and re-acquires change expires_at; retention reads the small locks table whole.
DROP INDEX locks_expires;
