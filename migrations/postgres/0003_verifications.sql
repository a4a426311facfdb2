-- Results of verifying an execution's images in their registries, newest last.
CREATE TABLE verifications (
    id           BIGSERIAL   PRIMARY KEY,
    execution_id UUID        NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    image        TEXT        NOT NULL,
    digest       TEXT        NOT NULL,
    verified     BOOLEAN     NOT NULL,
    allowed      BOOLEAN     NOT NULL,
    policies     TEXT        NOT NULL, -- comma-separated policy names, '' for none
    reason_code  TEXT,
    reason       TEXT,
    report       JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX verifications_execution ON verifications (execution_id, id);
