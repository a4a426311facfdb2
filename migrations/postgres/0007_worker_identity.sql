-- Which worker did the work, for operators running several: the one whose envelope was stored,
-- and the one that pushed each artifact (`<worker id>/<job loop>`, see worker::worker_id).
ALTER TABLE executions ADD COLUMN signed_by TEXT;
ALTER TABLE artifacts ADD COLUMN pushed_by TEXT;
