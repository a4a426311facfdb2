-- Dashboard queries: stats by receipt time, and finished-time ranges, per account and overall.
CREATE INDEX executions_received ON executions (received_at);
CREATE INDEX executions_account_received ON executions (account_id, received_at);
CREATE INDEX executions_account_finished ON executions (account_id, finished_on);
