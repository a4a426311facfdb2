-- Results of verifying an execution's images in their registries, newest last.
CREATE TABLE verifications (
    id           INTEGER     PRIMARY KEY AUTOINCREMENT,
    execution_id BLOB        NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    image        TEXT        NOT NULL,
    digest       TEXT        NOT NULL,
    verified     INTEGER     NOT NULL,
    allowed      INTEGER     NOT NULL,
    policies     TEXT        NOT NULL, -- comma-separated policy names, '' for none
    reason_code  TEXT,
    reason       TEXT,
    report       TEXT        NOT NULL,
    created_at   INTEGER     NOT NULL
);
CREATE INDEX verifications_execution ON verifications (execution_id, id);
