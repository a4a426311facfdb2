//! PostgreSQL, the production dialect, shared by any number of stateless replicas: `timestamptz`
//! and `jsonb` columns, the database's clock (`now()`), `FOR UPDATE SKIP LOCKED` so two workers
//! never lease the same job, and an ingest that is one statement.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use super::dialect::{Clock, Column, Db, Encoding, Pg, SqlxQuery, millis};
use super::rows::{ARTIFACT_NAMES, EXECUTION_COLUMN_COUNT, JOINED_COLUMNS};
use super::sql::{self, Marker, Statements};
use super::{
    BuildCompleted, Digest, HandOff, Job, JobKind, Lock, NewExecution, PushRecord, Signed,
    StoreError,
};

pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<Db, StoreError> {
    let options = PgConnectOptions::from_str(url)?.application_name("attestd");
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        // sqlx pings every connection on its way back into the pool, and by default again on
        // its way out: two extra round trips per query. A connection pinged on release within
        // the last few seconds is live, so only one idle for longer is pinged before use (the
        // database may have restarted meanwhile).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await?;
    Ok(Db::Postgres(Pg::new(pool)))
}

/// A pooled connection idle for this long is pinged before it is handed out.
const PING_IDLE_AFTER: Duration = Duration::from_secs(10);

pub static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| Statements::render(marker));

/// The claim ([`sql::CLAIM_JOB`]) and, for a sign job, the read of its execution and statement
/// (`execution_with_statement`) in one statement: the execution's and artifacts' columns as that
/// read gives them, then the job's from [`CLAIM_TO_RUN_JOB_AT`]. The read sees the rows as they
/// were before the claim, which does not change them.
pub static CLAIM_TO_RUN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH c AS ({}) SELECT {} FROM c LEFT JOIN executions e ON e.id = c.execution_id AND c.kind = 'sign' \
        LEFT JOIN artifacts a ON a.execution_id = e.id",
        sql::render(sql::CLAIM_JOB, marker),
        *CLAIM_TO_RUN_COLUMNS
    )
});

/// The columns of a claimed job `c` with, for a sign job, its execution `e` and artifacts `a`.
static CLAIM_TO_RUN_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}, CASE WHEN COALESCE(a.position, 0) = 0 THEN e.statement END AS statement, \
        c.id, c.kind, c.execution_id, c.artifact_position, c.attempts, c.lease_token, c.lease_owner",
        *JOINED_COLUMNS
    )
});

/// Where the job's columns start in a row of [`CLAIM_TO_RUN`].
pub const CLAIM_TO_RUN_JOB_AT: usize = EXECUTION_COLUMN_COUNT + ARTIFACT_NAMES.len() + 1;

fn marker(m: Marker<'_>) -> String {
    match m {
        Marker::Now(_) => "now()".to_owned(),
        Marker::Later(p) => format!("now() + {p} * interval '1 millisecond'"),
        Marker::Earlier(p) => format!("now() - {p} * interval '1 millisecond'"),
        Marker::SkipLocked => "FOR UPDATE SKIP LOCKED".to_owned(),
        Marker::Bigint(p) => format!("{p}::bigint"),
        Marker::Text(p) => format!("{p}::text"),
        Marker::Day(column) => format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
        Marker::Seconds(from, to) => format!("EXTRACT(EPOCH FROM ({to} - {from}))::float8"),
    }
}

impl Encoding for Postgres {
    fn bind_time(q: SqlxQuery<Self>, t: Option<OffsetDateTime>) -> SqlxQuery<Self> {
        q.bind(t)
    }

    fn bind_json(q: SqlxQuery<Self>, v: &serde_json::Value) -> SqlxQuery<Self> {
        q.bind(Json(v))
    }

    fn bind_clock(q: SqlxQuery<Self>, c: Clock) -> SqlxQuery<Self> {
        match c {
            // The SQL reads `now()` itself.
            Clock::Now(_) => q,
            Clock::Later(_, d) => q.bind(d.map(millis)),
            Clock::Earlier(_, d) => q.bind(millis(d)),
        }
    }

    fn bind_uuids(q: SqlxQuery<Self>, ids: &[Uuid]) -> Result<SqlxQuery<Self>, StoreError> {
        Ok(q.bind(ids))
    }

    fn time<I: Column>(row: &PgRow, col: I) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        row.try_get(col)
    }

    fn json<T: DeserializeOwned, I: Column>(row: &PgRow, col: I) -> Result<T, sqlx::Error> {
        let Json(v) = row.try_get::<Json<T>, _>(col)?;
        Ok(v)
    }
}

