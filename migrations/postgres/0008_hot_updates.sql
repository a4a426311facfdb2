-- Schema for the write pattern (issue 12). An execution is written once at ingest and then
-- updated three to five times (state after sign, resolve and each push; envelope, key, signer,
-- timestamps, last error). On PostgreSQL such an update is HOT — a new row version on the same
-- page, no index entry at all — only if no indexed column changes and the page has room. So:
-- no index covers a column that changes after ingest, and pages keep room for new versions.
-- Nothing here rewrites rows: data written by earlier builds reads as before (fillfactor applies
-- to pages filled from now on).
--
-- executions: the indexes kept, and why (every one is written once, at ingest, never again):
--   executions_pkey (id)                         GET /v1/executions/{id}, the worker's loads,
--                                                stats without an account (id = receipt time).
--   executions_idempotency (account, pipeline execution id)
--                                                redeliveries and conflicts at ingest (unique).
--   executions_account_id (account, id)          every list page (always per account, by id),
--                                                per-account stats windows; also serves the
--                                                status and attestation-state filters as a
--                                                filter on the account's newest rows.
--   executions_account_pipeline / _repo_branch / _commit
--                                                the API's pipeline, repository+branch and
--                                                commit filters: selective within an account,
--                                                so a filter over executions_account_id would
--                                                read the account's whole history for a rare
--                                                value. Their columns never change.
--   executions_started_brin / _finished_brin     time-range filters; a BRIN costs next to
--                                                nothing per insert and its columns never change.
-- Dropped: executions_account_attestation (account, attestation_state, id). attestation_state
-- changes at every step, so every state change was a non-HOT update inserting an entry into all
-- seven executions indexes. The attestation filter is served by executions_account_id with a
-- filter (docs/PERFORMANCE.md, query plans): states other than 'attested' are the recent rows,
-- 'attested' is most of them, so walking the account's rows newest first fills a page quickly.
DROP INDEX executions_account_attestation;
-- Room for new versions of each row on its page. At this setting every executions update of the
-- backlog check in docs/PERFORMANCE.md was HOT.
ALTER TABLE executions SET (fillfactor = 70);

-- artifacts: artifacts_pkey (execution_id, position) for loading an execution's artifacts and
-- every push update; artifacts_digest for lookup by image digest (GET /v1/subjects, verify).
-- push_state, attempts, errors and the pushed reference are not indexed: updates are HOT (except
-- the one that writes a resolved digest, for images from templates).
ALTER TABLE artifacts SET (fillfactor = 80);

-- jobs (the outbox): a job changes state queued -> running -> done, and the partial indexes that
-- let claims and retention find queued, running and done jobs without a scan are keyed on that
-- state, so those transitions are not HOT by design. Kept: jobs_pkey (every job update),
-- jobs_queued (run_after, id) WHERE queued (the claim), jobs_execution (an execution's jobs:
-- state refresh, push-job de-duplication, retry, the backlog by account), jobs_done
-- (updated_at, id) WHERE done (retention).
-- jobs_running was (lease_expires_at, id) WHERE running, so every lease heartbeat — the most
-- frequent job update — was non-HOT. Running jobs number at most the workers' concurrency (plus
-- those of stopped workers until reclaimed), so finding the expired ones needs only the running
-- set, not an order by expiry: indexed by id, heartbeats are HOT.
DROP INDEX jobs_running;
CREATE INDEX jobs_running ON jobs (id) WHERE state = 'running';
ALTER TABLE jobs SET (fillfactor = 85);

-- locks: one row per .att tag, inserted by the push that first takes it, then updated on every
-- release and re-acquire (owner, token, expires_at). locks_expires (0005) indexed expires_at, so
-- each of those updates wrote two index entries. Dropped: retention (every prune_interval_secs)
-- now reads the locks table whole — it holds the tags pushed within worker.retain_done_hours, a
-- small table — and every release and re-acquire is HOT. locks_pkey (name) stays: every lock
-- operation is by name.
DROP INDEX locks_expires;
ALTER TABLE locks SET (fillfactor = 70);
