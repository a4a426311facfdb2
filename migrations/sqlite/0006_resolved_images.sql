-- Images from a source's `images` templates: the execution is recorded before their digests are
-- known. Its artifacts wait in push_state 'resolving' with digest '' (the column stays NOT NULL,
-- as SQLite cannot relax it in place), and the statement without subjects is kept in
-- statement_template until a resolve job has found every digest; then the statement is written
-- once, the template cleared, and signing goes on as for any build.
ALTER TABLE artifacts ADD COLUMN resolved_at INTEGER;
ALTER TABLE executions ADD COLUMN statement_template BLOB;
