//! SQL text both dialects send unchanged. Parameters are `$n` (SQLite accepts them too);
//! statements that differ between dialects (casts, locking, time types) stay in their file.

/// `$1` execution.
pub const CLEAR_LAST_ERROR: &str = "UPDATE executions SET last_error = NULL WHERE id = $1";

/// Jobs neither done nor dead.
pub const COUNT_UNFINISHED_JOBS: &str =
    "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')";

/// The execution already recorded under an idempotency key. `$1` account, `$2` pipeline execution id.
pub const EXISTING_EXECUTION: &str = "SELECT id, request_sha256 FROM executions WHERE account_id = $1 AND pipeline_execution_id = $2";

/// A round trip.
pub const PING: &str = "SELECT 1";

/// An execution's envelope bytes. `$1` execution.
pub const SELECT_ENVELOPE: &str = "SELECT envelope FROM executions WHERE id = $1";

/// An execution's statement bytes. `$1` execution.
pub const SELECT_STATEMENT: &str = "SELECT statement FROM executions WHERE id = $1";

/// `$1` execution, `$2` error.
pub const SET_LAST_ERROR: &str = "UPDATE executions SET last_error = $2 WHERE id = $1";

/// Mark a leased job done. `$1` job, `$2` lease token, `$3` now.
pub const FINISH_JOB: &str = "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, last_error = NULL, updated_at = $3 WHERE id = $1 AND lease_token = $2 AND state = 'running'";

/// Stamp the time an execution became attested. `$1` execution, `$2` now.
pub const MARK_ATTESTED: &str = "UPDATE executions SET attested_at = $2, last_error = NULL WHERE id = $1 AND attestation_state = 'attested' AND attested_at IS NULL";

/// Record a pushed artifact. `$1` execution, `$2` position, `$3` attempts, `$4` reference, `$5` manifest digest, `$6` now.
pub const MARK_PUSHED: &str = "UPDATE artifacts SET push_state = 'pushed', push_attempts = $3, next_attempt_at = NULL, last_error = NULL, pushed_reference = $4, manifest_digest = $5, pushed_at = $6 WHERE execution_id = $1 AND position = $2";

/// Give a leased job back without counting the attempt. `$1` job, `$2` lease token, `$3` now.
pub const RELEASE_JOB: &str = "UPDATE jobs SET state = 'queued', attempts = attempts - 1, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = $3 WHERE id = $1 AND lease_token = $2 AND state = 'running'";

/// Keep the first envelope ever stored and return it. `$1` execution, `$2` envelope, `$3` key id, `$4` now.
pub const STORE_ENVELOPE: &str = "UPDATE executions SET envelope = COALESCE(envelope, $2), key_id = CASE WHEN envelope IS NULL THEN $3 ELSE key_id END, signed_at = COALESCE(signed_at, $4), last_error = NULL WHERE id = $1 RETURNING envelope";

/// Queue one push job per artifact still waiting, unless it has one. `$1` execution, `$2` now.
pub const QUEUE_PUSH_JOBS: &str = "INSERT INTO jobs (kind, execution_id, artifact_position, state, run_after, created_at, updated_at) \
    SELECT 'push', a.execution_id, a.position, 'queued', $2, $2, $2 FROM artifacts a \
    WHERE a.execution_id = $1 AND a.push_state = 'pending' AND NOT EXISTS ( \
        SELECT 1 FROM jobs j WHERE j.kind = 'push' AND j.execution_id = a.execution_id AND j.artifact_position = a.position)";

/// Re-drive dead jobs and push jobs waiting on a backoff. `$1` execution, `$2` now.
pub const REQUEUE_JOBS: &str = "UPDATE jobs SET state = 'queued', run_after = $2, attempts = 0, reclaims = 0, last_error = NULL, updated_at = $2 \
    WHERE execution_id = $1 AND (state = 'dead' OR (state = 'queued' AND attempts > 0))";

/// Dead or retrying artifacts go back to pending (their jobs were re-queued). `$1` execution.
pub const RESET_ARTIFACTS: &str = "UPDATE artifacts SET push_state = 'pending', push_attempts = 0, next_attempt_at = NULL, last_error = NULL \
    WHERE execution_id = $1 AND push_state IN ('dead', 'retrying')";

/// Insert a verification row. `$10` is the time.
pub const INSERT_VERIFICATION: &str = "INSERT INTO verifications (execution_id, image, digest, verified, allowed, \
    policies, reason_code, reason, report, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

pub const SELECT_VERIFICATIONS: &str = "SELECT image, digest, verified, allowed, policies, reason_code, reason, created_at \
    FROM verifications WHERE execution_id = $1 ORDER BY id";

/// Remember a signing key, keeping its first PEM and first-seen time. `$1` key id, `$2` name,
/// `$3` kind, `$4` PEM, `$5` now.
pub const REMEMBER_SIGNING_KEY: &str = "INSERT INTO signing_keys (key_id, name, kind, public_key_pem, first_seen_at, last_seen_at) \
    VALUES ($1, $2, $3, $4, $5, $5) \
    ON CONFLICT (key_id) DO UPDATE SET name = excluded.name, kind = excluded.kind, last_seen_at = excluded.last_seen_at";

/// One remembered key. `$1` key id.
pub const SELECT_SIGNING_KEY: &str = "SELECT key_id, name, kind, public_key_pem, first_seen_at, last_seen_at \
    FROM signing_keys WHERE key_id = $1";

/// Every remembered key, oldest first.
pub const SELECT_SIGNING_KEYS: &str = "SELECT key_id, name, kind, public_key_pem, first_seen_at, last_seen_at \
    FROM signing_keys ORDER BY first_seen_at, key_id";

/// Recompute an execution's attestation state from its jobs and artifacts. `$1` execution.
pub const REFRESH_STATE: &str = "UPDATE executions SET attestation_state = CASE \
        WHEN attestation_state = 'skipped' THEN 'skipped' \
        WHEN EXISTS (SELECT 1 FROM jobs j WHERE j.execution_id = executions.id AND j.state = 'dead') THEN 'failed' \
        WHEN envelope IS NULL THEN 'pending' \
        WHEN NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.execution_id = executions.id AND a.push_state <> 'pushed') THEN 'attested' \
        ELSE 'pushing' END \
    WHERE id = $1";