/// Insert a new execution with its artifacts and first job, or return the `(id, request hash)`
/// of the one already recorded under its idempotency key.
pub async fn insert_build(
    pool: &PgPool,
    new: &NewExecution,
) -> Result<Option<(Uuid, String)>, StoreError> {
    let b = &new.build;
    let (state, push_state, job) = new.initial_states();
    let artifacts = new.new_artifacts();
    // One statement, so one round trip and one implicit transaction: the execution, its
    // artifacts and (for a successful build) its first job, or nothing on a conflict.
    let mut query = sqlx::query_scalar(
        "WITH e AS ( \
            INSERT INTO executions (id, account_id, pipeline_execution_id, pipeline_identifier, \
                repository_url, branch, commit_sha, trigger_type, triggered_by, builder_id, \
                builder_version, started_on, finished_on, status, request_sha256, received_at, \
                statement, attestation_state, statement_template, artifact_count) \
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $25, $27) \
            ON CONFLICT (account_id, pipeline_execution_id) DO NOTHING RETURNING id), \
         a AS ( \
            INSERT INTO artifacts (execution_id, position, registry, repository, tag, digest, push_state) \
            SELECT e.id, u.position, u.registry, u.repository, u.tag, u.digest, $26 FROM e, \
                unnest($19::int[], $20::text[], $21::text[], $22::text[], $23::text[]) \
                AS u(position, registry, repository, tag, digest)), \
         j AS ( \
            INSERT INTO jobs (kind, execution_id, state, run_after, created_at, updated_at) \
            SELECT $24, e.id, 'queued', $16, $16, $16 FROM e WHERE $24::text IS NOT NULL) \
         SELECT id FROM e",
    )
    .bind(new.id.0);
    for text in new.text_columns() {
        query = query.bind(text);
    }
    let inserted: Option<Uuid> = query
        .bind(Json(&b.builder_version))
        .bind(b.started_on)
        .bind(b.finished_on)
        .bind(b.status.as_str())
        .bind(&new.request_sha256)
        .bind(new.received_at)
        .bind(new.statement())
        .bind(state.as_str())
        .bind((0..artifacts.len() as i32).collect::<Vec<_>>())
        .bind(
            artifacts
                .iter()
                .map(|a| a.image.registry.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            artifacts
                .iter()
                .map(|a| a.image.repository.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            artifacts
                .iter()
                .map(|a| a.image.tag.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            artifacts
                .iter()
                .map(|a| a.digest.map_or("", Digest::as_str))
                .collect::<Vec<_>>(),
        )
        .bind(job.map(JobKind::as_str))
        .bind(new.statement_template())
        .bind(push_state.as_str())
        .bind(new.artifact_count())
        .fetch_optional(pool)
        .await?;
    if inserted.is_some() {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query_as(sql::EXISTING_EXECUTION)
            .bind(b.account.as_str())
            .bind(&b.pipeline_execution_id)
            .fetch_one(pool)
            .await?,
    ))
}

/// Record a batch of builds in one statement: executions in input order (so of two items with
/// one idempotency key the first is inserted), then the artifacts and first jobs of those
/// inserted; returns the ids inserted. `$1..$20` one array element per execution (id, account,
/// pipeline execution id, pipeline, repository, branch, commit, trigger type, triggered by,
/// builder id, builder version JSON, started, finished, status, request sha256, received,
/// statement, attestation state, statement template, first job kind or NULL, and `$28` its
/// artifact count); `$21..$27` one element per artifact (execution id, position, registry,
/// repository, tag, digest, state).
const RECORD_BUILDS: &str = "WITH u AS ( \
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], \
                $13::timestamptz[], $14::text[], $15::text[], $16::timestamptz[], $17::bytea[], $18::text[], \
                $19::bytea[], $20::text[], $28::int[]) WITH ORDINALITY AS u(id, account_id, \
                pipeline_execution_id, pipeline_identifier, repository_url, branch, commit_sha, \
                trigger_type, triggered_by, builder_id, builder_version, started_on, finished_on, status, \
                request_sha256, received_at, statement, attestation_state, statement_template, job, \
                artifact_count, ord)), \
        e AS ( \
            INSERT INTO executions (id, account_id, pipeline_execution_id, pipeline_identifier, \
                repository_url, branch, commit_sha, trigger_type, triggered_by, builder_id, \
                builder_version, started_on, finished_on, status, request_sha256, received_at, \
                statement, attestation_state, statement_template, artifact_count) \
            SELECT id, account_id, pipeline_execution_id, pipeline_identifier, repository_url, branch, \
                commit_sha, trigger_type, triggered_by, builder_id, builder_version::jsonb, started_on, \
                finished_on, status, request_sha256, received_at, statement, attestation_state, \
                statement_template, artifact_count FROM u ORDER BY ord \
            ON CONFLICT (account_id, pipeline_execution_id) DO NOTHING RETURNING id), \
        a AS ( \
            INSERT INTO artifacts (execution_id, position, registry, repository, tag, digest, push_state) \
            SELECT x.execution_id, x.position, x.registry, x.repository, x.tag, x.digest, x.push_state \
            FROM unnest($21::uuid[], $22::int[], $23::text[], $24::text[], $25::text[], $26::text[], \
                $27::text[]) AS x(execution_id, position, registry, repository, tag, digest, push_state) \
            JOIN e ON e.id = x.execution_id), \
        j AS ( \
            INSERT INTO jobs (kind, execution_id, state, run_after, created_at, updated_at) \
            SELECT u.job, e.id, 'queued', u.received_at, u.received_at, u.received_at \
            FROM e JOIN u ON u.id = e.id WHERE u.job IS NOT NULL) \
        SELECT id FROM e";

/// [`insert_build`] for a batch, in ONE statement (one round trip, one commit): per item, in
/// input order, `None` once inserted or the `(id, request hash)` of the execution already
/// recorded under its idempotency key — before, or by an earlier item of the batch. `Err` when
/// the statement failed, and then nothing of the batch was written.
pub async fn insert_builds(
    pool: &PgPool,
    batch: &[NewExecution],
) -> Result<Vec<Result<Option<(Uuid, String)>, StoreError>>, StoreError> {
    let mut states = Vec::with_capacity(batch.len());
    let mut jobs = Vec::with_capacity(batch.len());
    let (mut a_execution, mut a_position, mut a_registry, mut a_repository) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut a_tag, mut a_digest, mut a_state) = (Vec::new(), Vec::new(), Vec::new());
    for new in batch {
        let (state, push_state, job) = new.initial_states();
        states.push(state.as_str());
        jobs.push(job.map(JobKind::as_str));
        for (i, a) in new.new_artifacts().into_iter().enumerate() {
            a_execution.push(new.id.0);
            a_position.push(i as i32);
            a_registry.push(a.image.registry.as_str());
            a_repository.push(a.image.repository.as_str());
            a_tag.push(a.image.tag.as_deref());
            a_digest.push(a.digest.map_or("", Digest::as_str));
            a_state.push(push_state.as_str());
        }
    }
    let builds = || batch.iter().map(|n| &n.build);
    // One text array per column.
    let texts = |column: fn(&BuildCompleted) -> &str| builds().map(column).collect::<Vec<_>>();
    let builder_versions = builds()
        .map(|b| serde_json::to_string(&b.builder_version))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let inserted: Vec<Uuid> = sqlx::query_scalar(RECORD_BUILDS)
        .bind(batch.iter().map(|n| n.id.0).collect::<Vec<_>>())
        .bind(texts(|b| b.account.as_str()))
        .bind(texts(|b| &b.pipeline_execution_id))
        .bind(texts(|b| &b.pipeline_identifier))
        .bind(texts(|b| &b.repository_url))
        .bind(texts(|b| &b.branch))
        .bind(texts(|b| &b.commit_sha))
        .bind(texts(|b| &b.trigger_type))
        .bind(texts(|b| &b.triggered_by))
        .bind(texts(|b| &b.builder_id))
        .bind(builder_versions)
        .bind(builds().map(|b| b.started_on).collect::<Vec<_>>())
        .bind(builds().map(|b| b.finished_on).collect::<Vec<_>>())
        .bind(texts(|b| b.status.as_str()))
        .bind(
            batch
                .iter()
                .map(|n| n.request_sha256.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(batch.iter().map(|n| n.received_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|n| n.statement()).collect::<Vec<_>>())
        .bind(states)
        .bind(
            batch
                .iter()
                .map(|n| n.statement_template())
                .collect::<Vec<_>>(),
        )
        .bind(jobs)
        .bind(a_execution)
        .bind(a_position)
        .bind(a_registry)
        .bind(a_repository)
        .bind(a_tag)
        .bind(a_digest)
        .bind(a_state)
        .bind(
            batch
                .iter()
                .map(NewExecution::artifact_count)
                .collect::<Vec<_>>(),
        )
        .fetch_all(pool)
        .await?;
    let inserted: std::collections::HashSet<Uuid> = inserted.into_iter().collect();
    let mut results = Vec::with_capacity(batch.len());
    for new in batch {
        results.push(if inserted.contains(&new.id.0) {
            Ok(None)
        } else {
            sqlx::query_as(sql::EXISTING_EXECUTION)
                .bind(new.build.account.as_str())
                .bind(&new.build.pipeline_execution_id)
                .fetch_one(pool)
                .await
                .map(Some)
                .map_err(StoreError::from)
        });
    }
    Ok(results)
}

// Completing a job is one statement on PostgreSQL (SQLite: one transaction on the writer,
// in sql_store). Data-modifying CTEs all see the snapshot the statement started with, so the
// execution's new state is computed from what the statement writes, not read back.
// Each row a completion writes is also named by its key given as a parameter (the execution
// id, the artifact's position), not only reached through the join with `done`: sqlx prepares
// each statement once per connection, and a generic plan made while the tables were small
// walked `artifacts_pkey` whole through that join (10,100 entries per push completion, in the
// backlog benchmark). A key given as a parameter is an index lookup in any plan.

/// Finish a leased job (`$1` job, `$2` lease token, `$3` now); the CTE returns its execution.
/// Every other part of a completion joins it, so a lost lease writes nothing.
macro_rules! done_cte {
    () => {
        "done AS (UPDATE jobs SET state = 'done', lease_owner = NULL, lease_token = NULL, \
    lease_expires_at = NULL, last_error = NULL, updated_at = $3 \
    WHERE id = $1 AND lease_token = $2 AND state = 'running' RETURNING execution_id)"
    };
}

/// A job of the execution `x` is dead. The finishing job is read as it was (running).
macro_rules! any_dead {
    () => {
        "EXISTS (SELECT 1 FROM jobs j WHERE j.execution_id = x.id AND j.state = 'dead')"
    };
}

/// Complete a sign job in one statement: keep the first envelope ever stored (with its key,
/// worker and time), queue one push job per artifact still waiting unless it has one, and set
/// the execution's state. With a hand-off (`$7` given), the sign job's own row becomes the push
/// job of position `$9` if that artifact is waiting for one, leased to the signing worker (`$6`)
/// under token `$7` for `$8` milliseconds, with its tag lock `$10` for `$11` milliseconds if free
/// (`take_lock_on_conflict!`, as `TRY_LOCK` takes it); otherwise the sign job is done. The row
/// stays running, under its id, its execution and its `updated_at` (the claim), so changing
/// hands writes no index entry — where a done sign job and a new push job wrote six — and
/// leaves one row fewer to prune. `handed` is joined, not used as a scalar subquery, which
/// PostgreSQL would plan once for each of the ten columns that read it; the lease is checked
/// where the row is written. One statement sees one snapshot, so the state is computed from
/// what this statement writes (the envelope is stored) rather than re-read. `$4` envelope, `$5`
/// key id, `$12` the execution. Returns whether the lease held (0 or 1), the stored envelope,
/// the handed push's position, the lock's token, and how many push jobs were queued.
const COMPLETE_SIGN: &str = concat!(
    "WITH handed AS MATERIALIZED (SELECT a.position FROM artifacts a WHERE $7::uuid IS NOT NULL \
        AND a.execution_id = $12 \
        AND a.position = $9 AND a.push_state = 'pending' AND NOT EXISTS ( \
            SELECT 1 FROM jobs j WHERE j.kind = 'push' AND j.execution_id = a.execution_id \
            AND j.artifact_position = a.position)), \
    done AS (UPDATE jobs s SET state = CASE WHEN h.position IS NULL THEN 'done' ELSE 'running' END, \
        kind = CASE WHEN h.position IS NULL THEN s.kind ELSE 'push' END, \
        artifact_position = COALESCE(h.position, s.artifact_position), \
        attempts = CASE WHEN h.position IS NULL THEN s.attempts ELSE 1 END, \
        reclaims = CASE WHEN h.position IS NULL THEN s.reclaims ELSE 0 END, \
        lease_owner = CASE WHEN h.position IS NOT NULL THEN $6 END, \
        lease_token = CASE WHEN h.position IS NOT NULL THEN $7::uuid END, \
        lease_expires_at = CASE WHEN h.position IS NOT NULL THEN now() + $8 * interval '1 millisecond' END, \
        last_error = NULL, updated_at = CASE WHEN h.position IS NULL THEN $3 ELSE s.updated_at END \
        FROM (VALUES (1)) AS one (x) LEFT JOIN handed h ON true \
        WHERE s.id = $1 AND s.lease_token = $2 AND s.state = 'running' \
        RETURNING s.execution_id, h.position AS handed), \
    pushes AS (INSERT INTO jobs (kind, execution_id, artifact_position, state, run_after, created_at, updated_at) \
        SELECT 'push', a.execution_id, a.position, 'queued', $3, $3, $3 \
        FROM done JOIN artifacts a ON a.execution_id = done.execution_id \
        WHERE a.execution_id = $12 AND a.push_state = 'pending' AND a.position IS DISTINCT FROM done.handed AND NOT EXISTS ( \
            SELECT 1 FROM jobs j WHERE j.kind = 'push' AND j.execution_id = a.execution_id \
            AND j.artifact_position = a.position) \
        RETURNING id), \
    locked AS (INSERT INTO locks (name, owner, expires_at, token) \
        SELECT $10, $6, now() + $11 * interval '1 millisecond', 1 FROM done WHERE handed IS NOT NULL ",
    sql::take_lock_on_conflict!("now()"),
    "), \
    e AS (UPDATE executions x SET envelope = COALESCE(x.envelope, $4), \
        key_id = CASE WHEN x.envelope IS NULL THEN $5 ELSE x.key_id END, \
        signed_by = CASE WHEN x.envelope IS NULL THEN $6 ELSE x.signed_by END, \
        signed_at = COALESCE(x.signed_at, $3), last_error = NULL, \
        attestation_state = CASE WHEN x.attestation_state = 'skipped' THEN 'skipped' \
            WHEN ",
    any_dead!(),
    " THEN 'failed' WHEN x.statement IS NULL THEN 'resolving' \
            WHEN NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.execution_id = x.id AND a.push_state <> 'pushed') \
            THEN 'attested' ELSE 'pushing' END \
        FROM done WHERE x.id = done.execution_id AND x.id = $12 RETURNING x.envelope) \
    SELECT (SELECT COUNT(*) FROM done) AS done, (SELECT envelope FROM e) AS envelope, \
        (SELECT handed FROM done) AS handed, (SELECT token FROM locked) AS lock_token, \
        (SELECT COUNT(*) FROM pushes) AS queued"
);

/// Complete a push job in one statement: finish the job, record the pushed artifact, set the
/// execution's state — attested (stamped once, its last error cleared) when every other
/// artifact was already pushed — and release the tag lock the push held (`$9` name, `$10`
/// owner, `$11` token). `$4` position, `$5` attempts, `$6` reference, `$7` manifest digest, `$8`
/// worker, `$12` the execution. Returns whether the job was finished (0 or 1), the state
/// written, and the execution's receipt time if this statement attested it.
macro_rules! complete_push_ctes {
    () => { concat!(
    "WITH ",
    done_cte!(),
    ", pushed AS (UPDATE artifacts a SET push_state = 'pushed', push_attempts = $5, next_attempt_at = NULL, \
        last_error = NULL, pushed_reference = $6, manifest_digest = $7, pushed_at = $3, pushed_by = $8 \
        FROM done WHERE a.execution_id = done.execution_id AND a.execution_id = $12 AND a.position = $4), \
    s AS (SELECT x.id, CASE WHEN x.attestation_state = 'skipped' THEN 'skipped' WHEN ",
    any_dead!(),
    " THEN 'failed' WHEN x.statement IS NULL THEN 'resolving' WHEN x.envelope IS NULL THEN 'pending' \
            WHEN NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.execution_id = x.id \
                AND a.position IS DISTINCT FROM $4 AND a.push_state <> 'pushed') THEN 'attested' \
            ELSE 'pushing' END AS state \
        FROM executions x JOIN done ON x.id = done.execution_id WHERE x.id = $12), \
    e AS (UPDATE executions x SET attestation_state = s.state, \
        attested_at = CASE WHEN s.state = 'attested' AND x.attested_at IS NULL THEN $3 ELSE x.attested_at END, \
        last_error = CASE WHEN s.state = 'attested' AND x.attested_at IS NULL THEN NULL ELSE x.last_error END \
        FROM s WHERE x.id = s.id AND x.id = $12 RETURNING x.received_at, x.attested_at), \
    unlocked AS (UPDATE locks SET expires_at = now() \
        WHERE name = $9 AND owner = $10 AND token = $11 AND expires_at > now() AND EXISTS (SELECT 1 FROM done))"
    ) };
}

/// What a push completion returns: whether the job was finished (0 or 1), the state written, and
/// the execution's receipt time if this statement attested it.
macro_rules! complete_push_outcome {
    () => {
        "(SELECT COUNT(*) FROM done) AS done, (SELECT state FROM s) AS state, \
        (SELECT received_at FROM e WHERE attested_at = $3) AS attested_from"
    };
}

const COMPLETE_PUSH: &str = concat!(complete_push_ctes!(), " SELECT ", complete_push_outcome!());

/// [`COMPLETE_PUSH`], and once the job is finished, the next job claimed for `$13` owner (`$14`
/// token, `$15` max reclaims, `$16` max attempts, `$17` lease) with its read, as [`CLAIM_TO_RUN`]
/// returns them: a busy worker's push completion and next claim are one round trip. The
/// completion's columns follow the job's, on every row.
pub static COMPLETE_PUSH_AND_CLAIM: LazyLock<String> = LazyLock::new(|| {
    let claim = renumber(&sql::render(sql::CLAIM_JOB, marker), 12).replacen(
        "WHERE id = COALESCE(",
        "WHERE EXISTS (SELECT 1 FROM done) AND id = COALESCE(",
        1,
    );
    assert!(claim.contains("EXISTS (SELECT 1 FROM done)"), "{claim}");
    format!(
        "{}, c AS ({claim}) SELECT {}, r.done, r.state, r.attested_from \
        FROM (SELECT {}) r LEFT JOIN c ON true \
        LEFT JOIN executions e ON e.id = c.execution_id AND c.kind = 'sign' \
        LEFT JOIN artifacts a ON a.execution_id = e.id",
        complete_push_ctes!(),
        *CLAIM_TO_RUN_COLUMNS,
        complete_push_outcome!()
    )
});

/// `sql` with every parameter `$n` numbered `$n + by`.
fn renumber(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Promote an execution left `pushing` whose artifacts are all pushed by now: run after a push
/// completion committed with `pushing`. Two pushes of one execution completing at once each see
/// the other's artifact unpushed in their statement's snapshot, so both write `pushing`; this
/// runs after each commit with a fresh snapshot, and the later of the two sees both. It only
/// ever moves `pushing` to `attested`, so a stale snapshot makes it do nothing, never regress.
/// `$1` execution, `$2` now.
const PROMOTE_ATTESTED: &str = concat!(
    "UPDATE executions x SET attestation_state = 'attested', attested_at = COALESCE(x.attested_at, $2), \
        last_error = CASE WHEN x.attested_at IS NULL THEN NULL ELSE x.last_error END \
    WHERE x.id = $1 AND x.attestation_state = 'pushing' AND x.envelope IS NOT NULL AND NOT ",
    any_dead!(),
    " AND NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.execution_id = x.id AND a.push_state <> 'pushed') \
    RETURNING x.received_at, x.attested_at = $2 AS stamped"
);

/// Record a failed attempt in one statement: the leased job (`$1`, token `$2`) is queued again
/// `$3` milliseconds from now, or dead when `$3` is NULL; a push job's artifact is retrying or
/// dead with the error; the execution shows the error (`$4`) and its state. `$5` attempts, `$6`
/// the execution, `$7` the artifact's position (a push job's). The job is read as it was
/// (running), so its own death is taken from what the statement writes, as is its artifact's
/// state. Returns whether the lease held (0 or 1): a lost lease writes
/// nothing.
const FAIL: &str = concat!(
    "WITH failed AS (UPDATE jobs SET state = CASE WHEN $3::bigint IS NULL THEN 'dead' ELSE 'queued' END, \
        run_after = COALESCE(now() + $3 * interval '1 millisecond', run_after), attempts = $5, \
        last_error = $4, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now() \
        WHERE id = $1 AND lease_token = $2 AND state = 'running' \
        RETURNING execution_id, kind, artifact_position, state), \
    artifact AS (UPDATE artifacts a SET push_state = CASE WHEN f.state = 'dead' THEN 'dead' ELSE 'retrying' END, \
        push_attempts = $5, next_attempt_at = now() + $3 * interval '1 millisecond', last_error = $4 \
        FROM failed f WHERE f.kind = 'push' AND a.execution_id = f.execution_id AND a.position = f.artifact_position \
        AND a.execution_id = $6 AND a.position = $7), \
    e AS (UPDATE executions x SET last_error = $4, \
        attestation_state = CASE WHEN x.attestation_state = 'skipped' THEN 'skipped' \
            WHEN f.state = 'dead' OR ",
    any_dead!(),
    " THEN 'failed' WHEN x.statement IS NULL THEN 'resolving' WHEN x.envelope IS NULL THEN 'pending' \
            WHEN NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.execution_id = x.id AND (a.push_state <> 'pushed' \
                OR (f.kind = 'push' AND a.position = f.artifact_position))) THEN 'attested' \
            ELSE 'pushing' END \
        FROM failed f WHERE x.id = f.execution_id AND x.id = $6) \
    SELECT COUNT(*) FROM failed"
);

/// Record a failed attempt with [`FAIL`]: one statement, on the store's connection or in the
/// caller's transaction (burying a stopped job).
pub async fn fail_job(
    conn: &mut PgConnection,
    job: &Job,
    error: &str,
    retry_in: Option<Duration>,
) -> Result<(), StoreError> {
    let (failed,): (i64,) = sqlx::query_as(FAIL)
        .bind(job.id)
        .bind(job.lease_token)
        .bind(retry_in.map(millis))
        .bind(error)
        .bind(job.attempts)
        .bind(job.execution_id.0)
        .bind(job.artifact_position)
        .fetch_one(conn)
        .await?;
    if failed == 0 {
        return Err(StoreError::LeaseLost(job.id));
    }
    Ok(())
}

/// Complete a resolve job in one statement, or write nothing: when the lease holds, every
/// image still resolving is among the results and no statement is stored yet, finish the job,
/// record the digests, store the statement (clearing the template), queue the sign job and
/// set the execution pending. `$4` execution, `$5` positions, `$6` digests, `$7` statement.
/// Returns whether the lease held, the images left unresolved and whether the statement was
/// still to write.
const COMPLETE_RESOLVE: &str = concat!(
    "WITH r AS (SELECT * FROM unnest($5::int[], $6::text[]) AS r(position, digest)), \
    chk AS (SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'running') AS leased, \
        (SELECT COUNT(*) FROM artifacts a WHERE a.execution_id = $4 AND a.push_state = 'resolving' \
            AND a.position NOT IN (SELECT position FROM r)) AS unresolved, \
        EXISTS (SELECT 1 FROM executions WHERE id = $4 AND statement IS NULL) AS open), \
    done AS (UPDATE jobs SET state = 'done', lease_owner = NULL, lease_token = NULL, \
        lease_expires_at = NULL, last_error = NULL, updated_at = $3 \
        WHERE id = $1 AND lease_token = $2 AND state = 'running' \
        AND (SELECT unresolved = 0 AND open FROM chk) RETURNING execution_id), \
    resolved AS (UPDATE artifacts a SET digest = r.digest, resolved_at = $3, push_state = 'pending', last_error = NULL \
        FROM r, done WHERE a.execution_id = done.execution_id AND a.execution_id = $4 AND a.position = r.position \
        AND a.push_state = 'resolving'), \
    sign AS (INSERT INTO jobs (kind, execution_id, state, run_after, created_at, updated_at) \
        SELECT 'sign', execution_id, 'queued', $3, $3, $3 FROM done), \
    e AS (UPDATE executions x SET statement = $7, statement_template = NULL, last_error = NULL, \
        attestation_state = CASE WHEN x.attestation_state = 'skipped' THEN 'skipped' WHEN ",
    any_dead!(),
    " THEN 'failed' ELSE 'pending' END \
        FROM done WHERE x.id = done.execution_id AND x.id = $4 AND x.statement IS NULL) \
    SELECT leased, unresolved, open FROM chk"
);

/// Complete a resolve job with [`COMPLETE_RESOLVE`]: one statement, or nothing written.
pub async fn complete_resolve(
    conn: &mut PgConnection,
    job: &Job,
    digests: &[(i32, Digest)],
    statement: &[u8],
) -> Result<(), StoreError> {
    let (leased, unresolved, open): (bool, i64, bool) = sqlx::query_as(COMPLETE_RESOLVE)
        .bind(job.id)
        .bind(job.lease_token)
        .bind(OffsetDateTime::now_utc())
        .bind(job.execution_id.0)
        .bind(digests.iter().map(|(p, _)| *p).collect::<Vec<_>>())
        .bind(digests.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>())
        .bind(statement)
        .fetch_one(&mut *conn)
        .await?;
    if !leased {
        return Err(StoreError::LeaseLost(job.id));
    }
    if unresolved != 0 || !open {
        return Err(super::unresolvable(job, unresolved));
    }
    Ok(())
}

/// Complete a sign job with [`COMPLETE_SIGN`]: one statement.
pub async fn complete_sign(
    conn: &mut PgConnection,
    job: &Job,
    envelope: &[u8],
    key_id: &str,
    hand_off: Option<HandOff<'_>>,
) -> Result<Signed, StoreError> {
    let token = hand_off.map(|_| Uuid::new_v4());
    let (done, stored, handed, lock_token, queued): SignRow = sqlx::query_as(COMPLETE_SIGN)
        .bind(job.id)
        .bind(job.lease_token)
        .bind(OffsetDateTime::now_utc())
        .bind(envelope)
        .bind(key_id)
        .bind(&job.owner)
        .bind(token)
        .bind(hand_off.map(|h| millis(h.lease)))
        .bind(hand_off.map(|h| h.position))
        .bind(hand_off.map(|h| h.lock))
        .bind(hand_off.map(|h| millis(h.lock_ttl)))
        .bind(job.execution_id.0)
        .fetch_one(&mut *conn)
        .await?;
    if done == 0 {
        return Err(StoreError::LeaseLost(job.id));
    }
    let (push, lock) = match (handed, token, hand_off) {
        (Some(position), Some(lease_token), Some(hand_off)) => (
            Some(Job {
                id: job.id,
                kind: JobKind::Push,
                execution_id: job.execution_id,
                artifact_position: Some(position),
                attempts: 1,
                lease_token,
                owner: job.owner.clone(),
            }),
            lock_token.map(|token| Lock {
                name: hand_off.lock.to_owned(),
                owner: job.owner.clone(),
                token,
            }),
        ),
        _ => (None, None),
    };
    Ok(Signed {
        envelope: stored.ok_or(StoreError::NotFound)?,
        push,
        lock,
        queued: u64::try_from(queued).unwrap_or(0),
    })
}

/// What [`COMPLETE_SIGN`] returns.
type SignRow = (i64, Option<Vec<u8>>, Option<i32>, Option<i64>, i64);

/// Complete a push job with [`COMPLETE_PUSH`]: one statement (and [`PROMOTE_ATTESTED`] after
/// it when it left the execution pushing).
pub async fn complete_push(
    conn: &mut PgConnection,
    job: &Job,
    record: &PushRecord,
    lock: Option<&Lock>,
) -> Result<Option<Duration>, StoreError> {
    let now = OffsetDateTime::now_utc();
    let (done, state, attested_from): (i64, Option<String>, Option<OffsetDateTime>) =
        push_completion(COMPLETE_PUSH, job, record, lock, now)
            .fetch_one(&mut *conn)
            .await
            .and_then(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))?;
    attested(conn, job, now, done, state, attested_from).await
}

/// [`complete_push`], then the next job claimed for `owner` in the same statement
/// ([`COMPLETE_PUSH_AND_CLAIM`]): its rows as [`CLAIM_TO_RUN`] gives them (with NULL job
/// columns when there was none to claim).
pub async fn complete_push_and_claim(
    conn: &mut PgConnection,
    job: &Job,
    record: &PushRecord,
    lock: Option<&Lock>,
    owner: &str,
    leasing: &super::Leasing,
) -> Result<(Option<Duration>, Vec<PgRow>), StoreError> {
    let now = OffsetDateTime::now_utc();
    let rows = push_completion(&COMPLETE_PUSH_AND_CLAIM, job, record, lock, now)
        .bind(owner)
        .bind(Uuid::new_v4())
        .bind(i64::from(leasing.max_reclaims))
        .bind(i64::from(leasing.max_attempts))
        .bind(millis(leasing.lease))
        .fetch_all(&mut *conn)
        .await?;
    let at = CLAIM_TO_RUN_JOB_AT + 7;
    let first = rows
        .first()
        .ok_or_else(|| StoreError::Corrupt("a push completion returned no row".into()))?;
    let (done, state, attested_from) = (
        first.try_get(at)?,
        first.try_get(at + 1)?,
        first.try_get(at + 2)?,
    );
    let attested = attested(conn, job, now, done, state, attested_from).await?;
    Ok((attested, rows))
}

/// A push completion's statement with its parameters `$1`–`$12`.
fn push_completion<'q>(
    sql: &'static str,
    job: &'q Job,
    record: &'q PushRecord,
    lock: Option<&'q Lock>,
    now: OffsetDateTime,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(job.id)
        .bind(job.lease_token)
        .bind(now)
        .bind(job.artifact_position)
        .bind(job.attempts)
        .bind(&record.reference)
        .bind(&record.manifest_digest)
        .bind(&job.owner)
        .bind(lock.map(|l| l.name.as_str()))
        .bind(lock.map(|l| l.owner.as_str()))
        .bind(lock.map(|l| l.token))
        .bind(job.execution_id.0)
}

/// After a push completion: a lost lease, or the time from receipt to attestation if the push
/// attested its execution, promoting one left `pushing` ([`PROMOTE_ATTESTED`]).
async fn attested(
    conn: &mut PgConnection,
    job: &Job,
    now: OffsetDateTime,
    done: i64,
    state: Option<String>,
    attested_from: Option<OffsetDateTime>,
) -> Result<Option<Duration>, StoreError> {
    if done == 0 {
        return Err(StoreError::LeaseLost(job.id));
    }
    let attested_from = match (attested_from, state.as_deref()) {
        (Some(received), _) => Some(received),
        (None, Some("pushing")) => sqlx::query_as(PROMOTE_ATTESTED)
            .bind(job.execution_id.0)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?
            .and_then(|(received, stamped): (OffsetDateTime, bool)| stamped.then_some(received)),
        (None, _) => None,
    };
    Ok(attested_from.map(|received| super::attestation_delay(received, now)))
}
