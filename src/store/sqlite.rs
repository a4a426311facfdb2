//! SQLite, the embedded zero-setup dialect: times are epoch milliseconds, JSON is text, and the
//! clock is this process's (SQLite has one attestd process). A single writer connection
//! serializes writes, so one statement is atomic without row locks.

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use serde::de::DeserializeOwned;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::dialect::{Clock, Column, Db, Encoding, SqlxQuery, millis};
use super::sql::{self, Marker, Statements};
use super::{NewExecution, StoreError};

/// Open (creating if missing) the database at a `sqlite:` URL.
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<Db, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    if let Some(parent) = options.get_filename().parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
    }
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        // In process: there is no connection to lose, so no ping before each use.
        .test_before_acquire(false)
        .acquire_timeout(acquire_timeout)
        .connect_with(options.clone())
        .await?;
    let reader = SqlitePoolOptions::new()
        .max_connections(max_connections.max(1))
        // In process: there is no connection to lose, so no ping before each use.
        .test_before_acquire(false)
        .acquire_timeout(acquire_timeout)
        .connect_with(options.read_only(true))
        .await?;
    Ok(Db::Sqlite { writer, reader })
}

pub static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| Statements::render(marker));

fn marker(m: Marker<'_>) -> String {
    match m {
        // The clock is bound: `now` with the milliseconds already added or subtracted.
        Marker::Now(p) | Marker::Later(p) | Marker::Earlier(p) => p.to_owned(),
        Marker::Bigint(p) | Marker::Text(p) => p.to_owned(),
        // One writer: nothing to skip or lock.
        Marker::SkipLocked => String::new(),
        Marker::Day(column) => format!("date({column} / 1000, 'unixepoch')"),
        Marker::Seconds(from, to) => format!("({to} - {from}) / 1000.0"),
    }
}

// What PostgreSQL does in one statement (postgres.rs), SQLite does in steps inside one
// transaction on its single writer; the steps that only it sends are here. The clock is bound.

/// A failed attempt: queued again at `$3`, or dead when NULL. `$1` job, `$2` lease token, `$4`
/// error, `$5` attempts, `$6` now.
pub const FAIL_JOB: &str = "UPDATE jobs SET state = CASE WHEN $3 IS NULL THEN 'dead' ELSE 'queued' END, \
    run_after = COALESCE($3, run_after), attempts = $5, last_error = $4, lease_owner = NULL, \
    lease_token = NULL, lease_expires_at = NULL, updated_at = $6 \
    WHERE id = $1 AND lease_token = $2 AND state = 'running'";

/// A push job's failed attempt on its artifact. `$1` execution, `$2` position, `$3` retry time
/// or NULL (dead), `$4` attempts, `$5` error.
pub const FAIL_ARTIFACT: &str = "UPDATE artifacts SET push_state = CASE WHEN $3 IS NULL THEN 'dead' ELSE 'retrying' END, \
    push_attempts = $4, next_attempt_at = $3, last_error = $5 \
    WHERE execution_id = $1 AND position = $2";

/// A leased sign job's row becomes the push job of its execution's artifact `$6`, if that
/// artifact is waiting for one, leased to the signing worker: `$3` worker, `$4` lease token, `$5`
/// lease expiry. `$1` job, `$2` its lease token. Nothing is returned when the lease was lost or
/// the artifact needs no push.
pub const HAND_OVER: &str = "UPDATE jobs SET kind = 'push', artifact_position = $6, attempts = 1, reclaims = 0, \
    lease_owner = $3, lease_token = $4, lease_expires_at = $5, last_error = NULL \
    WHERE id = $1 AND lease_token = $2 AND state = 'running' AND EXISTS ( \
        SELECT 1 FROM artifacts a WHERE a.execution_id = jobs.execution_id AND a.position = $6 \
        AND a.push_state = 'pending' AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.kind = 'push' \
            AND j.execution_id = a.execution_id AND j.artifact_position = a.position)) \
    RETURNING id, kind, execution_id, artifact_position, attempts, lease_token, lease_owner";

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_ms(v: i64) -> Result<OffsetDateTime, sqlx::Error> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(v) * 1_000_000)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl Encoding for Sqlite {
    fn bind_time(q: SqlxQuery<Self>, t: Option<OffsetDateTime>) -> SqlxQuery<Self> {
        q.bind(t.map(ms))
    }

    fn bind_json(q: SqlxQuery<Self>, v: &serde_json::Value) -> SqlxQuery<Self> {
        q.bind(v.to_string())
    }

    fn bind_clock(q: SqlxQuery<Self>, c: Clock) -> SqlxQuery<Self> {
        q.bind(match c {
            Clock::Now(now) => Some(ms(now)),
            Clock::Later(now, d) => d.map(|d| ms(now).saturating_add(millis(d))),
            Clock::Earlier(now, d) => Some(ms(now).saturating_sub(millis(d))),
        })
    }

    fn bind_uuids(_: SqlxQuery<Self>, _: &[Uuid]) -> Result<SqlxQuery<Self>, StoreError> {
        // An error, not a parameter left unbound: SQLite would read that as NULL.
        Err(StoreError::Database(sqlx::Error::Encode(
            "SQLite has no id arrays; list the ids".into(),
        )))
    }

    fn time<I: Column>(row: &SqliteRow, col: I) -> Result<Option<OffsetDateTime>, sqlx::Error> {
        row.try_get::<Option<i64>, _>(col)?.map(from_ms).transpose()
    }

    fn json<T: DeserializeOwned, I: Column>(row: &SqliteRow, col: I) -> Result<T, sqlx::Error> {
        let text: String = row.try_get(col)?;
        serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }
}

