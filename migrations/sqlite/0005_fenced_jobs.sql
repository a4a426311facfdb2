-- Times a job was taken over because its worker stopped (lease expired without an outcome);
-- past `worker.max_reclaims` the job is dead instead.
ALTER TABLE jobs ADD COLUMN reclaims INTEGER NOT NULL DEFAULT 0;
-- Fencing token of a lock: raised each time the lock changes hands. A released lock keeps its row
-- (expired) until retention prunes it, so tokens of one name only grow while the row lives.
ALTER TABLE locks ADD COLUMN token INTEGER NOT NULL DEFAULT 0;
-- Retention: done jobs and expired locks by age, without scanning live rows.
CREATE INDEX jobs_done ON jobs (updated_at, id) WHERE state = 'done';
CREATE INDEX locks_expires ON locks (expires_at);
