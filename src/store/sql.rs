//! Every statement the store sends, written once (written per dialect, in postgres.rs and
//! sqlite.rs: ingest's inserts, PostgreSQL's one-statement job completions and failures, and
//! the steps only SQLite takes for them).
//! Parameters are `$n`; SQLite binds them by number, reads one left unbound as NULL and ignores
//! arguments a statement does not name.
//! Where the dialects must differ, a template carries a `{marker}` that each dialect renders once
//! per process ([`Statements::render`]): the clock (`{now $n}` is PostgreSQL's `now()` and a
//! bound epoch-millisecond time on SQLite; `{now+ $n}`/`{now- $n}` add or subtract `$n`
//! milliseconds, which SQLite binds already applied), row locks (`{skip locked}`), casts
//! PostgreSQL needs on a parameter used only in `IS NULL` (`{bigint $n}`, `{text $n}`) and the
//! time arithmetic of the dashboard (`{day column}`, `{seconds from to}`). A `{now $n}` parameter
//! is bound last: PostgreSQL has no such parameter.

use super::rows::{ARTIFACT_COLUMNS, EXECUTION_COLUMNS, JOINED_COLUMNS};

/// One part of a template that a dialect writes its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker<'a> {
    /// The current time; `$n` on SQLite.
    Now(&'a str),
    /// The current time plus `$n` milliseconds.
    Later(&'a str),
    /// The current time minus `$n` milliseconds.
    Earlier(&'a str),
    /// Skip rows another transaction has locked, and lock the rows selected.
    SkipLocked,
    /// `$n`, an integer that may be NULL.
    Bigint(&'a str),
    /// `$n`, a text that may be NULL.
    Text(&'a str),
    /// The UTC day (`YYYY-MM-DD`) of a time column.
    Day(&'a str),
    /// Seconds (float) from the first time column to the second.
    Seconds(&'a str, &'a str),
}

/// Replace each `{marker}` of `template` with how `dialect` writes it. An unknown marker is left
/// as it is, so the statement fails to parse (the tests render every statement).
pub fn render(template: &str, dialect: fn(Marker<'_>) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some((before, after)) = rest.split_once('{') {
        out.push_str(before);
        let Some((inside, after)) = after.split_once('}') else {
            out.push('{');
            rest = after;
            break;
        };
        let words: Vec<&str> = inside.split_whitespace().collect();
        let marker = match words.as_slice() {
            ["now", p] => Marker::Now(p),
            ["now+", p] => Marker::Later(p),
            ["now-", p] => Marker::Earlier(p),
            ["skip", "locked"] => Marker::SkipLocked,
            ["bigint", p] => Marker::Bigint(p),
            ["text", p] => Marker::Text(p),
            ["day", column] => Marker::Day(column),
            ["seconds", from, to] => Marker::Seconds(from, to),
            _ => {
                out.push('{');
                out.push_str(inside);
                out.push('}');
                rest = after;
                continue;
            }
        };
        out.push_str(&dialect(marker));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The statements that differ between the dialects (or are assembled from column lists), as one
/// dialect sends them. Rendered once per process.
pub struct Statements {
    pub execution_by_id: String,
    pub execution_with_statement: String,
    pub digest_hits: String,
    pub stats_daily: String,
    pub stats_seconds: String,
    pub stats_failures: String,
    pub stats_backlog: String,
    pub stopped_jobs: String,
    pub stopped_jobs_locked: String,
    pub claim_job: String,
    pub renew_lease: String,
    pub try_lock: String,
    pub renew_lock: String,
    pub holds_lock: String,
    pub unlock: String,
    pub prune_jobs: String,
    pub prune_locks: String,
}

impl Statements {
    pub fn render(dialect: fn(Marker<'_>) -> String) -> Self {
        let r = |template: &str| render(template, dialect);
        Self {
            execution_by_id: format!(
                "SELECT {} FROM executions e LEFT JOIN artifacts a ON a.execution_id = e.id WHERE e.id = $1",
                *JOINED_COLUMNS
            ),
            // The statement once, on the first artifact's row (or the artifact-less row).
            execution_with_statement: format!(
                "SELECT {}, CASE WHEN COALESCE(a.position, 0) = 0 THEN e.statement END AS statement \
                FROM executions e LEFT JOIN artifacts a ON a.execution_id = e.id WHERE e.id = $1",
                *JOINED_COLUMNS
            ),
            digest_hits: r(DIGEST_HITS),
            stats_daily: r(STATS_DAILY),
            stats_seconds: r(STATS_SECONDS),
            stats_failures: r(STATS_FAILURES),
            stats_backlog: r(STATS_BACKLOG),
            stopped_jobs: r(STOPPED_JOBS),
            stopped_jobs_locked: r(&format!("{STOPPED_JOBS} {{skip locked}}")),
            claim_job: r(CLAIM_JOB),
            renew_lease: r(RENEW_LEASE),
            try_lock: r(TRY_LOCK),
            renew_lock: r(RENEW_LOCK),
            holds_lock: r(HOLDS_LOCK),
            unlock: r(UNLOCK),
            prune_jobs: r(PRUNE_JOBS),
            prune_locks: r(PRUNE_LOCKS),
        }
    }
}

/// The start of a select of artifacts by execution; the dialect appends the id list.
pub fn artifacts_of() -> String {
    format!("SELECT {} FROM artifacts WHERE ", *ARTIFACT_COLUMNS)
}

/// The start of a select of executions by id; the dialect appends the id list.
pub fn executions_of() -> String {
    format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE ")
}

/// The start of a filtered page of executions with their artifacts: the caller appends its
/// filters (`AND …`), order and limit, then [`executions_where_end`].
pub fn executions_where() -> String {
    format!(
        "SELECT {} FROM (SELECT {EXECUTION_COLUMNS} FROM executions WHERE TRUE",
        *JOINED_COLUMNS
    )
}

/// The end of [`executions_where`]: its page (`$limit` already pushed), then each execution's
/// artifacts, joined in the page's order.
pub fn executions_where_end(ascending: bool) -> &'static str {
    if ascending {
        ") e LEFT JOIN artifacts a ON a.execution_id = e.id ORDER BY e.id ASC, a.position"
    } else {
        ") e LEFT JOIN artifacts a ON a.execution_id = e.id ORDER BY e.id DESC, a.position"
    }
}

/// The start of a filtered page of execution ids; the caller appends its filters, order and limit.
pub const EXECUTION_IDS_WHERE: &str = "SELECT id FROM executions WHERE TRUE";

/// The start of a filtered page of executions each with the number of its artifacts: as stored
/// at ingest, or for executions recorded before it was (NULL), counted on the artifacts' primary
/// key (execution_id, position) — never reading an artifact row. The caller appends its filters
/// (`AND …`), order and limit, then [`execution_summaries_where_end`].
pub fn execution_summaries_where() -> String {
    format!(
        "SELECT e.*, COALESCE(e.known_count, \
            (SELECT COUNT(*) FROM artifacts a WHERE a.execution_id = e.id)) AS artifact_count \
         FROM (SELECT {EXECUTION_COLUMNS}, artifact_count AS known_count FROM executions WHERE TRUE"
    )
}

/// The position of the artifact count in a row of [`execution_summaries_where`]: after the
/// execution's columns and the count as stored.
pub const SUMMARY_COUNT_COLUMN: usize = super::rows::EXECUTION_COLUMN_COUNT + 1;

/// The end of [`execution_summaries_where`]: its page (`$limit` already pushed), in order.
pub fn execution_summaries_where_end(ascending: bool) -> &'static str {
    if ascending {
        ") e ORDER BY e.id ASC"
    } else {
        ") e ORDER BY e.id DESC"
    }
}

/// Artifacts of a digest, newest execution first. `$1` digest, `$2` account or NULL.
const DIGEST_HITS: &str = "SELECT a.execution_id, a.position FROM artifacts a JOIN executions e ON e.id = a.execution_id \
    WHERE a.digest = $1 AND ({text $2} IS NULL OR e.account_id = $2) ORDER BY a.execution_id DESC, a.position";

/// Executions per UTC day, status and state. `$1`/`$2` id bounds, `$3` account or NULL.
const STATS_DAILY: &str = "SELECT {day received_at} AS day, status, attestation_state, COUNT(*) \
    FROM executions WHERE id >= $1 AND id < $2 AND ({text $3} IS NULL OR account_id = $3) \
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3";

/// Day and seconds to attest of each attested execution. `$1`/`$2` id bounds, `$3` account or NULL.
const STATS_SECONDS: &str = "SELECT {day received_at}, {seconds received_at attested_at} FROM executions \
    WHERE id >= $1 AND id < $2 AND ({text $3} IS NULL OR account_id = $3) \
    AND attested_at IS NOT NULL";

/// Errors of failed executions. `$1`/`$2` id bounds, `$3` account or NULL.
const STATS_FAILURES: &str = "SELECT last_error FROM executions WHERE id >= $1 AND id < $2 \
    AND ({text $3} IS NULL OR account_id = $3) AND attestation_state = 'failed'";

/// Jobs waiting or running by kind and state. `$1` account or NULL.
const STATS_BACKLOG: &str = "SELECT j.kind, j.state, COUNT(*) FROM jobs j JOIN executions e ON e.id = j.execution_id \
    WHERE j.state IN ('queued', 'running') AND ({text $1} IS NULL OR e.account_id = $1) \
    GROUP BY 1, 2 ORDER BY 1, 2";

/// The next running job whose lease expired once too often. `$1` max reclaims, `$2` max
/// attempts, `$3` now.
const STOPPED_JOBS: &str = "SELECT id, kind, execution_id, artifact_position, attempts, \
    lease_token, lease_owner, reclaims FROM jobs WHERE state = 'running' AND lease_expires_at <= {now $3} \
    AND (reclaims >= $1 OR attempts >= $2) ORDER BY lease_expires_at, id LIMIT 1";

/// Lease the next runnable job. Each subquery walks its own partial index in order and stops at
/// the first row; SKIP LOCKED keeps concurrent claimers off each other's rows (SQLite's single
/// writer connection makes the one UPDATE atomic). `$1` owner, `$2` token, `$3` max reclaims,
/// `$4` max attempts, `$5` lease (ms), `$6` now.
pub(super) const CLAIM_JOB: &str = "UPDATE jobs SET state = 'running', attempts = attempts + 1, \
    reclaims = reclaims + CASE WHEN state = 'running' THEN 1 ELSE 0 END, lease_owner = $1, \
    lease_token = $2, lease_expires_at = {now+ $5}, updated_at = {now $6} \
    WHERE id = COALESCE( \
       (SELECT id FROM jobs WHERE state = 'queued' AND run_after <= {now $6} \
        ORDER BY run_after, id LIMIT 1 {skip locked}), \
       (SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at <= {now $6} \
        AND reclaims < $3 AND attempts < $4 \
        ORDER BY lease_expires_at, id LIMIT 1 {skip locked})) \
    RETURNING id, kind, execution_id, artifact_position, attempts, lease_token, lease_owner";

/// `$1` job, `$2` lease token, `$3` lease (ms).
const RENEW_LEASE: &str = "UPDATE jobs SET lease_expires_at = {now+ $3} \
    WHERE id = $1 AND lease_token = $2 AND state = 'running'";

/// When an insert into `locks` finds the name taken: the lock changes hands (its fencing token
/// raised) if it expired by `$now` or is already the inserting owner's; otherwise nothing is
/// returned. Also taken inside PostgreSQL's sign completion, for the push it hands over.
macro_rules! take_lock_on_conflict {
    ($now:literal) => {
        concat!(
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
            expires_at = excluded.expires_at, token = locks.token + 1 \
            WHERE locks.expires_at <= ",
            $now,
            " OR locks.owner = excluded.owner RETURNING token"
        )
    };
}
pub(super) use take_lock_on_conflict;

/// Take a lock that is free, expired or the owner's. `$1` name, `$2` owner, `$3` ttl (ms), `$4` now.
const TRY_LOCK: &str = concat!(
    "INSERT INTO locks (name, owner, expires_at, token) VALUES ($1, $2, {now+ $3}, 1) ",
    take_lock_on_conflict!("{now $4}")
);

/// `$1` name, `$2` owner, `$3` token, `$4` ttl (ms).
const RENEW_LOCK: &str = "UPDATE locks SET expires_at = {now+ $4} \
    WHERE name = $1 AND owner = $2 AND token = $3";

/// `$1` name, `$2` owner, `$3` token, `$4` now.
const HOLDS_LOCK: &str = "SELECT EXISTS (SELECT 1 FROM locks WHERE name = $1 AND owner = $2 AND token = $3 \
    AND expires_at > {now $4})";

/// `$1` name, `$2` owner, `$3` token, `$4` now.
const UNLOCK: &str = "UPDATE locks SET expires_at = {now $4} \
    WHERE name = $1 AND owner = $2 AND token = $3 AND expires_at > {now $4}";

/// Bounded deletes that skip rows someone else has locked: never a long transaction, never a
/// wait on the claim path. `$1` age (ms), `$2` limit.
const PRUNE_JOBS: &str = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = 'done' \
    AND updated_at < {now- $1} \
    ORDER BY updated_at, id LIMIT $2 {skip locked})";

/// `$1` age (ms), `$2` limit.
const PRUNE_LOCKS: &str = "DELETE FROM locks WHERE name IN (SELECT name FROM locks \
    WHERE expires_at < {now- $1} \
    ORDER BY expires_at LIMIT $2 {skip locked})";

/// `$1` execution.
pub const CLEAR_LAST_ERROR: &str = "UPDATE executions SET last_error = NULL WHERE id = $1";

/// Jobs neither done nor dead.
pub const COUNT_UNFINISHED_JOBS: &str =
    "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')";

/// Jobs by kind and state.
pub const COUNT_JOBS_BY_KIND_AND_STATE: &str =
    "SELECT kind, state, COUNT(*) AS n FROM jobs GROUP BY kind, state ORDER BY kind, state";

/// The execution already recorded under an idempotency key. `$1` account, `$2` pipeline execution id.
pub const EXISTING_EXECUTION: &str = "SELECT id, request_sha256 FROM executions WHERE account_id = $1 AND pipeline_execution_id = $2";

/// A round trip.
pub const PING: &str = "SELECT 1";

/// An execution's envelope bytes. `$1` execution.
pub const SELECT_ENVELOPE: &str = "SELECT envelope FROM executions WHERE id = $1";

/// An execution's statement bytes. `$1` execution.
pub const SELECT_STATEMENT: &str = "SELECT statement FROM executions WHERE id = $1";

/// An execution's statement or envelope with what reading it is decided on. `$1` execution.
pub const SELECT_STATEMENT_OWNED: &str = "SELECT account_id, status, attestation_state, statement AS bytes FROM executions WHERE id = $1";
pub const SELECT_ENVELOPE_OWNED: &str =
    "SELECT account_id, status, attestation_state, envelope AS bytes FROM executions WHERE id = $1";

/// An execution's statement template (images from templates, until resolved). `$1` execution.
pub const SELECT_STATEMENT_TEMPLATE: &str =
    "SELECT statement_template FROM executions WHERE id = $1";

/// Record one resolved artifact; it now waits for the signature. `$1` execution, `$2` position,
/// `$3` digest, `$4` now.
pub const MARK_RESOLVED: &str = "UPDATE artifacts SET digest = $3, resolved_at = $4, push_state = 'pending', last_error = NULL \
    WHERE execution_id = $1 AND position = $2 AND push_state = 'resolving'";

/// Artifacts still waiting for their digest. `$1` execution.
pub const COUNT_RESOLVING: &str =
    "SELECT COUNT(*) FROM artifacts WHERE execution_id = $1 AND push_state = 'resolving'";

/// Store the statement written once the digests are resolved; the template has served. `$1`
/// execution, `$2` statement.
pub const STORE_RESOLVED_STATEMENT: &str = "UPDATE executions SET statement = $2, statement_template = NULL, last_error = NULL \
    WHERE id = $1 AND statement IS NULL";

/// Queue the sign job of an execution. `$1` execution, `$2` now.
pub const QUEUE_SIGN_JOB: &str = "INSERT INTO jobs (kind, execution_id, state, run_after, created_at, updated_at) \
    VALUES ('sign', $1, 'queued', $2, $2, $2)";

/// `$1` execution, `$2` error.
pub const SET_LAST_ERROR: &str = "UPDATE executions SET last_error = $2 WHERE id = $1";

/// Mark a leased job done. `$1` job, `$2` lease token, `$3` now.
pub const FINISH_JOB: &str = "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, last_error = NULL, updated_at = $3 WHERE id = $1 AND lease_token = $2 AND state = 'running'";

/// Stamp the time an execution became attested; returns its receipt time if this stamped it.
/// `$1` execution, `$2` now.
pub const MARK_ATTESTED: &str = "UPDATE executions SET attested_at = $2, last_error = NULL WHERE id = $1 AND attestation_state = 'attested' AND attested_at IS NULL RETURNING received_at";

/// Record a pushed artifact. `$1` execution, `$2` position, `$3` attempts, `$4` reference, `$5` manifest digest, `$6` now, `$7` worker.
pub const MARK_PUSHED: &str = "UPDATE artifacts SET push_state = 'pushed', push_attempts = $3, next_attempt_at = NULL, last_error = NULL, pushed_reference = $4, manifest_digest = $5, pushed_at = $6, pushed_by = $7 WHERE execution_id = $1 AND position = $2";

/// Give a leased job back without counting the attempt. `$1` job, `$2` lease token, `$3` now.
pub const RELEASE_JOB: &str = "UPDATE jobs SET state = 'queued', attempts = attempts - 1, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = $3 WHERE id = $1 AND lease_token = $2 AND state = 'running'";

/// Keep the first envelope ever stored, with its key and worker, and return it. `$1` execution,
/// `$2` envelope, `$3` key id, `$4` now, `$5` worker.
pub const STORE_ENVELOPE: &str = "UPDATE executions SET envelope = COALESCE(envelope, $2), key_id = CASE WHEN envelope IS NULL THEN $3 ELSE key_id END, signed_by = CASE WHEN envelope IS NULL THEN $5 ELSE signed_by END, signed_at = COALESCE(signed_at, $4), last_error = NULL WHERE id = $1 RETURNING envelope";

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
        WHEN statement IS NULL THEN 'resolving' \
        WHEN envelope IS NULL THEN 'pending' \
        WHEN NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.execution_id = executions.id AND a.push_state <> 'pushed') THEN 'attested' \
        ELSE 'pushing' END \
    WHERE id = $1";

#[cfg(test)]
mod tests {
    use super::super::{postgres, sqlite};
    use super::*;

    fn all(s: &Statements) -> [&str; 16] {
        [
            &s.execution_by_id,
            &s.digest_hits,
            &s.stats_daily,
            &s.stats_seconds,
            &s.stats_failures,
            &s.stats_backlog,
            &s.stopped_jobs,
            &s.stopped_jobs_locked,
            &s.claim_job,
            &s.renew_lease,
            &s.try_lock,
            &s.renew_lock,
            &s.holds_lock,
            &s.unlock,
            &s.prune_jobs,
            &s.prune_locks,
        ]
    }

    fn squeeze(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn every_marker_is_rendered_in_both_dialects() {
        for sql in all(&postgres::STATEMENTS)
            .into_iter()
            .chain(all(&sqlite::STATEMENTS))
        {
            assert!(!sql.contains(['{', '}']), "{sql}");
        }
        for sql in all(&sqlite::STATEMENTS) {
            assert!(
                !sql.contains("now()") && !sql.contains("FOR UPDATE"),
                "{sql}"
            );
        }
    }

    #[test]
    fn postgres_reads_its_own_clock_and_skips_locked_rows() {
        let pg = &postgres::STATEMENTS;
        assert_eq!(
            squeeze(&pg.claim_job),
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, reclaims = reclaims + CASE WHEN state = 'running' THEN 1 ELSE 0 END, lease_owner = $1, lease_token = $2, lease_expires_at = now() + $5 * interval '1 millisecond', updated_at = now() WHERE id = COALESCE( (SELECT id FROM jobs WHERE state = 'queued' AND run_after <= now() ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED), (SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at <= now() AND reclaims < $3 AND attempts < $4 ORDER BY lease_expires_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)) RETURNING id, kind, execution_id, artifact_position, attempts, lease_token, lease_owner"
        );
        assert_eq!(
            squeeze(&pg.prune_jobs),
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = 'done' AND updated_at < now() - $1 * interval '1 millisecond' ORDER BY updated_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)"
        );
        assert!(
            pg.stopped_jobs_locked
                .ends_with("LIMIT 1 FOR UPDATE SKIP LOCKED")
        );
    }

    #[test]
    fn sqlite_is_given_the_clock_as_parameters() {
        let lite = &sqlite::STATEMENTS;
        assert_eq!(
            squeeze(&lite.try_lock),
            "INSERT INTO locks (name, owner, expires_at, token) VALUES ($1, $2, $3, 1) ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at, token = locks.token + 1 WHERE locks.expires_at <= $4 OR locks.owner = excluded.owner RETURNING token"
        );
        assert_eq!(
            squeeze(&lite.stats_seconds),
            "SELECT date(received_at / 1000, 'unixepoch'), (attested_at - received_at) / 1000.0 FROM executions WHERE id >= $1 AND id < $2 AND ($3 IS NULL OR account_id = $3) AND attested_at IS NOT NULL"
        );
    }
}
