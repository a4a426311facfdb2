-- How many artifacts an execution has, written once at ingest, as on PostgreSQL (see
-- migrations/postgres/0009): the basic list view reads it instead of counting artifacts. NULL
-- for executions recorded before this migration, whose artifacts the list counts instead.
ALTER TABLE executions ADD COLUMN artifact_count INTEGER;
