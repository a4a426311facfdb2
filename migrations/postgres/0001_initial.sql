-- Executions reported by CI webhooks, keyed idempotently by (account, pipeline execution id).
CREATE TABLE executions (
    id                    UUID PRIMARY KEY,
    account_id            TEXT        NOT NULL,
    pipeline_execution_id TEXT        NOT NULL,
    pipeline_identifier   TEXT        NOT NULL,
    repository_url        TEXT        NOT NULL,
    branch                TEXT        NOT NULL,
    commit_sha            TEXT        NOT NULL,
    trigger_type          TEXT        NOT NULL,
    triggered_by          TEXT        NOT NULL,
    builder_id            TEXT        NOT NULL,
    builder_version       JSONB       NOT NULL,
    started_on            TIMESTAMPTZ NOT NULL,
    finished_on           TIMESTAMPTZ NOT NULL,
    status                TEXT        NOT NULL,
    request_sha256        TEXT        NOT NULL,
    received_at           TIMESTAMPTZ NOT NULL,
    -- Exact bytes as serialized at ingest; signed and served unchanged.
    statement             BYTEA,
    -- Exact DSSE envelope bytes as serialized when signed; written once.
    envelope              BYTEA,
    key_id                TEXT,
    signed_at             TIMESTAMPTZ,
    attestation_state     TEXT        NOT NULL,
    attested_at           TIMESTAMPTZ,
    last_error            TEXT,
    CONSTRAINT executions_idempotency UNIQUE (account_id, pipeline_execution_id)
);

-- Listing is always scoped to an account and ordered by id (UUIDv7, i.e. receipt time). Status
-- (three values) is served by executions_account_id with a filter.
CREATE INDEX executions_account_id ON executions (account_id, id);
CREATE INDEX executions_account_pipeline ON executions (account_id, pipeline_identifier, id);
CREATE INDEX executions_account_repo_branch ON executions (account_id, repository_url, branch, id);
CREATE INDEX executions_account_commit ON executions (account_id, commit_sha);
CREATE INDEX executions_account_attestation ON executions (account_id, attestation_state, id);

CREATE TABLE artifacts (
    execution_id     UUID        NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    position         INTEGER     NOT NULL,
    registry         TEXT        NOT NULL,
    repository       TEXT        NOT NULL,
    tag              TEXT,
    digest           TEXT        NOT NULL,
    push_state       TEXT        NOT NULL,
    push_attempts    INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    last_error       TEXT,
    pushed_reference TEXT,
    manifest_digest  TEXT,
    pushed_at        TIMESTAMPTZ,
    PRIMARY KEY (execution_id, position)
);
CREATE INDEX artifacts_digest ON artifacts (digest);

-- The outbox: written in the same transaction as the state it acts on.
CREATE TABLE jobs (
    id                BIGSERIAL   PRIMARY KEY,
    kind              TEXT        NOT NULL,
    execution_id      UUID        NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    artifact_position INTEGER,
    state             TEXT        NOT NULL, -- queued | running | done | dead
    attempts          INTEGER     NOT NULL DEFAULT 0,
    run_after         TIMESTAMPTZ NOT NULL,
    lease_owner       TEXT,
    lease_token       UUID,
    lease_expires_at  TIMESTAMPTZ,
    last_error        TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX jobs_queued ON jobs (run_after, id) WHERE state = 'queued';
CREATE INDEX jobs_running ON jobs (lease_expires_at, id) WHERE state = 'running';
CREATE INDEX jobs_execution ON jobs (execution_id);

-- Short-lived named locks (e.g. one writer per registry .att tag across replicas).
CREATE TABLE locks (
    name       TEXT        PRIMARY KEY,
    owner      TEXT        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
