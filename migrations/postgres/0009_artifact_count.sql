-- How many artifacts an execution has, written once at ingest (artifacts are never added or
-- removed afterwards), so a list page in the basic view (`GET /v1/executions?view=basic`) reads
-- the executions page alone: no probe of artifacts_pkey per row. Not indexed and never updated,
-- so state changes stay HOT.
-- NULL for executions recorded before this migration: the list counts their artifacts on
-- artifacts_pkey instead. Adding a nullable column without a default rewrites nothing.
ALTER TABLE executions ADD COLUMN artifact_count INTEGER;