/// Insert a new execution with its artifacts and first job in one transaction on the writer,
/// or return the `(id, request hash)` of the one already recorded under its idempotency key.
pub async fn insert_build(
    writer: &SqlitePool,
    new: &NewExecution,
) -> Result<Option<(Uuid, String)>, StoreError> {
    let mut tx = writer.begin().await?;
    let existing = insert_in(&mut tx, new).await?;
    tx.commit().await?;
    Ok(existing)
}

/// [`insert_build`] for a batch in ONE transaction (one commit, one WAL sync), each item in a
/// savepoint of its own so that a failing item is rolled back alone and its neighbours commit.
/// Per item, in input order, what [`insert_build`] returns. `Err` when the transaction itself
/// failed, and then nothing of the batch was written.
pub async fn insert_builds(
    writer: &SqlitePool,
    batch: &[NewExecution],
) -> Result<Vec<Result<Option<(Uuid, String)>, StoreError>>, StoreError> {
    let mut tx = writer.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for new in batch {
        let mut item = sqlx::Connection::begin(&mut *tx).await?;
        match insert_in(&mut item, new).await {
            Ok(existing) => {
                item.commit().await?;
                results.push(Ok(existing));
            }
            Err(e) => {
                item.rollback().await?;
                results.push(Err(e));
            }
        }
    }
    tx.commit().await?;
    Ok(results)
}

/// Insert a build on the caller's transaction, unless its idempotency key is already recorded:
/// then nothing is written and the recorded execution's id and request hash are returned.
async fn insert_in(
    conn: &mut sqlx::SqliteConnection,
    new: &NewExecution,
) -> Result<Option<(Uuid, String)>, StoreError> {
    let b = &new.build;
    let (state, push_state, job) = new.initial_states();
    let existing: Option<(Uuid, String)> = sqlx::query_as(sql::EXISTING_EXECUTION)
        .bind(b.account.as_str())
        .bind(&b.pipeline_execution_id)
        .fetch_optional(&mut *conn)
        .await?;
    if existing.is_some() {
        return Ok(existing);
    }
    let builder_version = serde_json::to_string(&b.builder_version)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut insert = sqlx::query(
        "INSERT INTO executions (id, account_id, pipeline_execution_id, pipeline_identifier, \
         repository_url, branch, commit_sha, trigger_type, triggered_by, builder_id, \
         builder_version, started_on, finished_on, status, request_sha256, received_at, \
         statement, attestation_state, statement_template, artifact_count) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
    )
    .bind(new.id.0);
    for text in new.text_columns() {
        insert = insert.bind(text);
    }
    insert
        .bind(builder_version)
        .bind(ms(b.started_on))
        .bind(ms(b.finished_on))
        .bind(b.status.as_str())
        .bind(&new.request_sha256)
        .bind(ms(new.received_at))
        .bind(new.statement())
        .bind(state.as_str())
        .bind(new.statement_template())
        .bind(new.artifact_count())
        .execute(&mut *conn)
        .await?;

    let new_artifacts = new.new_artifacts();
    // A CI's failed run may name no image at all; an empty VALUES list is not SQL.
    if !new_artifacts.is_empty() {
        let mut artifacts = QueryBuilder::<Sqlite>::new(
            "INSERT INTO artifacts (execution_id, position, registry, repository, tag, digest, push_state) ",
        );
        artifacts.push_values(new_artifacts.iter().enumerate(), |mut row, (i, a)| {
            row.push_bind(new.id.0)
                .push_bind(i as i32)
                .push_bind(a.image.registry.clone())
                .push_bind(a.image.repository.clone())
                .push_bind(a.image.tag.clone())
                .push_bind(a.digest.map_or_else(String::new, ToString::to_string))
                .push_bind(push_state.as_str());
        });
        artifacts.build().execute(&mut *conn).await?;
    }
    if let Some(job) = job {
        sqlx::query(
            "INSERT INTO jobs (kind, execution_id, state, run_after, created_at, updated_at) \
             VALUES ($3, $1, 'queued', $2, $2, $2)",
        )
        .bind(new.id.0)
        .bind(ms(new.received_at))
        .bind(job.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(None)
}
