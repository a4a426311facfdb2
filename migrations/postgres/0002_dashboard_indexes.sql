-- Time-range filters on start and finish: BRIN, because both follow insertion order closely, and a
-- BRIN index costs next to nothing on the ingest path (a btree per column would cost an index
-- insert per webhook). Stats select by receipt time through the UUIDv7 id (executions_account_id).
CREATE INDEX executions_started_brin ON executions USING brin (started_on) WITH (autosummarize = on);
CREATE INDEX executions_finished_brin ON executions USING brin (finished_on) WITH (autosummarize = on);
-- Statements and envelopes are JSON: lz4 compresses them faster than the default pglz.
ALTER TABLE executions ALTER COLUMN statement SET COMPRESSION lz4;
ALTER TABLE executions ALTER COLUMN envelope SET COMPRESSION lz4;
