-- Finish-time filters (start times use executions_account_started from 0001). Stats select by
-- receipt time through the UUIDv7 id, so they need no index of their own.
CREATE INDEX executions_account_finished ON executions (account_id, finished_on);
