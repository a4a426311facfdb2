-- artifacts: more room on each page for the new version of a row (0008 set 80). Every artifact
-- is updated once or twice after ingest (its push, retries), and at 80 only 54–56 % of those
-- updates were HOT in the backlog check of docs/PERFORMANCE.md: the rest found their page full
-- and wrote a new entry into artifacts_pkey and artifacts_digest. Applies to pages filled from
-- now on; nothing is rewritten.
ALTER TABLE artifacts SET (fillfactor = 50);
